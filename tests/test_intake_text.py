"""What the intake accepts as text: single-line fields refuse control characters, the customer's
e-mail is exactly one address, multi-line fields keep their newlines.

A CR/LF in a title or name used to be accepted with 201 and then break every e-mail of the
escalation; ``"a@x.com, b@y.com"`` passed the e-mail check and reached all three inboxes.
The API answers 422 naming the field (checked in-process against the real dev server and
PostgreSQL, as tests/test_api.py does); commands are refused the same way.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError
from temporalio.client import Client

from escalations.api.app import create_app
from schemas.escalation import (
    AcknowledgeCommand,
    AddNoteCommand,
    CompletePostmortemCommand,
    EscalateCommand,
    EscalationRequest,
    PauseCommand,
    ResolveCommand,
)
from schemas.ticket import SweepMatch, Ticket, escalation_request_for
from tests.helpers.api import TOKEN, api_settings
from tests.helpers.requests import blog_request

BREAKERS = ["\r\n", "\n", "\r", "\t", "\x1b[31m", "\x85", "\u2028", "\x7f"]


def request_body(**changes: Any) -> dict[str, Any]:
    body = blog_request("SF-INTAKE").model_dump(mode="json")
    for path, value in changes.items():
        node = body
        *parents, leaf = path.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = value
    return body


def field_errors(caught: pytest.ExceptionInfo[ValidationError]) -> dict[tuple[Any, ...], str]:
    return {tuple(error["loc"]): error["msg"] for error in caught.value.errors()}


@pytest.mark.parametrize("breaker", BREAKERS)
@pytest.mark.parametrize("path", ["title", "customer.id", "customer.name", "customer.segment", "customer.timezone",
                                  "impact.description", "handoff.integration_id", "policy", "trigger.detail"])
def test_single_line_fields_of_the_request_refuse_control_characters(path, breaker):
    body = request_body(**{path: f"first{breaker}Bcc: victim@evil.example"})
    with pytest.raises(ValidationError) as caught:
        EscalationRequest.model_validate(body)
    errors = field_errors(caught)
    assert list(errors) == [tuple(path.split("."))]
    # ``policy`` is a slug, so its pattern refuses any control character first.
    expected = "should match pattern" if path == "policy" else "must be a single line"
    assert expected in errors[tuple(path.split("."))]


@pytest.mark.parametrize(("model", "values", "field"), [
    (AcknowledgeCommand, {"by": "dana\r\nX-Injected: 1"}, ("by",)),
    (EscalateCommand, {"by": "dana", "reason": "needs eng\nnow"}, ("reason",)),
    (EscalateCommand, {"by": "dana", "reason": "r", "to_level": "eng\u2028ineering"}, ("to_level",)),
    (AddNoteCommand, {"author": "dana\r", "text": "ok"}, ("author",)),
    (PauseCommand, {"by": "dana", "reason": "waiting\x1b[2J"}, ("reason",)),
    (ResolveCommand, {"by": "dana", "root_cause": "c", "mitigation": "m", "preventive_actions": ["a\nb"]},
     ("preventive_actions", 0)),
    (CompletePostmortemCommand, {"by": "dana", "summary": "s", "root_cause": "c", "improvements": ["x\ry"]},
     ("improvements", 0)),
])
def test_single_line_fields_of_commands_refuse_control_characters(model, values, field):
    with pytest.raises(ValidationError) as caught:
        model.model_validate(values)
    assert list(field_errors(caught)) == [field]


def test_multi_line_fields_keep_their_newlines():
    note = AddNoteCommand(author="dana", text="Line one\r\nLine two\n\n\tindented")
    assert note.text == "Line one\r\nLine two\n\n\tindented"
    resolve = ResolveCommand(by="dana", root_cause="Schema change\nin Salesforce", mitigation="Mapped\nthe field")
    assert "\n" in resolve.root_cause and "\n" in resolve.mitigation
    request = EscalationRequest.model_validate(request_body(**{"handoff.error_logs": "Traceback:\n  line 1\r\n",
                                                               "handoff.ticket_history": "a\nb"}))
    assert request.handoff.error_logs == "Traceback:\n  line 1\r\n"


@pytest.mark.parametrize("email", ["a@x.com, b@y.com", "a@x.com,b@y.com", "a@x.com;b@y.com", "a@x.com b@y.com",
                                   "ops@acme.example\r\nBcc: victim@evil.example", "not an address", "@acme.example"])
def test_customer_email_is_exactly_one_address(email):
    with pytest.raises(ValidationError) as caught:
        EscalationRequest.model_validate(request_body(**{"customer.email": email}))
    assert list(field_errors(caught)) == [("customer", "email")]


def test_a_valid_customer_email_is_kept():
    request = EscalationRequest.model_validate(request_body(**{"customer.email": "ops@acme.example"}))
    assert request.customer.email == "ops@acme.example"


def test_the_sweep_makes_a_multi_line_subject_one_title():
    now = datetime(2026, 11, 27, 9, tzinfo=UTC)
    ticket = Ticket(id="T-1", customer={"id": "acme", "name": "Acme Corp"}, subject="Export failing\r\nsince Monday",
                    status="open", opened_at=now, updated_at=now)
    match = SweepMatch(ticket_id="T-1", ticket_updated_at=now, rule="stuck", detail="stuck: interactions=5",
                       kind="functional", priority="P2")
    assert escalation_request_for(ticket, match, policy=None).title == "Export failing since Monday"


# -- the API: 422 naming the field ----------------------------------------------


@pytest_asyncio.fixture
async def api(client: Client, database_url: str, task_queue: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_settings(client, database_url, task_queue))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=30,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            yield http


def problem_locs(response: httpx.Response) -> list[list[Any]]:
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["errors"]]


async def test_the_api_answers_422_naming_the_field_and_starts_nothing(api, client):
    body = request_body(title="Salesforce sync failing\r\nBcc: victim@evil.example")
    body["ticket_id"] = "SF-CRLF-1"
    assert problem_locs(await api.post("/escalations", json=body)) == [["body", "title"]]

    body = request_body(**{"customer.email": "a@x.com, b@y.com, c@z.org"})
    body["ticket_id"] = "SF-CRLF-2"
    assert problem_locs(await api.post("/escalations", json=body)) == [["body", "customer", "email"]]

    for ticket in ("SF-CRLF-1", "SF-CRLF-2"):
        assert (await api.get(f"/escalations/{ticket}")).status_code == 404

    reason = await api.post("/escalations/SF-CRLF-1/escalate", json={"by": "dana", "reason": "now\r\nplease"})
    assert problem_locs(reason) == [["body", "reason"]]
    note = await api.post("/escalations/SF-CRLF-1/notes", json={"author": "da\nna", "text": "multi\nline is fine"})
    assert problem_locs(note) == [["body", "author"]]


def test_blog_request_is_still_valid():
    request = copy.deepcopy(EscalationRequest.model_config["json_schema_extra"]["examples"][0])  # type: ignore[index]
    assert EscalationRequest.model_validate(request).title == "Salesforce sync failing since yesterday"

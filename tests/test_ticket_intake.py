"""Ticket intake from Freshdesk and Intercom: their payloads, as each tool documents them, go through
the real API into PostgreSQL and feed the criteria sweep; bad senders and bad payloads change nothing.

The Freshdesk body is the one docs/sweep.md tells the admin to paste, rendered the way Freshdesk
renders its placeholders (``tests/fixtures/intake/freshdesk_placeholders.json``); the Intercom
notifications are in Intercom's webhook format and signed as Intercom signs them.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import random
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from escalations.api.app import create_app
from escalations.api.tickets import FRESHDESK_EXAMPLE, INTERCOM_EXAMPLE
from schemas.escalation import workflow_id_for
from schemas.intake import (
    FreshdeskWebhook,
    IntercomNotification,
    MappingError,
    from_freshdesk,
    from_intercom,
    parse_freshdesk_time,
    relevant,
)
from schemas.ticket import SweepInput, SweepResult
from tests.helpers.api import TOKEN, api_settings
from tests.helpers.escalations import current_state
from tests.helpers.paths import ROOT, TESTS
from tests.helpers.policies import write_policy
from tests.helpers.polling import eventually
from tests.helpers.workers import running_worker
from workflows.sweep import CriteriaSweepWorkflow

FIXTURES = TESTS / "fixtures" / "intake"
FRESHDESK_SECRET = "fd-shared-secret-7d1e"
INTERCOM_SECRET = "ic-client-secret-2b9a"
KOLKATA = ZoneInfo("Asia/Kolkata")
PROBLEM = "application/problem+json"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def freshdesk_template() -> str:
    """The body docs/sweep.md tells the Freshdesk admin to paste (the test keeps the two equal)."""
    text = (ROOT / "docs" / "sweep.md").read_text(encoding="utf-8")
    block = text.split("<!-- freshdesk-body:start -->")[1].split("<!-- freshdesk-body:end -->")[0]
    return block.strip().removeprefix("```json").removesuffix("```").strip()


def render(template: str, values: dict[str, str]) -> str:
    """What Freshdesk does to the template: every placeholder replaced by its value (unknown ones by
    nothing), the values escaped for the JSON string they stand in."""
    return re.sub(r"\{\{[^}]*\}\}", lambda m: json.dumps(values.get(m.group(0), ""))[1:-1], template)


def freshdesk_values(ticket_number: int, **changes: str) -> dict[str, str]:
    """The placeholders as a Kolkata helpdesk renders them: created 20 h ago, due in 1 h (SLA at risk)."""
    now = datetime.now(KOLKATA).replace(microsecond=0)
    values: dict[str, str] = fixture("freshdesk_placeholders.json")
    values.update({
        "{{ticket.id}}": str(ticket_number),
        "{{ticket.created_on}}": (now - timedelta(hours=20)).strftime("%Y-%m-%d %H:%M:%S %z"),
        "{{ticket.modified_on}}": (now - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S %z"),
        "{{ticket.due_by_time}}": (now + timedelta(hours=1)).strftime("%B %e %Y at %I:%M %p %Z"),
    })
    values.update(changes)
    return values


def intercom(name: str, item_id: str | None = None, **item_changes: Any) -> dict[str, Any]:
    notification = copy.deepcopy(fixture(name))
    item = notification["data"]["item"]
    if item_id is not None:
        item["id"] = item_id
    item.update(item_changes)
    return notification


def signed(body: bytes, secret: str = INTERCOM_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return {"X-Hub-Signature": f"sha1={digest}", "Content-Type": "application/json"}


def encoded(document: Any) -> bytes:
    return json.dumps(document).encode()


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return response.json()


async def count_tickets(pg_pool) -> int:
    return await pg_pool.fetchval("SELECT count(*) FROM tickets")


@pytest_asyncio.fixture
async def http(client: Client, database_url: str, task_queue: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real API (lifespan run) with both intake secrets set, the helpdesk in Kolkata."""
    app = create_app(api_settings(client, database_url, task_queue, freshdesk_webhook_secret=FRESHDESK_SECRET,
                                  freshdesk_timezone="Asia/Kolkata", intercom_client_secret=INTERCOM_SECRET))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60) as client_:
            yield client_


FRESHDESK_HEADERS = {"Authorization": f"Bearer {TOKEN}", "X-Freshdesk-Secret": FRESHDESK_SECRET,
                     "Content-Type": "application/json"}


# -- the mappings, without servers ------------------------------------------------------------


def test_the_documented_freshdesk_body_maps_every_field():
    values = fixture("freshdesk_placeholders.json")
    body = json.loads(render(freshdesk_template(), values))
    received = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    ticket = from_freshdesk(FreshdeskWebhook.model_validate(body), KOLKATA, received)
    assert ticket.id == "FD-1042" and ticket.subject == "Salesforce sync failing since yesterday"
    assert (ticket.status, ticket.priority, ticket.category) == ("open", "P2", "Incident")
    assert ticket.customer.model_dump(exclude_none=True) == {
        "id": "acme-corp", "name": "Acme Corp", "segment": "Enterprise", "email": "ops@acme.example"}
    assert ticket.opened_at == datetime(2026, 11, 27, 9, tzinfo=timezone.utc)  # 14:30 +0530
    assert ticket.updated_at == datetime(2026, 11, 27, 10, 30, tzinfo=timezone.utc)
    assert ticket.resolution_due == datetime(2026, 11, 27, 13, tzinfo=timezone.utc)  # 06:30 PM IST
    assert (ticket.users_affected, ticket.integration_id, ticket.interactions) == (3, "sf-prod-7", None)
    assert ticket.tags == ["salesforce", "sync"]
    assert ticket.description == "Our data stopped syncing yesterday.\nThe board meets tomorrow!"


@pytest.mark.parametrize(("status", "ours"), [
    ("Open", "open"), ("Pending", "pending"), ("Resolved", "solved"), ("Closed", "closed"),
    ("2", "open"), ("3", "pending"), ("4", "solved"), ("5", "closed"), (5, "closed"),
    ("Waiting on Customer", "pending"), ("Waiting on Third Party", "hold"), ("Awaiting QA", "open"), ("7", "open"),
])
def test_freshdesk_statuses(status, ours):
    body = {"ticket": {"id": 1, "subject": "s", "status": status, "created_at": "2026-11-27T09:00:00Z",
                       "updated_at": "2026-11-27T10:00:00Z"}}
    ticket = from_freshdesk(FreshdeskWebhook.model_validate(body), KOLKATA, datetime.now(timezone.utc))
    assert ticket.status == ours


@pytest.mark.parametrize(("priority", "ours"), [
    ("Urgent", "P1"), ("High", "P2"), ("Medium", "P3"), ("Low", "P4"),
    ("4", "P1"), (3, "P2"), ("2", "P3"), ("1", "P4"), ("", None), ("{{ticket.priority}}", None),
])
def test_freshdesk_priorities(priority, ours):
    body = {"ticket": {"id": 1, "subject": "s", "status": "Open", "priority": priority,
                       "created_at": "2026-11-27T09:00:00Z"}}
    ticket = from_freshdesk(FreshdeskWebhook.model_validate(body), KOLKATA, datetime.now(timezone.utc))
    assert ticket.priority == ours


@pytest.mark.parametrize(("company", "requester", "customer_id"), [
    ({"name": "Müller & Söhne GmbH"}, {"email": "a@b.example"}, "müller-söhne-gmbh"),
    ({"name": "株式会社サンプル"}, None, "株式会社サンプル"),
    ({"name": ""}, {"name": "Ann", "email": "Ann@B.example"}, "ann@b.example"),
    (None, None, "unknown"),
])
def test_freshdesk_customers(company, requester, customer_id):
    body = {"ticket": {"id": 1, "subject": "s", "status": "Open", "created_at": "2026-11-27T09:00:00Z",
                       "company": company, "requester": requester}}
    ticket = from_freshdesk(FreshdeskWebhook.model_validate(body), KOLKATA, datetime.now(timezone.utc))
    assert ticket.customer.id == customer_id


def test_freshdesk_times_and_their_zone():
    utc = ZoneInfo("UTC")
    assert parse_freshdesk_time("2026-11-27 09:00:00 UTC", KOLKATA) == datetime(2026, 11, 27, 9, tzinfo=timezone.utc)
    assert parse_freshdesk_time("2026-11-27 14:30:00", KOLKATA) == datetime(2026, 11, 27, 9, tzinfo=timezone.utc)
    assert parse_freshdesk_time("Fri, 27 Nov, 2026 at 09:00 AM", utc) == datetime(2026, 11, 27, 9,
                                                                                  tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="is in IST, but ESCALATION_FRESHDESK_TIMEZONE"):
        parse_freshdesk_time("November 27 2026 at 06:30 PM IST", utc)
    for ambiguous in ("11/03/2026 10:00", "soon", "10:00 AM"):
        with pytest.raises(ValueError, match="is not a time"):
            parse_freshdesk_time(ambiguous, utc)


def test_freshdesk_without_update_time_is_stamped_on_arrival_and_checked_against_the_zone():
    received = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    body = {"ticket": {"id": 7, "subject": "s", "status": "Open", "created_at": "2026-11-27 10:00:00"}}
    ticket = from_freshdesk(FreshdeskWebhook.model_validate(body), KOLKATA, received)
    assert ticket.updated_at == received and ticket.opened_at == datetime(2026, 11, 27, 4, 30, tzinfo=timezone.utc)
    # The same text read in a zone west of the helpdesk's lies in the future: a wrong zone, said so.
    with pytest.raises(MappingError) as wrong:
        from_freshdesk(FreshdeskWebhook.model_validate(body), ZoneInfo("America/New_York"), received)
    assert wrong.value.errors[0]["loc"] == ["body", "ticket", "created_at"]
    assert "ESCALATION_FRESHDESK_TIMEZONE" in wrong.value.errors[0]["msg"]


def test_the_intercom_conversation_maps_every_field():
    notification = IntercomNotification.model_validate(fixture("intercom_conversation_user_created.json"))
    assert relevant(notification) is None
    ticket = from_intercom(notification)
    assert ticket.id == "IC-1911149811"
    assert ticket.subject == "Salesforce sync failing since yesterday"  # no title, no subject: the body's first line
    assert ticket.description == ("Salesforce sync failing since yesterday\n"
                                  "None of our 40 sales reps see their pipeline & the board meets tomorrow.")
    assert (ticket.status, ticket.priority) == ("open", "P2")
    assert ticket.customer.model_dump(exclude_none=True) == {"id": "acme", "name": "Acme Corp",
                                                             "segment": "Enterprise"}
    assert ticket.opened_at == datetime.fromtimestamp(1795770000, timezone.utc)
    assert ticket.updated_at == datetime.fromtimestamp(1795775400, timezone.utc)
    assert (ticket.users_affected, ticket.integration_id, ticket.interactions) == (40, "sf-prod-7", 3)
    assert ticket.tags == ["salesforce"] and ticket.resolution_due is None
    assert ticket.history == "2026-11-27 10:30 UTC Head of Operations: Still failing this morning."


@pytest.mark.parametrize(("changes", "status", "priority"), [
    ({"state": "snoozed"}, "pending", "P2"),
    ({"state": "closed", "open": False, "priority": "not_priority"}, "closed", "P3"),
    ({"priority": "urgent"}, "open", "P1"),
    ({"priority": "low"}, "open", "P4"),
    ({"priority": "none"}, "open", None),
])
def test_intercom_conversation_states_and_priorities(changes, status, priority):
    ticket = from_intercom(IntercomNotification.model_validate(
        intercom("intercom_conversation_user_created.json", **changes)))
    assert (ticket.status, ticket.priority) == (status, priority)


def test_the_intercom_ticket_maps_and_a_contact_without_company_is_the_customer():
    ticket = from_intercom(IntercomNotification.model_validate(fixture("intercom_ticket_state_updated.json")))
    assert ticket.id == "IC-1295" and ticket.subject == "CSV export of invoices times out"
    assert ticket.description == "The invoice export stops after 30 s."
    assert (ticket.status, ticket.category, ticket.users_affected, ticket.interactions) == ("pending", "Bug", 2, 2)
    assert ticket.customer.id == "6529a0b2c7f1e3d4a5b6c7d8"
    assert ticket.customer.name == "Intercom contact 6529a0b2c7f1e3d4a5b6c7d8"
    old_style = from_intercom(IntercomNotification.model_validate(intercom(
        "intercom_ticket_state_updated.json", ticket_state="resolved", open=False)))
    assert old_style.status == "solved"
    closed = from_intercom(IntercomNotification.model_validate(intercom(
        "intercom_ticket_state_updated.json", ticket_state="in_progress", open=False)))
    assert closed.status == "closed"


def test_intercom_topics_without_a_ticket_are_not_relevant():
    contact = IntercomNotification.model_validate(fixture("intercom_contact_created.json"))
    assert relevant(contact) == "topic contact.user.created carries a contact item, not a conversation or ticket"
    deleted = intercom("intercom_conversation_user_created.json")
    deleted["topic"] = "conversation.deleted"
    assert "deletion" in relevant(IntercomNotification.model_validate(deleted))


# -- through the API into PostgreSQL and the sweep ---------------------------------------------


async def test_freshdesk_and_intercom_payloads_feed_the_sweep(client, task_queue, pg_pool, http, tmp_path):
    number = random.randrange(10**8, 10**9)
    conversation_id, quiet_id = f"{number}1", f"{number}2"
    freshdesk_body = render(freshdesk_template(), freshdesk_values(number)).encode()
    conversation = encoded(intercom("intercom_conversation_user_created.json", conversation_id))
    quiet = encoded(intercom("intercom_ticket_state_updated.json", quiet_id))

    stored = await http.post("/tickets/freshdesk", content=freshdesk_body, headers=FRESHDESK_HEADERS)
    assert stored.status_code == 201 and stored.json()["outcome"] == "inserted", stored.text
    for body in (conversation, quiet):
        response = await http.post("/tickets/intercom", content=body, headers=signed(body))
        assert response.status_code == 201 and response.json()["outcome"] == "inserted", response.text

    fd, ic = f"FD-{number}", f"IC-{conversation_id}"
    rows = {row["id"]: row for row in await pg_pool.fetch("SELECT * FROM tickets")}
    assert set(rows) == {fd, ic, f"IC-{quiet_id}"}
    assert (rows[fd]["source"], rows[fd]["priority"], rows[fd]["status"], rows[fd]["users_affected"]) == (
        "freshdesk", "P2", "open", 3)
    assert rows[fd]["resolution_due"] is not None and rows[fd]["customer_id"] == "acme-corp"
    assert (rows[ic]["source"], rows[ic]["users_affected"], rows[ic]["interactions"]) == ("intercom", 40, 3)
    assert rows[f"IC-{quiet_id}"]["status"] == "pending"

    # Redelivery: each tool sends the same notification again; nothing changes.
    again = await http.post("/tickets/freshdesk", content=freshdesk_body, headers=FRESHDESK_HEADERS)
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged", again.text
    again = await http.post("/tickets/intercom", content=conversation, headers=signed(conversation))
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged", again.text
    after = {row["id"]: row for row in await pg_pool.fetch("SELECT * FROM tickets")}
    assert all(after[key]["stored_at"] == rows[key]["stored_at"] for key in rows)

    policy = write_policy(tmp_path, name="intake-test", criteria={"sweep_every": "1h", "rules": [
        {"name": "many-users", "when": {"users_affected_at_least": 10}, "open_as": {"kind": "priority",
                                                                                      "priority": "P1"}},
        {"name": "sla-risk", "when": {"sla_remaining_below": 0.25}, "open_as": {"kind": "hierarchical",
                                                                                 "priority": "P2"}},
    ]})
    async with running_worker(client, pg_pool, task_queue, policy):
        result: SweepResult = await client.execute_workflow(
            CriteriaSweepWorkflow.run, SweepInput(ticket_ids=sorted(rows)), id=f"sweep-intake-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue, execution_timeout=timedelta(seconds=60))
        assert (result.checked, result.matched, result.started) == (3, 2, 2), result
        started = {entry.ticket_id: entry for entry in result.started_tickets}
        assert started[fd].rule == "sla-risk" and started[ic].rule == "many-users"
        assert started[ic].detail == "many-users: users_affected=40 ≥ 10"

        async def opened(ticket_id: str):
            return await current_state(client.get_workflow_handle(workflow_id_for(ticket_id)))

        freshdesk_run = await eventually(lambda: opened(fd), timeout=20)
        assert freshdesk_run.trigger.source == "sweep" and freshdesk_run.trigger.criterion == "sla-risk"
        assert freshdesk_run.title == "Salesforce sync failing since yesterday"
        assert freshdesk_run.customer.id == "acme-corp" and freshdesk_run.category == "incident"
        intercom_run = await eventually(lambda: opened(ic), timeout=20)
        assert (intercom_run.trigger.criterion, intercom_run.priority, intercom_run.customer.id) == (
            "many-users", "P1", "acme")

        # The redelivered versions are the same versions: no second escalation.
        second: SweepResult = await client.execute_workflow(
            CriteriaSweepWorkflow.run, SweepInput(ticket_ids=sorted(rows)), id=f"sweep-intake-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue, execution_timeout=timedelta(seconds=60))
        assert second.started == 0, second


async def test_a_redelivery_without_update_time_changes_nothing_and_a_change_updates(http, pg_pool):
    template = freshdesk_template().replace('    "updated_at": "{{ticket.modified_on}}",\n', "")
    assert "modified_on" not in template
    body = render(template, freshdesk_values(42))
    first = await http.post("/tickets/freshdesk", content=body, headers=FRESHDESK_HEADERS)
    assert first.status_code == 201, first.text
    stored = await pg_pool.fetchrow("SELECT updated_at, stored_at FROM tickets WHERE id = 'FD-42'")
    again = await http.post("/tickets/freshdesk", content=body, headers=FRESHDESK_HEADERS)
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged", again.text
    assert "same fields" in again.json()["note"]
    assert await pg_pool.fetchrow("SELECT updated_at, stored_at FROM tickets WHERE id = 'FD-42'") == stored
    changed = render(template, freshdesk_values(42, **{"{{ticket.status}}": "Resolved"}))
    updated = await http.post("/tickets/freshdesk", content=changed, headers=FRESHDESK_HEADERS)
    assert updated.status_code == 200 and updated.json()["outcome"] == "updated", updated.text
    assert await pg_pool.fetchval("SELECT status FROM tickets WHERE id = 'FD-42'") == "solved"


# -- bad senders and bad payloads change nothing ---------------------------------------------


async def test_freshdesk_refuses_a_wrong_sender_and_a_bad_body(http, pg_pool):
    good = render(freshdesk_template(), freshdesk_values(7)).encode()
    without_bearer = {k: v for k, v in FRESHDESK_HEADERS.items() if k != "Authorization"}
    assert_problem(await http.post("/tickets/freshdesk", content=good, headers=without_bearer), 401)
    without_secret = {k: v for k, v in FRESHDESK_HEADERS.items() if k != "X-Freshdesk-Secret"}
    missing = assert_problem(await http.post("/tickets/freshdesk", content=good, headers=without_secret), 401)
    assert missing["detail"] == "the X-Freshdesk-Secret header is missing"
    wrong = assert_problem(await http.post("/tickets/freshdesk", content=good,
                                           headers={**FRESHDESK_HEADERS, "X-Freshdesk-Secret": "guess"}), 401)
    assert wrong["type"].endswith(":bad-webhook-secret")

    cases = [
        ({"{{ticket.priority}}": "Critical"}, ["body", "ticket", "priority"]),
        ({"{{ticket.subject}}": ""}, ["body", "ticket", "subject"]),
        ({"{{ticket.status}}": "1"}, ["body", "ticket", "status"]),
        ({"{{ticket.created_on}}": "11/03/2026 10:00"}, ["body", "ticket", "created_at"]),
        ({"{{ticket.due_by_time}}": "November 27 2026 at 06:30 PM CET"}, ["body", "ticket", "due_by"]),
        ({"{{ticket.cf_users_affected}}": "many"}, ["body", "ticket", "users_affected"]),
        ({"{{ticket.id}}": "abc"}, ["body", "ticket", "id"]),
    ]
    for change, loc in cases:
        body = render(freshdesk_template(), freshdesk_values(7, **change))
        problem = assert_problem(await http.post("/tickets/freshdesk", content=body, headers=FRESHDESK_HEADERS), 422)
        assert loc in [error["loc"] for error in problem["errors"]], (change, problem)
    # Created after it was last modified: the ticket itself refuses it.
    late = render(freshdesk_template(), freshdesk_values(7, **{"{{ticket.modified_on}}": "2020-01-01 00:00:00 UTC"}))
    problem = assert_problem(await http.post("/tickets/freshdesk", content=late, headers=FRESHDESK_HEADERS), 422)
    assert problem["errors"][0]["loc"] == ["mapped"] and "updated_at must not be before" in problem["detail"]
    not_json = assert_problem(await http.post("/tickets/freshdesk", content=b'{"ticket": {"id": "1", "subject": "a"b"}}',
                                              headers=FRESHDESK_HEADERS), 400)
    assert not_json["errors"][0]["loc"][0] == "body" and not_json["type"].endswith(":malformed-json")
    assert await count_tickets(pg_pool) == 0


async def test_intercom_refuses_bad_signatures_and_bad_notifications(http, pg_pool, caplog):
    body = encoded(fixture("intercom_conversation_user_created.json"))
    missing = assert_problem(await http.post("/tickets/intercom", content=body,
                                             headers={"Content-Type": "application/json"}), 401)
    assert missing["detail"] == "the X-Hub-Signature header is missing"
    other_secret = assert_problem(await http.post("/tickets/intercom", content=body,
                                                  headers=signed(body, "not-the-secret")), 401)
    assert other_secret["type"].endswith(":bad-signature")
    tampered = body.replace(b'"Users affected": 40', b'"Users affected": 4000')
    assert tampered != body
    assert_problem(await http.post("/tickets/intercom", content=tampered, headers=signed(body)), 401)
    sha256 = {"X-Hub-Signature": "sha256=" + hmac.new(INTERCOM_SECRET.encode(), body, hashlib.sha256).hexdigest()}
    assert_problem(await http.post("/tickets/intercom", content=body, headers=sha256), 401)
    # No bearer token is needed, and one does not replace the signature.
    assert_problem(await http.post("/tickets/intercom", content=body,
                                   headers={"Authorization": f"Bearer {TOKEN}"}), 401)

    no_updated_at = intercom("intercom_conversation_user_created.json")
    del no_updated_at["data"]["item"]["updated_at"]
    cases: list[tuple[Any, list[Any]]] = [
        (no_updated_at, ["body", "data", "item", "updated_at"]),
        (intercom("intercom_conversation_user_created.json", state="pending"), ["body", "data", "item", "state"]),
        (intercom("intercom_conversation_user_created.json", priority="p0"), ["body", "data", "item", "priority"]),
        (intercom("intercom_conversation_user_created.json",
                  custom_attributes={"Users affected": "lots"}), ["mapped", "users_affected"]),
        ({**fixture("intercom_conversation_user_created.json"), "type": "event"}, ["body", "type"]),
        ({"type": "notification_event", "topic": "conversation.user.created"}, ["body", "data"]),
    ]
    for document, loc in cases:
        raw = encoded(document)
        problem = assert_problem(await http.post("/tickets/intercom", content=raw, headers=signed(raw)), 422)
        assert loc in [error["loc"] for error in problem["errors"]], (loc, problem)
    not_json = b"topic=conversation.user.created"
    assert assert_problem(await http.post("/tickets/intercom", content=not_json, headers=signed(not_json)),
                          400)["errors"][0]["loc"] == ["body"]

    with caplog.at_level(logging.INFO, logger="escalations.api"):
        contact = encoded(fixture("intercom_contact_created.json"))
        ignored = await http.post("/tickets/intercom", content=contact, headers=signed(contact))
        ping = encoded({"type": "notification_event", "topic": "ping", "id": "notif_ping",
                        "data": {"item": {"type": "ping", "message": "Hello"}}})
        pinged = await http.post("/tickets/intercom", content=ping, headers=signed(ping))
    assert ignored.status_code == 200 and ignored.json() == {
        "ignored": True, "topic": "contact.user.created", "notification_id": "notif_5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
        "reason": "topic contact.user.created carries a contact item, not a conversation or ticket"}
    assert pinged.status_code == 200 and pinged.json()["topic"] == "ping"
    logged = [record.getMessage() for record in caplog.records if "ignored" in record.getMessage()]
    assert any("notif_5e6f7a8b" in line and "contact.user.created" in line for line in logged), logged
    assert any("notif_ping" in line for line in logged), logged
    assert await count_tickets(pg_pool) == 0


async def test_an_unconfigured_tool_is_refused_with_the_variable_named(client, database_url, task_queue, pg_pool):
    app = create_app(api_settings(client, database_url, task_queue))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as bare:
            freshdesk = render(freshdesk_template(), freshdesk_values(9)).encode()
            problem = assert_problem(await bare.post("/tickets/freshdesk", content=freshdesk,
                                                     headers=FRESHDESK_HEADERS), 503)
            assert problem["type"].endswith(":intake-not-configured")
            assert problem["detail"] == "Freshdesk intake is not configured: set ESCALATION_FRESHDESK_WEBHOOK_SECRET"
            body = encoded(fixture("intercom_conversation_user_created.json"))
            problem = assert_problem(await bare.post("/tickets/intercom", content=body, headers=signed(body)), 503)
            assert problem["detail"] == "Intercom intake is not configured: set ESCALATION_INTERCOM_CLIENT_SECRET"
    assert await count_tickets(pg_pool) == 0


def test_the_openapi_examples_map():
    received = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    freshdesk = from_freshdesk(FreshdeskWebhook.model_validate(FRESHDESK_EXAMPLE), ZoneInfo("UTC"), received)
    assert (freshdesk.id, freshdesk.priority, freshdesk.users_affected) == ("FD-1042", "P1", 250)
    conversation = from_intercom(IntercomNotification.model_validate(INTERCOM_EXAMPLE))
    assert (conversation.id, conversation.priority, conversation.users_affected) == ("IC-1911149811", "P2", 250)


def test_fixtures_are_the_tools_documented_shapes():
    """The Intercom fixtures keep the envelope and item fields the docs list; the Freshdesk values
    cover every placeholder of the documented body."""
    placeholders = set(re.findall(r"\{\{[^}]*\}\}", freshdesk_template()))
    assert placeholders == set(fixture("freshdesk_placeholders.json")), placeholders
    for name in ("intercom_conversation_user_created.json", "intercom_ticket_state_updated.json",
                 "intercom_contact_created.json"):
        notification = fixture(name)
        assert {"type", "id", "topic", "app_id", "created_at", "data"} <= set(notification), name
        assert notification["type"] == "notification_event" and "item" in notification["data"]

"""What a page says, as real runs produce it: where the escalation came from, who moved it (or
that it moved by itself) and why.

The template tests (tests/test_notifications_templates.py) build their contexts by hand, so
they cannot see what the workflow leaves out. Here the workflow decides (real Temporal, real
PostgreSQL), the worker renders, and the texts are read where they land: local webhook
receivers, an SMTP receiver, and the HTTP API for the commands. A red test here means a page
no longer tells its reader what happened: fix what the workflow puts into the intent's
context (``workflows/transitions.py``, ``workflows/events.py``) or the template
(``activities/templates.py``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import yaml

from activities.templates import MISSING, format_time, render
from escalations.api.app import create_app
from schemas.escalation import EscalateCommand, EscalationState
from schemas.policy import parse_policy
from tests.helpers.api import api_settings, bearer
from tests.helpers.escalations import current_state, start_escalation
from tests.helpers.policies import policy_path, write_policy
from tests.helpers.polling import eventually
from tests.helpers.receivers import HttpRecorder, SmtpRecorder
from tests.helpers.requests import blog_request
from workflows import events
from workflows import transitions as tr

SECRET = {"ESCALATION_WEBHOOK_SECRET": "test-secret-of-at-least-32-characters"}
SMTP_USER, SMTP_PASSWORD = "escalations-bot", "smtp-pass-4242"


def hooked_levels(url: str, **ack_within: str) -> list[dict[str, Any]]:
    """The fast policy's levels, each paging a webhook receiver at ``<url>/<level id>``."""
    levels = yaml.safe_load(policy_path("fast").read_text())["levels"]
    for level in levels:
        level["ack_within"] = ack_within.get(level["id"], level["ack_within"])
        level["contacts"] = [{"name": f"{level['id']} hook", "channel": "webhook", "target": f"{url}/{level['id']}"}]
    return levels


def pages(receiver: HttpRecorder, level: str, template: str) -> list[dict[str, Any]]:
    return [r.json() for r in receiver.to(f"/{level}") if r.json()["template"] == template]


async def page(receiver: HttpRecorder, level: str, template: str, *, timeout: float = 20.0) -> dict[str, Any]:
    """The first ``template`` page that reached ``level``'s receiver."""

    async def landed() -> dict[str, Any]:
        found = pages(receiver, level, template)
        assert found, f"no {template} page at {level} yet"
        return found[0]

    return await eventually(landed, timeout=timeout)


def utc(value: datetime) -> str:
    return format_time(value)


def assert_no_blanks(text: str) -> None:
    """A page with "—" where the workflow should have said something is the bug this file is about."""
    assert MISSING not in text, text
    assert "None" not in text, text


async def test_automatic_pages_say_what_happened(client, task_queue, start_worker, tmp_path):
    """Consulted at open, auto-escalated twice, at risk, re-paged at the last level, breached."""
    async with HttpRecorder() as receiver:
        policy = write_policy(
            tmp_path, levels=hooked_levels(receiver.url, tier2="1s", engineering="1s", management="2s"),
            priorities={"P1": {"resolve_within": "8s", "at_risk_at": 0.5, "customer_update_every": "60s"}},
        )
        async with start_worker(policy, environ=SECRET):
            handle = await start_escalation(client, blog_request(kind="hierarchical"), task_queue)
            opened = await eventually(lambda: current_state(handle))
            ticket = opened.ticket_id

            consulted = await page(receiver, "management", "consulted")
            text = consulted["message"]["text"]
            assert (f"You were brought into the escalation {ticket} for Acme Corp automatically, "
                    "which is with Tier 2 Support (owner: tier2 hook).") in text
            assert "Reason: hierarchical escalation: management consulted from the start" in text
            assert_no_blanks(text)

            to_engineering = await page(receiver, "engineering", "escalated")
            text = to_engineering["message"]["text"]
            assert to_engineering["message"]["subject"].startswith("[P1] Escalated to Engineering: ")
            assert (f"{ticket} for Acme Corp was escalated from Tier 2 Support to Engineering automatically."
                    in text)
            assert "Reason: no acknowledgement from tier2 within 1s" in text
            assert_no_blanks(text)
            details = to_engineering["details"]
            assert details["auto"] is True and details["from_level"] == "tier2" and details["by"] is None

            to_management = await page(receiver, "management", "escalated")
            text = to_management["message"]["text"]
            assert (f"{ticket} for Acme Corp was escalated from Engineering to Management automatically."
                    in text)
            assert "Reason: no acknowledgement from engineering within 1s" in text
            assert_no_blanks(text)

            at_risk = await page(receiver, "management", "sla_at_risk")
            text = at_risk["message"]["text"]
            resolve_due = utc(opened.deadlines.resolve_due)
            assert (f"{ticket} for Acme Corp has used most of its resolution time (4s of the resolution SLA "
                    f"left); it is due by {resolve_due}.") in text
            assert "It is with Management (owner: management hook)." in text
            assert_no_blanks(text)

            reminder = await page(receiver, "management", "ack_reminder")
            text = reminder["message"]["text"]
            state = await current_state(handle)
            [moved_in] = [entry for entry in state.path if entry.to_level == "management"]
            missed = moved_in.at + timedelta(seconds=2)  # management's ack_within
            assert f"Reminder 1: {ticket} for Acme Corp is waiting at Management" in text
            # The deadline it missed, not the state's ack_due, which has moved on to the next one.
            assert f"It was due by {utc(missed)}." in text
            assert f"Next reminder: {utc(missed + timedelta(seconds=2))}." in text
            assert_no_blanks(text)

            breached = await page(receiver, "management", "sla_breached")
            text = breached["message"]["text"]
            assert (f"{ticket} for Acme Corp missed its resolution deadline of {resolve_due} "
                    "(not resolved within 8s).") in text
            assert "It is still with Management (owner: management hook). Please step in." in text
            assert_no_blanks(text)


async def test_a_manual_escalation_names_who_through_what_and_why(client, task_queue, start_worker, database_url,
                                                                tmp_path):
    """Escalated through the API by a named token: the page names the person, the token and the reason."""
    async with HttpRecorder() as receiver, SmtpRecorder(users={SMTP_USER: SMTP_PASSWORD}) as smtp:
        levels = hooked_levels(receiver.url, tier2="60s", engineering="60s")
        levels[2]["contacts"].append({"name": "Eng lead", "channel": "email", "target": "eng-lead@example.com"})
        policy = write_policy(tmp_path, levels=levels)
        environ = {**SECRET, "ESCALATION_SMTP_HOST": smtp.host, "ESCALATION_SMTP_PORT": str(smtp.port),
                   "ESCALATION_SMTP_STARTTLS": "false", "ESCALATION_SMTP_USERNAME": SMTP_USER,
                   "ESCALATION_SMTP_PASSWORD": SMTP_PASSWORD,
                   "ESCALATION_SMTP_FROM": "Escalations <escalations@support.example>"}
        app = create_app(api_settings(client, database_url, task_queue, policy_file=str(policy)))
        async with start_worker(policy, environ=environ), app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60,
                                         headers=bearer("ops")) as api:
                request = blog_request(kind="hierarchical")
                started = await api.post("/escalations", json=request.as_body())
                assert started.status_code == 201, started.text
                ticket = request.ticket_id
                await page(receiver, "tier2", "escalation_opened")

                moved = await api.post(f"/escalations/{ticket}/escalate", json={
                    "by": "Dana", "reason": "customer's board meeting tomorrow depends on the sync"})
                assert moved.status_code == 200, moved.text
                assert EscalationState.model_validate(moved.json()).level == "engineering"

                escalated = await page(receiver, "engineering", "escalated")
                text = escalated["message"]["text"]
                assert (f"{ticket} for Acme Corp was escalated from Tier 2 Support to Engineering "
                        "by Dana (via api:ops).") in text
                assert "Reason: customer's board meeting tomorrow depends on the sync" in text
                assert_no_blanks(text)
                [mail] = await smtp.wait_for(1, timeout=20)
        plain = mail.message.get_body(preferencelist=("plain",)).get_content()
        html = mail.message.get_body(preferencelist=("html",)).get_content()
        assert mail.message["Subject"].startswith("[P1] Escalated to Engineering: ")
        assert "was escalated from Tier 2 Support to Engineering by Dana (via api:ops)." in plain
        assert "Reason: customer's board meeting tomorrow depends on the sync" in plain
        assert "by Dana (via api:ops)." in html and "board meeting tomorrow" in html


def test_a_page_held_for_service_hours_still_says_who_moved_it_and_why():
    """Pure (no server): the held page goes out when the hours start, carrying the move."""
    document = yaml.safe_load(policy_path("fast").read_text())
    document["calendars"] = {"eng-hours": {"timezone": "UTC", "weekdays": ["mon", "tue", "wed", "thu", "fri"],
                                           "hours": "10:00-17:00"}}
    for targets in document["priorities"].values():
        targets["calendar"] = "eng-hours"
    engineering = next(level for level in document["levels"] if level["id"] == "engineering")
    engineering.update(availability="eng-hours", hold_until_available=True)
    policy = parse_policy(document)
    opened_at = datetime.fromisoformat("2026-12-01T09:00:00+00:00")  # a Tuesday, before the hours
    decision = tr.open_escalation(blog_request("T-1", kind="priority"), policy, escalation_id="esc-1",
                                  workflow_id="escalation-T-1", at=opened_at)
    events.assemble(decision.state, decision.changes, opened_at, handoff=None, impact={})
    moved = tr.escalate(decision.state, EscalateCommand(by="Dana", reason="needs a code fix", via="cli:dana"),
                        opened_at + timedelta(minutes=5))
    assert [c.type for c in moved.changes] == ["escalated", "held_until_available"]
    assert not any(n.responder == "engineering" for c in moved.changes for n in c.notify)
    events.assemble(moved.state, moved.changes, opened_at + timedelta(minutes=5), handoff=None, impact={})

    hours = datetime.fromisoformat("2026-12-01T10:00:00+00:00")
    released = tr.deadlines(moved.state, hours, {"hold"})
    assembled = events.assemble(released.state, released.changes, hours, handoff=None, impact={})
    [intent] = [i for i in assembled.intents if i.template == "escalated"]
    text = render(intent.template, intent.context, intent.audience).text
    assert "T-1 for Acme Corp was escalated from Tier 2 Support to Engineering by Dana (via cli:dana)." in text
    assert "Reason: needs a code fix" in text
    assert "The page was held until Engineering's service hours started." in text
    assert_no_blanks(text)

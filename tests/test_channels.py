"""Delivery over real protocols (local HTTP and SMTP receivers) with the ledger in real Postgres.

Each test runs ``deliver_notifications`` through ``ActivityEnvironment`` and checks what
arrived at the receiver and what the ``notifications`` row says.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import time
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.channels.webhook import sign, verify
from activities.notifications import NotificationActivities
from escalations.settings import NotificationSettings, derive_webhook_secret
from activities.templates import render
from schemas.notifications import (
    DeliveryBatch,
    DeliveryOutcome,
    NotificationIntent,
    notification_key,
)
from tests.helpers.receivers import HttpRecorder, Reply, SmtpRecorder, self_signed_cert

ESC_ID = "0195f3c2-run-1"
UI = "https://ui.test:8233"
SECRET = "test-master-secret-3f9c1e7a5b2d4f6e8a0c"
JIRA_EMAIL, JIRA_TOKEN = "bot@example.test", "jira-token-31337"
SMTP_USER, SMTP_PASSWORD = "escalations-bot", "smtp-pass-4242"
WORKFLOW_URL = f"{UI}/namespaces/default/workflows/escalation-SF-1042"

ESCALATION: dict[str, Any] = {
    "ticket_id": "SF-1042",
    "title": "Salesforce sync failing since yesterday",
    "priority": "P1",
    "kind": "priority",
    "category": "integration",
    "status": "open",
    "level": "tier2",
    "level_name": "Tier 2 Support",
    "owner": "Dana",
    "workflow_id": "escalation-SF-1042",
    "customer": {
        "id": "acme", "name": "Acme Corp", "segment": "enterprise",
        "timezone": "Europe/Berlin", "email": "ops@acme.example",
    },
    "impact": {"users_affected": 250, "critical": True},
    "handoff": {
        "ticket_history": "Head of Operations: data stopped syncing yesterday.\nBoard meeting tomorrow.",
        "error_logs": "SyncError: INVALID_FIELD AccountRegion__c",
        "integration_id": "sf-prod-7",
        "steps_to_reproduce": "Run a manual sync from Settings > Integrations > Salesforce",
    },
    "deadlines": {
        "ack_due": "2026-11-27T12:30:00Z",
        "resolve_due": "2026-11-27T16:00:00Z",
        "next_customer_update_due": "2026-11-27T13:00:00Z",
    },
}


def intent(
    channel: str,
    target: str | None,
    *,
    seq: int = 1,
    template: str = "escalation_opened",
    audience: str = "owner",
    recipient: str = "Tier 2 on-call",
    **extra: Any,
) -> NotificationIntent:
    return NotificationIntent(
        key=notification_key(ESC_ID, seq, recipient, channel),
        escalation_id=ESC_ID,
        ticket_id="SF-1042",
        seq=seq,
        audience=audience,
        recipient=recipient,
        channel=channel,
        target=target,
        template=template,
        context={"escalation": copy.deepcopy(ESCALATION), **extra},
    )


def batch(*intents: NotificationIntent) -> DeliveryBatch:
    return DeliveryBatch(escalation_id=ESC_ID, ticket_id="SF-1042", intents=list(intents))


@pytest_asyncio.fixture
async def http_client() -> Any:
    async with httpx.AsyncClient() as client:
        yield client


@pytest_asyncio.fixture
async def receiver() -> Any:
    async with HttpRecorder(jira_auth=(JIRA_EMAIL, JIRA_TOKEN)) as recorder:
        yield recorder


def activities(pool: asyncpg.Pool, http: httpx.AsyncClient, **env: str) -> NotificationActivities:
    settings = NotificationSettings.from_env({"ESCALATION_UI_URL": UI, **env})
    return NotificationActivities(pool, settings, http)


async def deliver(acts: NotificationActivities, work: DeliveryBatch) -> DeliveryOutcome:
    return await ActivityEnvironment().run(acts.deliver_notifications, work)


async def deliver_retryable(acts: NotificationActivities, work: DeliveryBatch) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await deliver(acts, work)
    assert caught.value.type == "DeliveryRetryable"
    assert not caught.value.non_retryable
    return caught.value


async def ledger(pool: asyncpg.Pool, key: str) -> asyncpg.Record:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM notifications WHERE idempotency_key = $1", key)
    assert row is not None, f"no notifications row for {key}"
    return row


# -- webhook ----------------------------------------------------------------


def receiver_secret(url: str, *, customer: bool = False) -> str:
    """What ``escalations webhook-secret URL`` prints for the receiver at ``url``."""
    return derive_webhook_secret(SECRET, url, customer=customer)


async def test_webhook_sends_signed_json_with_the_idempotency_key(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_WEBHOOK_SECRET=SECRET)
    url = f"{receiver.url}/hooks/escalations?token=abc"
    hook = intent("webhook", url, recipient="Integrations hook")

    outcome = await deliver(acts, batch(hook))

    assert outcome == DeliveryOutcome(sent=[hook.key])
    [request] = receiver.to("/hooks/escalations")
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == request.headers["webhook-id"] == hook.key
    timestamp = request.headers["webhook-timestamp"]
    assert timestamp.isdigit()
    secret = receiver_secret(url)
    assert secret.startswith("whsec_")
    assert request.headers["webhook-signature"] == sign(secret, hook.key, int(timestamp), request.body)
    assert request.headers["webhook-signature"].startswith("v1,")
    # Standard Webhooks' own verifier accepts it; nothing else does.
    assert Webhook(secret).verify(request.body, dict(request.headers)) == request.json()
    assert verify(secret, request.headers, request.body)
    assert not verify(receiver_secret(url, customer=True), request.headers, request.body)
    assert not verify("whsec_" + base64.b64encode(SECRET.encode()).decode(), request.headers, request.body)
    assert not verify(secret, request.headers, request.body + b" ")
    assert not verify(secret, {**request.headers, "webhook-id": hook.key + "x"}, request.body)
    assert not verify(secret, {**request.headers, "webhook-timestamp": str(int(timestamp) - 301)}, request.body)
    assert request.json() == {
        "key": hook.key,
        "escalation_id": ESC_ID,
        "ticket_id": "SF-1042",
        "seq": 1,
        "template": "escalation_opened",
        "audience": "owner",
        "recipient": "Integrations hook",
        "escalation": ESCALATION,
        "details": {},
        "message": {
            "subject": "[P1] New escalation for Acme Corp: Salesforce sync failing since yesterday (SF-1042)",
            "text": render("escalation_opened", hook.context, "owner", workflow_url=WORKFLOW_URL).text,
        },
        "actions": {},  # links off (no ESCALATION_ACTION_KEY): tests/test_action_links.py has them
    }
    row = await ledger(pg_pool, hook.key)
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 1, None)
    assert row["provider_response_id"].startswith("req-")  # the receiver's X-Request-Id
    assert row["sent_at"] is not None and row["claimed_until"] is None


async def test_customer_webhook_gets_only_the_public_part(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_WEBHOOK_SECRET=SECRET)
    hook = intent(
        "webhook", f"{receiver.url}/customer", template="customer_escalated", audience="customer",
        recipient="customer", to_level_name="Engineering", by="dana", reason="internal detail",
        next_update_by="2026-11-27T13:00:00Z",
    )

    await deliver(acts, batch(hook))

    body = receiver.to("/customer")[0].json()
    assert body["escalation"] == {
        "ticket_id": "SF-1042",
        "title": "Salesforce sync failing since yesterday",
        "priority": "P1",
        "status": "open",
        "customer": {"id": "acme", "name": "Acme Corp"},
        "deadlines": {"next_customer_update_due": "2026-11-27T13:00:00Z"},
    }
    assert body["details"] == {"to_level_name": "Engineering", "next_update_by": "2026-11-27T13:00:00Z"}
    assert "We've escalated this to our Engineering team." in body["message"]["text"]
    assert "Next update by Fri 27 Nov 2026, 14:00 CET." in body["message"]["text"]


def test_verify_accepts_rotated_signatures_and_rejects_missing_headers():
    body = b'{"a":1}'
    old, new = receiver_secret("https://a.example/old"), receiver_secret("https://a.example/new")
    now = int(time.time())
    headers = {
        "webhook-id": "k-1",
        "webhook-timestamp": str(now),
        "webhook-signature": f"{sign(old, 'k-1', now, body)} {sign(new, 'k-1', now, body)}",
    }
    assert verify(new, headers, body) and verify(old, headers, body)
    assert not verify(receiver_secret("https://a.example/other"), headers, body)
    assert not verify(new, {k: v for k, v in headers.items() if k != "webhook-id"}, body)
    assert not verify(new, {**headers, "webhook-timestamp": "soon"}, body)
    assert not verify(new, {**headers, "webhook-signature": "garbage"}, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body, {**headers, "webhook-id": "k-2"})


# -- Slack and Teams ----------------------------------------------------------

SUMMARY = (
    "A priority-based P1 escalation for Acme Corp is now with Tier 2 Support (owner: Dana): "
    "Salesforce sync failing since yesterday.",
    "Acknowledge by Fri 27 Nov 2026, 12:30 UTC. Resolution is due by Fri 27 Nov 2026, 16:00 UTC.",
    "Impact: 250 users affected, critical.",
)


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}
SUBJECT = "[P1] New escalation for Acme Corp: Salesforce sync failing since yesterday (SF-1042)"


async def test_slack_message_has_header_fields_and_ui_button(pg_pool, http_client, receiver):
    acts = activities(
        pg_pool, http_client,
        ESCALATION_SLACK_WEBHOOK_URL=f"{receiver.url}/services/T0/B0/default-secret",
        ESCALATION_SLACK_WEBHOOK_URL_ENG_ONCALL=f"{receiver.url}/services/T0/B1/oncall-secret",
    )
    receiver.script("/services/T0/B1/oncall-secret", Reply(body="ok", headers={"X-Slack-Req-Id": "slack-42"}))
    message = intent("slack", "#eng-oncall")

    outcome = await deliver(acts, batch(message))

    assert outcome.sent == [message.key]
    [request] = receiver.to("/services/T0/B1/oncall-secret")
    assert request.headers["Idempotency-Key"] == message.key
    assert request.json() == {
        "text": SUBJECT,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "[P1] Salesforce sync failing since yesterday"}},
            {"type": "section", "text": mrkdwn(f"*{SUBJECT}*")},
            *({"type": "section", "text": mrkdwn(line)} for line in SUMMARY),
            {
                "type": "section",
                "fields": [
                    mrkdwn("*Priority*\nP1"),
                    mrkdwn("*Customer*\nAcme Corp"),
                    mrkdwn("*Level*\nTier 2 Support"),
                    mrkdwn("*Deadline*\nAcknowledge by Fri 27 Nov 2026, 12:30 UTC"),
                ],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in Temporal UI"},
                        "url": WORKFLOW_URL,
                        "action_id": "open_temporal_ui",
                    }
                ],
            },
            {"type": "context", "elements": [mrkdwn("Ticket SF-1042 · Acme Corp")]},
        ],
    }
    assert (await ledger(pg_pool, message.key))["provider_response_id"] == "slack-42"


async def test_slack_without_a_target_url_uses_the_default_and_escapes_mrkdwn(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_SLACK_WEBHOOK_URL=f"{receiver.url}/services/default")
    receiver.script("/services/default", Reply(body="ok"))
    note = intent("slack", "#support", template="note_added", seq=4, by="Dana", text="<!channel> see logs & retry")

    await deliver(acts, batch(note))

    [request] = receiver.to("/services/default")
    sections = [block["text"]["text"] for block in request.json()["blocks"] if block["type"] == "section"
                and "text" in block]
    assert sections[1:3] == ["Dana added a note:", "&lt;!channel&gt; see logs &amp; retry"]
    assert (await ledger(pg_pool, note.key))["provider_response_id"] == "ok"


async def test_teams_message_is_an_adaptive_card(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_TEAMS_WEBHOOK_URL_MANAGEMENT=f"{receiver.url}/workflows/mgmt")
    receiver.script("/workflows/mgmt", Reply(status=202, body=b"", headers={"x-ms-workflow-run-id": "run-77"}))
    breach = intent("teams", "management", template="sla_breached", audience="breach", recipient="Head of Support")

    outcome = await deliver(acts, batch(breach))

    assert outcome.sent == [breach.key]
    [request] = receiver.to("/workflows/mgmt")
    assert request.headers["Idempotency-Key"] == breach.key
    assert request.json() == {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.5",
                    "body": [
                        {"type": "TextBlock", "text": "\\[P1\\] Salesforce sync failing since yesterday",
                         "size": "Large", "weight": "Bolder", "wrap": True, "style": "heading"},
                        {"type": "TextBlock",
                         "text": "\\[P1\\] SLA breached: Salesforce sync failing since yesterday (SF-1042)",
                         "weight": "Bolder", "wrap": True},
                        {"type": "TextBlock", "wrap": True,
                         "text": "SF-1042 for Acme Corp missed its resolution deadline of Fri 27 Nov 2026, 16:00 UTC."},
                        {"type": "TextBlock", "wrap": True,
                         "text": "It is still with Tier 2 Support (owner: Dana). Please step in."},
                        {"type": "FactSet", "facts": [
                            {"title": "Priority", "value": "P1"},
                            {"title": "Customer", "value": "Acme Corp"},
                            {"title": "Level", "value": "Tier 2 Support"},
                            {"title": "Deadline", "value": "Acknowledge by Fri 27 Nov 2026, 12:30 UTC"},
                        ]},
                        {"type": "TextBlock", "text": "Ticket SF-1042 · Acme Corp", "isSubtle": True,
                         "size": "Small", "wrap": True},
                    ],
                    "msteams": {"width": "Full"},
                    "actions": [{"type": "Action.OpenUrl", "title": "Open in Temporal UI", "url": WORKFLOW_URL}],
                },
            }
        ],
    }
    assert (await ledger(pg_pool, breach.key))["provider_response_id"] == "run-77"


# -- e-mail -----------------------------------------------------------------


def smtp_env(smtp: SmtpRecorder, **extra: str) -> dict[str, str]:
    return {
        "ESCALATION_SMTP_HOST": smtp.host,
        "ESCALATION_SMTP_PORT": str(smtp.port),
        "ESCALATION_SMTP_STARTTLS": "false",
        "ESCALATION_SMTP_USERNAME": SMTP_USER,
        "ESCALATION_SMTP_PASSWORD": SMTP_PASSWORD,
        "ESCALATION_SMTP_FROM": "Escalations <escalations@support.example>",
        **extra,
    }


async def test_email_is_multipart_plain_and_html_sent_with_auth(pg_pool, http_client):
    async with SmtpRecorder(users={SMTP_USER: SMTP_PASSWORD}) as smtp:
        acts = activities(pg_pool, http_client, **smtp_env(smtp))
        mail = intent(
            "email", None, template="customer_escalated", audience="customer", recipient="customer",
            to_level_name="Engineering", next_update_by="2026-11-27T13:00:00Z",
        )

        outcome = await deliver(acts, batch(mail))

        assert outcome.sent == [mail.key]
        [received] = smtp.received
    assert received.login == SMTP_USER
    assert received.rcpt_tos == ["ops@acme.example"]  # the customer's address from the context
    assert received.mail_from == "escalations@support.example"
    message = received.message
    assert message.get_content_type() == "multipart/alternative"
    assert message["Subject"] == "Your request SF-1042 has been escalated"
    assert message["X-Escalation-Key"] == mail.key
    assert message["Auto-Submitted"] == "auto-generated"
    plain = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "We've escalated this to our Engineering team." in plain
    assert "Next update by Fri 27 Nov 2026, 14:00 CET." in plain
    assert "We&#x27;ve escalated this to our Engineering team." in html
    assert "Next update by Fri 27 Nov 2026, 14:00 CET." in html
    row = await ledger(pg_pool, mail.key)
    assert row["provider_response_id"] == message["Message-ID"]
    assert message["Message-ID"].endswith("@support.example>")


async def test_email_message_id_is_the_same_on_every_attempt(pg_pool, http_client):
    async with SmtpRecorder(users={SMTP_USER: SMTP_PASSWORD}) as smtp:
        acts = activities(pg_pool, http_client, **smtp_env(smtp))
        mail = intent("email", "oncall@support.example", template="sla_at_risk")
        smtp.data_replies.append("451 4.3.0 Temporary local problem, try later")

        error = await deliver_retryable(acts, batch(mail))
        assert "451" in str(error)
        row = await ledger(pg_pool, mail.key)
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert "451 4.3.0 Temporary local problem" in row["last_error"]

        outcome = await deliver(acts, batch(mail))
        assert outcome.sent == [mail.key]
        [received] = smtp.received
    row = await ledger(pg_pool, mail.key)
    assert (row["status"], row["attempts"]) == ("sent", 2)
    assert received.message["Message-ID"] == row["provider_response_id"]
    # The id is derived from the key alone, so the failed first attempt used it too.
    from activities.channels.email import message_id
    assert row["provider_response_id"] == message_id(mail.key, "escalations@support.example")


async def test_email_over_starttls(pg_pool, http_client, tmp_path):
    try:
        cert = self_signed_cert(tmp_path)
    except FileNotFoundError as exc:
        pytest.skip(f"STARTTLS test needs a certificate: {exc}")
    async with SmtpRecorder(users={SMTP_USER: SMTP_PASSWORD}, cert=cert, require_starttls=True) as smtp:
        acts = activities(
            pg_pool, http_client,
            **smtp_env(smtp, ESCALATION_SMTP_STARTTLS="true", ESCALATION_SMTP_CA_FILE=str(cert[0])),
        )
        mail = intent("email", "oncall@support.example")
        assert (await deliver(acts, batch(mail))).sent == [mail.key]
        [received] = smtp.received
    assert received.tls and received.login == SMTP_USER


async def test_email_permanent_failures(pg_pool, http_client):
    async with SmtpRecorder(users={SMTP_USER: SMTP_PASSWORD}) as smtp:
        wrong_password = activities(pg_pool, http_client, **smtp_env(smtp, ESCALATION_SMTP_PASSWORD="not-it-9876"))
        mail = intent("email", "oncall@support.example")
        outcome = await deliver(wrong_password, batch(mail))
        [failure] = outcome.failed
        assert failure.permanent and "authentication failed" in failure.error
        assert "not-it-9876" not in failure.error and SMTP_USER not in failure.error

        acts = activities(pg_pool, http_client, **smtp_env(smtp))
        smtp.rcpt_replies.append("550 5.1.1 No such user")
        refused = intent("email", "nobody@support.example", seq=2)
        no_address = intent("email", None, seq=3, audience="customer", recipient="customer")
        no_address.context["escalation"]["customer"].pop("email")
        outcome = await deliver(acts, batch(refused, no_address))
        errors = {f.key: f.error for f in outcome.failed}
        assert "550 5.1.1 No such user" in errors[refused.key]
        assert errors[no_address.key] == (
            "no e-mail address: the contact has no target and the customer has no email"
        )
        assert smtp.received == []
    for key in (mail.key, refused.key, no_address.key):
        assert (await ledger(pg_pool, key))["status"] == "failed"


# -- Jira -------------------------------------------------------------------

JIRA_ENV = {
    "ESCALATION_JIRA_BASE_URL": "",  # filled per test with the receiver's URL
    "ESCALATION_JIRA_EMAIL": JIRA_EMAIL,
    "ESCALATION_JIRA_API_TOKEN": JIRA_TOKEN,
}


def text_of(node: Any) -> str:
    """All text of an ADF node, hard breaks as newlines."""
    if node.get("type") == "text":
        return node["text"]
    if node.get("type") == "hardBreak":
        return "\n"
    return "".join(text_of(child) for child in node.get("content", []))


async def test_jira_issue_carries_the_handoff_then_later_messages_comment(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, **{**JIRA_ENV, "ESCALATION_JIRA_BASE_URL": receiver.url})
    opened = intent("jira", "ESC", recipient="Engineering board")

    outcome = await deliver(acts, batch(opened))

    assert outcome == DeliveryOutcome(sent=[opened.key], jira_key="ESC-1")
    [create] = receiver.to("/rest/api/3/issue")
    expected_auth = "Basic " + base64.b64encode(f"{JIRA_EMAIL}:{JIRA_TOKEN}".encode()).decode()
    assert create.headers["Authorization"] == expected_auth
    assert create.headers["Idempotency-Key"] == opened.key
    fields = create.json()["fields"]
    assert fields["project"] == {"key": "ESC"}
    assert fields["summary"] == "[P1] Salesforce sync failing since yesterday"
    assert fields["issuetype"] == {"name": "Task"}
    assert fields["labels"] == ["P1", "escalation"]
    description = fields["description"]
    assert (description["type"], description["version"]) == ("doc", 1)
    nodes = description["content"]
    headings = [text_of(n) for n in nodes if n["type"] == "heading"]
    assert headings == ["Customer", "Impact", "Ticket history", "Error logs", "Integration ID", "Steps to reproduce"]

    def after(title: str) -> dict[str, Any]:
        index = next(i for i, n in enumerate(nodes) if n["type"] == "heading" and text_of(n) == title)
        return nodes[index + 1]

    assert text_of(after("Customer")) == "Acme Corp (acme, enterprise)"
    assert text_of(after("Impact")) == "250 users affected, critical"
    assert text_of(after("Ticket history")) == ESCALATION["handoff"]["ticket_history"]
    assert after("Error logs") == {
        "type": "codeBlock", "content": [{"type": "text", "text": "SyncError: INVALID_FIELD AccountRegion__c"}]
    }
    assert text_of(after("Integration ID")) == "sf-prod-7"
    assert text_of(after("Steps to reproduce")) == ESCALATION["handoff"]["steps_to_reproduce"]
    assert nodes[-1]["content"][0]["marks"] == [{"type": "link", "attrs": {"href": WORKFLOW_URL}}]
    async with pg_pool.acquire() as conn:
        link = await conn.fetchrow("SELECT * FROM jira_issues WHERE escalation_id = $1", ESC_ID)
    assert (link["ticket_id"], link["issue_key"]) == ("SF-1042", "ESC-1")
    assert (await ledger(pg_pool, opened.key))["provider_response_id"] == "ESC-1"

    breached = intent("jira", "ESC", seq=5, template="sla_breached", recipient="Engineering board")
    outcome = await deliver(acts, batch(breached))

    assert outcome == DeliveryOutcome(sent=[breached.key], jira_key="ESC-1")
    assert len(receiver.to("/rest/api/3/issue")) == 1, "a second issue was created"
    [comment] = receiver.to("/rest/api/3/issue/ESC-1/comment")
    body = comment.json()["body"]
    assert body["type"] == "doc"
    assert text_of(body["content"][0]) == "[P1] SLA breached: Salesforce sync failing since yesterday (SF-1042)"
    assert receiver.jira_issues["ESC-1"]["comments"] == [body]
    assert (await ledger(pg_pool, breached.key))["provider_response_id"] == "ESC-1/comment/20001"

    # Any later batch reports the issue, even one without Jira intents.
    log_only = intent("log", "support", seq=6, template="note_added")
    assert (await deliver(acts, batch(log_only))).jira_key == "ESC-1"


async def test_concurrent_attempts_create_one_jira_issue(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, **{**JIRA_ENV, "ESCALATION_JIRA_BASE_URL": receiver.url})
    receiver.jira_delay = 0.3  # the create is slow, so the two attempts overlap
    first = intent("jira", "ESC", seq=1, recipient="board")
    second = intent("jira", "ESC", seq=2, template="escalated", recipient="board")

    results = await asyncio.gather(
        deliver(acts, batch(first)), deliver(acts, batch(second)), return_exceptions=True
    )

    assert len(receiver.to("/rest/api/3/issue")) == 1
    [winner] = [r for r in results if isinstance(r, DeliveryOutcome)]
    [waiter] = [r for r in results if isinstance(r, ApplicationError)]
    assert winner.jira_key == "ESC-1"
    # The other one found the lock taken; retried by Temporal, it comments on ESC-1.
    assert waiter.type == "DeliveryRetryable" and "creating the Jira issue" in str(waiter)
    assert waiter.next_retry_delay == timedelta(seconds=1)
    loser = second if winner.sent == [first.key] else first
    outcome = await deliver(acts, batch(loser))
    assert outcome == DeliveryOutcome(sent=[loser.key], jira_key="ESC-1")
    assert len(receiver.to("/rest/api/3/issue/ESC-1/comment")) == 1


async def test_jira_rejections_are_permanent(pg_pool, http_client, receiver):
    wrong_token = activities(
        pg_pool, http_client,
        **{**JIRA_ENV, "ESCALATION_JIRA_BASE_URL": receiver.url, "ESCALATION_JIRA_API_TOKEN": "wrong-token-555"},
    )
    opened = intent("jira", "ESC", recipient="board")
    bad_project = intent("jira", "not a key", seq=2, recipient="board")

    outcome = await deliver(wrong_token, batch(opened, bad_project))

    errors = {f.key: f.error for f in outcome.failed}
    assert errors[opened.key].startswith("Jira http://127.0.0.1:")
    assert "HTTP 401 Unauthorized" in errors[opened.key]
    assert "wrong-token-555" not in errors[opened.key]
    assert errors[bad_project.key] == "not a Jira project key: 'not a key' (e.g. ESC)"
    assert outcome.jira_key is None


# -- the ledger: exactly once visible ----------------------------------------


async def test_a_repeated_attempt_delivers_nothing_twice(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_WEBHOOK_SECRET=SECRET)
    hook = intent("webhook", f"{receiver.url}/hook")
    logged = intent("log", "support", recipient="Support on-call")

    first = await deliver(acts, batch(hook, logged))
    second = await deliver(acts, batch(hook, logged))

    assert first == DeliveryOutcome(sent=[hook.key, logged.key])
    assert second == DeliveryOutcome(already_sent=[hook.key, logged.key])
    assert len(receiver.to("/hook")) == 1
    assert (await ledger(pg_pool, hook.key))["attempts"] == 1


async def test_server_errors_are_retried_with_the_same_key(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_WEBHOOK_SECRET=SECRET)
    receiver.script("/hook", Reply(500, "boom"), Reply(500, "boom"))
    hook = intent("webhook", f"{receiver.url}/hook")

    error = await deliver_retryable(acts, batch(hook))
    assert "HTTP 500" in str(error) and error.next_retry_delay is None
    row = await ledger(pg_pool, hook.key)
    assert (row["status"], row["attempts"], row["claimed_until"]) == ("pending", 1, None)
    assert row["last_error"] == f"webhook {receiver.url}: HTTP 500 Internal Server Error: boom"

    await deliver_retryable(acts, batch(hook))
    assert (await ledger(pg_pool, hook.key))["attempts"] == 2

    outcome = await deliver(acts, batch(hook))
    assert outcome.sent == [hook.key]
    row = await ledger(pg_pool, hook.key)
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 3, None)
    requests = receiver.to("/hook")
    assert len(requests) == 3
    assert {r.headers["Idempotency-Key"] for r in requests} == {hook.key}
    assert len({r.body for r in requests}) == 1, "the body must not change between retries"
    assert all(verify(receiver_secret(hook.target), r.headers, r.body) for r in requests)


async def test_a_hanging_receiver_times_out_and_is_retried(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_WEBHOOK_SECRET=SECRET, ESCALATION_NOTIFY_TIMEOUT="0.3")
    receiver.script("/slow", Reply(delay=5))
    hook = intent("webhook", f"{receiver.url}/slow")

    error = await deliver_retryable(acts, batch(hook))

    assert "no response within 0.3s" in str(error)
    row = await ledger(pg_pool, hook.key)
    assert row["status"] == "pending" and "no response within 0.3s" in row["last_error"]
    assert (await deliver(acts, batch(hook))).sent == [hook.key]


async def test_rate_limits_pass_retry_after_to_temporal(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_SLACK_WEBHOOK_URL=f"{receiver.url}/slack")
    receiver.script("/slack", Reply(429, "rate_limited", headers={"Retry-After": "7"}))

    error = await deliver_retryable(acts, batch(intent("slack", "#support")))

    assert error.next_retry_delay == timedelta(seconds=7)


@pytest.mark.parametrize(("status", "body"), [(401, "invalid_token"), (400, "invalid_payload"), (404, "no_service")])
async def test_client_errors_are_permanent_and_reported_not_raised(pg_pool, http_client, receiver, status, body):
    secret_url = f"{receiver.url}/services/T0/B0/XyZsecretPath123"
    acts = activities(pg_pool, http_client, ESCALATION_SLACK_WEBHOOK_URL=secret_url)
    receiver.script("/services/T0/B0/XyZsecretPath123", Reply(status, body))
    message = intent("slack", "#support")

    outcome = await deliver(acts, batch(message))

    [failure] = outcome.failed
    assert (failure.key, failure.channel, failure.recipient, failure.permanent) == (
        message.key, "slack", "Tier 2 on-call", True
    )
    assert failure.error.startswith(f"Slack webhook for #support: HTTP {status}")
    assert failure.error.endswith(body)
    assert "XyZsecretPath123" not in failure.error
    row = await ledger(pg_pool, message.key)
    assert (row["status"], row["last_error"], row["attempts"]) == ("failed", failure.error, 1)

    # Reported again on a later attempt, and not sent again.
    again = await deliver(acts, batch(message))
    assert again.failed == outcome.failed
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("channel", "target", "env", "expected"),
    [
        ("webhook", "http://127.0.0.1:9/hook", {}, "ESCALATION_WEBHOOK_SECRET is not set"),
        ("slack", "#eng-oncall", {},
         "no Slack webhook URL for #eng-oncall: set ESCALATION_SLACK_WEBHOOK_URL_ENG_ONCALL or "
         "ESCALATION_SLACK_WEBHOOK_URL"),
        ("teams", None, {}, "no Teams webhook URL for the default channel: set ESCALATION_TEAMS_WEBHOOK_URL"),
        ("email", "a@b.example", {"ESCALATION_SMTP_USERNAME": "bot"},
         "e-mail is not configured: ESCALATION_SMTP_HOST, ESCALATION_SMTP_FROM, ESCALATION_SMTP_PASSWORD "
         "are not set"),
        ("jira", "ESC", {"ESCALATION_JIRA_BASE_URL": "https://x.atlassian.net", "ESCALATION_JIRA_EMAIL": "a@b.c"},
         "Jira is not configured: ESCALATION_JIRA_API_TOKEN is not set"),
        ("webhook", "ftp://files.example/in", {"ESCALATION_WEBHOOK_SECRET": SECRET},
         "webhook ftp://files.example: not a usable http(s) URL"),
    ],
)
async def test_missing_configuration_is_permanent_with_a_clear_message(
    pg_pool, http_client, channel, target, env, expected
):
    acts = activities(pg_pool, http_client, **env)
    message = intent(channel, target)

    outcome = await deliver(acts, batch(message))

    assert [(f.error, f.permanent) for f in outcome.failed] == [(expected, True)]
    assert (await ledger(pg_pool, message.key))["status"] == "failed"


async def test_connection_errors_are_retryable_and_never_show_the_secret_url(pg_pool, http_client):
    acts = activities(
        pg_pool, http_client, ESCALATION_TEAMS_WEBHOOK_URL="http://127.0.0.1:9/workflows/abc?sig=TopSecretSig99"
    )
    message = intent("teams", "eng")

    error = await deliver_retryable(acts, batch(message))

    row = await ledger(pg_pool, message.key)
    assert row["last_error"].startswith("Teams webhook for eng: ConnectError")
    for text in (str(error), row["last_error"], repr(error.details)):
        assert "TopSecretSig99" not in text and "/workflows/abc" not in text


async def test_a_live_claim_of_another_attempt_is_left_alone(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_WEBHOOK_SECRET=SECRET)
    busy = intent("webhook", f"{receiver.url}/busy")
    free = intent("webhook", f"{receiver.url}/free", recipient="other")
    assert await deliver(acts, batch()) == DeliveryOutcome()  # an empty batch is fine
    async with pg_pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO notifications (idempotency_key, escalation_id, ticket_id, seq, audience, recipient,
                                          channel, target, template, context, status, attempts, claimed_until)
               VALUES ($1, $2, 'SF-1042', 1, 'owner', 'Tier 2 on-call', 'webhook', $3, 'escalation_opened',
                       '{}'::jsonb, 'sending', 1, now() + interval '30 seconds')""",
            busy.key, ESC_ID, busy.target,
        )

    error = await deliver_retryable(acts, batch(busy, free))

    assert "being delivered by a concurrent attempt" in str(error)
    assert timedelta(seconds=25) < error.next_retry_delay <= timedelta(seconds=31)
    assert receiver.to("/busy") == [] and len(receiver.to("/free")) == 1
    assert error.details[0]["sent"] == [free.key]

    # The claim's worker died: once its lease has run out the next attempt takes over.
    async with pg_pool.acquire() as conn:
        await conn.execute(
            "UPDATE notifications SET claimed_until = now() - interval '1 second' WHERE idempotency_key = $1",
            busy.key,
        )
    outcome = await deliver(acts, batch(busy, free))
    assert outcome == DeliveryOutcome(sent=[busy.key], already_sent=[free.key])
    assert (await ledger(pg_pool, busy.key))["attempts"] == 2


async def test_one_destination_keeps_its_order_others_go_on(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_WEBHOOK_SECRET=SECRET)
    receiver.script("/a", Reply(503, "down"))
    first = intent("webhook", f"{receiver.url}/a", seq=1)
    second = intent("webhook", f"{receiver.url}/a", seq=2, template="escalated")
    elsewhere = intent("webhook", f"{receiver.url}/b", seq=1, recipient="other")

    error = await deliver_retryable(acts, batch(first, second, elsewhere))

    assert [r["key"] for r in error.details[0]["retry"]] == [first.key, second.key]
    assert (await ledger(pg_pool, second.key))["attempts"] == 0  # not tried out of order
    assert len(receiver.to("/b")) == 1

    outcome = await deliver(acts, batch(first, second, elsewhere))
    assert outcome == DeliveryOutcome(sent=[first.key, second.key], already_sent=[elsewhere.key])
    assert [r.json()["seq"] for r in receiver.to("/a")] == [1, 1, 2]


async def test_log_channel_records_and_logs(pg_pool, http_client, caplog):
    acts = activities(pg_pool, http_client)
    message = intent("log", "support", recipient="Support on-call")

    with caplog.at_level(logging.INFO, logger="escalations.notifications.log"):
        outcome = await deliver(acts, batch(message))

    assert outcome.sent == [message.key]
    row = await ledger(pg_pool, message.key)
    assert (row["status"], row["provider_response_id"], row["channel"], row["target"]) == (
        "sent", "log", "log", "support"
    )
    assert row["context"]["escalation"]["ticket_id"] == "SF-1042"
    assert any(message.key in r.getMessage() and SUBJECT in r.getMessage() for r in caplog.records)


async def test_malformed_batches_fail_without_writing(pg_pool, http_client):
    acts = activities(pg_pool, http_client)
    broken = intent("log", "support")
    broken.context.pop("escalation")
    stranger = intent("log", "support", seq=2).model_copy(update={"escalation_id": "other-run"})

    for work, message in ((batch(broken), "no 'escalation'"), (batch(stranger), "belongs to escalation other-run")):
        with pytest.raises(ApplicationError, match=message) as caught:
            await deliver(acts, work)
        assert caught.value.non_retryable and caught.value.type == "InvalidNotification"
    async with pg_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM notifications") == 0


# -- settings ---------------------------------------------------------------


def test_settings_from_env():
    settings = NotificationSettings.from_env({
        "ESCALATION_NOTIFY_TIMEOUT": "5s",
        "ESCALATION_SMTP_PORT": "465",
        "ESCALATION_SMTP_TLS": "true",
        "ESCALATION_SMTP_PASSWORD": "pw-123",
        "ESCALATION_SLACK_WEBHOOK_URL_eng-oncall": "https://hooks.slack.com/services/T/B/abcdefgh",
        "ESCALATION_TEAMS_WEBHOOK_URL": "",
        "TEMPORAL_NAMESPACE": "prod",
        "ESCALATION_UI_URL": "https://temporal.example/",
    })
    assert settings.request_timeout == 5.0 and settings.smtp_port == 465
    assert settings.smtp_tls and not settings.smtp_starttls
    assert settings.teams_webhook_url is None
    assert settings.chat_webhook_url("slack", "#Eng-Oncall") is not None
    assert settings.chat_webhook_url("slack", "#other") is None
    assert settings.workflow_url("escalation-SF 1") == (
        "https://temporal.example/namespaces/prod/workflows/escalation-SF%201"
    )
    assert "pw-123" not in repr(settings) and "abcdefgh" not in repr(settings)
    assert settings.redact("POST /services/T/B/abcdefgh failed (pw-123)") == "POST [redacted] failed ([redacted])"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ESCALATION_SMTP_STARTTLS": "maybe"}, "ESCALATION_SMTP_STARTTLS: Input should be a valid boolean"),
        ({"ESCALATION_SMTP_PORT": "smtp"}, "ESCALATION_SMTP_PORT: Input should be a valid integer"),
        ({"ESCALATION_NOTIFY_TIMEOUT": "60", "ESCALATION_NOTIFY_LEASE": "90"}, "at least three times"),
    ],
)
def test_settings_reject_bad_values(env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        NotificationSettings.from_env(env)

"""What notifications send, made safe: each hole the issue saw, against real receivers.

``send_notifications`` runs through ``ActivityEnvironment`` against local HTTP and SMTP
receivers (tests/helpers/receivers.py) and a real PostgreSQL (the Jira issue ledger):

* e-mail goes to exactly one validated address, given to the SMTP server explicitly;
* a message that cannot be rendered fails its own intent, permanently, and no other;
* each webhook destination has its own signing key (a customer's never verifies an internal
  webhook), printed for its receiver by ``escalations webhook-secret``;
* a Jira issue key is checked before it goes into a URL path;
* a receiver's answer is read up to ``ESCALATION_NOTIFY_MAX_RESPONSE_BYTES`` and no further;
* an idempotency key that is no valid header value as it stands still goes out.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from standardwebhooks.webhooks import Webhook
from temporalio.testing import ActivityEnvironment
from typer.testing import CliRunner

from activities.notifications import NotificationActivities
from escalations.settings import ConfigError, NotificationSettings, derive_webhook_secret
from schemas.notifications import DeliveryBatch, NotificationIntent, SendOutcome, notification_key
from tests.helpers.receivers import HttpRecorder, Reply, SmtpRecorder

ESC_ID = "0195f3c2-safety-1"
MASTER = "safety-master-secret-0c1d2e3f4a5b6c7d8e9f"
JIRA = {"ESCALATION_JIRA_EMAIL": "bot@example.test", "ESCALATION_JIRA_API_TOKEN": "jira-token-31337"}
ESCALATION: dict[str, Any] = {
    "ticket_id": "SF-1042", "workflow_id": "escalation-SF-1042", "title": "Salesforce sync failing since yesterday",
    "priority": "P1", "kind": "priority", "status": "open", "level": "tier2", "level_name": "Tier 2 Support",
    "owner": "Dana",
    "customer": {"id": "acme", "name": "Acme Corp", "timezone": "Europe/Berlin", "email": "ops@acme.example"},
    "impact": {"users_affected": 250, "critical": True},
    "deadlines": {"ack_due": "2026-11-27T12:30:00Z", "resolve_due": "2026-11-27T16:00:00Z",
                  "next_customer_update_due": "2026-11-27T13:00:00Z"},
}


def intent(channel: str, target: str | None, *, seq: int = 1, template: str = "escalation_opened",
           audience: str = "owner", recipient: str = "Tier 2 on-call", escalation: dict[str, Any] | None = None,
           **extra: Any) -> NotificationIntent:
    return NotificationIntent(
        key=notification_key(ESC_ID, seq, recipient, channel), escalation_id=ESC_ID, ticket_id="SF-1042",
        seq=seq, audience=audience, recipient=recipient, channel=channel, target=target, template=template,
        context={"escalation": copy.deepcopy(escalation or ESCALATION), **extra})


def activities(pool: asyncpg.Pool, http: httpx.AsyncClient, **env: str) -> NotificationActivities:
    settings = NotificationSettings.from_env({"ESCALATION_UI_URL": "https://ui.test", **env})
    return NotificationActivities(pool, settings, http)


async def send(acts: NotificationActivities, *intents: NotificationIntent) -> SendOutcome:
    batch = DeliveryBatch(escalation_id=ESC_ID, ticket_id="SF-1042", intents=list(intents))
    return await ActivityEnvironment().run(acts.send_notifications, batch)


def smtp_env(smtp: SmtpRecorder) -> dict[str, str]:
    return {"ESCALATION_SMTP_HOST": smtp.host, "ESCALATION_SMTP_PORT": str(smtp.port),
            "ESCALATION_SMTP_STARTTLS": "false", "ESCALATION_SMTP_FROM": "Escalations <escalations@support.example>"}


@pytest_asyncio.fixture
async def http_client() -> Any:
    async with httpx.AsyncClient() as client:
        yield client


@pytest_asyncio.fixture
async def receiver() -> Any:
    async with HttpRecorder(jira_auth=(JIRA["ESCALATION_JIRA_EMAIL"], JIRA["ESCALATION_JIRA_API_TOKEN"])) as recorder:
        yield recorder


# -- e-mail ---------------------------------------------------------------------


async def test_email_goes_to_exactly_one_address_given_to_the_server(pg_pool, http_client):
    listed = {**ESCALATION, "customer": {**ESCALATION["customer"], "email": "a@x.example, b@y.example, c@z.example"}}
    async with SmtpRecorder() as smtp:
        acts = activities(pg_pool, http_client, **smtp_env(smtp))
        customer = intent("email", None, template="customer_escalated", audience="customer", recipient="customer",
                          escalation=listed)  # a run started before the intake checked the address
        named = intent("email", "Tier 2 on-call <oncall@support.example>", seq=2)
        listed_target = intent("email", "oncall@support.example, boss@support.example", seq=3, recipient="board")

        outcome = await send(acts, customer, named, listed_target)

        errors = {f.key: f.error for f in outcome.failed}
        assert errors == {
            customer.key: "the recipient must be exactly one e-mail address: 'a@x.example, b@y.example, c@z.example'",
            listed_target.key: "the recipient must be exactly one e-mail address: "
                               "'oncall@support.example, boss@support.example'",
        }
        assert all(f.permanent for f in outcome.failed)
        assert [s.key for s in outcome.sent] == [named.key]
        [received] = smtp.received
    assert received.rcpt_tos == ["oncall@support.example"]
    assert received.message["To"] == "oncall@support.example"


async def test_a_message_that_cannot_be_rendered_fails_alone(pg_pool, http_client, receiver):
    crlf = {**ESCALATION, "title": "Sync failing\r\nBcc: victim@evil.example"}  # accepted before the intake refused it
    async with SmtpRecorder() as smtp:
        acts = activities(pg_pool, http_client, ESCALATION_WEBHOOK_SECRET=MASTER, **smtp_env(smtp))
        mail = intent("email", "oncall@support.example", escalation=crlf)
        broken = intent("webhook", f"{receiver.url}/customer", seq=2, template="customer_resolved", audience="customer",
                        recipient="customer",
                        resolution={"root_cause": "x", "mitigation": "y", "preventive_actions": 5})
        logged = intent("log", "support", seq=3, recipient="Support on-call")

        outcome = await send(acts, mail, broken, logged)

        [failure] = outcome.failed
        assert (failure.key, failure.permanent) == (broken.key, True)
        assert failure.error == ("cannot render customer_resolved: resolution.preventive_actions is not a list: int")
        assert sorted(s.key for s in outcome.sent) == sorted([mail.key, logged.key]) and outcome.retry == []
        [received] = smtp.received
    assert received.message["Subject"] == (
        "[P1] New escalation for Acme Corp: Sync failing Bcc: victim@evil.example (SF-1042)")
    assert received.message["Bcc"] is None and received.rcpt_tos == ["oncall@support.example"]
    assert receiver.to("/customer") == []


# -- webhooks ---------------------------------------------------------------------


async def test_every_webhook_destination_has_its_own_key(pg_pool, http_client, receiver, monkeypatch):
    acts = activities(pg_pool, http_client, ESCALATION_WEBHOOK_SECRET=MASTER)
    url = f"{receiver.url}/hooks/escalations"
    internal = intent("webhook", url, recipient="Incident bridge")
    customer = intent("webhook", url, seq=2, template="customer_escalated", audience="customer", recipient="customer")
    other = intent("webhook", f"{receiver.url}/hooks/other", seq=3, recipient="Other hook")

    outcome = await send(acts, internal, customer, other)

    assert sorted(s.key for s in outcome.sent) == sorted([internal.key, customer.key, other.key])
    by_key = {r.headers["webhook-id"]: r for r in receiver.requests}
    internal_key = derive_webhook_secret(MASTER, url, customer=False)
    customer_key = derive_webhook_secret(MASTER, url, customer=True)
    assert len({internal_key, customer_key, derive_webhook_secret(MASTER, f"{receiver.url}/hooks/other",
                                                                  customer=False)}) == 3

    def verifies(secret: str, key: str) -> bool:
        request = by_key[key]
        try:
            Webhook(secret).verify(request.body, dict(request.headers))
        except Exception:  # noqa: BLE001 - any refusal of the verifier counts as "does not verify"
            return False
        return True

    assert verifies(internal_key, internal.key) and verifies(customer_key, customer.key)
    # The customer can verify its own webhooks, and cannot forge an internal one.
    assert not verifies(customer_key, internal.key) and not verifies(internal_key, customer.key)
    assert not verifies(internal_key, other.key)

    # The receiver gets its key from the command line, from the same master secret.
    from starter import build_app

    runner = CliRunner()
    monkeypatch.setenv("ESCALATION_WEBHOOK_SECRET", MASTER)
    printed = runner.invoke(build_app(), ["webhook-secret", url])
    assert (printed.exit_code, printed.stdout.strip()) == (0, internal_key)
    printed = runner.invoke(build_app(), ["webhook-secret", url, "--customer"])
    assert printed.stdout.strip() == customer_key


def test_webhook_secret_command_without_a_master_secret_says_so(monkeypatch, tmp_path):
    from starter import build_app

    monkeypatch.delenv("ESCALATION_WEBHOOK_SECRET", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    result = CliRunner().invoke(build_app(), ["webhook-secret", "https://hooks.example/x", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "ESCALATION_WEBHOOK_SECRET is not set" in result.stderr


def test_a_short_master_secret_is_refused_without_showing_it():
    with pytest.raises(ConfigError) as caught:
        NotificationSettings.from_env({"ESCALATION_WEBHOOK_SECRET": "changeme"})
    assert "ESCALATION_WEBHOOK_SECRET: must be at least 32 characters" in str(caught.value)
    assert "changeme" not in str(caught.value)


async def test_a_key_that_is_no_header_value_still_goes_out(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_WEBHOOK_SECRET=MASTER)
    hook = intent("webhook", f"{receiver.url}/hook", recipient="Zoë's on-call")

    outcome = await send(acts, hook)

    assert [s.key for s in outcome.sent] == [hook.key]
    [request] = receiver.to("/hook")
    sent_as = f"{ESC_ID}:1:Zo%C3%AB's on-call:webhook"
    assert request.headers["Idempotency-Key"] == request.headers["webhook-id"] == sent_as
    assert request.json()["key"] == hook.key
    Webhook(derive_webhook_secret(MASTER, hook.target, customer=False)).verify(request.body, dict(request.headers))


# -- Jira -------------------------------------------------------------------------


async def test_an_issue_key_from_jira_is_checked_before_it_is_used(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_JIRA_BASE_URL=receiver.url, **JIRA)
    receiver.script("/rest/api/3/issue", Reply(201, {"id": "1", "key": "ESC-1/../../../rest/api/3/myself?x="}))

    outcome = await send(acts, intent("jira", "ESC", recipient="board"))

    [failure] = outcome.failed
    assert failure.permanent
    assert failure.error == "not a Jira issue key in Jira's answer to the create: 'ESC-1/../../../rest/api/3/myself?x='"
    assert outcome.jira_key is None
    async with pg_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM jira_issues WHERE escalation_id = $1", ESC_ID) == 0


async def test_a_recorded_issue_key_is_checked_before_it_is_used(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_JIRA_BASE_URL=receiver.url, **JIRA)
    async with pg_pool.acquire() as conn:
        await conn.execute("INSERT INTO jira_issues (escalation_id, ticket_id, issue_key) VALUES ($1, 'SF-1042', $2)",
                           ESC_ID, "ESC-1/../../admin")

    outcome = await send(acts, intent("jira", "ESC", seq=4, template="sla_breached", recipient="board"))

    assert [f.error for f in outcome.failed] == [
        f"not a Jira issue key recorded for escalation {ESC_ID}: 'ESC-1/../../admin'"]
    assert receiver.requests == []


# -- answers read up to a cap ---------------------------------------------------------


async def test_an_endless_answer_is_read_up_to_the_cap(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_WEBHOOK_SECRET=MASTER, ESCALATION_NOTIFY_TIMEOUT="2")
    receiver.script("/endless", Reply(200, endless=True, headers={"X-Request-Id": "req-endless"}))
    receiver.script("/endless-error", Reply(503, endless=True))
    ok = intent("webhook", f"{receiver.url}/endless")
    failing = intent("webhook", f"{receiver.url}/endless-error", seq=2, recipient="other")

    started = time.monotonic()
    outcome = await send(acts, ok, failing)

    assert time.monotonic() - started < 3.0  # not the 4 s the send may take at most
    assert [(s.key, s.provider_response_id) for s in outcome.sent] == [(ok.key, "req-endless")]
    [retry] = outcome.retry
    assert retry.key == failing.key
    assert retry.error.startswith(f"webhook {receiver.url}: HTTP 503 Service Unavailable: xxx")
    assert len(retry.error) <= 500


async def test_a_jira_answer_longer_than_the_cap_is_refused(pg_pool, http_client, receiver):
    acts = activities(pg_pool, http_client, ESCALATION_JIRA_BASE_URL=receiver.url,
                      ESCALATION_NOTIFY_MAX_RESPONSE_BYTES="1024", **JIRA)
    receiver.script("/rest/api/3/issue", Reply(201, {"id": "1", "key": "ESC-1", "padding": "x" * 4096}))

    outcome = await send(acts, intent("jira", "ESC", recipient="board"))

    assert [f.error for f in outcome.failed] == [
        f"Jira {receiver.url} answered HTTP 201 with more than 1024 bytes (ESCALATION_NOTIFY_MAX_RESPONSE_BYTES)"]

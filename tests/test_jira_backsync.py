"""Jira back-sync: comments and transitions on an escalation's Jira issue come back to it.

Payloads are Jira Cloud's documented webhook shapes (tests/fixtures/jira/), signed as a Jira
admin webhook with a secret signs them (``X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw
body>``), posted to the real API, which drives a real run (real Temporal, real PostgreSQL);
the issue itself is created by the Jira channel on a local fake Jira (tests/helpers/receivers.py).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from activities.policy import policy_digest
from escalations.api.app import create_app
from schemas.escalation import EscalationState
from schemas.jira import CommentEvent, Ignored, JiraWebhook, Note, Resolve, TransitionEvent, decide, read_event
from schemas.policy import JIRA_MITIGATION, JIRA_ROOT_CAUSE, JiraSync, PolicyError, load_policy_file, parse_policy
from tests.helpers.api import api_settings, bearer
from tests.helpers.paths import TESTS
from tests.helpers.policies import policy_path, released_document, write_policy
from tests.helpers.polling import eventually
from tests.helpers.receivers import HttpRecorder
from tests.helpers.requests import blog_request

FIXTURES = TESTS / "fixtures" / "jira"
WEBHOOK_SECRET = "jira-webhook-secret-6d1f0b9e"
JIRA_EMAIL, JIRA_TOKEN = "bot@example.test", "jira-token-31337"
PRIYA = "5b10ac8d82e05b22cc7d4ef5"
JIRA_POLICY = {"priorities": {"P1": "Highest", "P2": "High", "P3": "Medium", "P4": "Low"},
               "statuses": {"In Review": "note", "Done": "resolve"}}


def fixture(name: str, issue_key: str = "ESC-1") -> dict[str, Any]:
    document = json.loads((FIXTURES / f"{name}.json").read_text())
    document["issue"]["key"] = issue_key
    return document


def signed(document: dict[str, Any], *, secret: str = WEBHOOK_SECRET, delivery: str | None = None
           ) -> tuple[bytes, dict[str, str]]:
    """The body as Jira sends it and its headers: the signature and a delivery id."""
    body = json.dumps(document).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Hub-Signature": f"sha256={digest}",
                  "X-Atlassian-Webhook-Identifier": delivery or str(uuid.uuid4())}


# -- what a payload says, and what the policy makes of it (pure) --------------------------


def test_the_documented_payloads_read_as_comment_and_transitions():
    comment = read_event(JiraWebhook.model_validate(fixture("comment_created")))
    assert comment == CommentEvent(
        issue_key="ESC-1", comment_id="10148", account_id=PRIYA, author="Priya Raman",
        text="Found it: AccountRegion__c was renamed in the customer's Salesforce org.\n"
             "Patching the field mapping now.")
    # The same comment, as jira:issue_updated carries it: the same receipt, so one note.
    again = read_event(JiraWebhook.model_validate(fixture("issue_updated_commented")))
    assert again == comment and again.receipt == "comment:10148"
    review = read_event(JiraWebhook.model_validate(fixture("issue_updated_in_review")))
    assert review == TransitionEvent(issue_key="ESC-1", changelog_id="10233", from_status="In Progress",
                                     to_status="In Review", resolution=None, account_id=PRIYA, author="Priya Raman")
    done = read_event(JiraWebhook.model_validate(fixture("issue_updated_done")))
    assert isinstance(done, TransitionEvent) and done.to_status == "Done" and done.resolution == "Done"
    assert done.receipt == "changelog:10234"


def test_events_and_changes_it_does_not_use_are_ignored():
    created = {**fixture("comment_created"), "webhookEvent": "jira:issue_created"}
    assert isinstance(read_event(JiraWebhook.model_validate(created)), Ignored)
    edited = fixture("issue_updated_in_review")
    edited["changelog"]["items"] = [{"field": "summary", "fromString": "a", "toString": "b"}]
    assert read_event(JiraWebhook.model_validate(edited)) == Ignored("jira:issue_updated on ESC-1 changes no status")
    blank = fixture("comment_created")
    blank["comment"]["body"] = " \n "
    assert isinstance(read_event(JiraWebhook.model_validate(blank)), Ignored)


def test_an_adf_comment_body_becomes_plain_text():
    document = fixture("comment_created")
    document["comment"]["body"] = {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [
            {"type": "mention", "attrs": {"id": "x", "text": "@Dana"}},
            {"type": "text", "text": " deployed the fix", "marks": [{"type": "strong"}]},
            {"type": "hardBreak"}, {"type": "text", "text": "to sf-prod-7\x00"}]},
        {"type": "bulletList", "content": [
            {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "mapping"}]}]},
            {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "backfill"}]}]},
        ]},
    ]}
    document["comment"]["author"]["displayName"] = "Priya\r\nRaman"
    event = read_event(JiraWebhook.model_validate(document))
    assert isinstance(event, CommentEvent)
    assert event.text == "@Dana deployed the fix\nto sf-prod-7\n\n- mapping\n- backfill"
    assert event.author == "Priya Raman"  # one line: a name never carries a line break


def test_the_policy_decides_what_comments_and_transitions_do():
    policy = JiraSync.model_validate(JIRA_POLICY)
    comment = read_event(JiraWebhook.model_validate(fixture("comment_created")))
    assert isinstance(comment, CommentEvent)
    note = decide(comment, policy)
    assert note == Note(author="Priya Raman", via=f"jira:{PRIYA}", text=comment.text, customer_visible=False)
    visible = decide(comment, policy.model_copy(update={"comments_customer_visible": True}))
    assert isinstance(visible, Note) and visible.customer_visible
    review = read_event(JiraWebhook.model_validate(fixture("issue_updated_in_review")))
    assert isinstance(review, TransitionEvent)
    assert decide(review, policy) == Note(author="Priya Raman", via=f"jira:{PRIYA}", customer_visible=False,
                                          text="Jira ESC-1 moved from In Progress to In Review.")
    done = read_event(JiraWebhook.model_validate(fixture("issue_updated_done")))
    assert isinstance(done, TransitionEvent)
    assert decide(done, policy) == Resolve(by="Priya Raman", via=f"jira:{PRIYA}", root_cause=JIRA_ROOT_CAUSE,
                                           mitigation=f"{JIRA_MITIGATION} Jira resolution: Done.")
    # Statuses compare ignoring case; a status the policy does not name does nothing.
    assert isinstance(decide(done, JiraSync(statuses={"DONE": "resolve"})), Resolve)
    ignored = decide(done, JiraSync())
    assert isinstance(ignored, Ignored) and "'Done'" in ignored.reason and "named: none" in ignored.reason


def test_bad_jira_sections_are_policy_errors_naming_their_path():
    document = json.loads(json.dumps(load_policy_file(policy_path("fast")).model_dump(mode="json")))
    document["jira"] = {"priorities": {"P5": "Highest", "P1": ""},
                        "statuses": {"Done": "close", "done": "note", "In Review": "note"}}
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    problems = "\n".join(caught.value.problems)
    assert "jira.priorities.P5: unknown key" in problems
    assert "jira.priorities.P1: String should have at least 1 character" in problems
    assert "jira.statuses.Done: Input should be 'note' or 'resolve'" in problems
    document["jira"] = {"statuses": {"Done": "resolve", "done": "note"}, "colour": "blue"}
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    problems = "\n".join(caught.value.problems)
    assert "jira.colour: unknown key" in problems
    assert "'done' and 'Done' name the same Jira status" in problems


def test_a_policy_without_a_jira_section_keeps_its_digest():
    """Versions in PostgreSQL were pinned with digests of documents without ``jira`` (nor
    ``contracts``); the same file must not read as changed now that the model has the key."""
    policy = load_policy_file(policy_path("fast"))
    released = released_document(policy)  # nor contracts, action_links or slack_user_id
    digest = hashlib.sha256(json.dumps(released, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert policy_digest(policy) == digest
    with_jira = policy.model_copy(update={"jira": JiraSync.model_validate(JIRA_POLICY)})
    assert policy_digest(with_jira) != digest


# -- through the real API to a real run ----------------------------------------------------


class Stack:
    def __init__(self, api: httpx.AsyncClient, jira: HttpRecorder, pool: asyncpg.Pool) -> None:
        self.api = api
        self.jira = jira
        self.pool = pool

    async def post(self, document: dict[str, Any], **options: Any) -> httpx.Response:
        body, headers = signed(document, **options)
        return await self.api.post("/integrations/jira/webhook", content=body,
                                   headers={**headers, "Authorization": ""})

    async def state(self, ticket: str) -> EscalationState:
        got = await self.api.get(f"/escalations/{ticket}")
        assert got.status_code == 200, got.text
        return EscalationState.model_validate(got.json())

    async def events(self, escalation_id: str, kind: str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch("SELECT payload FROM escalation_events WHERE escalation_id = $1 AND type = $2 "
                                     "ORDER BY seq", escalation_id, kind)
        return [row["payload"] for row in rows]


@pytest.fixture
def jira_policy(tmp_path):
    levels = json.loads(json.dumps(load_policy_file(policy_path("fast")).model_dump(mode="json")["levels"]))
    for level in levels:
        level["ack_within"] = "60s"
        level["contacts"] = [{"name": f"{level['id']} board", "channel": "jira", "target": "ESC"}]
    return write_policy(tmp_path, levels=levels, jira=JIRA_POLICY)


@pytest_asyncio.fixture
async def stack(client, task_queue, start_worker, database_url, pg_pool, jira_policy) -> AsyncIterator[Stack]:
    async with HttpRecorder(jira_auth=(JIRA_EMAIL, JIRA_TOKEN)) as jira:
        environ = {"ESCALATION_JIRA_BASE_URL": jira.url, "ESCALATION_JIRA_EMAIL": JIRA_EMAIL,
                   "ESCALATION_JIRA_API_TOKEN": JIRA_TOKEN}
        app = create_app(api_settings(client, database_url, task_queue, policy_file=str(jira_policy),
                                      jira_webhook_secret=WEBHOOK_SECRET))
        async with start_worker(jira_policy, environ=environ), app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60,
                                         headers=bearer("ops")) as api:
                yield Stack(api, jira, pg_pool)


async def opened_with_issue(stack: Stack) -> tuple[str, str, str]:
    """Start the blog's escalation (priority kind: tier2 and engineering are paged at once, so
    the channel creates the issue and comments on it); ``(ticket, escalation_id, issue key)``."""
    request = blog_request(kind="priority")
    started = await stack.api.post("/escalations", json=request.as_body())
    assert started.status_code == 201, started.text
    escalation_id = started.json()["run_id"]

    async def linked() -> str:
        key = await stack.pool.fetchval("SELECT issue_key FROM jira_issues WHERE escalation_id = $1", escalation_id)
        assert key is not None, "the Jira channel has not recorded the issue yet"
        assert await stack.pool.fetchval("SELECT count(*) FROM jira_own_comments WHERE issue_key = $1", key) == 1
        return key

    return request.ticket_id, escalation_id, await eventually(linked, timeout=20)


async def test_comments_and_transitions_come_back_to_the_escalation(stack: Stack):
    ticket, escalation_id, key = await opened_with_issue(stack)
    issue = stack.jira.jira_issues[key]
    # The issue carries the Jira priority the policy maps P1 to, beside the P1 label.
    assert issue["fields"]["priority"] == {"name": "Highest"}
    assert issue["fields"]["labels"] == ["P1", "escalation"]

    # A colleague's comment becomes a note by its author, through jira:<accountId>, internal.
    comment = fixture("comment_created", key)
    delivery = str(uuid.uuid4())
    noted = await stack.post(comment, delivery=delivery)
    assert noted.status_code == 200, noted.text
    assert noted.json() == {"outcome": "noted", "reason": None, "issue_key": key, "ticket_id": ticket}
    assert (await stack.state(ticket)).counts.notes == 1

    async def recorded() -> dict[str, Any]:
        notes = await stack.events(escalation_id, "note_added")
        assert len(notes) == 1, notes  # projected a moment after the update answered
        return notes[0]

    note = await eventually(recorded)
    assert note["author"] == "Priya Raman" and note["via"] == f"jira:{PRIYA}"
    assert note["text"] == comment["comment"]["body"] and note["customer_visible"] is False

    # Replays change nothing: the same delivery again, the same comment through jira:issue_updated.
    for replay, same_delivery in ((comment, delivery), (fixture("issue_updated_commented", key), None)):
        answer = await stack.post(replay, delivery=same_delivery)
        assert answer.status_code == 200 and answer.json()["outcome"] == "ignored", answer.text
        assert "already processed" in answer.json()["reason"]
    assert (await stack.state(ticket)).counts.notes == 1

    # The comment the channel posted itself (the engineering page) never loops back, nor does any
    # other comment by the account Jira says wrote it.
    own_id = await stack.pool.fetchval("SELECT comment_id FROM jira_own_comments WHERE issue_key = $1", key)
    ours = fixture("comment_created", key)
    ours["comment"].update(id=own_id, author=stack.jira.jira_account, body="[P1] New escalation for Acme Corp")
    for comment_id in (own_id, "99999"):
        ours["comment"]["id"] = comment_id
        answer = await stack.post(ours)
        assert answer.status_code == 200 and answer.json()["outcome"] == "ignored", answer.text
        assert "posted by the escalation service" in answer.json()["reason"]
    # An issue no escalation has, and a status the policy does not name: ignored.
    unknown = await stack.post(fixture("comment_created", "ESC-404"))
    assert unknown.json() == {"outcome": "ignored", "reason": "no escalation has the Jira issue ESC-404",
                              "issue_key": "ESC-404", "ticket_id": None}
    blocked = fixture("issue_updated_in_review", key)
    blocked["changelog"].update(id="10299", items=[{"field": "status", "fieldId": "status",
                                                    "fromString": "In Progress", "toString": "Blocked"}])
    answer = await stack.post(blocked)
    assert answer.json()["outcome"] == "ignored" and "'Blocked'" in answer.json()["reason"]
    # A bad or missing signature is refused before anything is read.
    body, headers = signed(fixture("issue_updated_done", key), secret="not-the-secret")
    wrong = await stack.api.post("/integrations/jira/webhook", content=body, headers=headers)
    assert wrong.status_code == 401 and "does not match" in wrong.json()["detail"]
    body, headers = signed(fixture("issue_updated_done", key))
    tampered = await stack.api.post("/integrations/jira/webhook", content=body.replace(b"Done", b"Open"),
                                    headers=headers)
    assert tampered.status_code == 401
    del headers["X-Hub-Signature"]
    missing = await stack.api.post("/integrations/jira/webhook", content=body, headers=headers)
    assert missing.status_code == 401 and "missing" in missing.json()["detail"]
    state = await stack.state(ticket)
    assert state.status == "open" and state.counts.notes == 1

    # Into "In Review": a note announcing it.
    review = await stack.post(fixture("issue_updated_in_review", key))
    assert review.json()["outcome"] == "noted", review.text

    async def announced() -> dict[str, Any]:
        notes = await stack.events(escalation_id, "note_added")
        assert len(notes) == 2
        return notes[1]

    announcement = await eventually(announced)
    assert announcement["text"] == f"Jira {key} moved from In Progress to In Review."
    assert announcement["author"] == "Priya Raman" and announcement["via"] == f"jira:{PRIYA}"

    # Into "Done": the policy says resolve.
    done = fixture("issue_updated_done", key)
    resolved = await stack.post(done)
    assert resolved.json() == {"outcome": "resolved", "reason": None, "issue_key": key, "ticket_id": ticket}
    state = await stack.state(ticket)
    assert state.status == "resolved" and state.resolution is not None
    assert state.resolution.by == "Priya Raman" and state.resolution.via == f"jira:{PRIYA}"
    assert state.resolution.root_cause == JIRA_ROOT_CAUSE
    assert state.resolution.mitigation == f"{JIRA_MITIGATION} Jira resolution: Done."
    # The same transition delivered again, and a comment after the resolve, change nothing.
    again = await stack.post(done)
    assert again.json()["outcome"] == "ignored" and "already processed" in again.json()["reason"]
    late = fixture("comment_created", key)
    late["comment"]["id"] = "10200"
    refused = await stack.post(late)
    assert refused.json()["outcome"] == "ignored" and "is resolved" in refused.json()["reason"], refused.text
    assert (await stack.state(ticket)).counts.notes == 2


async def test_the_secret_then_the_signature_then_the_body_are_checked(client, task_queue, database_url, pg_pool):
    """Unset secret: 503 naming it; then a missing or wrong signature 401, another media type 415,
    not JSON 400, not a Jira body 422; none of them records or changes anything."""
    body, headers = signed(fixture("comment_created"))
    unconfigured = create_app(api_settings(client, database_url, task_queue))
    async with unconfigured.router.lifespan_context(unconfigured):
        transport = httpx.ASGITransport(app=unconfigured, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            answer = await http.post("/integrations/jira/webhook", content=body, headers=headers)
    assert answer.status_code == 503, answer.text
    assert "ESCALATION_JIRA_WEBHOOK_SECRET" in answer.json()["detail"]

    app = create_app(api_settings(client, database_url, task_queue, jira_webhook_secret=WEBHOOK_SECRET))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            async def post(content: bytes, **changed: str) -> httpx.Response:
                sent = {**signed_headers(content), **changed}
                return await http.post("/integrations/jira/webhook", content=content,
                                       headers={k: v for k, v in sent.items() if v})

            assert (await post(body, **{"X-Hub-Signature": ""})).status_code == 401
            assert (await post(body, **{"X-Hub-Signature": headers["X-Hub-Signature"].replace("sha256", "sha1")})
                    ).status_code == 401
            assert (await post(body, **{"Content-Type": "text/plain"})).status_code == 415
            assert (await post(b"not json")).status_code == 400
            invalid = await post(json.dumps({"issue": {"key": "ESC-1"}}).encode())
            assert invalid.status_code == 422 and "webhookEvent" in invalid.text
    assert await pg_pool.fetchval("SELECT count(*) FROM jira_webhook_receipts") == 0


def signed_headers(body: bytes) -> dict[str, str]:
    digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Hub-Signature": f"sha256={digest}"}


def test_fixtures_keep_the_documented_shape():
    """The envelope Jira documents for its webhooks: webhookEvent, timestamp, issue (id, key,
    fields), and the comment (id, author.accountId/displayName, body) or the changelog (id,
    items with field/fieldId, fromString, toString) the event concerns."""
    for name in ("comment_created", "issue_updated_commented", "issue_updated_in_review", "issue_updated_done"):
        document = fixture(name)
        assert isinstance(document["timestamp"], int) and document["webhookEvent"]
        assert {"id", "key", "fields"} <= set(document["issue"])
        if "comment" in document:
            comment = document["comment"]
            assert {"id", "author", "body", "created"} <= set(comment)
            assert {"accountId", "displayName"} <= set(comment["author"])
        if "changelog" in document:
            assert document["changelog"]["id"] and document["changelog"]["items"]
            assert all({"field", "fieldId", "fromString", "toString"} <= set(item)
                       for item in document["changelog"]["items"])

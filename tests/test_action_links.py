"""Signed action links, end to end: a real run pages Dana (tier2) on a local webhook receiver, the
page's ``actions`` point at the API, and following them acts, once, as Dana.

Real Temporal, real PostgreSQL, the real worker and the API in-process. ``GET`` changes nothing;
``POST`` acts once and a second says who already did it; a link of a level the escalation has
left, an expired, changed or misused one answers 4xx with why and changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from activities.policy import policy_digest
from escalations.links import ActionSigner, ActionToken, InvalidLink, parse_action_keys
from schemas.escalation import EscalationState
from schemas.policy import PolicyError, load_policy_file, parse_policy
from tests.helpers.escalations import current_state, start_escalation
from tests.helpers.policies import policy_path, released_document
from tests.helpers.polling import eventually
from tests.helpers.receivers import HttpRecorder
from tests.helpers.requests import blog_request
from tests.helpers.responders import (
    ACTION_KEY,
    NEW_ACTION_KEY,
    PUBLIC_URL,
    api_client,
    page,
    path_of,
    responders_policy,
    worker_environ,
)

HTML = "text/html"


def assert_page(response, status: int, *texts: str) -> str:  # type: ignore[no-untyped-def]
    """An HTML page of the API with ``status``, its security headers and ``texts``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(HTML)
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    assert "<script" not in response.text.lower()
    shown = html.unescape(response.text)
    for text in texts:
        assert text in shown, f"{text!r} not in the page:\n{response.text}"
    return shown


async def uses(pg_pool, escalation_id: str) -> list[dict]:  # type: ignore[no-untyped-def]
    rows = await pg_pool.fetch("SELECT actor, via, status, action, outcome FROM action_link_uses "
                               "WHERE escalation_id = $1 ORDER BY claimed_at", escalation_id)
    return [dict(row) for row in rows]


async def event_types(pg_pool, escalation_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [r["type"] for r in await pg_pool.fetch(
        "SELECT type FROM escalation_events WHERE escalation_id = $1 ORDER BY seq", escalation_id)]


async def test_acknowledge_from_the_link_in_the_page(client, task_queue, start_worker, pg_pool, database_url,
                                                     tmp_path):
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url)
        async with start_worker(policy, environ=worker_environ(hooks.url)), \
                api_client(client, database_url, task_queue, policy) as api:
            handle = await start_escalation(client, blog_request(), task_queue)
            opened = await page(hooks, "/tier2", "escalation_opened")
            actions = opened["actions"]
            assert set(actions) == {"acknowledge", "escalate", "note"}
            assert all(url.startswith(f"{PUBLIC_URL}/actions/{name}/") for name, url in actions.items())
            assert f"Acknowledge: {actions['acknowledge']}" in opened["message"]["text"]
            link = path_of(actions["acknowledge"])

            # GET shows what it would do and a confirm button, and changes nothing.
            shown = await api.get(link)
            text = assert_page(shown, 200, f"Acknowledge {opened['ticket_id']}?", "as Dana",
                               "Nothing happens until you confirm", '<form method="post">',
                               "Acknowledge as Dana", "Tier 2 Support (tier2)")
            assert "Salesforce sync failing since yesterday" in text
            state = await current_state(handle)
            assert state.status == "open" and state.acknowledged_by is None
            assert await uses(pg_pool, state.escalation_id) == []

            # POST acknowledges, as Dana, through the link of the webhook page.
            done = await api.post(link)
            assert_page(done, 200, "Acknowledged by Dana at", "Through the link in the page to Dana (webhook)")
            state = await current_state(handle)
            assert (state.status, state.acknowledged_by, state.acknowledged_via) == (
                "acknowledged", "Dana", "link:webhook")
            [use] = await uses(pg_pool, state.escalation_id)
            assert (use["actor"], use["via"], use["status"], use["action"]) == (
                "Dana", "link:webhook", "done", "acknowledge")
            assert use["outcome"].startswith("Acknowledged by Dana at ")

            # Once: a second POST (a replay, a double click) says who did it, and does nothing.
            again = await api.post(link)
            assert_page(again, 409, "Already done", "Acknowledged by Dana at", "this link was used by Dana "
                                    "through link:webhook", "it acts only once")
            assert_page(await api.get(link), 409, "Already done")
            state = await current_state(handle)
            assert state.acknowledged_by == "Dana"

            async def projected() -> None:
                assert (await event_types(pg_pool, state.escalation_id)).count("acknowledged") == 1

            await eventually(projected, timeout=15)
            assert len(await uses(pg_pool, state.escalation_id)) == 1

            # The page to Alex (engineering, paged alongside) may acknowledge too, but there is
            # nothing left to acknowledge: 409 with who did, and nothing changes.
            alongside = await page(hooks, "/engineering", "escalation_opened")
            refused = await api.post(path_of(alongside["actions"]["acknowledge"]))
            assert_page(refused, 409, "Not possible now", "already acknowledged it: Dana (link:webhook)")
            assert len(await uses(pg_pool, state.escalation_id)) == 1


async def test_a_link_expires_when_the_level_changes(client, task_queue, start_worker, pg_pool, database_url,
                                                     tmp_path):
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url)
        async with start_worker(policy, environ=worker_environ(hooks.url)), \
                api_client(client, database_url, task_queue, policy) as api:
            handle = await start_escalation(client, blog_request(), task_queue)
            opened = await page(hooks, "/tier2", "escalation_opened")
            escalate = path_of(opened["actions"]["escalate"])
            assert_page(await api.get(escalate), 200, "escalate this escalation to Engineering as Dana",
                        'name="text"', "Escalate as Dana")

            moved = await api.post(escalate, content=b"text=customer+board+meeting+tomorrow",
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert_page(moved, 200, "Escalated to Engineering by Dana at")
            state = await current_state(handle)
            assert state.level == "engineering"
            [entry] = [p for p in state.path if p.from_level != p.to_level]
            assert (entry.from_level, entry.to_level, entry.auto, entry.by, entry.via, entry.reason) == (
                "tier2", "engineering", False, "Dana", "link:webhook", "customer board meeting tomorrow")

            # Dana's other links were for tier2: superseded, with the current state; nothing changes.
            for name in ("acknowledge", "note"):
                link = path_of(opened["actions"][name])
                assert_page(await api.get(link), 410, "This link is superseded", "it was for tier2",
                            "moved to Engineering (engineering)", "Engineering (engineering)")
                assert_page(await api.post(link, content=b"text=late"), 410, "This link is superseded")
            state = await current_state(handle)
            assert state.status == "open" and state.acknowledged_by is None and state.counts.notes == 0

            # The page to engineering carries links bound to engineering: they act.
            escalated = await page(hooks, "/engineering", "escalated")
            assert "Escalated to Engineering" in escalated["message"]["subject"]
            assert_page(await api.post(path_of(escalated["actions"]["acknowledge"])), 200, "Acknowledged by Alex")
            state = await current_state(handle)
            assert (state.acknowledged_by, state.acknowledged_via) == ("Alex", "link:webhook")


async def test_tampered_and_misused_links_change_nothing(client, task_queue, start_worker, pg_pool, database_url,
                                                         tmp_path):
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url)
        async with start_worker(policy, environ=worker_environ(hooks.url)), \
                api_client(client, database_url, task_queue, policy) as api:
            handle = await start_escalation(client, blog_request(), task_queue)
            opened = await page(hooks, "/tier2", "escalation_opened")
            link = path_of(opened["actions"]["acknowledge"])
            prefix, token = link.rsplit("/", 1)
            payload, signature = token.split(".")

            changed_payload = f"{prefix}/{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"
            changed_signature = f"{prefix}/{payload}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}"
            for bad in (changed_payload, changed_signature, f"{prefix}/not-a-token", f"{prefix}/{payload}"):
                for method in ("GET", "POST"):
                    answer = await api.request(method, bad)
                    assert_page(answer, 400, "Not a valid action link")

            # The acknowledge token under another action's address: refused, not acted as escalate.
            wrong = link.replace("/actions/acknowledge/", "/actions/escalate/")
            assert_page(await api.post(wrong), 400, "Wrong action for this link", "this link is for 'acknowledge'")
            assert_page(await api.get(link.replace("/actions/acknowledge/", "/actions/resolve/")), 400,
                        "Wrong action for this link")

            # Signed with a key this API does not hold (a forged or foreign link).
            forged = ActionSigner(parse_action_keys("x" * 40)).sign(ActionSigner(parse_action_keys(ACTION_KEY))
                                                                    .verify(token))
            assert_page(await api.post(f"{prefix}/{forged}"), 400, "Not a valid action link", "signature")

            # A valid link for someone the policy does not let act on tier2: Sam is tier1.
            sam = ActionSigner(parse_action_keys(ACTION_KEY)).sign(ActionToken(
                escalation_id=opened["escalation_id"], ticket_id=opened["ticket_id"], level="tier2",
                recipient="Sam", action="acknowledge", channel="webhook", seq=opened["seq"],
                expires_at=datetime.now(UTC) + timedelta(hours=1)))
            assert_page(await api.post(f"{prefix}/{sam}"), 403, "You may not act on this escalation",
                        "Sam is a contact of Tier 1 Support (tier1), which may not act on an escalation at "
                        "Tier 2 Support (tier2)")

            state = await current_state(handle)
            assert state.status == "open" and state.acknowledged_by is None and state.level == "tier2"
            assert await uses(pg_pool, state.escalation_id) == []
            # The real link still works afterwards.
            assert_page(await api.post(link), 200, "Acknowledged by Dana")


async def test_a_link_expires_after_the_policys_time(client, task_queue, start_worker, pg_pool, database_url,
                                                     tmp_path):
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url, expire_after="2s")
        async with start_worker(policy, environ=worker_environ(hooks.url)), \
                api_client(client, database_url, task_queue, policy) as api:
            handle = await start_escalation(client, blog_request(), task_queue)
            opened = await page(hooks, "/tier2", "escalation_opened")
            link = path_of(opened["actions"]["acknowledge"])

            async def expired() -> str:
                answer = await api.get(link)
                return assert_page(answer, 410, "This link has expired", "it was valid until")

            await eventually(expired, timeout=10, interval=0.25)
            assert_page(await api.post(link), 410, "This link has expired")
            state = await current_state(handle)
            assert state.status == "open" and state.acknowledged_by is None
            assert await uses(pg_pool, state.escalation_id) == []


async def test_a_note_from_the_link(client, task_queue, start_worker, pg_pool, database_url, tmp_path):
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url)
        async with start_worker(policy, environ=worker_environ(hooks.url)), \
                api_client(client, database_url, task_queue, policy) as api:
            handle = await start_escalation(client, blog_request(), task_queue)
            opened = await page(hooks, "/tier2", "escalation_opened")
            link = path_of(opened["actions"]["note"])
            assert_page(await api.get(link), 200, "add an internal note to this escalation as Dana", "<textarea",
                        "Add a note as Dana")
            form = {"Content-Type": "application/x-www-form-urlencoded"}
            assert_page(await api.post(link, content=b"text=++", headers=form), 422, "The note is empty")
            added = await api.post(link, content="text=Looking+at+the+sync+logs+%3Cnow%3E".encode(), headers=form)
            assert_page(added, 200, "Note added by Dana at")
            state = await current_state(handle)
            assert state.counts.notes == 1 and state.status == "open"

            async def noted() -> dict:
                row = await pg_pool.fetchrow("SELECT payload FROM escalation_events WHERE escalation_id = $1 "
                                             "AND type = 'note_added'", state.escalation_id)
                assert row is not None
                return row["payload"]

            note = await eventually(noted, timeout=15)
            assert (note["author"], note["via"], note["text"], note["customer_visible"]) == (
                "Dana", "link:webhook", "Looking at the sync logs <now>", False)
            assert_page(await api.post(link, content=b"text=again", headers=form), 409, "Already done",
                        "Note added by Dana")


async def test_keys_rotate_old_links_verify_new_ones_are_signed_with_the_first_key(
        client, task_queue, start_worker, pg_pool, database_url, tmp_path):
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url)
        # The page was signed before the rotation (the old key alone); the API now holds new, old.
        async with start_worker(policy, environ=worker_environ(hooks.url, action_key=ACTION_KEY)), \
                api_client(client, database_url, task_queue, policy,
                           action_key=f"{NEW_ACTION_KEY},{ACTION_KEY}") as api:
            handle = await start_escalation(client, blog_request(), task_queue)
            opened = await page(hooks, "/tier2", "escalation_opened")
            assert_page(await api.post(path_of(opened["actions"]["acknowledge"])), 200, "Acknowledged by Dana")
            assert (await current_state(handle)).acknowledged_via == "link:webhook"

    rotated = ActionSigner(parse_action_keys(f"{NEW_ACTION_KEY},{ACTION_KEY}"))
    token = ActionToken(escalation_id="e-1", ticket_id="SF-1", level="tier2", recipient="Dana",
                        action="acknowledge", channel="email", seq=3, expires_at=datetime.now(UTC))
    signed = rotated.sign(token)
    assert ActionSigner(parse_action_keys(NEW_ACTION_KEY)).verify(signed) == token  # the first key signs
    with pytest.raises(InvalidLink):
        ActionSigner(parse_action_keys(ACTION_KEY)).verify(signed)
    old = ActionSigner(parse_action_keys(ACTION_KEY)).sign(token)
    assert rotated.verify(old) == token  # every key verifies
    assert old != signed and ActionSigner(parse_action_keys(ACTION_KEY)).verify(old).id == token.id


async def test_without_a_key_the_pages_carry_no_links_and_the_routes_say_so(
        client, task_queue, start_worker, database_url, tmp_path):
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url)
        environ = {"ESCALATION_WEBHOOK_SECRET": worker_environ(hooks.url)["ESCALATION_WEBHOOK_SECRET"]}
        async with start_worker(policy, environ=environ), \
                api_client(client, database_url, task_queue, policy, action_key=None) as api:
            await start_escalation(client, blog_request(), task_queue)
            opened = await page(hooks, "/tier2", "escalation_opened")
            assert opened["actions"] == {}
            assert "/actions/" not in opened["message"]["text"]
            token = ActionSigner(parse_action_keys(ACTION_KEY)).sign(ActionToken(
                escalation_id=opened["escalation_id"], ticket_id=opened["ticket_id"], level="tier2",
                recipient="Dana", action="acknowledge", channel="webhook", seq=1,
                expires_at=datetime.now(UTC) + timedelta(hours=1)))
            answer = await api.get(f"/actions/acknowledge/{token}")
            assert_page(answer, 503, "Action links are off", "ESCALATION_ACTION_KEY")


async def test_two_presses_at_once_act_once(client, task_queue, start_worker, pg_pool, database_url, tmp_path):
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url)
        async with start_worker(policy, environ=worker_environ(hooks.url)), \
                api_client(client, database_url, task_queue, policy) as api:
            handle = await start_escalation(client, blog_request(), task_queue)
            opened = await page(hooks, "/tier2", "escalation_opened")
            link = path_of(opened["actions"]["escalate"])
            started = time.monotonic()
            answers = await asyncio.gather(*(api.post(link) for _ in range(3)))
            # One acts; the others find it done or under way (409), or the escalation moved on (410).
            codes = sorted(a.status_code for a in answers)
            assert codes[0] == 200 and set(codes[1:]) <= {409, 410}, [a.text for a in answers]
            assert time.monotonic() - started < 30
            state: EscalationState = await current_state(handle)
            # One escalation, not three: tier2 -> engineering, and no further.
            assert state.level == "engineering"
            assert [(p.from_level, p.to_level) for p in state.path if p.from_level != p.to_level] == [
                ("tier2", "engineering")]


def test_a_policy_that_sets_no_links_or_slack_ids_keeps_its_digest():
    """Versions in PostgreSQL were pinned before ``action_links`` and ``slack_user_id`` existed:
    the same file must not read as changed; setting either is a change (a new version)."""
    policy = load_policy_file(policy_path("fast"))
    released = released_document(policy)
    digest = hashlib.sha256(json.dumps(released, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert policy_digest(policy) == digest
    document = policy.model_dump(mode="json")
    document["action_links"] = {"expire_after": "1h"}
    assert policy_digest(parse_policy(document)) != digest
    document = policy.model_dump(mode="json")
    document["levels"][1]["contacts"][0]["slack_user_id"] = "U0DANA1"
    assert policy_digest(parse_policy(document)) != digest


def test_one_slack_member_is_one_contact():
    document = load_policy_file(policy_path("fast")).model_dump(mode="json", exclude_none=True)
    document["levels"][0]["contacts"][0]["slack_user_id"] = "U0SAME1"
    document["levels"][1]["contacts"][0]["slack_user_id"] = "U0SAME1"
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    assert ("levels[1].contacts[0].slack_user_id: U0SAME1 is already the Slack id of contact 'Support on-call'"
            in caught.value.problems)
    document["levels"][1]["contacts"][0]["slack_user_id"] = "dana"
    with pytest.raises(PolicyError) as caught:
        parse_policy(document)
    assert any(p.startswith("levels[1].contacts[0].slack_user_id:") for p in caught.value.problems)

"""Slack interactivity, end to end: a real run pages Dana in Slack (#tier2, a local receiver as the
incoming webhook), her Acknowledge button carries the signed token, and a press, signed the way
Slack documents it, acts as Dana; the outcome replaces the message through ``response_url`` (a
local receiver too). A request Slack did not sign is refused (401) and changes nothing; a member
mapped to no contact, or one who may not act, gets an ephemeral explanation and nothing else.
"""

from __future__ import annotations

import time
from typing import Any

from tests.helpers.escalations import current_state, start_escalation
from tests.helpers.receivers import HttpRecorder
from tests.helpers.requests import blog_request
from tests.helpers.vendors import slack_problems
from tests.helpers.responders import (
    ALEX,
    DANA,
    SAM,
    SLACK_SIGNING_SECRET,
    api_client,
    responders_policy,
    slack_headers,
    slack_press,
    worker_environ,
)

ROUTE = "/integrations/slack/interactions"


async def buttons(hooks: HttpRecorder, path: str) -> dict[str, dict[str, Any]]:
    """The buttons of the first Slack page posted to ``path``, by action_id."""
    [message] = await hooks.wait_for(1, path=path, timeout=20)
    found: dict[str, dict[str, Any]] = {}
    for block in message.json()["blocks"]:
        if block["type"] == "actions":
            found.update({element["action_id"]: element for element in block["elements"]})
    return found


async def replies(hooks: HttpRecorder, path: str, count: int = 1) -> list[dict[str, Any]]:
    return [r.json() for r in await hooks.wait_for(count, path=path, timeout=20)]


async def test_a_signed_press_acts_as_the_member_and_replaces_the_message(
        client, task_queue, start_worker, pg_pool, database_url, tmp_path):
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url, chat="slack")
        async with start_worker(policy, environ=worker_environ(hooks.url, slack=True)), \
                api_client(client, database_url, task_queue, policy) as api:
            handle = await start_escalation(client, blog_request(), task_queue)
            page = await buttons(hooks, "/slack-tier2")
            assert {"acknowledge", "escalate", "note"} <= set(page)
            # In Slack: the token rides as the value; "Add a note" opens its page (it needs text).
            assert "value" in page["acknowledge"] and "url" not in page["acknowledge"]
            assert "value" in page["escalate"] and page["note"]["url"].startswith("https://")
            token = page["acknowledge"]["value"]

            body = slack_press(token, DANA, f"{hooks.url}/response/1")
            answer = await api.post(ROUTE, content=body, headers=slack_headers(body))
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] is True
            [reply] = await replies(hooks, "/response/1")
            assert reply["replace_original"] is True
            assert reply["text"].startswith("Acknowledged by Dana at ") and reply["text"].endswith(" UTC")
            assert slack_problems(reply) == []  # the replacement is valid Block Kit
            state = await current_state(handle)
            assert (state.status, state.acknowledged_by, state.acknowledged_via) == (
                "acknowledged", "Dana", f"slack:{DANA}")

            # The same button again (a second press, or a replay of the request): already done.
            again = slack_press(token, DANA, f"{hooks.url}/response/2")
            assert (await api.post(ROUTE, content=again, headers=slack_headers(again))).status_code == 200
            [second] = await replies(hooks, "/response/2")
            assert second["response_type"] == "ephemeral" and second["replace_original"] is False
            assert "Already done" in second["text"] and "Acknowledged by Dana" in second["text"]
            rows = await pg_pool.fetch("SELECT actor, via FROM action_link_uses WHERE escalation_id = $1",
                                       state.escalation_id)
            assert [(r["actor"], r["via"]) for r in rows] == [("Dana", f"slack:{DANA}")]


async def test_requests_slack_did_not_sign_are_refused_and_change_nothing(
        client, task_queue, start_worker, database_url, tmp_path):
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url, chat="slack")
        async with start_worker(policy, environ=worker_environ(hooks.url, slack=True)), \
                api_client(client, database_url, task_queue, policy) as api:
            handle = await start_escalation(client, blog_request(), task_queue)
            token = (await buttons(hooks, "/slack-tier2"))["acknowledge"]["value"]
            body = slack_press(token, DANA, f"{hooks.url}/response/refused")
            now = int(time.time())
            good = slack_headers(body, timestamp=now)
            refused = {
                "the wrong secret": (body, slack_headers(body, secret="not-" + SLACK_SIGNING_SECRET)),
                "an old timestamp": (body, slack_headers(body, timestamp=now - 301)),
                "a timestamp from the future": (body, slack_headers(body, timestamp=now + 301)),
                "a modified body": (body.replace(DANA.encode(), ALEX.encode()), good),
                "no signature": (body, {k: v for k, v in good.items() if k != "X-Slack-Signature"}),
                "no timestamp": (body, {k: v for k, v in good.items() if k != "X-Slack-Request-Timestamp"}),
                "a v1 signature": (body, {**good, "X-Slack-Signature": good["X-Slack-Signature"].replace("v0=", "v1=")}),
                "a timestamp that is no number": (body, {**good, "X-Slack-Request-Timestamp": "soon"}),
            }
            for case, (sent, headers) in refused.items():
                answer = await api.post(ROUTE, content=sent, headers=headers)
                assert answer.status_code == 401, (case, answer.text)
                assert answer.headers["content-type"].startswith("application/problem+json"), case
            # The same body, signed right, is taken (the checks above were about the signature).
            state = await current_state(handle)
            assert state.status == "open" and state.acknowledged_by is None
            assert hooks.to("/response/refused") == []
            taken = await api.post(ROUTE, content=body, headers=slack_headers(body))
            assert taken.status_code == 200
            [reply] = await replies(hooks, "/response/refused")
            assert reply["text"].startswith("Acknowledged by Dana")


async def test_a_member_who_is_no_contact_or_may_not_act_gets_an_explanation_only(
        client, task_queue, start_worker, pg_pool, database_url, tmp_path):
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url, chat="slack")
        async with start_worker(policy, environ=worker_environ(hooks.url, slack=True)), \
                api_client(client, database_url, task_queue, policy) as api:
            handle = await start_escalation(client, blog_request(), task_queue)
            page = await buttons(hooks, "/slack-tier2")

            stranger = slack_press(page["acknowledge"]["value"], "U0NOBODY", f"{hooks.url}/response/stranger")
            assert (await api.post(ROUTE, content=stranger, headers=slack_headers(stranger))).status_code == 200
            [reply] = await replies(hooks, "/response/stranger")
            assert reply == {"response_type": "ephemeral", "replace_original": False, "text": reply["text"]}
            assert "Your Slack account (U0NOBODY) is not a contact of policy links v1" in reply["text"]
            assert "Nothing was done" in reply["text"] and "slack_user_id" in reply["text"]

            below = slack_press(page["escalate"]["value"], SAM, f"{hooks.url}/response/below",
                                action_id="escalate")
            assert (await api.post(ROUTE, content=below, headers=slack_headers(below))).status_code == 200
            [reply] = await replies(hooks, "/response/below")
            assert reply["response_type"] == "ephemeral"
            assert "You may not act on this escalation: Sam is a contact of Tier 1 Support (tier1)" in reply["text"]

            state = await current_state(handle)
            assert (state.status, state.level, state.acknowledged_by) == ("open", "tier2", None)
            assert await pg_pool.fetchval("SELECT count(*) FROM action_link_uses") == 0

            # A member of a level above may act for tier2: Alex (engineering) escalates it onward.
            above = slack_press(page["escalate"]["value"], ALEX, f"{hooks.url}/response/above",
                                action_id="escalate")
            assert (await api.post(ROUTE, content=above, headers=slack_headers(above))).status_code == 200
            [reply] = await replies(hooks, "/response/above")
            assert reply["replace_original"] is True and reply["text"].startswith("Escalated to Engineering by Alex")
            state = await current_state(handle)
            moved = [p for p in state.path if p.from_level != p.to_level]
            assert [(p.to_level, p.by, p.via) for p in moved] == [("engineering", "Alex", f"slack:{ALEX}")]


async def test_other_interactions_are_answered_and_ignored(client, task_queue, database_url, tmp_path):
    async with HttpRecorder() as hooks:
        policy = responders_policy(tmp_path, hooks.url, chat="slack")
        async with api_client(client, database_url, task_queue, policy) as api:
            link = slack_press("ignored", DANA, f"{hooks.url}/response/x", action_id="open_temporal_ui")
            answer = await api.post(ROUTE, content=link, headers=slack_headers(link))
            assert answer.status_code == 200 and answer.json()["accepted"] is False
            not_a_form = b"hello"
            answer = await api.post(ROUTE, content=not_a_form, headers=slack_headers(not_a_form))
            assert answer.status_code == 422
        async with api_client(client, database_url, task_queue, policy, slack_signing_secret=None) as api:
            answer = await api.post(ROUTE, content=link, headers=slack_headers(link))
            assert answer.status_code == 503 and "ESCALATION_SLACK_SIGNING_SECRET" in answer.json()["detail"]
        assert hooks.to("/response/x") == []

"""Commands over HTTP: ``Idempotency-Key`` on every command (a retry replays the first answer,
and Temporal deduplicates the update too), 400 for malformed JSON, 415 for other media types,
and every escalation of a ticket (history, one run by its id). Real worker, Temporal, Postgres."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest_asyncio
from temporalio.client import Client

from escalations import client as ec
from escalations.api.app import create_app
from escalations.api.idempotency import COMMAND_SCOPE
from schemas.escalation import AddNoteCommand
from tests.helpers.api import api_settings, bearer, in_process
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request

PROBLEM = "application/problem+json"
INTERCOM_SECRET = "intercom-secret-for-415"


@pytest_asyncio.fixture
async def http(client: Client, database_url: str, task_queue: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_settings(client, database_url, task_queue, intercom_client_secret=INTERCOM_SECRET))
    async with in_process(app) as http:
        yield http


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    return response.json()


async def started(http: httpx.AsyncClient, ticket: str | None = None) -> str:
    """Start an escalation over HTTP; return its ticket once it answers its state."""
    body = blog_request(ticket).as_body()
    response = await http.post("/escalations", json=body)
    assert response.status_code == 201, response.text

    async def answers() -> None:
        got = await http.get(f"/escalations/{body['ticket_id']}")
        assert got.status_code == 200, got.text

    await eventually(answers, timeout=15)
    return body["ticket_id"]


COMMANDS: list[tuple[str, dict[str, Any]]] = [
    ("acknowledge", {"by": "dana"}),
    ("escalate", {"by": "dana", "reason": "needs the head of support", "to_level": "management"}),
    ("notes", {"author": "dana", "text": "on it", "customer_visible": True}),
    ("pause", {"by": "dana", "reason": "waiting on customer"}),
    ("resume", {"by": "dana"}),
    ("resolve", {"by": "dana", "root_cause": "schema change", "mitigation": "mapped the field",
                 "preventive_actions": ["monitor schema changes"]}),
    ("postmortem", {"by": "dana", "summary": "sync broke", "root_cause": "schema change",
                    "improvements": ["alert on schema changes"]}),
    ("csat", {"score": 5}),
]


async def test_every_command_replays_its_first_answer_for_the_same_key(http, start_worker, pg_pool):
    async with start_worker("fast"):
        ticket = await started(http)
        base = f"/escalations/{ticket}"
        keys: dict[str, str] = {}
        for command, body in COMMANDS:
            key = keys[command] = str(uuid.uuid4())
            first = await http.post(f"{base}/{command}", json=body, headers={"Idempotency-Key": key})
            assert first.status_code == 200, (command, first.text)
            assert "idempotent-replayed" not in first.headers
            retry = await http.post(f"{base}/{command}", json=dict(reversed(list(body.items()))),
                                    headers={"Idempotency-Key": key})
            assert retry.status_code == 200, (command, retry.text)
            assert retry.headers["idempotent-replayed"] == "true", command
            assert retry.json() == first.json(), command
            if command == "notes":  # replayed, not applied again
                state = (await http.get(base)).json()
                assert state["counts"]["notes"] == 1, state["counts"]
        final = (await http.get(base)).json()
        assert final["status"] == "closed" and final["counts"]["notes"] == 1
        assert len([entry for entry in final["path"] if entry["by"] == "dana"]) == 1  # one escalate

        stored = await pg_pool.fetch("SELECT principal, status_code FROM api_idempotency WHERE scope = $1 "
                                     "AND key = ANY($2::text[])", COMMAND_SCOPE, list(keys.values()))
        assert len(stored) == len(COMMANDS)
        assert {row["principal"] for row in stored} == {"api:legacy-2"} and {r["status_code"] for r in stored} == {200}

        # A key names one request: another body, another command or another ticket is a 422.
        note_key = keys["notes"]
        for path, body in ((f"{base}/notes", {"author": "dana", "text": "something else"}),
                           (f"{base}/acknowledge", {"by": "dana"}),
                           ("/escalations/OTHER-1/notes", dict(COMMANDS[2][1]))):
            problem = problem_of(await http.post(path, json=body, headers={"Idempotency-Key": note_key}), 422)
            assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"], problem
        # Keys belong to the caller: another token's same key and body is its own request (here a 409,
        # the escalation being closed), not a replay of ours.
        other = await http.post(f"{base}/notes", json=COMMANDS[2][1],
                                headers={"Idempotency-Key": note_key, **bearer("ops")})
        assert problem_of(other, 409)["detail"] == f"escalation {ticket} is closed"
        # A failed command stores nothing, so its retry runs (and fails) again.
        failed_key = str(uuid.uuid4())
        for _ in range(2):
            again = await http.post(f"{base}/acknowledge", json={"by": "sam"}, headers={"Idempotency-Key": failed_key})
            problem_of(again, 409)
            assert "idempotent-replayed" not in again.headers
        assert await pg_pool.fetchval("SELECT count(*) FROM api_idempotency WHERE key = $1", failed_key) == 0
        bad_key = await http.post(f"{base}/notes", json=COMMANDS[2][1], headers={"Idempotency-Key": "has spaces"})
        assert ["header", "Idempotency-Key"] in [e["loc"] for e in problem_of(bad_key, 422)["errors"]]


async def test_a_retry_whose_answer_was_lost_is_not_applied_twice(http, start_worker, pg_pool):
    """The stored answer is gone (as after a timeout released the key): the retry reaches the run
    with the same update id and Temporal answers with the first outcome."""
    async with start_worker("fast"):
        ticket = await started(http)
        key = str(uuid.uuid4())
        note = {"author": "dana", "text": "the first and only note"}
        first = await http.post(f"/escalations/{ticket}/notes", json=note, headers={"Idempotency-Key": key})
        assert first.status_code == 200 and first.json()["counts"]["notes"] == 1, first.text
        await pg_pool.execute("DELETE FROM api_idempotency WHERE key = $1", key)
        retry = await http.post(f"/escalations/{ticket}/notes", json=note, headers={"Idempotency-Key": key})
        assert retry.status_code == 200, retry.text
        assert "idempotent-replayed" not in retry.headers  # the API ran it again...
        assert retry.json()["counts"]["notes"] == 1 and retry.json()["last_seq"] == first.json()["last_seq"]
        state = (await http.get(f"/escalations/{ticket}")).json()
        assert state["counts"]["notes"] == 1  # ...and Temporal did not apply it twice


async def test_the_python_client_passes_the_update_id(client, task_queue, start_worker):
    async with start_worker("fast"):
        request = blog_request()
        await ec.start_escalation(client, request, task_queue=task_queue)
        ticket = request.ticket_id
        await eventually(lambda: ec.live_state(client, ticket), timeout=15,
                         retry_on=(AssertionError, ec.EscalationNotReady))
        note = AddNoteCommand(author="dana", text="once")
        first = await ec.add_note(client, ticket, note, update_id="note-1")
        again = await ec.add_note(client, ticket, note, update_id="note-1")
        assert again == first and again.counts.notes == 1
        other = await ec.add_note(client, ticket, note, update_id="note-2")
        assert other.counts.notes == 2


# -- media types ----------------------------------------------------------------------------


async def test_malformed_json_is_400_and_other_media_types_are_415(http):
    routes = ["/escalations", "/escalations/SF-1/acknowledge", "/escalations/SF-1/notes", "/escalations/SF-1/csat",
              "/tickets", "/tickets/zendesk"]
    for path in routes:
        broken = problem_of(await http.post(path, content=b'{"by": "dana",', headers={"Content-Type": "application/json"}),
                            400)
        assert broken["type"].endswith(":malformed-json") and broken["errors"][0]["type"] == "json_invalid", broken
        for media in ("text/plain", "application/x-www-form-urlencoded", "application/xml", None):
            headers = {"Content-Type": media} if media else {}
            content = b'{"by": "dana"}' if media != "application/x-www-form-urlencoded" else b"by=dana"
            refused = await http.post(path, content=content, headers=headers)
            problem = problem_of(refused, 415)
            assert problem["type"].endswith(":unsupported-media-type") and problem["supported"] == ["application/json"]
            assert refused.headers["accept-post"] == "application/json"
            assert (media or "without a Content-Type") in problem["detail"], problem
    # JSON with parameters, or a +json type, is JSON: the body is read and validated (here: 422).
    for media in ("application/json; charset=utf-8", "application/problem+json", "Application/JSON"):
        assert (await http.post("/escalations", content=b"{}", headers={"Content-Type": media})).status_code == 422
    # No body at all: the validation names what is missing.
    empty = problem_of(await http.post("/escalations/SF-1/acknowledge", headers={"Content-Type": "text/plain"}), 422)
    assert empty["errors"][0]["loc"] == ["body"]
    # The caller is checked first: without a token it is a 401 whatever the body.
    anonymous = await http.post("/escalations", content=b"by=dana", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Authorization": ""})
    problem_of(anonymous, 401)
    # A signed webhook: the signature first, then the media type, then the JSON.
    unsigned = await http.post("/tickets/intercom", content=b"x", headers={"Content-Type": "text/plain"})
    problem_of(unsigned, 401)
    signed = {"X-Hub-Signature": _intercom_signature(b"not json"), "Authorization": ""}
    problem_of(await http.post("/tickets/intercom", content=b"not json", headers={**signed, "Content-Type": "text/plain"}),
               415)
    problem_of(await http.post("/tickets/intercom", content=b"not json",
                               headers={**signed, "Content-Type": "application/json"}), 400)


def _intercom_signature(body: bytes) -> str:
    return "sha1=" + hmac.new(INTERCOM_SECRET.encode(), body, hashlib.sha1).hexdigest()


# -- every escalation of a ticket ---------------------------------------------------------


async def test_a_ticket_escalated_twice_exposes_both(http, start_worker):
    async with start_worker("fast"):
        ticket = await started(http)
        base = f"/escalations/{ticket}"
        resolved = await http.post(f"{base}/resolve", json=dict(COMMANDS[5][1]))
        assert resolved.status_code == 200, resolved.text
        closed = await http.post(f"{base}/postmortem", json=dict(COMMANDS[6][1]))
        assert closed.status_code == 200 and closed.json()["status"] == "closed", closed.text
        first_id = closed.json()["escalation_id"]
        again = await http.post("/escalations", json=blog_request(ticket, priority="P3").as_body())
        assert again.status_code == 201, again.text
        second_id = again.json()["run_id"]

        async def both() -> dict[str, Any]:
            got = await http.get(f"{base}/history")
            assert got.status_code == 200, got.text
            assert [item["escalation_id"] for item in got.json()["items"]] == [second_id, first_id], got.json()
            return got.json()

        history = await eventually(both, timeout=15)
        assert history["ticket_id"] == ticket
        latest, earlier = history["items"]
        assert latest["status"] in ("open", "acknowledged") and latest["priority"] == "P3"
        assert latest["closed_at"] is None and latest["workflow_id"] == f"escalation-{ticket}"
        assert earlier["status"] == "closed" and earlier["priority"] == "P1" and earlier["closed_at"]
        assert earlier["resolved_at"] and earlier["opened_at"] < latest["opened_at"]
        assert earlier["trigger"]["source"] == "api" and earlier["policy"] == {"name": "fast", "version": 1}

        # Each is addressable by its escalation_id; GET /escalations/{ticket} is the latest.
        run = await http.get(f"/escalation-runs/{first_id}")
        assert run.status_code == 200, run.text
        assert run.json()["escalation_id"] == first_id and run.json()["status"] == "closed"
        assert run.json()["resolution"]["root_cause"] == "schema change"
        newest = await http.get(f"/escalation-runs/{second_id}")
        assert newest.status_code == 200 and newest.json()["priority"] == "P3", newest.text
        assert (await http.get(base)).json()["escalation_id"] == second_id

    assert problem_of(await http.get("/escalations/NO-SUCH-TICKET-7/history"), 404)["type"].endswith(
        ":escalation-not-found")
    problem_of(await http.get(f"/escalation-runs/{uuid.uuid4()}"), 404)
    problem_of(await http.get("/escalation-runs/not%20an%20id"), 422)
    reader = await http.get(f"/escalation-runs/{first_id}", headers=bearer("reader"))
    assert reader.status_code == 200  # scope read

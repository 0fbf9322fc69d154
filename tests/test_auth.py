"""Issue #15 (part 2): named tokens with scopes, the calling principal, and the API's input holes.

The API runs in-process (httpx ASGI transport, lifespan entered) against the real dev server,
the real worker and a real PostgreSQL. Each hole the issue names has a test here that failed
on the code before: path traversal and absolute paths as policy names, a 300-character name,
a forged trigger, 10**30 users, a level that is not a level id, one Idempotency-Key namespace
for every caller, and keys never purged.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from escalations.api.app import create_app
from escalations.api.deps import api_routes, is_public, is_signed, route_scope
from escalations.db import idempotency as stored_keys
from escalations.policies import PolicySource, UnknownPolicy
from escalations.settings import (
    SCOPES,
    ApiSettings,
    ConfigError,
    token_digest,
    token_entry,
)
from schemas import keys
from schemas.activities import ReconcileRequest, ReconcileResult
from schemas.escalation import (
    AcknowledgeCommand,
    EscalateCommand,
    EscalationRequest,
    Impact,
)
from tests.helpers.api import NAMED_SCOPES, TOKEN, api_settings, bearer, token_of
from tests.helpers.policies import policy_path
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request

PROBLEM = "application/problem+json"


@pytest_asyncio.fixture
async def app(client, database_url, task_queue) -> AsyncIterator[FastAPI]:
    app = create_app(api_settings(client, database_url, task_queue))
    async with app.router.lifespan_context(app):
        yield app


@pytest_asyncio.fixture
async def http(app) -> AsyncIterator[httpx.AsyncClient]:
    """No token by default: each request names the token it uses (``bearer(name)``)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60) as client:
        yield client


def problem_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    return response.json()


def body_of(**overrides: Any) -> dict[str, Any]:
    return blog_request(f"AUTH-{uuid.uuid4().hex[:8]}", **overrides).as_body()


async def started(http: httpx.AsyncClient, token: str = "ops", **overrides: Any) -> str:
    body = body_of(**overrides)
    response = await http.post("/escalations", json=body, headers=bearer(token))
    assert response.status_code == 201, response.text

    async def open_() -> None:
        assert (await http.get(f"/escalations/{body['ticket_id']}", headers=bearer("reader"))).status_code == 200

    await eventually(open_, timeout=15)
    return body["ticket_id"]


# -- configuration ----------------------------------------------------------------------


def test_token_entries_named_legacy_and_from_a_file(tmp_path):
    file = tmp_path / "tokens"
    file.write_text("# dashboards\n" + token_entry("grafana", ["read"], "g-secret") + "  # read only\n\n",
                    encoding="utf-8")
    settings = ApiSettings.from_env({
        "ESCALATION_API_TOKENS": f"{token_entry('ops-bot', ['start', 'act'], 'o-secret')}, old-plain-token",
        "ESCALATION_API_TOKENS_FILE": str(file),
    })
    by_name = {t.name: t for t in settings.api_tokens}
    assert set(by_name) == {"ops-bot", "legacy-1", "grafana"}
    assert by_name["ops-bot"].scopes == {"start", "act"} and by_name["ops-bot"].principal == "api:ops-bot"
    assert by_name["legacy-1"].legacy and by_name["legacy-1"].allows("tickets"), "a bare token keeps every scope"
    assert by_name["grafana"].allows("read") and not by_name["grafana"].allows("act")
    # Only digests are kept: no plain token anywhere in the settings.
    dumped = json.dumps(settings.model_dump(mode="json")) + repr(settings)
    for secret in ("o-secret", "old-plain-token", "g-secret"):
        assert secret not in dumped
    assert by_name["legacy-1"].sha256 == token_digest("old-plain-token")
    # Copies keep them (the dev stack and tests derive settings with with_overrides).
    assert settings.with_overrides(port=1).api_tokens == settings.api_tokens


@pytest.mark.parametrize(("entries", "message"), [
    ("ops:read:not-a-digest-but-the-token-itself", "entry 1: the last part must be the token's SHA-256"),
    (f"ops:write:{'a' * 64}", "entry 1: a scope is not one of read, start, act, tickets, csat, admin"),
    (f"x, ops bot:read:{'a' * 64}", "entry 2: the name must match"),
    ("ops:read", "entry 1 is not NAME:SCOPE[+SCOPE...]:SHA256"),
    (f"ops:read:{'a' * 64}, ops:act:{'b' * 64}", "token names must be unique; given twice: ops"),
    (f"same-token, a:read:{token_digest('same-token')}", "a, legacy-1 are the same token"),
])
def test_bad_token_entries_are_refused_without_repeating_them(entries, message):
    with pytest.raises(ConfigError) as refused:
        ApiSettings.from_env({"ESCALATION_API_TOKENS": entries})
    assert message in str(refused.value)
    assert "not-a-digest-but-the-token-itself" not in str(refused.value)
    assert "got" not in str(refused.value), "the variable's value is never repeated"


def test_a_missing_tokens_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="ESCALATION_API_TOKENS_FILE: cannot read .*no-such-file"):
        ApiSettings.from_env({"ESCALATION_API_TOKENS_FILE": str(tmp_path / "no-such-file")})


# -- scopes -----------------------------------------------------------------------------


def _fill(path: str) -> str:
    return path.replace("{ticket_id}", "SF-1042").replace("{escalation_id}", "0b6f9c1e-no-such-run")


# The probes and Prometheus's scrape: status words and counts, no customer data.
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/livez"), ("GET", "/metrics")}
# Webhooks that cannot send a token: their sender's signature instead (tests/test_ticket_intake.py).
SIGNED = {("POST", "/tickets/intercom"), ("POST", "/integrations/jira/webhook"),
          ("POST", "/integrations/slack/interactions"),
          ("GET", "/actions/{action}/{token}"), ("POST", "/actions/{action}/{token}")}
EXPECTED_SCOPES = {
    ("GET", "/escalations"): "read", ("GET", "/escalations/{ticket_id}"): "read", ("GET", "/kpis"): "read",
    ("GET", "/escalations/{ticket_id}/history"): "read", ("GET", "/escalation-runs/{escalation_id}"): "read",
    ("POST", "/escalations"): "start",
    **{("POST", f"/escalations/{{ticket_id}}/{command}"): "act"
       for command in ("acknowledge", "escalate", "notes", "pause", "resume", "resolve", "postmortem")},
    ("POST", "/escalations/{ticket_id}/csat"): "csat",
    ("POST", "/tickets"): "tickets", ("POST", "/tickets/zendesk"): "tickets", ("POST", "/tickets/freshdesk"): "tickets",
}


async def test_every_route_declares_its_scope_and_a_token_without_it_gets_403(app, http, caplog):
    routes = [(method, path, route) for path, route in api_routes(app) for method in sorted(route.methods)]
    declared = {(method, path): route_scope(route) for method, path, route in routes
                if not is_public(route) and not is_signed(route)}
    assert {(m, p) for m, p, r in routes if is_public(r)} == PUBLIC
    assert {(m, p) for m, p, r in routes if is_signed(r)} == SIGNED
    for key, scope in EXPECTED_SCOPES.items():
        assert declared.get(key) == scope, f"{key} declares {declared.get(key)}, not {scope}"
    assert all(scope in SCOPES for scope in declared.values()), declared
    with caplog.at_level(logging.DEBUG):
        for (method, path), scope in declared.items():
            lacking = await http.request(method, _fill(path), json={}, headers=bearer(f"all-but-{scope}"))
            problem = problem_of(lacking, 403)
            assert problem["missing_scope"] == scope and f"lacks the scope {scope!r}" in problem["detail"]
            assert problem["token"] == f"all-but-{scope}" and problem["type"].endswith("missing-scope")
            # The token with just that scope passes the check (whatever the route answers next).
            holding = await http.request(method, _fill(path), json={}, headers=bearer(f"only-{scope}"))
            assert holding.status_code not in (401, 403), (method, path, holding.text)
            # admin holds every scope; a bare token of the old format too.
            for admin in (bearer("ops"), {"Authorization": f"Bearer {TOKEN}"}):
                assert (await http.request(method, _fill(path), json={}, headers=admin)).status_code not in (401, 403)
            anonymous = await http.request(method, _fill(path), json={})
            assert problem_of(anonymous, 401)["type"].endswith("unauthorized")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert not any(token_of(name) in logged for name in NAMED_SCOPES) and TOKEN not in logged
    schema = (await http.get("/openapi.json")).json()
    assert schema["paths"]["/escalations/{ticket_id}/resolve"]["post"]["x-required-scope"] == "act"
    assert "403" in schema["paths"]["/tickets"]["post"]["responses"]


async def test_a_route_without_a_scope_is_never_served(client, database_url, task_queue, monkeypatch):
    from fastapi import APIRouter

    from escalations.api import health

    combined = APIRouter()
    combined.include_router(health.router)

    @combined.get("/stray")
    async def unguarded() -> dict[str, str]:
        return {"open": "yes"}

    monkeypatch.setattr(health, "router", combined)
    with pytest.raises(RuntimeError, match="routes without a scope.*GET /stray"):
        create_app(api_settings(client, database_url, task_queue))


async def test_health_is_public_and_says_status_words_only(app, http):
    ok = await http.get("/healthz")
    assert ok.status_code == 200 and ok.json() == {"status": "ok", "temporal": "ok", "postgres": "ok"}
    await app.state.pool.close()
    down = problem_of(await http.get("/healthz"), 503)
    assert set(down) == {"type", "title", "status", "detail", "temporal", "postgres", "retry_after", "request_id"}
    assert down["postgres"] == "unavailable" and down["detail"] == "postgres: unavailable"


# -- the calling principal --------------------------------------------------------------


async def test_the_principal_is_recorded_beside_by_and_cannot_be_chosen(http, start_worker, pg_pool, client):
    async with start_worker("fast"):
        ticket = await started(http, token="only-start")
        base = f"/escalations/{ticket}"
        state = (await http.get(base, headers=bearer("reader"))).json()
        assert state["trigger"] == {"source": "api", "criterion": None, "detail": None, "via": "api:only-start"}
        details = await (await client.get_workflow_handle(f"escalation-{ticket}").describe()).static_details()
        assert "**Opened by** api (api:only-start)" in (details or "")
        # A caller cannot choose its principal.
        forged = await http.post(f"{base}/acknowledge", json={"by": "dana", "via": "api:someone-else"},
                                 headers=bearer("only-act"))
        assert problem_of(forged, 422)["errors"] == [{"loc": ["body", "via"], "type": "server_set",
                                                      "msg": "set by the server (the calling principal, from your "
                                                             "token); leave it out"}]
        acked = await http.post(f"{base}/acknowledge", json={"by": "dana"}, headers=bearer("only-act"))
        assert acked.status_code == 200, acked.text
        assert acked.json()["acknowledged_by"] == "dana" and acked.json()["acknowledged_via"] == "api:only-act"
        moved = await http.post(f"{base}/escalate", json={"by": "dana", "reason": "needs engineering",
                                                          "to_level": "management"}, headers=bearer("ops"))
        entry = moved.json()["path"][-1]
        assert (entry["to_level"], entry["by"], entry["via"]) == ("management", "dana", "api:ops")
        note = await http.post(f"{base}/notes", json={"author": "sam", "text": "on it"}, headers=bearer("ops"))
        assert note.status_code == 200

        async def recorded() -> dict[str, dict[str, Any]]:
            rows = await pg_pool.fetch(
                "SELECT type, payload FROM escalation_events WHERE ticket_id = $1 ORDER BY seq", ticket)
            events = {row["type"]: row["payload"] for row in rows}
            assert "note_added" in events
            return events

        events = await eventually(recorded, timeout=15)
        assert (events["acknowledged"]["by"], events["acknowledged"]["via"]) == ("dana", "api:only-act")
        assert events["escalated"]["via"] == "api:ops" and events["escalated"]["path_entry"]["via"] == "api:ops"
        assert (events["note_added"]["author"], events["note_added"]["via"]) == ("sam", "api:ops")
        assert events["opened"]["view"]["trigger"]["via"] == "api:only-start"
        row = await pg_pool.fetchrow("SELECT acknowledged_via, path FROM escalations WHERE ticket_id = $1", ticket)
        assert row["path"][-1]["via"] == "api:ops"


# -- the request's policy ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../../../etc/hostname", "/etc/hostname", "../tests/policies/fast",
                                  "a" * 300, "compose"])
async def test_the_policy_is_a_name_from_the_known_set(client, database_url, task_queue, tmp_path, name):
    """A policy file's folder may hold other YAML (here: ``compose.yaml``); neither it nor any path
    may be named, and the answer never repeats a directory or a foreign file's keys."""
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "fast.yaml").write_text(policy_path("fast").read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "compose.yaml").write_text("services:\n  db: {image: postgres}\nsecret_key: 1\n", encoding="utf-8")
    app = create_app(api_settings(client, database_url, task_queue, policy_file=str(folder / "fast.yaml")))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            body = body_of(policy=None)
            body["policy"] = name
            response = await http.post("/escalations", json=body, headers=bearer("ops"))
    problem = problem_of(response, 422)
    assert [error["loc"] for error in problem["errors"]] == [["body", "policy"]]
    for leak in (str(tmp_path), str(folder), "services", "secret_key", "/etc", "hostname"):
        assert leak not in response.text, leak
    if len(name) <= 64 and "/" not in name:  # a slug: known to be unknown, and the known set named
        assert problem["known_policies"] == ["default", "demo", "fast"]
        assert problem["detail"] == f"unknown policy {name!r}; known policies: default, demo, fast"
    assert [w async for w in client.list_workflows(f"WorkflowId = 'escalation-{body['ticket_id']}'")] == []


def test_the_worker_refuses_paths_and_long_names_too():
    """What the API refuses is refused where the worker loads policies (a Temporal client or the sweep
    can name one): an error, never a file read outside the policy folders or an OSError retried."""
    source = PolicySource.from_setting(str(policy_path("fast")))
    for name in ("../../../../etc/hostname", "/etc/hostname", "a" * 300, "no-such-policy"):
        with pytest.raises(UnknownPolicy) as refused:
            source.load(name)
        assert refused.value.known == ["default", "demo", "fast"]
        assert "/etc" not in str(refused.value) and str(policy_path("fast").parent) not in str(refused.value)
    assert source.load("demo").name == "demo"


# -- the trigger and other bounds ------------------------------------------------------


async def test_a_start_cannot_set_its_trigger(http, start_worker, client):
    forged = body_of()
    forged["trigger"] = {"source": "sweep", "criterion": "many-users", "detail": "users_affected=9000 ≥ 10"}
    problem = problem_of(await http.post("/escalations", json=forged, headers=bearer("ops")), 422)
    assert problem["errors"][0]["loc"] == ["body", "trigger"] and "set by the server" in problem["detail"]
    assert [w async for w in client.list_workflows(f"WorkflowId = 'escalation-{forged['ticket_id']}'")] == []
    schema = (await http.get("/openapi.json")).json()
    assert schema["components"]["schemas"]["EscalationRequest"]["properties"]["trigger"]["readOnly"] is True


async def test_numbers_and_level_ids_are_bounded(http, start_worker):
    huge = body_of()
    huge["impact"]["users_affected"] = 10**30
    problem = problem_of(await http.post("/escalations", json=huge, headers=bearer("ops")), 422)
    assert problem["errors"][0]["loc"] == ["body", "impact", "users_affected"]
    ticket = {"id": f"T-{uuid.uuid4().hex[:6]}", "customer": {"id": "acme", "name": "Acme"},
              "subject": "Export failing", "status": "open", "users_affected": 10**30, "interactions": 10**30,
              "opened_at": "2026-11-27T09:00:00Z", "updated_at": "2026-11-27T10:00:00Z"}
    problem = problem_of(await http.post("/tickets", json=ticket, headers=bearer("only-tickets")), 422)
    assert {tuple(e["loc"]) for e in problem["errors"]} == {("body", "users_affected"), ("body", "interactions")}
    async with start_worker("fast"):
        ticket_id = await started(http)
        for field, command in (("to_level", "escalate"), ("level", "acknowledge")):
            for level in ("Management <b>now</b>", "x" * 300):
                body = {"by": "dana", field: level, **({"reason": "r"} if command == "escalate" else {})}
                problem = problem_of(await http.post(f"/escalations/{ticket_id}/{command}", json=body,
                                                     headers=bearer("ops")), 422)
                assert problem["errors"][0]["loc"] == ["body", field]
    with pytest.raises(ValueError):
        EscalateCommand(by="x", reason="r", to_level="../tier2")
    with pytest.raises(ValueError):
        AcknowledgeCommand(by="x", level="Tier 2")
    with pytest.raises(ValueError):
        Impact(users_affected=10**30)
    assert problem_of(await http.get("/kpis", params={"category": "c" * 101}, headers=bearer("reader")), 422)


# -- Idempotency-Keys -------------------------------------------------------------------


async def test_idempotency_keys_belong_to_the_principal(http, client, pg_pool):
    key = f"shared-{uuid.uuid4()}"
    mine, theirs = body_of(), body_of()
    first = await http.post("/escalations", json=mine, headers={**bearer("ops"), "Idempotency-Key": key})
    assert first.status_code == 201, first.text
    # Another caller with the same key and another body: its own key, its own escalation.
    other = await http.post("/escalations", json=theirs, headers={**bearer("only-start"), "Idempotency-Key": key})
    assert other.status_code == 201, other.text
    assert other.json()["ticket_id"] == theirs["ticket_id"] and "idempotent-replayed" not in other.headers
    # Each replays its own response only.
    again = await http.post("/escalations", json=theirs, headers={**bearer("only-start"), "Idempotency-Key": key})
    assert again.json() == other.json() and again.headers["idempotent-replayed"] == "true"
    reused = await http.post("/escalations", json=theirs, headers={**bearer("ops"), "Idempotency-Key": key})
    assert problem_of(reused, 422)["detail"] == "Idempotency-Key reused with a different request"
    rows = await pg_pool.fetch("SELECT principal FROM api_idempotency WHERE key = $1 ORDER BY principal", key)
    assert [row["principal"] for row in rows] == ["api:only-start", "api:ops"]


async def test_housekeeping_purges_expired_idempotency_keys(client, task_queue, start_worker, pg_pool):
    now = datetime.now(UTC)
    # Replay guards of the action links and the Jira webhook go once nothing can replay them.
    for token, expires in (("expired", now - timedelta(minutes=1)), ("live", now + timedelta(hours=1))):
        await pg_pool.execute(
            "INSERT INTO action_link_uses (token_id, escalation_id, ticket_id, action, actor, via, status, expires_at) "
            "VALUES ($1, 'e', 't', 'acknowledge', 'Dana', 'link:webhook', 'done', $2)", token, expires)
    for receipt, age in (("comment:1", timedelta(days=31)), ("comment:2", timedelta(days=1))):
        await pg_pool.execute("INSERT INTO jira_webhook_receipts (receipt, issue_key, escalation_id, received_at) "
                              "VALUES ($1, 'OPS-1', 'e', $2)", receipt, now - age)
    for principal, key, age in (("api:a", "old-1", timedelta(hours=25)), ("api:b", "old-2", timedelta(days=30)),
                                ("", "from-before-principals", timedelta(days=2)),
                                ("api:a", "fresh", timedelta(hours=23))):
        await pg_pool.execute(
            "INSERT INTO api_idempotency (principal, scope, key, request_sha256, created_at) "
            "VALUES ($1, 'POST /escalations', $2, $3, $4)", principal, key, "0" * 64, now - age)
    async with start_worker("fast"):
        result = await client.execute_workflow(
            keys.HOUSEKEEPING_WORKFLOW, ReconcileRequest(), id=f"housekeeping-{uuid.uuid4()}",
            task_queue=task_queue, result_type=ReconcileResult)
    assert result.idempotency_keys_purged == 3 and result.replay_records_purged == 2
    assert [row["token_id"] for row in await pg_pool.fetch("SELECT token_id FROM action_link_uses")] == ["live"]
    assert [row["receipt"] for row in await pg_pool.fetch("SELECT receipt FROM jira_webhook_receipts")] == ["comment:2"]
    assert [row["key"] for row in await pg_pool.fetch("SELECT key FROM api_idempotency")] == ["fresh"]
    # In batches: a backlog larger than one batch goes too.
    for number in range(5):
        await pg_pool.execute(
            "INSERT INTO api_idempotency (principal, scope, key, request_sha256, created_at) "
            "VALUES ('api:a', 'POST /escalations', $1, $2, $3)", f"k{number}", "0" * 64, now - timedelta(days=3))
    assert await stored_keys.purge(pg_pool, now - timedelta(days=1), batch=2) == 2
    assert await pg_pool.fetchval("SELECT count(*) FROM api_idempotency") == 4


def test_the_worker_reads_the_same_ttl_variable():
    from escalations.settings import WorkerSettings

    worker = WorkerSettings.from_env({"DATABASE_URL": "postgresql://x/y", "ESCALATION_API_IDEMPOTENCY_TTL": "2h"})
    api = ApiSettings.from_env({"ESCALATION_API_IDEMPOTENCY_TTL": "2h"})
    assert worker.idempotency_ttl == api.idempotency_ttl == timedelta(hours=2)


def test_a_request_as_a_caller_sends_it_has_no_trigger():
    request = blog_request("SF-1")
    assert "trigger" not in request.as_body()
    assert EscalationRequest.model_validate(request.as_body()).trigger.source == "client"


def test_entries_are_printable_for_operators():
    entry = token_entry("ci", ["read", "start"], "t0k3n")
    name, scopes, digest = entry.split(":")
    assert (name, scopes, digest) == ("ci", "read+start", token_digest("t0k3n")) and len(digest) == 64

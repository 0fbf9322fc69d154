"""The HTTP API in-process (httpx ASGI transport, lifespan run by the test) against the
real dev server, the real worker and a real Postgres."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from temporalio.client import Client

from escalations.api.app import create_app
from escalations.api.deps import api_routes, requires_token
from escalations.api.idempotency import request_digest
from escalations.settings import ApiSettings, ConfigError
from schemas.escalation import EscalationRequest
from tests.helpers.api import TOKEN, api_settings
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request

PROBLEM = "application/problem+json"
PROBES = {"/healthz", "/livez", "/readyz", "/metrics"}
PUBLIC = {*PROBES, "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
# Authenticated by the sender's signature, not a token (tests/test_ticket_intake.py).
SIGNED = {"/tickets/intercom", "/integrations/jira/webhook", "/integrations/slack/interactions",
          "/actions/{action}/{token}"}  # Slack's signature; a link's signed token (tests/test_action_links.py)


class Api:
    """An httpx client on the app (lifespan entered), with the token set."""

    def __init__(self, app: FastAPI, http: httpx.AsyncClient) -> None:
        self.app = app
        self.http = http

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)


@pytest_asyncio.fixture
async def api(client: Client, database_url: str, task_queue: str) -> AsyncIterator[Api]:
    app = create_app(api_settings(client, database_url, task_queue))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            yield Api(app, http)


def body_of(ticket_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    return blog_request(ticket_id or f"SF-{uuid.uuid4().hex[:8]}", **overrides).as_body()


def assert_problem(response: httpx.Response, status: int, *, detail: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"] and problem["type"]
    if detail is not None:
        assert detail in problem["detail"], problem
    return problem


async def started(api: Api, **overrides: Any) -> str:
    """Start one escalation; wait until it answers its query. Returns the ticket id."""
    body = body_of(**overrides)
    response = await api.post("/escalations", json=body)
    assert response.status_code == 201, response.text
    ticket = body["ticket_id"]

    async def open_() -> None:
        got = await api.get(f"/escalations/{ticket}")
        assert got.status_code == 200, got.text

    await eventually(open_, timeout=15)
    return ticket


# -- start ----------------------------------------------------------------------------


async def test_start_answers_201_and_the_state_follows(api, start_worker, client):
    async with start_worker("fast"):
        body = body_of()
        ticket = body["ticket_id"]
        response = await api.post("/escalations", json=body)
        assert response.status_code == 201, response.text
        created = response.json()
        assert created["workflow_id"] == f"escalation-{ticket}"
        assert created["ticket_id"] == ticket and created["run_id"]
        assert created["ui_url"] == (f"http://ui.example:8233/namespaces/default/workflows/"
                                     f"escalation-{ticket}/{created['run_id']}/history")
        assert response.headers["location"] == f"/escalations/{ticket}"

        async def state() -> dict[str, Any]:
            got = await api.get(f"/escalations/{ticket}")
            assert got.status_code == 200, got.text
            return got.json()

        view = await eventually(state, timeout=15)
        assert view["ticket_id"] == ticket and view["escalation_id"] == created["run_id"]
        assert view["status"] in ("open", "acknowledged") and view["priority"] == "P1"
        assert view["trigger"]["source"] == "api"
        assert view["policy"] == {"name": "fast", "version": 1}
        description = await client.get_workflow_handle(created["workflow_id"]).describe()
        assert await description.static_summary() == "P1 · Acme Corp · Salesforce sync failing since yesterday"
        assert "sf-prod-7" in (await description.static_details() or "")


async def test_second_start_for_an_open_ticket_is_409_naming_it(api, start_worker):
    async with start_worker("fast"):
        body = body_of()
        first = await api.post("/escalations", json=body)
        assert first.status_code == 201
        again = await api.post("/escalations", json=body)
        problem = assert_problem(again, 409, detail="already has an open escalation")
        assert problem["workflow_id"] == first.json()["workflow_id"]
        assert problem["run_id"] == first.json()["run_id"]


async def test_idempotency_key_replays_the_first_201_and_refuses_another_body(api, client, pg_pool):
    body = body_of()
    key = str(uuid.uuid4())
    first = await api.post("/escalations", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    # The same body in another key order is the same request.
    retry = await api.post("/escalations", json=dict(reversed(list(body.items()))),
                           headers={"Idempotency-Key": key})
    assert retry.status_code == 201, retry.text
    assert retry.json() == first.json()
    assert retry.headers["idempotent-replayed"] == "true"
    other = await api.post("/escalations", json={**body, "title": "Something else"},
                           headers={"Idempotency-Key": key})
    problem = assert_problem(other, 422, detail="Idempotency-Key reused with a different request")
    assert problem["errors"][0]["loc"] == ["header", "Idempotency-Key"]
    # One run only.
    description = await client.get_workflow_handle(first.json()["workflow_id"]).describe()
    assert description.run_id == first.json()["run_id"]
    stored = await pg_pool.fetchrow("SELECT status_code, response FROM api_idempotency WHERE key = $1", key)
    assert stored["status_code"] == 201 and stored["response"] == first.json()
    # A claim still in flight answers 409; one abandoned (or expired) is taken over.
    in_flight = body_of()
    await pg_pool.execute(
        "INSERT INTO api_idempotency (principal, scope, key, request_sha256, created_at) "
        "VALUES ($1, $2, $3, $4, now())", "api:legacy-2", "POST /escalations", "busy-key", "0" * 64)
    assert_problem(await api.post("/escalations", json=in_flight, headers={"Idempotency-Key": "busy-key"}),
                   422, detail="reused with a different request")
    await pg_pool.execute("UPDATE api_idempotency SET request_sha256 = $1 WHERE key = 'busy-key'",
                          request_digest(EscalationRequest.model_validate(in_flight)))
    busy = await api.post("/escalations", json=in_flight, headers={"Idempotency-Key": "busy-key"})
    assert_problem(busy, 409, detail="still in progress")
    assert busy.headers["retry-after"] == "1"
    await pg_pool.execute("UPDATE api_idempotency SET created_at = now() - interval '3 minutes' "
                          "WHERE key = 'busy-key'")
    taken_over = await api.post("/escalations", json=in_flight, headers={"Idempotency-Key": "busy-key"})
    assert taken_over.status_code == 201, taken_over.text
    await pg_pool.execute("UPDATE api_idempotency SET created_at = now() - interval '25 hours' "
                          "WHERE key = 'busy-key'")
    expired = await api.post("/escalations", json=body_of(), headers={"Idempotency-Key": "busy-key"})
    assert expired.status_code == 201, expired.text
    # A failed start (409: already open) with a new key stores nothing, so a retry runs again.
    failed_key = str(uuid.uuid4())
    conflict = await api.post("/escalations", json=body, headers={"Idempotency-Key": failed_key})
    assert_problem(conflict, 409)
    assert await pg_pool.fetchval("SELECT count(*) FROM api_idempotency WHERE key = $1", failed_key) == 0


async def test_start_field_errors_are_422_problems(api):
    body = body_of()
    del body["title"]
    body["priority"] = "P9"
    body["customer"]["id"] = ""
    problem = assert_problem(await api.post("/escalations", json=body), 422)
    locs = {tuple(error["loc"]) for error in problem["errors"]}
    assert {("body", "title"), ("body", "priority"), ("body", "customer", "id")} <= locs
    for error in problem["errors"]:
        assert set(error) == {"loc", "msg", "type"}
    bad_key = await api.post("/escalations", json=body_of(), headers={"Idempotency-Key": "has spaces"})
    assert ["header", "Idempotency-Key"] in [e["loc"] for e in assert_problem(bad_key, 422)["errors"]]
    # Postgres cannot store NUL: refused up front rather than stalling the run on its first event.
    nul = body_of()
    nul["handoff"]["error_logs"] = "SyncError\u0000"
    problem = assert_problem(await api.post("/escalations", json=nul), 422, detail="NUL")
    assert problem["errors"][0]["loc"] == ["body", "handoff", "error_logs"]


async def test_unroutable_category_and_unknown_policy_are_422(api, client):
    body = body_of(kind="functional", category="crm-sync")
    problem = assert_problem(await api.post("/escalations", json=body), 422, detail="'crm-sync' has no route")
    assert problem["known_categories"] == ["billing", "integration"]
    assert problem["errors"][0]["loc"] == ["body", "category"]
    unknown = assert_problem(await api.post("/escalations", json=body_of(policy="no-such-policy")), 422,
                             detail="no-such-policy")
    assert unknown["errors"][0]["loc"] == ["body", "policy"]
    # Nothing was started for either.
    assert [w async for w in client.list_workflows(f"WorkflowId = 'escalation-{body['ticket_id']}'")] == []


# -- reading ------------------------------------------------------------------------


async def test_unknown_ticket_is_404_everywhere(api):
    ticket = f"NOPE-{uuid.uuid4().hex[:8]}"
    assert_problem(await api.get(f"/escalations/{ticket}"), 404, detail=f"no escalation for ticket {ticket}")
    commands = {
        "acknowledge": {"by": "dana"},
        "escalate": {"by": "dana", "reason": "stuck"},
        "notes": {"author": "dana", "text": "hello"},
        "pause": {"by": "dana", "reason": "waiting"},
        "resume": {"by": "dana"},
        "resolve": {"by": "dana", "root_cause": "x", "mitigation": "y"},
        "postmortem": {"by": "dana", "summary": "s", "root_cause": "r", "improvements": ["i"]},
        "csat": {"score": 4},
    }
    for path, body in commands.items():
        assert_problem(await api.post(f"/escalations/{ticket}/{path}", json=body), 404)
    assert_problem(await api.get("/escalations/not a ticket!"), 422)


async def test_list_filters_through_visibility(api, start_worker):
    customer = f"cust-{uuid.uuid4().hex[:6]}"
    async with start_worker("fast"):
        p1 = await started(api, customer={"id": customer, "name": "Filter Co"})
        p3 = await started(api, customer={"id": customer, "name": "Filter Co"}, priority="P3", kind="hierarchical")
        await api.post(f"/escalations/{p3}/pause", json={"by": "dana", "reason": "waiting on customer"})

        async def listed(query: dict[str, Any], expected: set[str]) -> dict[str, Any]:
            response = await api.get("/escalations", params=query)
            assert response.status_code == 200, response.text
            payload = response.json()
            assert {item["ticket_id"] for item in payload["items"]} == expected
            return payload

        everything = await eventually(lambda: listed({"customer_id": customer}, {p1, p3}), timeout=15)
        item = next(i for i in everything["items"] if i["ticket_id"] == p1)
        assert item["workflow_id"] == f"escalation-{p1}" and item["customer_id"] == customer
        assert item["priority"] == "P1" and item["category"] == "integration" and item["kind"] == "priority"
        assert item["sla_breached"] is False and item["started_at"] and item["closed_at"] is None
        assert item["level"] and item["status"] and item["next_deadline"] and item["run_id"]
        await eventually(lambda: listed({"customer_id": customer, "priority": "P3"}, {p3}), timeout=15)
        await eventually(lambda: listed({"customer_id": customer, "status": "paused"}, {p3}), timeout=15)
        await listed({"customer_id": customer, "status": "closed"}, set())
        page = (await api.get("/escalations", params={"customer_id": customer, "limit": 1})).json()
        assert len(page["items"]) == 1 and page["next_page_token"] and "count" not in page
        assert "execution_status" not in page["items"][0]
    for bad in ({"customer_id": "x' OR '1'='1"}, {"level": "a b"}, {"status": "gone"}, {"priority": "P0"},
                {"limit": 0}, {"limit": 1001}):
        problem = assert_problem(await api.get("/escalations", params=bad), 422)
        assert problem["errors"][0]["loc"][0] == "query"


# -- commands -----------------------------------------------------------------------


async def test_full_life_cycle_over_http(api, start_worker):
    async with start_worker("fast"):
        ticket = await started(api)
        base = f"/escalations/{ticket}"
        acked = await api.post(f"{base}/acknowledge", json={"by": "dana"})
        assert acked.status_code == 200, acked.text
        assert acked.json()["status"] == "acknowledged" and acked.json()["acknowledged_by"] == "dana"
        moved = await api.post(f"{base}/escalate", json={"by": "dana", "reason": "needs engineering",
                                                         "to_level": "management"})
        assert moved.status_code == 200, moved.text
        assert moved.json()["level"] == "management" and moved.json()["path"][-1]["by"] == "dana"
        noted = await api.post(f"{base}/notes", json={"author": "dana", "text": "on it", "customer_visible": True})
        assert noted.status_code == 200 and noted.json()["counts"]["notes"] == 1
        paused = await api.post(f"{base}/pause", json={"by": "dana", "reason": "waiting on customer"})
        assert paused.status_code == 200 and paused.json()["status"] == "paused"
        resumed = await api.post(f"{base}/resume", json={"by": "dana"})
        assert resumed.status_code == 200 and resumed.json()["status"] != "paused"
        resolved = await api.post(f"{base}/resolve", json={
            "by": "dana", "root_cause": "Salesforce API schema change", "mitigation": "field mapping fixed",
            "preventive_actions": ["monitor schema changes"]})
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["status"] == "resolved"
        assert resolved.json()["postmortem"]["workflow_id"] == f"postmortem-{ticket}"
        closed = await api.post(f"{base}/postmortem", json={
            "by": "dana", "summary": "sync broke", "root_cause": "schema change",
            "improvements": ["alert on schema changes"], "kb_article_url": "https://kb.example.com/sf"})
        assert closed.status_code == 200, closed.text
        final = closed.json()
        assert final["status"] == "closed" and final["postmortem"]["completed_by"] == "dana"

        # Closed: GET answers from the read model; commands are 409.
        state = await api.get(base)
        assert state.status_code == 200, state.text
        assert state.json()["status"] == "closed" and state.json()["escalation_id"] == final["escalation_id"]
        assert state.json()["resolution"]["root_cause"] == "Salesforce API schema change"
        assert_problem(await api.post(f"{base}/acknowledge", json={"by": "sam"}), 409, detail="is closed")
        assert_problem(await api.post(f"{base}/postmortem", json={
            "by": "sam", "summary": "again", "root_cause": "again", "improvements": ["x"]}), 409,
            detail="already completed")

        # CSAT: once, 1-5.
        assert_problem(await api.post(f"{base}/csat", json={"score": 6}), 422)
        assert_problem(await api.post(f"{base}/csat", json={"score": 0}), 422)
        recorded = await api.post(f"{base}/csat", json={"score": 5, "comment": "great"})
        assert recorded.status_code == 200, recorded.text
        assert recorded.json()["score"] == 5 and recorded.json()["escalation_id"] == final["escalation_id"]
        assert_problem(await api.post(f"{base}/csat", json={"score": 4}), 409)

        kpis = await api.get("/kpis", params={"priority": "P1"})
        assert kpis.status_code == 200, kpis.text
        assert kpis.json()["resolved"] >= 1 and kpis.json()["csat_responses"] >= 1

        # The ticket can be escalated again: a new run under the same workflow id.
        again = await api.post("/escalations", json=body_of(ticket))
        assert again.status_code == 201, again.text
        assert again.json()["run_id"] != final["escalation_id"]

        async def reopened() -> None:
            got = await api.get(base)
            assert got.status_code == 200 and got.json()["escalation_id"] == again.json()["run_id"], got.text

        await eventually(reopened, timeout=15)
        assert_problem(await api.post(f"{base}/postmortem", json={
            "by": "sam", "summary": "s", "root_cause": "r", "improvements": ["x"]}), 409,
            detail="no postmortem is open")


async def test_rejected_updates_are_409_with_the_validators_message(api, start_worker):
    async with start_worker("fast"):
        ticket = await started(api)
        base = f"/escalations/{ticket}"
        assert (await api.post(f"{base}/acknowledge", json={"by": "dana"})).status_code == 200
        twice = assert_problem(await api.post(f"{base}/acknowledge", json={"by": "sam"}), 409,
                               detail=f"cannot acknowledge: escalation {ticket} is acknowledged")
        assert twice["type"].endswith("command-rejected")
        assert_problem(await api.post(f"{base}/resume", json={"by": "sam"}), 409, detail="not paused")
        assert_problem(await api.post(f"{base}/escalate", json={"by": "x", "reason": "r", "to_level": "nope"}),
                       409, detail="not a level")
        assert_problem(await api.post(f"{base}/postmortem", json={
            "by": "x", "summary": "s", "root_cause": "r", "improvements": ["i"]}), 409,
            detail="no postmortem is open")
        nul = assert_problem(await api.post(f"{base}/notes", json={"author": "x", "text": "a\u0000b"}), 422)
        assert nul["errors"][0]["loc"] == ["body", "text"]
        assert (await api.post(f"{base}/notes", json={"author": "x", "text": "still answering"})).status_code == 200
        # Field errors of command bodies are 422, not 409.
        problem = assert_problem(await api.post(f"{base}/acknowledge", json={}), 422)
        assert problem["errors"][0]["loc"] == ["body", "by"]
        problem = assert_problem(await api.post(f"{base}/postmortem", json={
            "by": "x", "summary": "s", "root_cause": "r", "improvements": []}), 422)
        assert problem["errors"][0]["loc"] == ["body", "improvements"]


async def test_kpis_validate_their_filters(api):
    assert (await api.get("/kpis")).status_code == 200
    assert_problem(await api.get("/kpis", params={"since": "2026-01-01T00:00:00"}), 422)  # no offset
    assert_problem(await api.get("/kpis", params={"priority": "urgent"}), 422)


@pytest.mark.parametrize(("since", "back"), [
    ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("2w", timedelta(weeks=2)),
    ("90m", timedelta(minutes=90)), ("P30D", timedelta(days=30)),
])
async def test_kpis_take_a_duration_back_from_now(api, since, back):
    before = datetime.now(timezone.utc)
    response = await api.get("/kpis", params={"since": since, "until": "1d"})
    assert response.status_code == 200, response.text
    filters = response.json()["filters"]
    meant = datetime.fromisoformat(filters["since"])
    assert before - back - timedelta(seconds=5) <= meant <= datetime.now(timezone.utc) - back
    assert datetime.fromisoformat(filters["until"]) < datetime.now(timezone.utc) - timedelta(hours=23)


async def test_kpis_refuse_a_moment_they_cannot_read(api):
    iso = await api.get("/kpis", params={"since": "2026-01-01T00:00:00Z"})
    assert iso.status_code == 200 and iso.json()["filters"]["since"].startswith("2026-01-01T00:00:00")
    for garbage in ("yesterday", "30 days", "-3d", "0d", "30x", "P", "2026-13-01T00:00:00Z"):
        problem = assert_problem(await api.get("/kpis", params={"since": garbage}), 422)
        assert problem["errors"][0]["loc"] == ["query", "since"], (garbage, problem)


# -- auth, limits, errors, health ----------------------------------------------------------


def _fill(path: str) -> str:
    return path.replace("{ticket_id}", "SF-1042")


async def test_every_route_but_health_and_docs_needs_the_token(api):
    routes = [(path, route) for path, route in api_routes(api.app) if path not in PUBLIC | SIGNED]
    assert len(routes) >= 14  # escalations (11), csat, kpis, tickets (2)
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://api.test")
    async with anonymous:
        for path, route in routes:
            assert requires_token(route), f"{path} is not guarded by require_token"
            for method in route.methods:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                {"Authorization": "Bearer"}):
                    response = await anonymous.request(method, _fill(path), json={}, headers=headers)
                    assert_problem(response, 401)
                    assert response.headers["www-authenticate"].startswith("Bearer")
        for probe in sorted(PROBES):
            assert (await anonymous.get(probe)).status_code == 200, probe
        assert (await anonymous.get("/openapi.json")).status_code == 200
        assert (await anonymous.get("/docs")).status_code == 200


async def test_bodies_over_the_limit_are_413(client, database_url, task_queue):
    app = create_app(api_settings(client, database_url, task_queue, max_body_bytes=2048))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            big = body_of()
            big["handoff"]["error_logs"] = "x" * 4000
            declared = await http.post("/escalations", json=big)
            assert_problem(declared, 413, detail="2048 bytes")

            async def chunks():  # no Content-Length: cut off while streaming
                for _ in range(8):
                    yield b" " * 512

            streamed = await http.post("/escalations/SF-1/acknowledge", content=chunks(),
                                       headers={"Content-Type": "application/json"})
            assert "content-length" not in streamed.request.headers
            assert_problem(streamed, 413)
            small = await http.post("/escalations", json={"ticket_id": "x"})
            assert small.status_code == 422


async def test_health_reports_each_dependency(api):
    for ready in ("/readyz", "/healthz"):
        ok = await api.get(ready, headers={"Authorization": ""})
        assert ok.status_code == 200
        assert ok.json() == {"status": "ok", "temporal": "ok", "postgres": "ok"}
    await api.app.state.pool.close()
    for ready in ("/readyz", "/healthz"):
        down = assert_problem(await api.get(ready), 503, detail="postgres")
        assert down["temporal"] == "ok" and down["postgres"].startswith("unavailable")
    alive = await api.get("/livez")  # the process is fine: an orchestrator must not restart it
    assert alive.status_code == 200 and alive.json() == {"status": "ok"}


async def test_unexpected_errors_are_500_problems_without_a_traceback(api, caplog):
    async def boom() -> None:
        raise RuntimeError("secret internals")

    api.app.add_api_route("/boom", boom)
    with caplog.at_level(logging.ERROR, logger="escalations.api"):
        response = await api.get("/boom")
    problem = assert_problem(response, 500)
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert problem["detail"] == "internal error; the server log has the details"
    assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in caplog.records)


async def test_the_api_refuses_to_start_without_tokens(client, database_url, task_queue):
    with pytest.raises(ConfigError, match="ESCALATION_API_TOKENS"):
        create_app(api_settings(client, database_url, task_queue, tokens=()))
    with pytest.raises(ConfigError, match="ESCALATION_API_TOKENS"):
        create_app(ApiSettings.from_env({"DATABASE_URL": database_url, "ESCALATION_API_TOKENS": " , "}))
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        create_app(ApiSettings.from_env({"ESCALATION_API_TOKENS": "t"}))


def test_settings_from_the_environment():
    settings = ApiSettings.from_env({
        "ESCALATION_API_TOKENS": "a, b,,c", "TEMPORAL_ADDRESS": "temporal:7233", "TEMPORAL_NAMESPACE": "prod",
        "ESCALATION_API_HOST": "0.0.0.0", "ESCALATION_API_PORT": "9000", "DATABASE_URL": "postgresql://x/y",
    }, port=9100)
    assert [t.name for t in settings.api_tokens] == ["legacy-1", "legacy-2", "legacy-3"]
    assert settings.temporal["target_host"] == "temporal:7233" and settings.namespace == "prod"
    assert (settings.host, settings.port) == ("0.0.0.0", 9100)
    assert settings.task_queue == "escalations" and settings.max_body_bytes == 1024 * 1024
    defaults = ApiSettings.from_env({})
    assert (defaults.host, defaults.port, defaults.temporal["target_host"]) == ("127.0.0.1", 8000, "localhost:7233")
    with pytest.raises(ConfigError, match="ESCALATION_API_PORT"):
        ApiSettings.from_env({"ESCALATION_API_PORT": "eighty"})


# -- OpenAPI ------------------------------------------------------------------------


async def test_openapi_documents_models_problems_and_auth(api):
    schema = (await api.get("/openapi.json", headers={"Authorization": ""})).json()
    start = schema["paths"]["/escalations"]["post"]
    example = start["requestBody"]["content"]["application/json"]["examples"]["salesforce-sync"]["value"]
    assert example["ticket_id"] == "SF-1042" and example["handoff"]["integration_id"] == "sf-prod-7"
    assert start["security"] == [{"bearer": []}]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for code in ("401", "409", "413", "422"):
        assert PROBLEM in start["responses"][code]["content"], code
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if path in PROBES or path in SIGNED:
                assert "security" not in operation
                continue
            assert operation.get("security") == [{"bearer": []}], (method, path)
            assert "401" in operation["responses"], (method, path)
    ack = schema["paths"]["/escalations/{ticket_id}/acknowledge"]["post"]
    assert {"401", "404", "409", "422"} <= set(ack["responses"])
    assert "EscalationState" in schema["components"]["schemas"]
    assert "ValidationProblem" in schema["components"]["schemas"]

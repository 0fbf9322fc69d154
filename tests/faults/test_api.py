"""The HTTP API during outages (issue #14, item 7): while Temporal, PostgreSQL or the worker is
down or frozen, every route answers 503 (with Retry-After) or 504 within its bound, never 500
and never hangs; /healthz answers within its own timeout; everything recovers afterwards.

These tests run their OWN Temporal dev server and their OWN embedded PostgreSQL (never the
session's), so they can SIGSTOP/SIGCONT and SIGKILL them. The API runs in-process on short
bounds (``BOUNDS``) so each test takes seconds.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from temporalio.client import RPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from escalations import client as ec
from escalations.api.app import create_app
from escalations.api.problems import classify_fault
from escalations.api.server import serve
from escalations.settings import ApiSettings, ConfigError
from escalations.db.pool import DatabaseTimeout, DatabaseUnavailable
from escalations.devstack.postgres import free_port
from tests.helpers.codec import TEST_ENV
from tests.helpers.policies import policy_path
from tests.helpers.polling import eventually
from tests.helpers.processes import OwnPostgres, OwnTemporal
from tests.helpers.requests import blog_request
from tests.helpers.workers import running_worker

TOKEN = "faults-token-7d2e"
PROBLEM = "application/problem+json"
BOUNDS: dict[str, Any] = {
    "temporal_rpc_timeout": 2.0,
    "command_timeout": 3.0,
    "probe_timeout": 1.0,
    "db_acquire_timeout": 2.0,
    "db_command_timeout": 2.0,
    "health_timeout": 2.0,
    "request_timeout": 15.0,
    "retry_after": 2,
}
SLACK = 1.5  # scheduling slack on a shared, busy machine
TEMPORAL_BOUND = BOUNDS["temporal_rpc_timeout"] + SLACK
COMMAND_BOUND = BOUNDS["command_timeout"] + BOUNDS["probe_timeout"] + SLACK
POSTGRES_BOUND = BOUNDS["db_acquire_timeout"] + BOUNDS["db_command_timeout"] + SLACK
HEALTH_BOUND = BOUNDS["health_timeout"] + 0.5
QUICK = 2.5  # a refused connection answers well before any timeout
LEAKS = ("tonic", "Errno", "tcp connect", "Traceback", "ConnectError", "asyncpg", "127.0.0.1")


# -- the API ----------------------------------------------------------------------------------------


def fault_settings(temporal_address: str, database_url: str, task_queue: str, **overrides: Any) -> ApiSettings:
    environ = {
        "TEMPORAL_ADDRESS": temporal_address,
        "ESCALATION_API_TOKENS": TOKEN,
        "DATABASE_URL": database_url,
        "ESCALATION_TASK_QUEUE": task_queue,
        "ESCALATION_POLICY_FILE": str(policy_path("fast")),
        **TEST_ENV,
    }
    return ApiSettings.from_env(environ, **{**BOUNDS, **overrides})


class Api:
    def __init__(self, app: FastAPI, http: httpx.AsyncClient) -> None:
        self.app = app
        self.http = http

    async def timed(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
        """One request and how long it took; a hang fails the test instead of hanging it."""
        started = time.monotonic()
        async with asyncio.timeout(BOUNDS["request_timeout"] + 10):
            response = await self.http.request(method, path, **kwargs)
        return response, time.monotonic() - started


@asynccontextmanager
async def running_api(settings: ApiSettings) -> AsyncIterator[Api]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            yield Api(app, http)


@pytest_asyncio.fixture
async def api(temporal: OwnTemporal, postgres: OwnPostgres) -> AsyncIterator[Api]:
    async with running_api(fault_settings(temporal.address, postgres.dsn, f"tq-{uuid.uuid4()}")) as api:
        yield api


def queue_of(api: Api) -> str:
    return api.app.state.settings.task_queue


def ticket_body(ticket_id: str | None = None) -> dict[str, Any]:
    return {
        "id": ticket_id or f"T-{uuid.uuid4().hex[:8]}",
        "customer": {"id": "acme", "name": "Acme Corp", "segment": "enterprise"},
        "subject": "Dashboard export failing", "category": "technical", "priority": "P2",
        "status": "open", "users_affected": 40, "interactions": 3,
        "opened_at": "2026-11-27T09:00:00Z", "updated_at": "2026-11-27T10:30:00Z",
    }


def escalation_body(ticket_id: str | None = None) -> dict[str, Any]:
    return blog_request(ticket_id or f"SF-{uuid.uuid4().hex[:8]}").as_body()


def assert_fault(response: httpx.Response, status: int, elapsed: float, bound: float, *,
                 dependency: str | None = None, detail: str | None = None) -> dict[str, Any]:
    """A 503/504 problem document answered within ``bound`` seconds, leaking no driver text."""
    assert response.status_code == status, (response.status_code, response.text)
    assert elapsed < bound, f"answered after {elapsed:.2f}s, bound {bound:.2f}s"
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    problem = response.json()
    assert problem["status"] == status and problem["title"] and problem["type"].startswith("urn:")
    if status == 503:
        assert response.headers["retry-after"] == str(BOUNDS["retry_after"]), response.headers
        assert problem["retry_after"] == BOUNDS["retry_after"]
    if dependency is not None:
        assert problem.get("dependency") == dependency, problem
    if detail is not None:
        assert detail in problem["detail"], problem
    for leak in LEAKS:
        assert leak not in response.text, (leak, response.text)
    return problem


async def healthy(api: Api) -> None:
    async def check() -> None:
        response, elapsed = await api.timed("GET", "/healthz")
        assert response.status_code == 200, response.text
        assert elapsed < HEALTH_BOUND

    await eventually(check, interval=0.2)


async def opened(api: Api) -> str:
    """A started escalation that answers its query; its ticket id."""
    body = escalation_body()
    response, _ = await api.timed("POST", "/escalations", json=body)
    assert response.status_code == 201, response.text
    ticket = body["ticket_id"]

    async def answers() -> None:
        got, _ = await api.timed("GET", f"/escalations/{ticket}")
        assert got.status_code == 200, got.text

    await eventually(answers, interval=0.2)
    return ticket


async def closed(api: Api) -> str:
    """An escalation driven to ``closed`` (resolved, postmortem completed, projected)."""
    ticket = await opened(api)
    base = f"/escalations/{ticket}"
    resolved, _ = await api.timed("POST", f"{base}/resolve", json={
        "by": "dana", "root_cause": "schema change", "mitigation": "mapping fixed"})
    assert resolved.status_code == 200, resolved.text
    done, _ = await api.timed("POST", f"{base}/postmortem", json={
        "by": "dana", "summary": "s", "root_cause": "r", "improvements": ["i"]})
    assert done.status_code == 200, done.text

    async def projected() -> None:
        got, _ = await api.timed("GET", base)
        assert got.status_code == 200 and got.json()["status"] == "closed", got.text

    await eventually(projected, interval=0.2)
    return ticket


# -- PostgreSQL ---------------------------------------------------------------------------------


async def test_postgres_frozen_answers_504_within_the_bound_then_recovers(
        api, postgres, worker_client, worker_pool):
    async with running_worker(worker_client, worker_pool, queue_of(api)):
        ticket = await closed(api)
        assert (await api.timed("GET", "/kpis"))[0].status_code == 200
        postgres.freeze()
        try:
            response, elapsed = await api.timed("GET", "/kpis")
            assert_fault(response, 504, elapsed, POSTGRES_BOUND, dependency="postgres")
            response, elapsed = await api.timed("POST", "/tickets", json=ticket_body())
            assert_fault(response, 504, elapsed, POSTGRES_BOUND, dependency="postgres")
            response, elapsed = await api.timed("GET", f"/escalations/{ticket}")  # closed: the read model
            assert_fault(response, 504, elapsed, POSTGRES_BOUND, dependency="postgres")
            # Several at once: each bounded, none waits behind another.
            many = await asyncio.gather(*(api.timed("GET", "/kpis") for _ in range(4)))
            for response, elapsed in many:
                assert_fault(response, 504, elapsed, POSTGRES_BOUND + BOUNDS["db_acquire_timeout"])
            response, elapsed = await api.timed("GET", "/healthz")
            problem = assert_fault(response, 503, elapsed, HEALTH_BOUND, detail="postgres: timeout")
            assert (problem["temporal"], problem["postgres"]) == ("ok", "timeout")
        finally:
            postgres.thaw()
        await healthy(api)
        assert (await api.timed("GET", "/kpis"))[0].status_code == 200
        assert (await api.timed("POST", "/tickets", json=ticket_body()))[0].status_code == 201
        got, _ = await api.timed("GET", f"/escalations/{ticket}")
        assert got.status_code == 200 and got.json()["status"] == "closed", got.text


async def test_postgres_killed_answers_503_with_retry_after_then_recovers(api, postgres):
    assert (await api.timed("GET", "/kpis"))[0].status_code == 200
    postgres.kill()
    try:
        for method, path, body in (("GET", "/kpis", None), ("POST", "/tickets", ticket_body()),
                                   ("GET", "/kpis", None)):
            response, elapsed = await api.timed(method, path, json=body)
            assert_fault(response, 503, elapsed, QUICK, dependency="postgres", detail="PostgreSQL")
        # A start with an Idempotency-Key needs PostgreSQL first: 503 too, nothing started.
        response, elapsed = await api.timed("POST", "/escalations", json=escalation_body(),
                                            headers={"Idempotency-Key": str(uuid.uuid4())})
        assert_fault(response, 503, elapsed, QUICK, dependency="postgres")
        response, elapsed = await api.timed("GET", "/healthz")
        problem = assert_fault(response, 503, elapsed, HEALTH_BOUND, detail="postgres: unavailable")
        assert (problem["temporal"], problem["postgres"]) == ("ok", "unavailable")
    finally:
        postgres.restart()
    await healthy(api)
    assert (await api.timed("GET", "/kpis"))[0].status_code == 200
    assert (await api.timed("POST", "/tickets", json=ticket_body()))[0].status_code == 201


# -- Temporal -------------------------------------------------------------------------------------


async def test_temporal_frozen_answers_504_within_the_bound_then_recovers(
        api, temporal, worker_client, worker_pool):
    async with running_worker(worker_client, worker_pool, queue_of(api)):
        ticket = await opened(api)
        temporal.freeze()
        try:
            response, elapsed = await api.timed("POST", "/escalations", json=escalation_body())
            assert_fault(response, 504, elapsed, TEMPORAL_BOUND, dependency="temporal")
            response, elapsed = await api.timed("GET", f"/escalations/{ticket}")
            assert_fault(response, 504, elapsed, TEMPORAL_BOUND, dependency="temporal")
            response, elapsed = await api.timed("POST", f"/escalations/{ticket}/acknowledge", json={"by": "dana"})
            assert_fault(response, 504, elapsed, COMMAND_BOUND, dependency="temporal")
            response, elapsed = await api.timed("GET", "/escalations")
            assert_fault(response, 504, elapsed, TEMPORAL_BOUND, dependency="temporal")
            response, elapsed = await api.timed("GET", "/healthz")
            problem = assert_fault(response, 503, elapsed, HEALTH_BOUND, detail="temporal: timeout")
            assert (problem["temporal"], problem["postgres"]) == ("timeout", "ok")
            # PostgreSQL-only routes do not care.
            assert (await api.timed("GET", "/kpis"))[0].status_code == 200
        finally:
            temporal.thaw()
        await healthy(api)

        async def acknowledged() -> None:
            # The acknowledge that timed out may have been applied after all: 200 or 409 both say so.
            acked, _ = await api.timed("POST", f"/escalations/{ticket}/acknowledge", json={"by": "dana"})
            assert acked.status_code in (200, 409), acked.text
            state, _ = await api.timed("GET", f"/escalations/{ticket}")
            assert state.status_code == 200 and state.json()["status"] == "acknowledged", state.text

        await eventually(acknowledged, interval=0.2)
        await opened(api)


async def test_temporal_killed_answers_503_then_recovers_after_a_restart(
        api, temporal, worker_client, worker_pool):
    async with running_worker(worker_client, worker_pool, queue_of(api)):
        ticket = await opened(api)
    temporal.kill()
    try:
        response, elapsed = await api.timed("POST", "/escalations", json=escalation_body())
        assert_fault(response, 503, elapsed, QUICK, dependency="temporal", detail="Temporal")
        response, elapsed = await api.timed("GET", f"/escalations/{ticket}")
        assert_fault(response, 503, elapsed, QUICK, dependency="temporal")
        response, elapsed = await api.timed("POST", f"/escalations/{ticket}/acknowledge", json={"by": "dana"})
        assert_fault(response, 503, elapsed, QUICK, dependency="temporal")
        response, elapsed = await api.timed("GET", "/escalations")
        assert_fault(response, 503, elapsed, QUICK, dependency="temporal")
        response, elapsed = await api.timed("GET", "/healthz")
        problem = assert_fault(response, 503, elapsed, HEALTH_BOUND, detail="temporal: unavailable")
        assert (problem["temporal"], problem["postgres"]) == ("unavailable", "ok")
        assert (await api.timed("GET", "/kpis"))[0].status_code == 200
    finally:
        await temporal.recover()
    await healthy(api)
    async with running_worker(worker_client, worker_pool, queue_of(api)):
        acked, _ = await api.timed("POST", f"/escalations/{ticket}/acknowledge", json={"by": "dana"})
        assert acked.status_code == 200 and acked.json()["status"] == "acknowledged", acked.text
        await opened(api)


# -- the worker ------------------------------------------------------------------------------------


async def test_no_worker_polling_answers_within_the_bound_then_recovers(api, worker_client, worker_pool):
    async with running_worker(worker_client, worker_pool, queue_of(api)):
        ticket = await opened(api)
    # No worker polls the task queue any more; Temporal and PostgreSQL are fine.
    response, elapsed = await api.timed("GET", f"/escalations/{ticket}")
    problem = assert_fault(response, 503, elapsed, COMMAND_BOUND, dependency="worker",
                           detail="no worker is processing escalations right now")
    assert "retry later" in problem["detail"]
    response, elapsed = await api.timed("POST", f"/escalations/{ticket}/notes",
                                        json={"author": "dana", "text": "while no worker runs"})
    problem = assert_fault(response, 504, elapsed, COMMAND_BOUND, dependency="worker",
                           detail="no worker is processing escalations right now")
    assert "may still be applied" in problem["detail"]
    health, elapsed = await api.timed("GET", "/healthz")
    assert health.status_code == 200 and elapsed < HEALTH_BOUND  # the worker is not the API's dependency
    async with running_worker(worker_client, worker_pool, queue_of(api)):
        got, _ = await api.timed("GET", f"/escalations/{ticket}")
        assert got.status_code == 200, got.text
        noted, _ = await api.timed("POST", f"/escalations/{ticket}/notes", json={"author": "dana", "text": "back"})
        assert noted.status_code == 200, noted.text


# -- start-up -------------------------------------------------------------------------------------


async def test_the_api_starts_with_both_dependencies_frozen_and_connects_once_they_thaw(
        temporal, postgres, worker_client, worker_pool):
    task_queue = f"tq-{uuid.uuid4()}"
    temporal.freeze()
    postgres.freeze()
    try:
        started = time.monotonic()
        async with running_api(fault_settings(temporal.address, postgres.dsn, task_queue)) as api:
            assert time.monotonic() - started < 2.0, "start-up waited on a frozen dependency"
            response, elapsed = await api.timed("GET", "/healthz")
            problem = assert_fault(response, 503, elapsed, HEALTH_BOUND, detail="temporal: timeout; postgres: timeout")
            assert (problem["temporal"], problem["postgres"]) == ("timeout", "timeout")
            response, elapsed = await api.timed("POST", "/escalations", json=escalation_body())
            assert_fault(response, 504, elapsed, TEMPORAL_BOUND, dependency="temporal")
            response, elapsed = await api.timed("GET", "/kpis")
            assert_fault(response, 504, elapsed, POSTGRES_BOUND, dependency="postgres")
            temporal.thaw()
            postgres.thaw()
            await healthy(api)
            assert (await api.timed("GET", "/kpis"))[0].status_code == 200
            async with running_worker(worker_client, worker_pool, task_queue):
                await opened(api)
    finally:
        temporal.thaw()
        postgres.thaw()


async def test_serve_starts_with_both_dependencies_down_and_answers_503():
    """``escalations api`` with nothing listening at either address: it serves, and says why not ok."""
    settings = fault_settings(f"127.0.0.1:{free_port()}", f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                              "tq-nowhere").with_overrides(port=0)
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(settings, stop, on_ready=ready.set_result))
    try:
        await asyncio.wait({server, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            server.result()
        assert ready.done(), "the API did not start within 10 s"
        async with httpx.AsyncClient(base_url=ready.result(), headers={"Authorization": f"Bearer {TOKEN}"},
                                     timeout=30) as http:
            for method, path, body, dependency in (
                    ("GET", "/healthz", None, None),
                    ("GET", "/kpis", None, "postgres"),
                    ("POST", "/tickets", ticket_body(), "postgres"),
                    ("POST", "/escalations", escalation_body(), "temporal"),
                    ("GET", "/escalations/SF-1", None, "temporal"),
                    ("POST", "/escalations/SF-1/acknowledge", {"by": "dana"}, "temporal"),
                    ("GET", "/escalations", None, "temporal")):
                started = time.monotonic()
                response = await http.request(method, path, json=body)
                assert_fault(response, 503, time.monotonic() - started, QUICK, dependency=dependency)
            health = (await http.get("/healthz")).json()
            assert (health["temporal"], health["postgres"]) == ("unavailable", "unavailable")
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=20)


async def test_the_request_deadline_is_the_last_resort(temporal, postgres):
    async with running_api(fault_settings(temporal.address, postgres.dsn, "tq-deadline",
                                          request_timeout=1.0)) as api:
        async def stuck() -> None:  # waits on something no bound covers
            await asyncio.Event().wait()

        api.app.add_api_route("/stuck", stuck)
        response, elapsed = await api.timed("GET", "/stuck")
        problem = assert_fault(response, 504, elapsed, 1.0 + SLACK, dependency="upstream")
        assert "1s" in problem["detail"]
        assert (await api.timed("GET", "/healthz"))[0].status_code == 200


def test_the_bounds_come_from_the_environment():
    settings = ApiSettings.from_env({
        "ESCALATION_API_TOKENS": "t", "DATABASE_URL": "postgresql://x/y",
        "ESCALATION_API_TEMPORAL_TIMEOUT": "1.5", "ESCALATION_API_COMMAND_TIMEOUT": "7",
        "ESCALATION_API_PROBE_TIMEOUT": "0.5", "ESCALATION_API_DB_ACQUIRE_TIMEOUT": "2",
        "ESCALATION_API_DB_COMMAND_TIMEOUT": "4", "ESCALATION_API_HEALTH_TIMEOUT": "1",
        "ESCALATION_API_REQUEST_TIMEOUT": "20", "ESCALATION_API_RETRY_AFTER": "9",
    })
    assert (settings.temporal_rpc_timeout, settings.command_timeout, settings.probe_timeout) == (1.5, 7.0, 0.5)
    assert (settings.db_acquire_timeout, settings.db_command_timeout) == (2.0, 4.0)
    assert (settings.health_timeout, settings.request_timeout, settings.retry_after) == (1.0, 20.0, 9)
    defaults = ApiSettings.of()
    assert (defaults.temporal_rpc_timeout, defaults.command_timeout, defaults.db_acquire_timeout,
            defaults.db_command_timeout, defaults.health_timeout, defaults.retry_after) == (5.0, 10.0, 3.0, 5.0, 2.0, 5)
    with pytest.raises(ConfigError, match="ESCALATION_API_COMMAND_TIMEOUT"):
        ApiSettings.from_env({"ESCALATION_API_COMMAND_TIMEOUT": "soon"})
    with pytest.raises(ConfigError, match="ESCALATION_API_HEALTH_TIMEOUT"):
        ApiSettings.of(tokens=("t",), database_url="postgresql://x/y", health_timeout=0)


# -- the mapping, one exception at a time -----------------------------------------------------------


def _rpc(status: RPCStatusCode) -> RPCError:
    return RPCError("details", status, b"")


@pytest.mark.parametrize(("exc", "status", "dependency"), [
    (ec.TemporalUnavailable("x"), 503, "temporal"),
    (_rpc(RPCStatusCode.UNAVAILABLE), 503, "temporal"),
    (_rpc(RPCStatusCode.RESOURCE_EXHAUSTED), 503, "temporal"),
    (RuntimeError("Failed client connect: Server connection error"), 503, "temporal"),
    (ec.TemporalTimeout("x"), 504, "temporal"),
    (_rpc(RPCStatusCode.DEADLINE_EXCEEDED), 504, "temporal"),
    (_rpc(RPCStatusCode.CANCELLED), 504, "temporal"),
    (RPCTimeoutOrCancelledError(), 504, "temporal"),
    (ec.WorkerUnavailable("SF-1", 3.0), 503, "worker"),
    (ec.WorkerUnavailable("SF-1", 3.0, "acknowledge"), 504, "worker"),
    (DatabaseUnavailable("x"), 503, "postgres"),
    (asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), 503, "postgres"),
    (asyncpg.CannotConnectNowError("the database system is starting up"), 503, "postgres"),
    (asyncpg.AdminShutdownError("terminating connection due to administrator command"), 503, "postgres"),
    (asyncpg.TooManyConnectionsError("too many clients"), 503, "postgres"),
    (asyncpg.InterfaceError("pool is closed"), 503, "postgres"),
    (DatabaseTimeout("x"), 504, "postgres"),
    (asyncpg.QueryCanceledError("canceling statement due to statement timeout"), 504, "postgres"),
    (TimeoutError(), 504, "upstream"),
    (asyncio.TimeoutError(), 504, "upstream"),
    (ConnectionRefusedError(111, "refused"), 503, "upstream"),
    (socket.gaierror(-2, "Name or service not known"), 503, "upstream"),
    (OSError("Multiple exceptions: [Errno 111] Connect call failed"), 503, "upstream"),
])
def test_infrastructure_faults_map_to_503_or_504(exc, status, dependency):
    fault = classify_fault(exc)
    assert fault is not None and (fault.status, fault.dependency) == (status, dependency)


@pytest.mark.parametrize("exc", [
    RuntimeError("a bug"), ValueError("a bug"), KeyError("x"), FileNotFoundError(2, "policy.yaml"),
    PermissionError(13, "denied"), _rpc(RPCStatusCode.INVALID_ARGUMENT), _rpc(RPCStatusCode.INTERNAL),
    asyncpg.UniqueViolationError("duplicate key"), asyncpg.InterfaceError("cannot perform operation"),
    ec.CommandRejected("no"),
])
def test_anything_else_is_not_a_fault(exc):
    assert classify_fault(exc) is None

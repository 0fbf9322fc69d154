"""Liveness is not readiness (issue #16): while PostgreSQL is killed or frozen, ``/livez`` of
the API and of the worker's metrics port keeps answering 200, and ``/readyz`` answers 503
within its bound, naming the dependency with one word; both are ready again once it is back.

The API and the worker run in-process, served over real HTTP on ports the OS picks, against
this module's own Temporal and PostgreSQL (tests/faults/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest_asyncio

from escalations.api.server import serve
from escalations.settings import NotificationSettings, WorkerSettings
from tests.faults.test_api import BOUNDS, LEAKS, fault_settings
from tests.helpers.codec import TEST_CODEC
from tests.helpers.policies import policy_path
from tests.helpers.polling import eventually
from tests.helpers.processes import OwnPostgres, OwnTemporal
from worker import run_worker

HEALTH_TIMEOUT = 2.0
BOUND = HEALTH_TIMEOUT + 1.5  # scheduling slack on a shared, busy machine


@asynccontextmanager
async def served(temporal: OwnTemporal, postgres: OwnPostgres) -> AsyncIterator[dict[str, str]]:
    """The API and a worker on one task queue, until the block ends: their base URLs."""
    queue = f"tq-{uuid.uuid4()}"
    stop = asyncio.Event()
    urls: dict[str, str] = {}
    api = asyncio.create_task(serve(
        fault_settings(temporal.address, postgres.dsn, queue, port=0, health_timeout=HEALTH_TIMEOUT), stop,
        on_ready=lambda url: urls.__setitem__("api", url)))
    worker = asyncio.create_task(run_worker(
        WorkerSettings.of(database_url=postgres.dsn, task_queue=queue, policy_file=str(policy_path("fast")),
                          metrics_port=0, health_timeout=HEALTH_TIMEOUT, shutdown_grace=0),
        NotificationSettings.of(), {"target_host": temporal.address}, stop, codec=TEST_CODEC,
        on_listening=lambda url: urls.__setitem__("worker", url)))
    try:
        async def listening() -> None:
            for task in (api, worker):
                if task.done():
                    task.result()
            assert set(urls) == {"api", "worker"}

        await eventually(listening, timeout=30)
        yield urls
    finally:
        stop.set()
        await asyncio.gather(api, worker)


@pytest_asyncio.fixture
async def both(temporal: OwnTemporal, postgres: OwnPostgres) -> AsyncIterator[dict[str, str]]:
    async with served(temporal, postgres) as urls:
        yield urls


async def timed(http: httpx.AsyncClient, url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    async with asyncio.timeout(BOUNDS["request_timeout"]):
        response = await http.get(url)
    return response, time.monotonic() - started


async def ready(http: httpx.AsyncClient, urls: dict[str, str]) -> None:
    for url in urls.values():
        response = await http.get(f"{url}/readyz")
        assert response.status_code == 200, response.text


async def test_postgres_killed_live_but_not_ready_then_ready_again(both, postgres):
    async with httpx.AsyncClient(timeout=30) as http:
        await eventually(lambda: ready(http, both), timeout=20)
        postgres.kill()
        for role, url in both.items():
            alive, elapsed = await timed(http, f"{url}/livez")
            assert alive.status_code == 200 and alive.json() == {"status": "ok"}, (role, alive.text)
            assert elapsed < 1.0, (role, elapsed)
            response, elapsed = await timed(http, f"{url}/readyz")
            assert response.status_code == 503 and elapsed < BOUND, (role, response.status_code, elapsed)
            body = response.json()
            assert body["postgres"] == "unavailable" and body["temporal"] == "ok", (role, body)
            for leak in LEAKS:
                assert leak not in response.text, (role, leak, response.text)
        worker = (await http.get(f"{both['worker']}/readyz")).json()
        assert worker == {"status": "unavailable", "temporal": "ok", "postgres": "unavailable", "worker": "polling"}
        postgres.restart()
        await eventually(lambda: ready(http, both), timeout=30)


async def test_postgres_frozen_readiness_answers_within_its_bound(both, postgres):
    async with httpx.AsyncClient(timeout=30) as http:
        await eventually(lambda: ready(http, both), timeout=20)
        postgres.freeze()
        for role, url in both.items():
            response, elapsed = await timed(http, f"{url}/readyz")
            assert response.status_code == 503 and elapsed < BOUND, (role, response.status_code, elapsed)
            assert response.json()["postgres"] == "timeout", (role, response.text)
            alive, elapsed = await timed(http, f"{url}/livez")
            assert alive.status_code == 200 and elapsed < 1.0, (role, elapsed)
        postgres.thaw()
        await eventually(lambda: ready(http, both), timeout=30)

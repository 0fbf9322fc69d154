"""``escalations dev``: the whole stack on one machine, data kept in one folder.

Temporal dev server (SQLite in WAL mode, UI, the contract's search attributes),
embedded PostgreSQL (unless DATABASE_URL is set), migrations, worker, HTTP API
and the criteria sweep schedule. Ctrl-C or SIGTERM stops everything it started.

Payloads are always encrypted here: with ``ESCALATION_ENCRYPTION_KEYS`` (or ``…_FILE``)
when set, else with a key generated once into ``DIR/secrets.json``. The worker, the API and
every command reading ``stack.json`` (which carries the keys) use them, and the UI decodes
through the API's codec endpoint (``--ui-codec-endpoint <api_url>/codec``), so an
operator's view in Temporal UI is unchanged.

The stack supervises the servers it started: a Temporal server or embedded
PostgreSQL that dies is started again (same data, same ports) and the worker and
API reconnect by themselves; after 5 restarts within 60 s it gives up and stops.
It holds ``DIR/run/dev.lock`` while it runs and records what it started in
``DIR/run/``, so a stack that was killed (SIGKILL) is cleaned up by the next one:
its recorded servers are stopped (only when ``/proc`` proves they are the ones
recorded), its stale ``stack.json`` and ``postmaster.pid`` removed. A PostgreSQL
it did not start (``DATABASE_URL``, or a cluster someone else runs) is used, never
stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table
from temporalio.client import Client

from escalations.api.server import ApiStartupError, serve
from escalations.codec import format_keys
from escalations.connect import StackInfo, remember_data_dir, write_stack
from escalations.db.migrate import migrate
from escalations.devstack import secrets
from escalations.devstack.postgres import (
    EmbeddedPostgres,
    EmbeddedPostgresError,
    free_port,
)
from escalations.devstack.preflight import (
    PreflightError,
    check_ports,
    usable_data_dir,
    wanted_ports,
)
from escalations.devstack.processes import (
    Child,
    RunDir,
    StackBusy,
    SupervisionError,
    Supervisor,
    stop_orphan,
)
from escalations.devstack.temporal import (
    TemporalDevServer,
    TemporalServerError,
    port_is_free,
)
from escalations.observability.tracing import Tracing
from escalations.policies import PolicySource
from escalations.schedules import install_housekeeping, install_schedule
from escalations.settings import (
    ApiSettings,
    CodecSettings,
    ConfigError,
    NotificationSettings,
    WorkerSettings,
    temporal_connect_config,
    token_entry,
)
from escalations.temporal import connect
from schemas.durations import format_duration
from schemas.keys import DEFAULT_TASK_QUEUE
from schemas.policy import PolicyError
from worker import run_worker

log = logging.getLogger("escalations.dev")


class DevStackError(RuntimeError):
    """The stack could not start or had to stop; the message is one line saying why."""


# What a failed start or a give-up reports as a one-line error rather than a traceback.
EXPECTED_ERRORS = (StackBusy, SupervisionError, TemporalServerError, EmbeddedPostgresError,
                   ApiStartupError, ConfigError, PolicyError, PreflightError, OSError,
                   asyncpg.PostgresError, asyncpg.InterfaceError)  # DATABASE_URL's server refusing


@dataclass(frozen=True)
class DevOptions:
    data_dir: Path
    policy_file: Path | None = None
    temporal_port: int = 7233
    ui_port: int = 8233
    api_port: int = 8000
    host: str = "127.0.0.1"
    remember_in: Path | None = None
    """Where to record this data dir once the stack is ready (``escalations.connect.remember_data_dir``),
    so later commands find the stack without --data-dir."""


DEV_ADMIN_TOKEN = "dev-admin"
DEV_READ_TOKEN = "dev-read"


def stack_secrets(data_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The stack's two API tokens (``api_token``: admin, ``api_read_token``: read), the webhook
    secret, the action-link key, the Slack signing secret and the payload encryption keys (each
    from the environment when set): generated once and kept in ``DIR/secrets.json`` (the
    encryption key must outlive the stack: its runs' histories need it)."""
    kept = secrets.keep(data_dir, "api_token", "api_read_token", "webhook_secret", "action_key",
                        "slack_signing_secret", "encryption_keys")
    configured = CodecSettings.from_env(environ)
    return {
        "api_token": kept["api_token"],
        "api_read_token": kept["api_read_token"],
        "webhook_secret": environ.get("ESCALATION_WEBHOOK_SECRET") or kept["webhook_secret"],
        "action_key": environ.get("ESCALATION_ACTION_KEY") or kept["action_key"],
        "slack_signing_secret": environ.get("ESCALATION_SLACK_SIGNING_SECRET") or kept["slack_signing_secret"],
        "encryption_keys": format_keys(configured.keys) if configured.encrypted else kept["encryption_keys"],
    }


def stack_tokens(kept: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """The API's token entries: the stack's own two (named ``dev-admin``, ``dev-read``; only their
    digests), then whatever ESCALATION_API_TOKENS adds."""
    entries = [token_entry(DEV_ADMIN_TOKEN, ["admin"], kept["api_token"]),
               token_entry(DEV_READ_TOKEN, ["read"], kept["api_read_token"])]
    given = environ.get("ESCALATION_API_TOKENS", "").strip()
    return ",".join([*entries, given] if given else entries)


def stack_codec(kept: Mapping[str, str], ui_url: str | None, read_token: str) -> CodecSettings:
    """The stack's keys; its UI (which has no sign-in, so cannot send a token) may call the
    API's codec endpoints as the stack's read-only token, from its URL and the same port on localhost."""
    origins = []
    if ui_url:
        origins.append(ui_url)
        if "://127.0.0.1:" in ui_url:
            origins.append(ui_url.replace("://127.0.0.1:", "://localhost:"))
    return CodecSettings.of(encryption_keys=SecretStr(kept["encryption_keys"]), ui_origins=tuple(origins),
                            ui_token=SecretStr(read_token) if origins else None)


# Printed when ready; the rest of stack.json (tokens, secrets, database URL with its password)
# stays in the file: a terminal is shared, scrolled back, screen-shared and logged.
PUBLIC_FIELDS = ("temporal_address", "namespace", "ui_url", "api_url", "task_queue", "policy_file")


def _summary(info: StackInfo, path: Path) -> Table:
    table = Table(title="escalations dev stack is ready", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key in PUBLIC_FIELDS:
        value = getattr(info, key)
        if value is not None:
            table.add_row(key, str(value))
    if info.encryption_keys:
        # Key material stays in stack.json; the console (and its scrollback) gets the ids.
        table.add_row("encryption", "on, keys " + ", ".join(e.split(":", 1)[0] for e in info.encryption_keys.split(",")))
    table.add_row("stack.json", f"{path} (mode 600: API tokens, webhook and Slack secrets, keys, database URL)")
    return table


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _flatten(err: BaseException) -> list[BaseException]:
    if isinstance(err, BaseExceptionGroup):
        return [leaf for inner in err.exceptions for leaf in _flatten(inner)]
    return [err]


async def _clean_up_after_dead_stack(run_dir: RunDir, data_dir: Path) -> int | None:
    """Stop what a killed stack of this data dir left running; the port its Postgres had.

    Only processes recorded in ``DIR/run`` and proven by ``/proc`` to be those very
    processes are stopped. Called with the data dir's lock held, so that stack is dead.
    """
    stale = data_dir / "stack.json"
    if stale.exists():
        log.warning("removing the stale %s of a stack that is no longer running", stale)
        stale.unlink(missing_ok=True)
    temporal = run_dir.read("temporal")
    if temporal is not None:
        if temporal.is_alive():
            await asyncio.to_thread(stop_orphan, temporal, [(signal.SIGTERM, 15.0)])
        run_dir.forget("temporal")
    postgres = run_dir.read("postgres")
    if postgres is not None:
        if postgres.is_alive():
            # SIGINT is Postgres' fast shutdown; SIGQUIT its immediate one.
            await asyncio.to_thread(stop_orphan, postgres, [(signal.SIGINT, 30.0), (signal.SIGQUIT, 5.0)])
        run_dir.forget("postgres")
        return postgres.port
    return None


async def _embedded_postgres(
    data_dir: Path, run_dir: RunDir, preferred_port: int | None, console: Console,
    supervisors: list[Supervisor],
) -> str:
    """The stack's own Postgres, started and supervised (added to ``supervisors`` as soon as it
    runs); or one running there already, adopted. Its DSN."""
    postgres = await asyncio.to_thread(EmbeddedPostgres, data_dir)
    running = postgres.running_postmaster()
    if running is not None:
        pid, port = running
        postgres.port = port
        log.warning(
            "the embedded Postgres in %s is already running (pid %s, port %s) and was not started "
            "by escalations dev: using it as it is; it is neither supervised nor stopped",
            postgres.cluster, pid, port,
        )
        return await asyncio.to_thread(postgres.ensure_database)
    await asyncio.to_thread(postgres.init_cluster)  # initdb on first use, off the event loop
    postgres.port = preferred_port if preferred_port and port_is_free(preferred_port) else free_port()
    supervisor = Supervisor(
        Child("postgres", spawn=postgres.spawn, ready=postgres.wait_ready,
              stop_signal=signal.SIGINT, stop_timeout=60.0, port=postgres.port),
        run_dir,
    )
    supervisors.append(supervisor)
    supervisor.start()
    await supervisor.wait_ready()
    console.print(f"postgres: embedded, data in {postgres.cluster}")
    return await asyncio.to_thread(postgres.ensure_database)


async def _watch(supervisors: list[Supervisor], stop: asyncio.Event, failures: list[BaseException]) -> None:
    """Until stop; a supervisor that gives up records why and stops the stack."""
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopping, *(s.task for s in supervisors)}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    for supervisor in supervisors:
        task = supervisor.task
        if task.done() and not task.cancelled() and task.exception() is not None:
            failures.append(task.exception())  # type: ignore[arg-type]
            log.error("%s: %s; stopping the stack", supervisor.name, task.exception())
    stop.set()


def _remember(options: DevOptions, data_dir: Path) -> None:
    """Record the data dir for later commands; a failure costs only that convenience, so it is
    logged and the stack runs on."""
    if options.remember_in is None:
        return
    try:
        remember_data_dir(options.remember_in, data_dir, os.getpid())
    except OSError as exc:
        log.warning("could not record the data dir in %s (later commands need --data-dir %s): %s",
                    options.remember_in, data_dir, exc)


async def run_dev(options: DevOptions, environ: Mapping[str, str], tracing: Tracing | None = None) -> None:
    """Run the stack until Ctrl-C/SIGTERM; DevStackError (one line) when it cannot start or
    has to give up. Whatever happens, everything it started is stopped on the way out.
    ``tracing``: spans of the API and the worker (one process, one provider)."""
    data_dir = options.data_dir.resolve()
    # Private: it holds the secrets, Temporal's SQLite file (customer names and titles) and
    # the PostgreSQL cluster (which, run as root, opens it to its own group only).
    try:
        usable_data_dir(data_dir)
        data_dir.chmod(0o700)
    except (PreflightError, OSError) as exc:
        raise DevStackError(_one_line(exc)) from None
    run_dir = RunDir(data_dir)
    try:
        run_dir.lock()
    except StackBusy as exc:
        raise DevStackError(str(exc)) from None
    try:
        await _run_locked(options, environ, data_dir, run_dir, tracing)
    except EXPECTED_ERRORS as exc:
        raise DevStackError(_one_line(exc)) from exc
    except BaseExceptionGroup as group:
        leaves = _flatten(group)
        expected = [leaf for leaf in leaves if isinstance(leaf, EXPECTED_ERRORS)]
        if expected and len(expected) == len(leaves):
            raise DevStackError("; ".join(_one_line(leaf) for leaf in expected)) from group
        raise
    finally:
        run_dir.unlock()


async def _run_locked(options: DevOptions, environ: Mapping[str, str], data_dir: Path, run_dir: RunDir,
                      tracing: Tracing | None) -> None:
    console = Console()
    policy_file = str(options.policy_file.resolve()) if options.policy_file else environ.get("ESCALATION_POLICY_FILE")
    source = PolicySource.from_setting(policy_file)
    policy = source.load(None)  # invalid policy: fail now, naming the key
    # Before anything starts: what a killed stack of this data dir left running (it may hold
    # the very ports asked for), then every port.
    postgres_port = await _clean_up_after_dead_stack(run_dir, data_dir)
    check_ports(wanted_ports(temporal_port=options.temporal_port, ui_port=options.ui_port,
                             api_port=options.api_port, environ=environ), options.host)
    kept = stack_secrets(data_dir, environ)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    supervisors: list[Supervisor] = []
    failures: list[BaseException] = []
    api_url = f"http://{options.host}:{options.api_port}"
    temporal = TemporalDevServer(
        port=options.temporal_port, ui_port=options.ui_port, ip=options.host,
        db_file=data_dir / "temporal.db", log_file=data_dir / "temporal.log",
        ui_codec_endpoint=f"{api_url}/codec",
    )
    codec = stack_codec(kept, temporal.ui_url, kept["api_read_token"])

    async def start_servers() -> tuple[str, dict[str, Any], Client]:
        """Postgres (own, adopted or external), migrations, Temporal; a connected client."""
        database_url = environ.get("DATABASE_URL")
        if database_url:
            console.print("postgres: DATABASE_URL (not started or stopped by this stack)")
        else:
            database_url = await _embedded_postgres(data_dir, run_dir, postgres_port, console, supervisors)
        applied = await migrate(database_url)
        if applied:
            console.print(f"migrations applied: {', '.join(applied)}")
        temporal.check_ports()
        server = Supervisor(
            Child("temporal", spawn=temporal.spawn,
                  ready=lambda process: temporal.wait_ready(process=process),
                  stop_signal=signal.SIGTERM, stop_timeout=15.0, port=options.temporal_port),
            run_dir,
        )
        supervisors.append(server)
        server.start()
        await server.wait_ready()
        temporal_config = {**temporal_connect_config(environ), "target_host": temporal.address,
                           "namespace": "default"}
        return database_url, temporal_config, await connect(temporal_config, codec)

    try:
        # Ctrl-C while starting: stop starting, then stop what has started.
        starting = asyncio.create_task(start_servers())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            starting.cancel()
            await asyncio.wait({starting})
            return
        database_url, temporal_config, client = starting.result()
        # The parts' settings, built here (the user's environment supplies the rest: channels,
        # tuning); never a fake environment to be parsed back.
        task_queue = environ.get("ESCALATION_TASK_QUEUE") or DEFAULT_TASK_QUEUE
        # The worker's metrics and probes: on any free port unless one is asked for.
        worker_settings = WorkerSettings.from_env(
            environ, database_url=database_url, task_queue=task_queue, policy_file=str(source.default_file),
            metrics_host=None if "ESCALATION_METRICS_HOST" in environ else options.host,
            metrics_port=None if "ESCALATION_METRICS_PORT" in environ else 0)
        # Action links point at this stack's API unless ESCALATION_PUBLIC_URL says otherwise (a tunnel).
        public_url = environ.get("ESCALATION_PUBLIC_URL") or api_url
        notification_settings = NotificationSettings.from_env(
            environ, webhook_secret=kept["webhook_secret"], ui_url=temporal.ui_url, namespace="default",
            action_key=kept["action_key"], public_url=public_url)
        api_settings = ApiSettings.from_env(
            environ, temporal=temporal_config, database_url=database_url, task_queue=task_queue,
            policy_file=str(source.default_file), ui_url=temporal.ui_url, host=options.host,
            port=options.api_port, tokens=stack_tokens(kept, environ), codec=codec, action_key=kept["action_key"],
            slack_signing_secret=kept["slack_signing_secret"])
        info = StackInfo(
            temporal_address=temporal.address,
            ui_url=temporal.ui_url,
            api_url=api_url,
            database_url=database_url,
            api_token=kept["api_token"],
            api_read_token=kept["api_read_token"],
            webhook_secret=kept["webhook_secret"],
            action_key=kept["action_key"],
            public_url=public_url,
            slack_signing_secret=kept["slack_signing_secret"],
            encryption_keys=kept["encryption_keys"],
            task_queue=task_queue,
            policy_file=str(source.default_file),
            pid=os.getpid(),
        )
        if policy.criteria and policy.criteria.rules:
            schedule = await install_schedule(client, task_queue=task_queue, policy=policy)
            console.print(f"criteria sweep: schedule {schedule} every {format_duration(policy.criteria.sweep_every)}")
        await install_housekeeping(client, task_queue=task_queue)
        api_ready = asyncio.Event()
        worker_metrics: list[str] = []
        worker_ready = asyncio.Event()

        def worker_listening(url: str) -> None:
            worker_metrics.append(url)
            worker_ready.set()

        async def both_ready() -> None:
            await api_ready.wait()
            await worker_ready.wait()

        async with asyncio.TaskGroup() as group:
            group.create_task(_watch(supervisors, stop, failures))
            group.create_task(run_worker(worker_settings, notification_settings, temporal_config, stop,
                                         codec=codec, tracing=tracing, on_listening=worker_listening))
            group.create_task(serve(api_settings, stop, on_ready=lambda _url: api_ready.set(), tracing=tracing))
            ready = asyncio.create_task(both_ready())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            stopping.cancel()
            if ready.done() and not ready.cancelled() and not stop.is_set():
                info = info.model_copy(update={"metrics_urls": {"api": f"{api_url}/metrics",
                                                                "worker": f"{worker_metrics[0]}/metrics"}})
                path = write_stack(data_dir, info)
                _remember(options, data_dir)
                console.print(_summary(info, path))
                console.print(f"policy {policy.name} v{policy.version} · stack.json: {path}")
                console.print("Ctrl-C stops everything.")
            await stop.wait()
        if failures:
            raise failures[0]
    finally:
        stop.set()
        (data_dir / "stack.json").unlink(missing_ok=True)
        # The worker and API are down by now; then Temporal, then Postgres (the order started, reversed).
        for supervisor in reversed(supervisors):
            await supervisor.stop()
        console.print("stopped")

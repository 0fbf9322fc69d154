"""``escalations dev``: the whole stack on one machine, data kept in one folder.

Temporal dev server (SQLite in WAL mode, UI, the contract's search attributes),
embedded PostgreSQL (unless DATABASE_URL is set), migrations, worker, HTTP API
and the criteria sweep schedule. Ctrl-C or SIGTERM stops everything it started.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from activities.policy import PolicySource
from escalations.api.server import serve
from escalations.api.settings import ApiSettings
from escalations.connect import StackInfo, write_stack
from escalations.cli.tickets import install_schedule
from escalations.db.migrate import migrate
from schemas.durations import format_duration
from schemas.keys import DEFAULT_TASK_QUEUE
from escalations.devstack.postgres import EmbeddedPostgres
from escalations.devstack.temporal import TemporalDevServer
from worker import connect_client, run_worker

log = logging.getLogger("escalations.dev")


@dataclass(frozen=True)
class DevOptions:
    data_dir: Path
    policy_file: Path | None = None
    temporal_port: int = 7233
    ui_port: int = 8233
    api_port: int = 8000
    host: str = "127.0.0.1"


def stack_secrets(data_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """API token and webhook secret: from the environment, else generated once and kept."""
    path = data_dir / "secrets.json"
    kept: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    if "api_token" not in kept or "webhook_secret" not in kept:
        kept.setdefault("api_token", secrets.token_urlsafe(24))
        kept.setdefault("webhook_secret", secrets.token_hex(32))
        path.write_text(json.dumps(kept))
        path.chmod(0o600)
    tokens = [t for t in environ.get("ESCALATION_API_TOKENS", "").split(",") if t.strip()]
    return {
        "api_token": tokens[0].strip() if tokens else kept["api_token"],
        "webhook_secret": environ.get("ESCALATION_WEBHOOK_SECRET") or kept["webhook_secret"],
    }


def _summary(info: StackInfo) -> Table:
    table = Table(title="escalations dev stack is ready", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in info.model_dump().items():
        if value is not None:
            table.add_row(key, str(value))
    return table


async def run_dev(options: DevOptions, environ: Mapping[str, str]) -> None:
    console = Console()
    data_dir = options.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    policy_file = str(options.policy_file.resolve()) if options.policy_file else environ.get("ESCALATION_POLICY_FILE")
    source = PolicySource.from_setting(policy_file)
    policy = source.load(None)  # invalid policy: fail now, naming the key
    kept = stack_secrets(data_dir, environ)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    postgres: EmbeddedPostgres | None = None
    temporal = TemporalDevServer(
        port=options.temporal_port, ui_port=options.ui_port, ip=options.host,
        db_file=data_dir / "temporal.db", log_file=data_dir / "temporal.log",
    )
    try:
        database_url = environ.get("DATABASE_URL")
        if not database_url:
            postgres = EmbeddedPostgres(data_dir)
            database_url = await asyncio.to_thread(postgres.start)
            console.print(f"postgres: embedded, data in {postgres.cluster}")
        applied = await migrate(database_url)
        if applied:
            console.print(f"migrations applied: {', '.join(applied)}")
        temporal.start()
        await temporal.wait_ready()
        api_url = f"http://{options.host}:{options.api_port}"
        env = {
            **environ,
            "TEMPORAL_ADDRESS": temporal.address,
            "TEMPORAL_NAMESPACE": "default",
            "DATABASE_URL": database_url,
            "ESCALATION_TASK_QUEUE": environ.get("ESCALATION_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            "ESCALATION_POLICY_FILE": str(source.default_file),
            "ESCALATION_WEBHOOK_SECRET": kept["webhook_secret"],
            "ESCALATION_API_TOKENS": environ.get("ESCALATION_API_TOKENS") or kept["api_token"],
            "ESCALATION_UI_URL": temporal.ui_url or "",
            "ESCALATION_API_HOST": options.host,
            "ESCALATION_API_PORT": str(options.api_port),
        }
        info = StackInfo(
            temporal_address=temporal.address,
            ui_url=temporal.ui_url,
            api_url=api_url,
            database_url=database_url,
            api_token=kept["api_token"],
            webhook_secret=kept["webhook_secret"],
            task_queue=env["ESCALATION_TASK_QUEUE"],
            policy_file=str(source.default_file),
            pid=os.getpid(),
        )
        client = await connect_client(env)
        if policy.criteria and policy.criteria.rules:
            schedule = await install_schedule(client, task_queue=env["ESCALATION_TASK_QUEUE"], policy=policy)
            console.print(f"criteria sweep: schedule {schedule} every {format_duration(policy.criteria.sweep_every)}")
        api_ready = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(run_worker(env, stop))
            group.create_task(serve(ApiSettings.from_env(env), stop, on_ready=lambda _url: api_ready.set()))
            await api_ready.wait()
            write_stack(data_dir, info)
            console.print(_summary(info))
            console.print(f"policy {policy.name} v{policy.version} · stack.json: {data_dir / 'stack.json'}")
            console.print("Ctrl-C stops everything.")
            await stop.wait()
    finally:
        stop.set()
        (data_dir / "stack.json").unlink(missing_ok=True)
        temporal.stop()
        if postgres is not None:
            await asyncio.to_thread(postgres.stop)
        console.print("stopped")


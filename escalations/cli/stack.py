"""``escalations dev``, ``worker`` and ``migrate``: running the parts."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from escalations.connect import DEFAULT_DATA_DIR, StackNotFound, require_database, resolve


def register(app: typer.Typer) -> None:
    app.command("dev")(dev)
    app.command("worker")(worker)
    app.command("migrate")(migrate_command)


def dev(
    data_dir: Annotated[Path, typer.Option(help="Where the stack keeps its data")] = DEFAULT_DATA_DIR,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: ESCALATION_POLICY_FILE or the packaged default)")] = None,
    temporal_port: Annotated[int, typer.Option(help="Temporal gRPC port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal UI port")] = 8233,
    api_port: Annotated[int, typer.Option(help="HTTP API port")] = 8000,
) -> None:
    """Run everything locally: Temporal dev server + UI, embedded Postgres, worker, API."""
    from escalations.devstack.dev import DevOptions, DevStackError, run_dev

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = DevOptions(
        data_dir=data_dir, policy_file=policy, temporal_port=temporal_port, ui_port=ui_port,
        api_port=api_port,
    )
    try:
        asyncio.run(run_dev(options, dict(os.environ)))
    except DevStackError as exc:
        # Everything the stack started is stopped by now; say why in one line.
        typer.echo(f"error: escalations dev: {exc}", err=True)
        raise typer.Exit(1) from None


def worker() -> None:
    """Run one worker, configured by the environment (production)."""
    from worker import main

    main()


def migrate_command(
    data_dir: Annotated[Path, typer.Option(help="Find the database in DIR/stack.json")] = DEFAULT_DATA_DIR,
) -> None:
    """Apply pending database migrations (DATABASE_URL or the dev stack's database)."""
    from escalations.db.migrate import migrate

    try:
        url = require_database(resolve(data_dir))
    except StackNotFound as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    applied = asyncio.run(migrate(url))
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")

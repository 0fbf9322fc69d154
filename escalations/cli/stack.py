"""``escalations worker`` and ``migrate``: running the parts (``dev`` is the dev stack's own command)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from escalations.connect import (
    DEFAULT_DATA_DIR,
    StackNotFound,
    require_database,
    resolve,
)


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("migrate")(migrate_command)


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

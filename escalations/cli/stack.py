"""``escalations worker`` and ``migrate``: running the parts (``dev`` is the dev stack's own command)."""

from __future__ import annotations

import asyncio

import typer

from escalations.cli.failing import DataDirOption, guarded
from escalations.cli.failing import data_dir as choose_data_dir


def register(app: typer.Typer) -> None:
    app.command("worker")(guarded(worker))
    app.command("migrate")(guarded(migrate_command))


def worker() -> None:
    """Run one worker, configured by the environment (production)."""
    from worker import main

    main()


def migrate_command(data_dir: DataDirOption = None) -> None:
    """Apply pending database migrations (DATABASE_URL or the dev stack's database)."""
    from escalations.connect import require_database, resolve
    from escalations.db.migrate import migrate

    url = require_database(resolve(choose_data_dir(data_dir)))
    applied = asyncio.run(migrate(url))
    typer.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")

"""``escalations demo``: the command; the story itself (``escalations/cli/demo.py``, with rich,
the worker and the Temporal client) is imported only when it runs."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer

from escalations.cli.failing import DataDirOption, guarded
from escalations.cli.failing import data_dir as choose_data_dir


def register(app: typer.Typer) -> None:
    app.command("demo")(guarded(demo))


def demo(
    data_dir: DataDirOption = None,
    ticket: Annotated[str | None, typer.Option(help="Ticket id (default: SF-1042-<time>, new on every run)")] = None,
    pace: Annotated[float, typer.Option(min=0, help="Seconds to pause between steps, so you can follow along")] = 1.5,
) -> None:
    """Replay the blog's Salesforce-sync escalation (1 s = 1 min), narrated, visible in Temporal UI."""
    from rich.console import Console
    from rich.markup import escape

    from escalations.cli.demo import DemoError, DemoOptions, run_demo
    from escalations.connect import require_database, resolve

    console = Console(highlight=False)
    connection = resolve(choose_data_dir(data_dir))
    require_database(connection)  # StackNotFound: one line naming the flag and the variable
    ticket_id = ticket or f"SF-1042-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    try:
        asyncio.run(run_demo(connection, DemoOptions(ticket_id=ticket_id, pace=pace), console))
    except DemoError as exc:
        console.print(f"[bold red]demo failed:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print("demo interrupted")
        raise typer.Exit(130) from None
    except asyncio.CancelledError:  # SIGTERM
        console.print("demo stopped")
        raise typer.Exit(143) from None

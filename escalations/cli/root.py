"""The options of ``escalations`` itself: ``--version`` (shell completion is typer's own
``--install-completion`` / ``--show-completion``)."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.callback()(options)


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(f"escalations {version('escalations')}")
    except PackageNotFoundError:  # a checkout run without installing it
        typer.echo("escalations: version unknown (not installed; pip install -e .)")
    raise typer.Exit()


def options(
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version, help="Print the installed version and exit")] = False,
) -> None:
    """Customer escalations on durable Temporal timers."""

"""How every command reports an expected failure: one line on stderr, an exit code, no traceback."""

from __future__ import annotations

from typing import NoReturn

import typer


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def fail(message: object, code: int = 1) -> NoReturn:
    """Print ``error: <message>`` (one line) and exit with ``code``."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)

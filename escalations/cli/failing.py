"""How every command reports an expected failure: one line on stderr, an exit code, no traceback.

``fail`` is what a command calls when it knows what went wrong. ``guarded`` wraps every
registered command so that the errors a user can cause or meet (a bad setting, no stack,
Temporal or PostgreSQL refusing or unreachable, a file that cannot be read) end the same
way even where a command did not expect them; anything else is a bug and keeps its traceback.

This module stays light: the libraries whose errors it names are looked up in
``sys.modules`` (an error of a module never imported cannot have been raised).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, ParamSpec, TypeVar

import typer

P = ParamSpec("P")
R = TypeVar("R")


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def fail(message: object, code: int = 1) -> NoReturn:
    """Print ``error: <message>`` (one line) and exit with ``code``."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def _is(err: BaseException, module: str, *names: str) -> bool:
    loaded = sys.modules.get(module)
    return loaded is not None and any(isinstance(err, getattr(loaded, name, ())) for name in names)


def describe_expected(err: BaseException) -> str | None:
    """The one line for an error a user can meet; None for anything else (a bug)."""
    if _is(err, "escalations.settings", "ConfigError") or _is(err, "escalations.connect", "StackNotFound"):
        return str(err)
    if _is(err, "schemas.policy", "PolicyError"):
        return str(err)
    if _is(err, "escalations.codec", "PayloadDecryptionError"):
        return str(err)  # names the key id that is missing, never key material
    if _is(err, "escalations.client", "EscalationError"):
        return err.message  # type: ignore[attr-defined]
    if _is(err, "temporalio.service", "RPCError"):
        return f"Temporal error: {err.message}"  # type: ignore[attr-defined]
    if _is(err, "asyncpg", "UndefinedTableError"):
        return f"the database is not migrated ({err}); run `escalations migrate`"
    if _is(err, "asyncpg", "PostgresError", "InterfaceError"):
        return f"database: {err}"
    if isinstance(err, RuntimeError) and str(err).startswith("Failed client connect"):
        # temporalio raises a bare RuntimeError when Client.connect cannot reach the server.
        reason = "connection refused" if "refused" in str(err).lower() else str(err)
        return f"cannot connect to Temporal: {reason}"
    if isinstance(err, TimeoutError):
        return f"timed out: {err}" if str(err) else "timed out"
    if isinstance(err, OSError):
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror or err}{where}"
    return None


def guarded(command: Callable[P, R]) -> Callable[P, R]:
    """``command``, with every expected error turned into ``error: <one line>`` and exit 1."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as err:
            line = describe_expected(err)
            if line is None:
                raise
            fail(line)

    return run


# -- where the stack is -----------------------------------------------------------------

DataDirOption = Annotated[Path | None, typer.Option(
    "--data-dir", metavar="DIR", show_default=False,
    help="The dev stack's folder (its stack.json). Default: ESCALATION_DATA_DIR; else .data; else, while "
         "it runs, the last stack `escalations dev` started")]


def data_dir(flag: Path | None) -> Path:
    """The data dir a command uses (``escalations.connect.choose_data_dir``); a remembered one is
    named on stderr, since the user did not name it."""
    from escalations.connect import choose_data_dir
    from escalations.settings import CliSettings

    chosen = choose_data_dir(flag, CliSettings.from_env())
    if chosen.note:
        typer.echo(f"note: {chosen.note}", err=True)
    return chosen.path

"""The ``escalations`` command line, and the Python client re-exported for other services.

``import starter`` (or ``escalations.client``) gives a service the typed client without
loading the command line; the command groups (``escalations/cli/``, and the front doors'
own commands: ``escalations api``, ``escalations dev``) are assembled only by ``build_app``,
which ``main`` calls. Commands read their configuration when they run, never at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from escalations.exiting import exit_now

if TYPE_CHECKING:  # what __getattr__ hands out, for type checkers and editors
    from escalations.client import (
        CommandRejected,
        EscalationAlreadyOpen,
        EscalationClosed,
        EscalationError,
        EscalationNotFound,
        EscalationNotReady,
        InvalidRequest,
        acknowledge,
        add_note,
        complete_postmortem,
        escalate,
        get_state,
        list_escalations,
        pause,
        resolve,
        resume,
        start_escalation,
    )

# The Python client, for other services (`from starter import get_state`): loaded on first use,
# so `escalations --help` and `--version` never load the Temporal client.
__all__ = [
    "CommandRejected", "EscalationAlreadyOpen", "EscalationClosed", "EscalationError", "EscalationNotFound",
    "EscalationNotReady", "InvalidRequest", "acknowledge", "add_note", "build_app", "complete_postmortem",
    "escalate", "get_state", "list_escalations", "main", "pause", "resolve", "resume", "start_escalation",
]
_CLIENT_NAMES = frozenset(__all__) - {"build_app", "main"}


def build_app() -> Any:
    """The ``escalations`` Typer application with every command group registered."""
    import typer

    from escalations.api import command as api_command
    from escalations.cli import (
        demo_command,
        erasure,
        escalations,
        keys,
        kpis,
        policy,
        replay,
        root,
        stack,
        tickets,
        webhooks,
    )
    from escalations.devstack import command as dev_command

    app = typer.Typer(
        name="escalations",
        help="Customer escalations on durable Temporal timers.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    for group in (root, dev_command, stack, policy, kpis, tickets, api_command, escalations, demo_command, replay,
                  webhooks, keys, erasure):
        group.register(app)
    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # `from starter import app` (tests, completion scripts)
        return build_app()
    if name in _CLIENT_NAMES:
        from escalations import client

        return getattr(client, name)
    raise AttributeError(name)


def main() -> None:
    try:
        build_app()()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    exit_now(code)


if __name__ == "__main__":
    main()

"""The ``escalations`` command line.

Every command group lives in ``escalations/cli/`` and registers itself here; commands
read their configuration (environment, options) when they run, never at import.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from escalations.cli import api, demo, escalations, kpis, policy, replay, stack, tickets
from escalations.client import (  # the Python client, for other services: `from starter import ...`
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

__all__ = [
    "CommandRejected", "EscalationAlreadyOpen", "EscalationClosed", "EscalationError",
    "EscalationNotFound", "EscalationNotReady", "InvalidRequest", "acknowledge", "add_note",
    "app", "complete_postmortem", "escalate", "get_state", "list_escalations", "main", "pause",
    "resolve", "resume", "start_escalation",
]

app = typer.Typer(
    name="escalations",
    help="Customer escalations on durable Temporal timers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for group in (stack, policy, kpis, tickets, api, escalations, demo, replay):
    group.register(app)


def main() -> None:
    try:
        app()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    # Skip interpreter finalization: temporalio's runtime threads can abort it at random
    # after the command has finished (temporalio/sdk-python#300).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()

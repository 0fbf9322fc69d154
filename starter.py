"""The ``escalations`` command line.

Every command group lives in ``commands/`` and registers itself here; commands
read their configuration (environment, options) when they run, never at import.
"""

from __future__ import annotations

import typer

from commands import kpis, policy, stack

app = typer.Typer(
    name="escalations",
    help="Customer escalations on durable Temporal timers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for group in (stack, policy, kpis):
    group.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

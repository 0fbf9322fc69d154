"""``escalations dev``: the whole stack on one machine (registered by ``starter.py``)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("dev")(dev)


def dev(
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", metavar="DIR", show_default=False,
        help="Where the stack keeps its data (default: ESCALATION_DATA_DIR, else .data)")] = None,
    policy: Annotated[Path | None, typer.Option(help="Policy YAML (default: ESCALATION_POLICY_FILE or the packaged default)")] = None,
    temporal_port: Annotated[int, typer.Option(min=1, max=65535, help="Temporal gRPC port")] = 7233,
    ui_port: Annotated[int, typer.Option(min=1, max=65535, help="Temporal UI port")] = 8233,
    api_port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP API port")] = 8000,
) -> None:
    """Run everything locally: Temporal dev server + UI, embedded Postgres, worker, API.

    The data dir and every port are checked before anything starts. Once ready, the data dir
    is remembered (under $XDG_STATE_HOME/escalations/), so later commands find this stack
    without --data-dir while it runs.
    """
    from escalations.connect import DEFAULT_DATA_DIR
    from escalations.devstack.dev import (  # the whole stack: only when run
        DevOptions,
        DevStackError,
        run_dev,
    )
    from escalations.observability.logs import configure_logging
    from escalations.observability.tracing import Tracing
    from escalations.settings import CliSettings, ConfigError, TelemetrySettings

    try:
        telemetry = TelemetrySettings.from_env()
        cli = CliSettings.from_env()
    except ConfigError as exc:
        typer.echo(f"error: escalations dev: {exc}", err=True)
        raise typer.Exit(1) from None
    configure_logging(telemetry)
    tracing = Tracing.from_settings(telemetry, "escalations-dev")
    options = DevOptions(
        data_dir=data_dir or cli.data_dir or DEFAULT_DATA_DIR, policy_file=policy, temporal_port=temporal_port,
        ui_port=ui_port, api_port=api_port, remember_in=cli.state_dir,
    )
    try:
        asyncio.run(run_dev(options, dict(os.environ), tracing))
    except DevStackError as exc:
        # Everything the stack started is stopped by now; say why in one line.
        typer.echo(f"error: escalations dev: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if tracing is not None:
            tracing.shutdown()

"""``escalations api``: the HTTP API alone, configured by the environment (production;
registered by ``starter.py``)."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from escalations.observability.tracing import Tracing
    from escalations.settings import ApiSettings


def register(app: typer.Typer) -> None:
    app.command("api")(api)


def api(
    host: Annotated[str | None, typer.Option(help="Listen address (env ESCALATION_API_HOST; default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (env ESCALATION_API_PORT; default 8000)")] = None,
) -> None:
    """Serve the HTTP API (uvicorn). Needs ESCALATION_API_TOKENS and DATABASE_URL; Temporal from
    the standard TEMPORAL_* variables."""
    from escalations.api.server import ApiStartupError
    from escalations.observability.logs import configure_logging
    from escalations.observability.tracing import Tracing
    from escalations.settings import ApiSettings, ConfigError, TelemetrySettings

    tracing = None
    try:
        telemetry = TelemetrySettings.from_env()
        configure_logging(telemetry)
        settings = ApiSettings.from_env(host=host, port=port)
        tracing = Tracing.from_settings(telemetry, "escalations-api")
        asyncio.run(_serve_until_signalled(settings, tracing))
    except (ConfigError, ApiStartupError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        if tracing is not None:
            tracing.shutdown()


async def _serve_until_signalled(settings: ApiSettings, tracing: Tracing | None) -> None:
    from escalations.api.server import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop, tracing=tracing)

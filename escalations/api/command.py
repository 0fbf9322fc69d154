"""``escalations api``: the HTTP API alone, configured by the environment (production;
registered by ``starter.py``)."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
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
    from escalations.settings import ApiSettings, ConfigError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = ApiSettings.from_env(host=host, port=port)
        asyncio.run(_serve_until_signalled(settings))
    except (ConfigError, ApiStartupError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


async def _serve_until_signalled(settings: ApiSettings) -> None:
    from escalations.api.server import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop)

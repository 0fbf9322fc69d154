"""Running the API in-process with uvicorn (``escalations api`` and ``escalations dev``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator

import uvicorn

from escalations.api.app import create_app
from escalations.observability.sdk import SdkMetrics
from escalations.observability.tracing import Tracing
from escalations.settings import ApiSettings, pin_zone_database

log = logging.getLogger("escalations.api")


class ApiStartupError(RuntimeError):
    """The API could not start (port taken, bad policy). Temporal or Postgres being down is not
    one: the API starts anyway, answers 503/504 on the routes needing them and connects once
    they are back."""


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: whoever runs us owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket up front, so a taken port is a clear error (port 0: any free)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ApiStartupError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(
    settings: ApiSettings,
    stop: asyncio.Event,
    *,
    on_ready: Callable[[str], None] | None = None,
    tracing: Tracing | None = None,
) -> None:
    """Serve until ``stop`` is set, then shut down gracefully.

    Raises ConfigError (e.g. no tokens) before binding anything, ApiStartupError when
    the port is taken or the default policy is invalid. Temporal and Postgres are connected
    lazily, so their being down delays nothing here. ``on_ready`` gets the
    base URL (``http://host:port``; the real port when ``settings.port`` is 0).
    The lifespan runs here rather than inside uvicorn, so its errors surface as
    exceptions instead of uvicorn's ``sys.exit``.
    """
    pin_zone_database()  # Freshdesk times are read in the same zone database as the worker's
    app = create_app(settings, sdk_metrics=SdkMetrics(), tracing=tracing)
    sock = bind(settings.host, settings.port)
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(app.router.lifespan_context(app))
            except Exception as err:
                raise ApiStartupError(f"the API could not start: {' '.join(str(err).split())}") from err
            await _run(app, sock, stop, on_ready)
    finally:
        sock.close()


async def _run(app: object, sock: socket.socket, stop: asyncio.Event,
               on_ready: Callable[[str], None] | None) -> None:
    host, port = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    config = uvicorn.Config(app, lifespan="off", log_level="info", access_log=False, log_config=None)  # type: ignore[arg-type]
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="api-server")
    stopping = asyncio.create_task(stop.wait(), name="api-stop")
    try:
        while not server.started and not task.done() and not stopping.done():
            await asyncio.wait({task, stopping}, timeout=0.05)
        if server.started:
            log.info("API listening on %s", url)
            if on_ready is not None:
                on_ready(url)
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopping.cancel()
        await task
    if not stop.is_set():
        raise ApiStartupError("the API server stopped unexpectedly; the log above says why")

"""``/metrics``, ``/livez`` and ``/readyz`` on a port of their own: the worker's, which has no API.

- ``/livez``: 200 while the process runs and its event loop answers (nothing else is
  checked, so an outage of a dependency never makes an orchestrator restart it);
- ``/readyz`` (and its alias ``/healthz``): 200 when every check is ``ok`` (the worker:
  Temporal and PostgreSQL answer within the health timeout, and it is polling), else 503;
  the body names each check with one word, never an error text;
- ``/metrics``: the Prometheus text of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

log = logging.getLogger("escalations.health")
State = Literal["ok", "unavailable", "timeout"]
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def probe(name: str, check: Callable[[], Awaitable[object]], seconds: float) -> State:
    """Run one check within ``seconds``: ``ok``, ``timeout``, or ``unavailable`` (it raised or said
    no). The reason goes to the log (one line), never to the caller."""
    try:
        async with asyncio.timeout(seconds):
            healthy = await check()
    except TimeoutError:
        log.warning("readiness: %s did not answer within %gs", name, seconds)
        return "timeout"
    except Exception as err:  # reported as a word: a probe answers either way
        log.warning("readiness: %s unavailable (%s: %s)", name, type(err).__name__, " ".join(str(err).split())[:200])
        return "unavailable"
    if healthy is False:
        log.warning("readiness: %s reports it is not serving", name)
        return "unavailable"
    return "ok"


def probe_app(metrics: Callable[[], Awaitable[str]], readiness: Callable[[], Awaitable[Mapping[str, str]]]) -> Starlette:
    """The endpoints; ``readiness`` returns one word per check, ``ok`` (or ``polling``) when fine."""

    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks = dict(await readiness())
        ready = all(word in ("ok", "polling") for word in checks.values())
        return JSONResponse({"status": "ok" if ready else "unavailable", **checks}, status_code=200 if ready else 503)

    async def metrics_text(request: Request) -> Response:
        return PlainTextResponse(await metrics(), media_type=METRICS_CONTENT_TYPE)

    return Starlette(routes=[
        Route("/livez", livez), Route("/readyz", readyz), Route("/healthz", readyz), Route("/metrics", metrics_text),
    ])


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process that runs it owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ProbeEndpoint:
    """Serves ``probe_app`` on ``host:port`` (0: any free) while the ``async with`` block runs."""

    def __init__(self, host: str, port: int, metrics: Callable[[], Awaitable[str]],
                 readiness: Callable[[], Awaitable[Mapping[str, str]]]) -> None:
        self.host, self.port = host, port
        self.app = probe_app(metrics, readiness)
        self.url = ""
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ProbeEndpoint:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as err:
            sock.close()
            raise OSError(err.errno, f"cannot listen on {self.host}:{self.port} for metrics and health: "
                                     f"{err.strerror or err}") from None
        sock.listen(128)
        sock.setblocking(False)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        config = uvicorn.Config(self.app, lifespan="off", access_log=False, log_config=None, log_level="warning")
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="probe-endpoint")
        self._sock = sock
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it stopped
                raise RuntimeError(f"the metrics and health endpoint on {self.url} stopped at start-up")
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._sock.close()

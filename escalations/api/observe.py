"""What the API tells about itself: request ids, access log lines, request metrics, ``/metrics``.

``RequestContextMiddleware`` (outermost) gives every request an id: the caller's
``X-Request-ID`` when it is a plausible one (1-128 of ``A-Z a-z 0-9 . _ : @ / + = -``), else a
new one. The id is echoed in the response's ``X-Request-ID``, put in every problem document
(``request_id``) and on every log line written while the request is served (JSON logs:
``request_id``), and closes the request with one access-log line (logger
``escalations.api.access``: method, path, route template, status, duration, ticket). Request
metrics are labelled by route template, never by raw path, so ticket ids do not become series.

``GET /metrics`` (no token, like the probes: scrapers carry none) serves the API's registry,
the read-model gauges read from PostgreSQL at scrape time within the health timeout, and the
Temporal SDK's metrics of the API's client.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from escalations.api.deps import api_routes, public
from escalations.api.problems import classify_fault
from escalations.db.readmodel import open_escalation_counts
from escalations.observability import metrics
from escalations.observability.endpoint import METRICS_CONTENT_TYPE
from escalations.observability.logs import REQUEST_ID

access_log = logging.getLogger("escalations.api.access")
log = logging.getLogger("escalations.api")
HEADER = "X-Request-ID"
_PLAUSIBLE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
UNMATCHED = "unmatched"
# Public on purpose (Prometheus scrapes without a token): counts and durations, no customer data.
router = APIRouter(tags=["health"], dependencies=[Depends(public)])


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1").strip()
            if _PLAUSIBLE.fullmatch(candidate):
                return candidate
            break
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Request id in, request id out; one access-log line and the request metrics per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._templates: dict[int, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500  # what the server answers if nothing else is sent

        async def tagged_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode("latin-1"))]}
            await send(message)

        try:
            await self.app(scope, receive, tagged_send)
        finally:
            seconds = time.perf_counter() - started
            route = self._route(scope)
            method = str(scope.get("method", ""))
            metrics.API_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            metrics.API_DURATION.labels(method=method, route=route).observe(seconds)
            ticket = (scope.get("path_params") or {}).get("ticket_id")
            access_log.info("%s %s %d %.1f ms", method, scope.get("path"), status, seconds * 1000, extra={
                "method": method, "path": scope.get("path"), "route": route, "status": status,
                "duration_ms": round(seconds * 1000, 1), **({"ticket_id": ticket} if ticket else {}),
            })
            REQUEST_ID.reset(token)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            return UNMATCHED
        if self._templates is None:  # built once, after every router is included
            self._templates = {id(r): path for path, r in api_routes(scope["app"])}
        return self._templates.get(id(route)) or str(getattr(route, "path", UNMATCHED))


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse, operation_id="metrics",
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format 0.0.4"}})
async def prometheus_metrics(request: Request) -> PlainTextResponse:
    """Request metrics, the read-model gauges and the Temporal SDK's client metrics (no token)."""
    await _read_model(request)
    sdk = getattr(request.app.state, "sdk_metrics", None)
    text = metrics.exposition(metrics.API_REGISTRY) + (await sdk.text() if sdk is not None else "")
    return PlainTextResponse(text, media_type=METRICS_CONTENT_TYPE)


async def _read_model(request: Request) -> None:
    settings: Any = request.app.state.settings
    seconds = float(settings.health_timeout)
    try:
        async with asyncio.timeout(seconds):
            rows = await open_escalation_counts(request.app.state.pool, timeout=seconds)
    except Exception as err:
        if classify_fault(err) is None:
            raise  # a bug, not an outage
        # The scrape still answers: the gauges go away and escalation_read_model_up says 0.
        log.warning("metrics: read-model gauges not read, PostgreSQL %s (%s)",
                    "timed out" if isinstance(err, TimeoutError) else "unavailable", type(err).__name__)
        metrics.read_model_unavailable()
        return
    metrics.set_read_model(rows)

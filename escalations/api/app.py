"""The FastAPI application: ``create_app(settings)``.

One Temporal client (the project's data converter: pydantic JSON, encrypted with
``ESCALATION_ENCRYPTION_KEYS``) and one asyncpg pool per process, made in the lifespan and
kept on ``app.state``; the same keys serve Temporal's remote codec endpoints (``/codec/*``,
``escalations.api.codec``, scope ``read``). Every route declares the scope its bearer
token needs (``escalations.api.deps``), or that it is public (the probes ``/livez``,
``/readyz``, ``/healthz`` and ``/metrics``: status words and counts only); ``create_app``
refuses a route that declares neither. Webhooks that cannot send a token (Intercom, Jira, Slack)
are authenticated by their sender's signature instead, and action links by their signed token
(``Depends(signed)``). ``/openapi.json``, ``/docs`` and
``/redoc`` stay public on purpose (the schema holds no data, and client generators and the docs page need it);
the docs pages load their assets from the API itself (``escalations.api.docs``). Every operation has a stable
``operationId`` (camelCase, set on its route); ``create_app`` refuses a route without one, as generated SDKs
name their methods after it. A JSON route refuses other media types (415, ``escalations.api.media``).
Errors are RFC 9457 problem documents. Every request has an id (``X-Request-ID``), an
access-log line and request metrics (``escalations.api.observe``); with tracing on, a span
that the workflow's spans continue.

Outages: the API starts whether or not Temporal and PostgreSQL are up. The Temporal
client connects lazily (on the first call, again on every call until it succeeds)
and the pool opens connections on demand, so routes needing a missing dependency
answer 503/504 and recover by themselves once it is back. Every Temporal call and
every PostgreSQL use is bounded (``ApiSettings``: ``temporal_rpc_timeout``,
``command_timeout``, ``db_acquire_timeout``, ``db_command_timeout``,
``health_timeout``, and ``request_timeout`` as the last resort); the mapping of
faults to 503/504 lives in ``escalations.api.problems``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import Client
from temporalio.service import RetryConfig

from escalations import client as ec
from escalations import temporal
from escalations.api import actions, codec, escalations, feedback, health, jira, observe, slack, tickets
from escalations.api.deps import api_routes, route_scope, undeclared_routes
from escalations.api.docs import install_docs
from escalations.api.middleware import BodyLimitMiddleware
from escalations.api.observe import RequestContextMiddleware
from escalations.api.problems import (
    PROBLEM_MEDIA_TYPE,
    CatchAllMiddleware,
    DeadlineMiddleware,
    ProblemError,
    classify_fault,
    fault_exception_handler,
    http_exception_handler,
    problem_error_handler,
    problem_response,
    validation_exception_handler,
)
from escalations.api.responses import DESCRIPTIONS
from escalations.db.pool import create_pool
from escalations.observability.sdk import SdkMetrics
from escalations.observability.tracing import Tracing
from escalations.policies import PolicySource
from escalations.settings import ApiSettings

DESCRIPTION = """\
Customer escalations on durable Temporal timers: start an escalation, act on it
(acknowledge, escalate, note, pause, resume, resolve, postmortem), read its live
state, list escalations, record CSAT and read KPIs. `/codec/encode` and `/codec/decode`
are Temporal's remote codec endpoints (payload encryption) for Temporal UI and the
`temporal` CLI.

Authenticate with `Authorization: Bearer <token>` (named tokens with scopes, from
`ESCALATION_API_TOKENS`) on every route but the probes (`/livez`, `/readyz`, `/healthz`) and
`/metrics`: each route names the scope it needs (`read`, `start`, `act`, `tickets`, `csat`;
`admin` holds them all). `POST /tickets/intercom` is authenticated by Intercom's webhook
signature (`X-Hub-Signature`) instead, since Intercom cannot send a token; so is
`POST /integrations/jira/webhook`, by the Jira webhook's signature, and
`POST /integrations/slack/interactions` by Slack's (`X-Slack-Signature`); the action links
of pages (`/actions/{action}/{token}`) by their own signed token. 401 without a valid token, 403 naming the missing scope. Errors are
RFC 9457 problem documents (`application/problem+json`) carrying the request's `X-Request-ID`
as `request_id`; a body that is not JSON is a 400, one of another media type a 415.

Starts and commands take an `Idempotency-Key` header: an identical retry from the same token
replays the first answer (`Idempotent-Replayed: true`). `GET /escalations` pages with an opaque
`next_page_token` (also in the `Link` header), passed back as `page_token`.
"""


log = logging.getLogger("escalations.api")
POOL_CLOSE_TIMEOUT = 5.0


async def connect_temporal(settings: ApiSettings, *, sdk_metrics: SdkMetrics | None = None,
                           tracing: Tracing | None = None) -> Client:
    """A lazily connecting client: made without touching the network, it connects on its first
    call (and again on each call until that works). A refused connection fails fast (short
    retries), a silent one within ``temporal_rpc_timeout``. Its SDK metrics go to
    ``sdk_metrics`` and its calls carry the trace of ``tracing`` when given."""
    seconds = settings.temporal_rpc_timeout
    options: dict[str, Any] = {
        "connect_timeout": timedelta(seconds=seconds),
        # The SDK retries UNAVAILABLE for up to 10 s by default; an API answers 503 sooner.
        "retry_config": RetryConfig(initial_interval_millis=100, max_interval_millis=500,
                                    max_elapsed_time_millis=int(min(seconds / 2, 2.0) * 1000), max_retries=3),
        **settings.temporal,
        "lazy": True,
    }
    if sdk_metrics is not None:
        options["runtime"] = sdk_metrics.runtime
    if tracing is not None:
        options["interceptors"] = tracing.interceptors()
    return await temporal.connect(options, settings.codec)


async def open_pool(settings: ApiSettings) -> Any:
    """The API's bounded pool; opens no connection yet (so start-up never waits on PostgreSQL)."""
    assert settings.database_url is not None
    return await create_pool(
        settings.database_url, min_size=0, max_size=settings.pool_size,
        command_timeout=settings.db_command_timeout, acquire_timeout=settings.db_acquire_timeout,
        connect_timeout=settings.db_acquire_timeout,
    )


async def _warm_up(app: FastAPI) -> None:
    """Connect both dependencies once in the background; say which is down (the routes retry)."""
    temporal, postgres = await health.check_dependencies(app)
    if temporal == "ok" and postgres == "ok":
        log.info("API connected to Temporal and PostgreSQL")
    else:
        log.warning("API started without its dependencies: temporal %s, postgres %s; routes needing "
                    "them answer 503/504 until they are back", temporal, postgres)


BACKGROUND_GRACE = 10.0


async def _finish(background: set[asyncio.Task[None]]) -> None:
    """Let handed-off work finish (bounded), then cancel what is left."""
    if not background:
        return
    _, pending = await asyncio.wait(set(background), timeout=BACKGROUND_GRACE)
    for task in pending:
        log.warning("stopping: %s cancelled before it finished", task.get_name())
        task.cancel()
    if pending:
        await asyncio.wait(pending)


async def _close_pool(pool: Any) -> None:
    try:
        async with asyncio.timeout(POOL_CLOSE_TIMEOUT):
            await pool.close()
    except Exception as err:  # noqa: BLE001 - shutting down; connections are dropped instead
        log.warning("closing the PostgreSQL pool did not finish (%s); terminating its connections",
                    type(err).__name__)
        pool.terminate()


def create_app(settings: ApiSettings, *, sdk_metrics: SdkMetrics | None = None,
               tracing: Tracing | None = None) -> FastAPI:
    """The API for ``settings``; raises ConfigError when they are unsafe (no tokens).

    ``sdk_metrics``: the Temporal runtime whose metrics ``/metrics`` adds (``serve`` makes one);
    ``tracing``: spans for requests and the client's Temporal calls."""
    settings.check()
    legacy = [token.name for token in settings.api_tokens if token.legacy]
    if legacy:
        log.warning("ESCALATION_API_TOKENS holds %d bare token(s) of the old format (%s): each has every scope; "
                    "give each a name and scopes (NAME:SCOPE+SCOPE:SHA256, docs/api.md)", len(legacy),
                    ", ".join(legacy))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        policies = PolicySource.from_setting(settings.policy_file)
        policies.load(None)  # an invalid default policy fails at start-up, with the key named
        app.state.client = await connect_temporal(settings, sdk_metrics=sdk_metrics, tracing=tracing)
        app.state.pool = pool = await open_pool(settings)
        app.state.policies = policies
        # Work a request hands off after answering (a Slack press: Slack wants its answer first).
        app.state.background = background = set()
        app.state.http = http = httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        warm_up = asyncio.create_task(_warm_up(app), name="api-warm-up")
        try:
            yield
        finally:
            warm_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm_up
            await _finish(background)
            await http.aclose()
            await _close_pool(pool)

    app = FastAPI(
        title="Escalations API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from packaged assets by install_docs, not from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.sdk_metrics = sdk_metrics
    app.include_router(escalations.router)
    app.include_router(escalations.runs_router)
    app.include_router(feedback.router)
    app.include_router(tickets.router)
    app.include_router(tickets.signed_router)
    app.include_router(jira.router)
    app.include_router(actions.router)
    app.include_router(slack.router)
    app.include_router(health.router)
    app.include_router(observe.router)
    app.include_router(codec.router)
    undeclared = undeclared_routes(app)
    if undeclared:  # a route nobody decided on is never served, let alone open
        raise RuntimeError(f"routes without a scope (Depends(Requires(...))) or Depends(public): "
                           f"{', '.join(undeclared)}")
    unnamed = unnamed_routes(app)
    if unnamed:  # generated SDKs name their methods after operationId: FastAPI's made-up ones are not a contract
        raise RuntimeError(f"routes without an operation_id (set operation_id=\"camelCase\" on the route): "
                           f"{', '.join(unnamed)}")
    install_docs(app)

    app.add_exception_handler(ProblemError, problem_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_exception_handler)
    app.add_exception_handler(ec.EscalationError, escalation_error_handler)
    # Outermost last: the body limit sees the request first, then the request deadline; the
    # catch-all wraps the routes and answers infrastructure faults (503/504) and bugs (500).
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(DeadlineMiddleware, seconds=settings.request_timeout)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    # Outermost of ours: every answer, a 413 or a 504 of the deadline included, has the request id.
    app.add_middleware(RequestContextMiddleware)
    if tracing is not None:
        tracing.instrument_app(app)
    # Last, so outermost: a browser's CORS preflight is answered before anything else runs.
    codec.install_browser_access(app, settings)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def unnamed_routes(app: FastAPI) -> list[str]:
    """Operations of the schema whose route sets no ``operation_id``."""
    return [f"{','.join(sorted(route.methods))} {path}" for path, route in api_routes(app)
            if route.include_in_schema and not route.operation_id]


async def escalation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The Python client's typed errors, as problem documents."""
    if isinstance(exc, ec.EscalationNotFound):
        return problem_response(404, exc.message, slug="escalation-not-found")
    if isinstance(exc, ec.EscalationAlreadyOpen):
        return problem_response(
            409, exc.message, slug="escalation-already-open",
            headers={"Location": f"/escalations/{exc.ticket_id}"},
            extra={"workflow_id": exc.workflow_id, "run_id": exc.run_id, "ticket_id": exc.ticket_id},
        )
    if isinstance(exc, ec.EscalationClosed):
        return problem_response(409, exc.message, slug="escalation-closed")
    if isinstance(exc, ec.CommandRejected):
        return problem_response(409, exc.message, slug="command-rejected")
    if isinstance(exc, ec.InvalidRequest):
        where = "query" if exc.kind == "invalid_filter" else "body"
        error = {"loc": [where, *exc.loc], "msg": exc.message, "type": exc.kind}
        known = {"category": "known_categories", "policy": "known_policies"}.get(exc.field)
        extra = {known: exc.known} if known else {}
        return problem_response(422, exc.message, slug=exc.kind.replace("_", "-"), errors=[error], extra=extra)
    if isinstance(exc, ec.EscalationNotReady):
        return problem_response(503, exc.message, slug="not-ready", headers={"Retry-After": "1"},
                                extra={"retry_after": 1})
    if classify_fault(exc) is not None:  # Temporal or the worker is down or slow: 503/504
        return await fault_exception_handler(request, exc)
    raise exc


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the bearer scheme on guarded routes and problem+json error bodies."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer",
        "description": "A named token of ESCALATION_API_TOKENS; each route says the scope it needs "
                       "(x-required-scope)",
    }
    guarded = {(path, method.lower()): scope for path, route in api_routes(app)
               if (scope := route_scope(route)) is not None for method in route.methods}
    _describe_durations(components.get("schemas", {}))
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if (path, method) in guarded:
                scope = guarded[(path, method)]
                operation["security"] = [{"bearer": []}]
                operation["x-required-scope"] = scope
                operation["description"] = (operation.get("description", "") +
                                            f"\n\nScope: `{scope}` (or `admin`).").strip()
            responses = operation.get("responses", {})
            if "requestBody" in operation:  # escalations.api.media and the malformed-JSON handler
                for code in (400, 415):
                    responses.setdefault(str(code), {
                        "description": DESCRIPTIONS[code],
                        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
                    })
            for code, response in responses.items():
                content = response.get("content", {})
                if code[:1] in "45" and "application/json" in content:
                    content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
    return schema


def _describe_durations(node: Any) -> None:
    """pydantic writes timedeltas as ISO 8601 durations with fractional seconds (``PT59.5S``),
    which JSON Schema's ``format: duration`` (RFC 3339) does not allow: say what they are instead."""
    if isinstance(node, dict):
        if node.get("format") == "duration":
            del node["format"]
            node.setdefault("description", "ISO 8601 duration, e.g. PT1H30M or PT59.5S")
        for value in node.values():
            _describe_durations(value)
    elif isinstance(node, list):
        for value in node:
            _describe_durations(value)

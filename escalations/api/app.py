"""The FastAPI application: ``create_app(settings)``.

One Temporal client (pydantic data converter) and one asyncpg pool per process,
made in the lifespan and kept on ``app.state``. Every route but ``/healthz``
needs a bearer token; ``/openapi.json`` and ``/docs`` stay public on purpose (the
schema holds no data, and client generators and the docs page need it).
Errors are RFC 9457 problem documents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from activities.policy import PolicySource
from escalations.api import escalations, feedback, health, tickets
from escalations.api.deps import api_routes, requires_token
from escalations.api.middleware import BodyLimitMiddleware
from escalations.api.problems import (
    PROBLEM_MEDIA_TYPE,
    CatchAllMiddleware,
    ProblemError,
    http_exception_handler,
    problem_error_handler,
    problem_response,
    validation_exception_handler,
)
from escalations.api.settings import ApiSettings
from escalations import client as ec
from escalations.db.pool import create_pool

DESCRIPTION = """\
Customer escalations on durable Temporal timers: start an escalation, act on it
(acknowledge, escalate, note, pause, resume, resolve, postmortem), read its live
state, list escalations, record CSAT and read KPIs.

Authenticate with `Authorization: Bearer <token>` (tokens from `ESCALATION_API_TOKENS`)
on every route but `/healthz`. Errors are RFC 9457 problem documents
(`application/problem+json`).
"""


def create_app(settings: ApiSettings) -> FastAPI:
    """The API for ``settings``; raises ConfigError when they are unsafe (no tokens)."""
    settings.check()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        policies = PolicySource.from_setting(settings.policy_file)
        policies.load(None)  # an invalid default policy fails at start-up, with the key named
        client = await Client.connect(**settings.temporal, data_converter=pydantic_data_converter)
        assert settings.database_url is not None
        pool = await create_pool(settings.database_url, max_size=settings.pool_size)
        app.state.client = client
        app.state.pool = pool
        app.state.policies = policies
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="Escalations API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(escalations.router)
    app.include_router(feedback.router)
    app.include_router(tickets.router)
    app.include_router(health.router)

    app.add_exception_handler(ProblemError, problem_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(RequestValidationError, validation_exception_handler)
    app.add_exception_handler(ec.EscalationError, escalation_error_handler)
    app.add_exception_handler(RPCError, rpc_error_handler)
    # Outermost last: the body limit sees the request first; the catch-all wraps the routes.
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


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
        extra = {"known_categories": exc.known} if exc.field == "category" else {}
        return problem_response(422, exc.message, slug=exc.kind.replace("_", "-"), errors=[error], extra=extra)
    if isinstance(exc, ec.EscalationNotReady):
        return problem_response(503, exc.message, slug="not-ready", headers={"Retry-After": "1"})
    raise exc


async def rpc_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RPCError)
    if exc.status == RPCStatusCode.UNAVAILABLE:
        return problem_response(503, f"Temporal is unavailable: {exc.message}", slug="temporal-unavailable",
                                headers={"Retry-After": "5"})
    if exc.status == RPCStatusCode.DEADLINE_EXCEEDED:
        settings: ApiSettings = request.app.state.settings
        return problem_response(
            504, f"Temporal did not answer in time (is a worker polling task queue {settings.task_queue}?)",
            slug="timeout",
        )
    raise exc


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the bearer scheme on guarded routes and problem+json error bodies."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer",
        "description": "One of the tokens in ESCALATION_API_TOKENS",
    }
    guarded = {(path, method.lower()) for path, route in api_routes(app)
               if requires_token(route) for method in route.methods}
    _describe_durations(components.get("schemas", {}))
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if (path, method) in guarded:
                operation["security"] = [{"bearer": []}]
            for code, response in operation.get("responses", {}).items():
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

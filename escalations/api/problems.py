"""Errors as RFC 9457 problem documents (``application/problem+json``).

Every error the API answers has ``type``, ``title``, ``status``, ``detail`` and the
request's ``request_id`` (its ``X-Request-ID``); 422s add ``errors: [{loc, msg, type}]``;
some add members of their own (a 409 on start names the open escalation's ``workflow_id``).
A body that is not valid JSON is a 400 (``malformed-json``, with where it broke in ``errors``),
one of another media type a 415 (``escalations.api.media``).

Infrastructure faults are mapped here, and only here (``classify_fault``), so that
an outage of Temporal, of PostgreSQL or of the worker is never a 500:

- 503 ``temporal-unavailable``: ``TemporalUnavailable``; ``RPCError`` UNAVAILABLE or
  RESOURCE_EXHAUSTED; "Failed client connect" (the lazy client cannot connect);
- 504 ``temporal-timeout``: ``TemporalTimeout``; ``RPCError`` DEADLINE_EXCEEDED or
  CANCELLED; ``RPCTimeoutOrCancelledError``;
- 503 ``worker-unavailable``: ``WorkerUnavailable`` of a query (GET: no worker answered);
- 504 ``worker-timeout``: ``WorkerUnavailable`` of an update (a command: it may still apply);
- 503 ``postgres-unavailable``: ``DatabaseUnavailable``; asyncpg connection errors (class
  08), 57P01-57P03 (shutting down, starting up), 53300 (too many connections), a closed
  pool or connection, a refused/reset socket;
- 504 ``postgres-timeout``: ``DatabaseTimeout``; asyncpg's timeouts; ``QueryCanceledError``;
- 504 ``timeout``: any other ``TimeoutError`` (asyncio's included), and the request
  deadline (``DeadlineMiddleware``);
- 503 ``unavailable``: any other ``ConnectionError`` or network ``OSError`` (file errors excluded);
- anything else: 500 ``internal`` (a bug), logged with its traceback.

A 503 carries ``Retry-After`` (seconds) and the same number as ``retry_after`` in the
body. Details name the dependency and the bound, never the driver's error text; that
goes to the log, one WARNING line per mapped fault.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import RPCTimeoutOrCancelledError
from temporalio.service import RPCError

from escalations import client as ec
from escalations.db.pool import DatabaseTimeout, DatabaseUnavailable, database_fault
from escalations.observability.logs import REQUEST_ID

log = logging.getLogger("escalations.api")
DEFAULT_RETRY_AFTER = 5

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:escalations:problem:"


def problem_type(slug: str) -> str:
    return f"{PROBLEM_TYPE_PREFIX}{slug}"


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: ['body', 'customer', 'id'], ['query', 'limit'], ...")
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": problem_type("command-rejected"),
                    "title": "Conflict",
                    "status": 409,
                    "detail": "cannot acknowledge: escalation SF-1042 is resolved",
                }
            ]
        },
    )

    type: str = Field(default="about:blank", description="A URI naming the kind of problem")
    title: str
    status: int
    detail: str | None = None
    request_id: str | None = Field(default=None, description="The request's X-Request-ID, as in the API's log")


class ValidationProblem(Problem):
    errors: list[FieldError] = Field(default_factory=list)


class ProblemError(Exception):
    """Raise anywhere in a request to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug
        self.title = title
        self.headers = dict(headers or {})
        self.errors = list(errors) if errors is not None else None
        self.extra = extra


def problem_body(
    status: int,
    detail: str | None,
    *,
    slug: str | None = None,
    title: str | None = None,
    errors: Iterable[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": problem_type(slug) if slug else "about:blank",
        "title": title or _phrase(status),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = list(errors)
    body.update(extra or {})
    request_id = REQUEST_ID.get()
    if request_id is not None:
        body["request_id"] = request_id
    return body


def problem_response(
    status: int,
    detail: str | None,
    *,
    slug: str | None = None,
    title: str | None = None,
    errors: Iterable[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, detail, slug=slug, title=title, errors=errors, extra=extra),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """pydantic / FastAPI errors as ``{loc, msg, type}`` (no echoed input)."""
    return [
        {"loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
         "msg": str(error.get("msg", "")),
         "type": str(error.get("type", "value_error"))}
        for error in errors
    ]


async def problem_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        exc.status, exc.detail, slug=exc.slug, title=exc.title, errors=exc.errors,
        headers=exc.headers, extra=exc.extra,
    )


async def http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else _phrase(exc.status_code)
    slugs = {400: "bad-request", 401: "unauthorized", 404: "not-found", 405: "method-not-allowed", 413: "body-too-large"}
    return problem_response(
        exc.status_code, detail, slug=slugs.get(exc.status_code), headers=exc.headers or {}
    )


def malformed_json(errors: Iterable[Mapping[str, Any]] | None = None) -> ProblemError:
    """400: the body is not JSON at all (field errors are for JSON that does not fit)."""
    listed = list(errors) if errors is not None else [
        {"loc": ["body"], "msg": "not valid JSON", "type": "json_invalid"}]
    return ProblemError(400, "the request body is not valid JSON", slug="malformed-json", errors=listed)


async def validation_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    if any(error["type"] == "json_invalid" for error in errors):
        return await problem_error_handler(request, malformed_json(errors))
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
    return problem_response(
        422, f"the request is invalid: {summary}" if summary else "the request is invalid",
        slug="validation", errors=errors,
    )


# -- infrastructure faults: 503 / 504 ---------------------------------------------------------

_FILE_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


@dataclass(frozen=True)
class Fault:
    """How an infrastructure failure is answered."""

    status: int  # 503 or 504
    dependency: str  # temporal | postgres | worker | upstream
    slug: str
    detail: str

    @property
    def retryable(self) -> bool:
        return self.status == 503


def classify_fault(exc: BaseException) -> Fault | None:
    """The 503/504 answer for an outage of Temporal, PostgreSQL or the worker; None for anything else."""
    if isinstance(exc, ec.WorkerUnavailable):
        if exc.command is None:
            return Fault(503, "worker", "worker-unavailable", exc.message)
        return Fault(504, "worker", "worker-timeout", exc.message)
    temporal = _temporal_fault(exc)
    if temporal is not None:
        return temporal
    postgres = database_fault(exc) if _from_asyncpg(exc) else None
    if postgres is DatabaseTimeout:
        return Fault(504, "postgres", "postgres-timeout",
                     str(exc) if isinstance(exc, DatabaseTimeout) and str(exc)
                     else "PostgreSQL did not answer in time; retry later")
    if postgres is DatabaseUnavailable:
        return Fault(503, "postgres", "postgres-unavailable", "PostgreSQL is unavailable right now; retry later")
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return Fault(504, "upstream", "timeout", "a service this API depends on did not answer in time")
    if isinstance(exc, (ConnectionError, socket.gaierror)) or (
            isinstance(exc, OSError) and not isinstance(exc, _FILE_ERRORS)):
        return Fault(503, "upstream", "unavailable", "a service this API depends on is unavailable; retry later")
    return None


def _temporal_fault(exc: BaseException) -> Fault | None:
    if not isinstance(exc, (ec.TemporalUnavailable, ec.TemporalTimeout, RPCError, RPCTimeoutOrCancelledError,
                            RuntimeError)):
        return None
    typed = exc if isinstance(exc, (ec.TemporalUnavailable, ec.TemporalTimeout)) else ec.temporal_fault(
        exc, "a call")
    if isinstance(typed, ec.TemporalUnavailable):
        return Fault(503, "temporal", "temporal-unavailable", "Temporal is unavailable right now; retry later")
    if isinstance(typed, ec.TemporalTimeout):
        detail = typed.message if typed is exc else "Temporal did not answer in time"
        return Fault(504, "temporal", "temporal-timeout", detail)
    return None


def _from_asyncpg(exc: BaseException) -> bool:
    return isinstance(exc, (DatabaseUnavailable, DatabaseTimeout, asyncpg.PostgresError, asyncpg.InterfaceError))


def fault_response(fault: Fault, exc: BaseException, *, method: str | None, path: str | None,
                   retry_after: int = DEFAULT_RETRY_AFTER) -> JSONResponse:
    """Log the fault (one WARNING line, no traceback, no secrets) and answer its problem document."""
    cause = exc.__cause__
    because = f"; cause {type(cause).__name__}: {_one_line(cause, 120)}" if cause is not None else ""
    log.warning("%s %s: %s %s -> %d (%s: %s%s)", method, path, fault.dependency,
                "unavailable" if fault.retryable else "timed out", fault.status, type(exc).__name__,
                _one_line(exc), because)
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {"dependency": fault.dependency}
    if fault.retryable:
        headers["Retry-After"] = str(retry_after)
        extra["retry_after"] = retry_after
    return problem_response(fault.status, fault.detail, slug=fault.slug, headers=headers, extra=extra)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _retry_after(scope: Scope) -> int:
    app = scope.get("app")
    settings = getattr(getattr(app, "state", None), "settings", None)
    return int(getattr(settings, "retry_after", DEFAULT_RETRY_AFTER))


async def fault_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    """For exception handlers: the fault's problem document; anything else is re-raised (a 500)."""
    fault = classify_fault(exc)
    if fault is None:
        raise exc
    return fault_response(fault, exc, method=request.method, path=request.url.path,
                          retry_after=_retry_after(request.scope))


class CatchAllMiddleware:
    """Any unhandled exception: an infrastructure fault answers 503/504 (``classify_fault``);
    anything else is logged with its traceback and answers a 500 problem without one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            fault = classify_fault(exc)
            if fault is not None and not started:
                response = fault_response(fault, exc, method=scope.get("method"), path=scope.get("path"),
                                          retry_after=_retry_after(scope))
                await response(scope, receive, send)
                return
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = problem_response(
                500, "internal error; the server log has the details", slug="internal"
            )
            await response(scope, receive, send)


class DeadlineMiddleware:
    """The last-resort bound on a request: 504 after ``seconds`` (the per-call bounds answer first).

    Outside CatchAllMiddleware: faults raised inside are already answered; only this
    deadline's own expiry is answered here.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        deadline = asyncio.timeout(self.seconds)
        try:
            async with deadline:
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if not deadline.expired():
                raise
            log.warning("%s %s: no answer within the request deadline of %gs", scope.get("method"),
                        scope.get("path"), self.seconds)
            if started:
                raise
            response = problem_response(
                504, f"the request did not complete within {self.seconds:g}s; retry later", slug="timeout",
                extra={"dependency": "upstream"},
            )
            await response(scope, receive, send)

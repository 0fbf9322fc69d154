"""Errors as RFC 9457 problem documents (``application/problem+json``).

Every error the API answers has ``type``, ``title``, ``status`` and ``detail``;
422s add ``errors: [{loc, msg, type}]``; some add members of their own (a 409 on
start names the open escalation's ``workflow_id``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("escalations.api")

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


async def validation_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
    return problem_response(
        422, f"the request is invalid: {summary}" if summary else "the request is invalid",
        slug="validation", errors=errors,
    )


class CatchAllMiddleware:
    """Any unhandled exception: log it with its traceback, answer a 500 problem without one."""

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
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = problem_response(
                500, "internal error; the server log has the details", slug="internal"
            )
            await response(scope, receive, send)

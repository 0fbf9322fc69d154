"""FastAPI dependencies shared by every router (the tickets router included).

The lifespan in ``escalations/api/app.py`` puts one Temporal client and one asyncpg pool per
process on ``app.state``; these hand them to the routes. Authentication and scopes are here
too: each route declares the scope it needs (``READ``, ``START``, ``ACT``, ``TICKETS``,
``CSAT``, ``ADMIN``) or that it is ``public``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import asyncpg
import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel
from temporalio.client import Client

from escalations import client as ec
from escalations.api.media import json_body_only
from escalations.api.problems import ProblemError
from escalations.policies import PolicySource
from escalations.settings import SCOPES, ApiSettings, ApiToken, Scope, token_digest
from schemas.escalation import server_set_fields

BEARER_CHALLENGE = 'Bearer realm="escalations"'


def settings_of(request: Request) -> ApiSettings:
    return request.app.state.settings


def timeouts_of(request: Request) -> ec.Timeouts:
    """The bounds of Temporal calls, from the settings (see ApiSettings)."""
    settings = settings_of(request)
    return ec.Timeouts(rpc=settings.temporal_rpc_timeout, workflow=settings.command_timeout,
                       probe=min(settings.probe_timeout, settings.temporal_rpc_timeout))


# The dependencies are coroutines although they only read the app's state: FastAPI runs a
# plain ``def`` dependency in its thread pool, one thread hop per dependency per request.
async def get_settings(request: Request) -> ApiSettings:
    return settings_of(request)


async def get_client(request: Request) -> Client:
    return request.app.state.client


async def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


async def get_policies(request: Request) -> PolicySource:
    return request.app.state.policies


async def get_timeouts(request: Request) -> ec.Timeouts:
    return timeouts_of(request)


@dataclass(frozen=True)
class Principal:
    """Who calls: the token's name and scopes. ``via`` is what events record."""

    token: str
    scopes: frozenset[str]

    @property
    def via(self) -> str:
        return f"api:{self.token}"


def authenticate(request: Request) -> ApiToken:
    """The configured token the request presents; 401 (problem document) otherwise.

    The presented token is hashed at once and only its digest is compared, with every known
    digest (no early exit), each in constant time; it is never stored or logged.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("a bearer token is required: Authorization: Bearer <token>")
    digest = token_digest(token).encode()
    found: ApiToken | None = None
    for known in settings_of(request).api_tokens:
        if hmac.compare_digest(digest, known.sha256.encode()):
            found = known
    if found is None:
        raise _unauthorized("the bearer token is not valid")
    return found


class Requires:
    """``Depends(Requires("act"))``: 401 without a valid token, 403 naming the missing scope.

    Every guarded route declares exactly one (``route_scope``); ``create_app`` refuses a route
    that declares none and is not ``public``. The answer is the calling ``Principal``.
    """

    def __init__(self, scope: Scope) -> None:
        assert scope in SCOPES, scope
        self.scope = scope

    async def __call__(self, request: Request) -> Principal:
        token = authenticate(request)
        if not token.allows(self.scope):
            held = ", ".join(sorted(token.scopes))
            raise ProblemError(
                403, f"the token {token.name!r} lacks the scope {self.scope!r} this route needs "
                     f"(it has: {held})",
                slug="missing-scope", missing_scope=self.scope, token=token.name,
            )
        principal = Principal(token=token.name, scopes=token.scopes)
        request.state.principal = principal
        await json_body_only(request)  # 415 once the caller is known (401/403 come first)
        return principal

    def __repr__(self) -> str:
        return f"Requires({self.scope!r})"


READ = Requires("read")
START = Requires("start")
ACT = Requires("act")
TICKETS = Requires("tickets")
CSAT = Requires("csat")
ADMIN = Requires("admin")


async def public() -> None:
    """Marks a route that needs no token on purpose (``dependencies=[Depends(public)]``)."""


SERVER_SET = {
    "via": "the calling principal, from your token",
    "trigger": "who opened the escalation: api, with your token's principal",
}


def refuse_server_set(body: BaseModel) -> None:
    """422 naming each field only the server sets (``via``, ``trigger``) that the body sets."""
    fields = server_set_fields(body)
    if not fields:
        return
    errors = [{"loc": ["body", name], "type": "server_set",
               "msg": f"set by the server ({SERVER_SET.get(name, 'not by the caller')}); leave it out"}
              for name in fields]
    summary = "; ".join(f"body.{e['loc'][1]}: {e['msg']}" for e in errors)
    raise ProblemError(422, f"the request is invalid: {summary}", slug="validation", errors=errors)


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, detail, slug="unauthorized", headers={"WWW-Authenticate": BEARER_CHALLENGE})


def _calls(route: APIRoute) -> list[Any]:
    """Every dependency callable of the route (directly or through a sub-dependency)."""
    found: list[Any] = []
    pending: list[Any] = [route.dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call is not None:
            found.append(dependant.call)
        pending.extend(dependant.dependencies)
    return found


def route_scope(route: APIRoute) -> Scope | None:
    """The scope a route requires (None: it declares none)."""
    scopes = {call.scope for call in _calls(route) if isinstance(call, Requires)}
    assert len(scopes) <= 1, f"{route.path} declares several scopes: {sorted(scopes)}"
    return scopes.pop() if scopes else None


async def signed() -> None:
    """Marks a route that cannot take a token and proves its caller by a signature the route
    checks itself (Intercom's and Jira's ``X-Hub-Signature``, Slack's ``X-Slack-Signature``, an
    action link's signed token): never served unsigned."""


def is_public(route: APIRoute) -> bool:
    return public in _calls(route)


def is_signed(route: APIRoute) -> bool:
    return signed in _calls(route)


def requires_token(route: APIRoute) -> bool:
    """Whether the route needs a bearer token (it declares a scope)."""
    return route_scope(route) is not None


def undeclared_routes(app: FastAPI) -> list[str]:
    """Routes that declare no scope and are marked neither ``public`` nor ``signed``: never served."""
    return [f"{','.join(sorted(route.methods))} {path}" for path, route in api_routes(app)
            if route_scope(route) is None and not is_public(route) and not is_signed(route)]


def api_routes(app: FastAPI) -> list[tuple[str, APIRoute]]:
    """Every API route with its full path, including those of included routers.

    FastAPI >= 0.16x keeps included routers as such in ``app.routes`` and offers
    ``iter_route_contexts``; older versions copy their routes into ``app.routes``.
    """
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_contexts is None:
        return [(route.path, route) for route in app.routes if isinstance(route, APIRoute)]
    return [(context.path, context.original_route) for context in iter_contexts(app.routes)
            if isinstance(context.original_route, APIRoute)]

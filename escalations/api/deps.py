"""FastAPI dependencies shared by every router (the tickets router included).

The lifespan in ``escalations/api/app.py`` puts one Temporal client and one asyncpg pool per
process on ``app.state``; these hand them to the routes.
"""

from __future__ import annotations

import hmac
from typing import Any

import asyncpg
import fastapi.routing
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from temporalio.client import Client

from escalations import client as ec
from escalations.api.problems import ProblemError
from escalations.policies import PolicySource
from escalations.settings import ApiSettings

BEARER_CHALLENGE = 'Bearer realm="escalations"'


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def get_client(request: Request) -> Client:
    return request.app.state.client


def get_pool(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def get_policies(request: Request) -> PolicySource:
    return request.app.state.policies


def get_timeouts(request: Request) -> ec.Timeouts:
    """The bounds of Temporal calls, from the settings (see ApiSettings)."""
    settings = get_settings(request)
    return ec.Timeouts(rpc=settings.temporal_rpc_timeout, workflow=settings.command_timeout,
                       probe=min(settings.probe_timeout, settings.temporal_rpc_timeout))


async def require_token(request: Request) -> None:
    """401 unless ``Authorization: Bearer <token>`` names one of the configured tokens."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("a bearer token is required: Authorization: Bearer <token>")
    presented = token.encode()
    # Compare with every token (no early exit), each in constant time.
    matches = [hmac.compare_digest(presented, known.encode()) for known in get_settings(request).tokens]
    if not any(matches):
        raise _unauthorized("the bearer token is not valid")


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, detail, slug="unauthorized", headers={"WWW-Authenticate": BEARER_CHALLENGE})


def requires_token(route: APIRoute) -> bool:
    """Whether ``require_token`` guards the route (directly or through a sub-dependency)."""
    pending: list[Any] = [route.dependant]
    while pending:
        dependant = pending.pop()
        if dependant.call is require_token:
            return True
        pending.extend(dependant.dependencies)
    return False


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

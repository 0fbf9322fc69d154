"""The probes (no token needed): ``GET /livez``, ``GET /readyz`` and its alias ``GET /healthz``.

``/livez`` answers 200 while the process serves requests, and checks nothing else: an
outage of Temporal or PostgreSQL must not make an orchestrator restart a healthy API.
``/readyz`` checks that Temporal and PostgreSQL are reachable: both checks run at once and
the answer comes within ``health_timeout`` seconds (2 by default) even when both are frozen.
Each dependency is reported as one word: ``ok``, ``unavailable`` (refused, unreachable,
closed) or ``timeout`` (no answer in time); what exactly failed goes to the log, never into
the response.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from escalations.api.deps import public
from escalations.api.problems import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    classify_fault,
    problem_body,
)
from escalations.db.pool import ping

# Public on purpose (probes carry no token): answers are status words, never error text.
router = APIRouter(tags=["health"], dependencies=[Depends(public)])
log = logging.getLogger("escalations.api")
CHECK_TIMEOUT = 2.0
"""Default of ``ApiSettings.health_timeout``, for apps without settings."""

State = Literal["ok", "unavailable", "timeout"]


class Health(BaseModel):
    status: Literal["ok"]
    temporal: State
    postgres: State


class Unhealthy(Problem):
    temporal: State
    postgres: State
    retry_after: int


class Alive(BaseModel):
    status: Literal["ok"]


@router.get("/livez", response_model=Alive, summary="The process is alive (checks nothing else)", operation_id="livez")
async def livez() -> JSONResponse:
    """200 ``{"status": "ok"}`` whenever the API answers at all."""
    return JSONResponse({"status": "ok"})


_READY = {
    "response_model": Health,
    "responses": {503: {"model": Unhealthy, "description": "Temporal or Postgres is down (problem document)"}},
}


@router.get("/healthz", summary="Alias of /readyz", operation_id="healthz", **_READY)  # type: ignore[arg-type]
@router.get("/readyz", summary="Temporal and Postgres are reachable", operation_id="readyz",
            **_READY)  # type: ignore[arg-type]
async def readyz(request: Request) -> JSONResponse:
    """200 ``{"status": "ok", "temporal": "ok", "postgres": "ok"}``, or 503 naming what failed."""
    temporal, postgres = await check_dependencies(request.app)
    if temporal == "ok" and postgres == "ok":
        return JSONResponse(Health(status="ok", temporal=temporal, postgres=postgres).model_dump())
    failed = [f"{name}: {state}" for name, state in (("temporal", temporal), ("postgres", postgres))
              if state != "ok"]
    retry_after = int(getattr(getattr(request.app.state, "settings", None), "retry_after", 5))
    body = problem_body(503, "; ".join(failed), slug="unhealthy",
                        extra={"temporal": temporal, "postgres": postgres, "retry_after": retry_after})
    return JSONResponse(body, status_code=503, media_type=PROBLEM_MEDIA_TYPE,
                        headers={"Retry-After": str(retry_after)})


async def check_dependencies(app: object) -> tuple[State, State]:
    """Temporal's and Postgres's state, both checked at once within the health timeout."""
    settings = getattr(getattr(app, "state", None), "settings", None)
    seconds = float(getattr(settings, "health_timeout", CHECK_TIMEOUT))
    temporal, postgres = await asyncio.gather(_temporal(app, seconds), _postgres(app, seconds))
    return temporal, postgres


async def _temporal(app: object, seconds: float) -> State:
    async def check() -> bool:
        client = app.state.client  # type: ignore[attr-defined]
        return await client.service_client.check_health(timeout=timedelta(seconds=seconds))

    return await _check("temporal", check, seconds)


async def _postgres(app: object, seconds: float) -> State:
    async def check() -> bool:
        await ping(app.state.pool, timeout=seconds)  # type: ignore[attr-defined]
        return True

    return await _check("postgres", check, seconds)


async def _check(name: str, check: object, seconds: float) -> State:
    """Run one check within ``seconds``; failures are logged (one line) and reported as a word."""
    try:
        async with asyncio.timeout(seconds):
            healthy = await check()  # type: ignore[operator]
    except TimeoutError:
        log.warning("health: %s did not answer within %gs", name, seconds)
        return "timeout"
    except Exception as err:  # reported as a word, never raised: this endpoint answers either way
        fault = classify_fault(err)
        state: State = "timeout" if fault is not None and fault.status == 504 else "unavailable"
        log.warning("health: %s %s (%s: %s)", name, state, type(err).__name__, " ".join(str(err).split())[:200])
        return state
    if not healthy:
        log.warning("health: %s reports it is not serving", name)
        return "unavailable"
    return "ok"

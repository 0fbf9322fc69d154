"""``GET /healthz``: liveness of Temporal and Postgres (no token needed)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from escalations.api.problems import PROBLEM_MEDIA_TYPE, Problem, problem_body

router = APIRouter(tags=["health"])
CHECK_TIMEOUT = 3.0


class Health(BaseModel):
    status: Literal["ok"]
    temporal: str
    postgres: str


class Unhealthy(Problem):
    temporal: str
    postgres: str


@router.get(
    "/healthz",
    response_model=Health,
    summary="Liveness of Temporal and Postgres",
    responses={503: {"model": Unhealthy, "description": "Temporal or Postgres is down (problem document)"}},
)
async def healthz(request: Request) -> JSONResponse:
    """200 ``{"status": "ok", "temporal": "ok", "postgres": "ok"}``, or 503 naming what failed."""
    temporal, postgres = await asyncio.gather(_temporal(request), _postgres(request))
    if temporal == "ok" and postgres == "ok":
        return JSONResponse(Health(status="ok", temporal=temporal, postgres=postgres).model_dump())
    failed = [f"{name}: {state}" for name, state in (("temporal", temporal), ("postgres", postgres))
              if state != "ok"]
    body = problem_body(503, "; ".join(failed), slug="unhealthy",
                        extra={"temporal": temporal, "postgres": postgres})
    return JSONResponse(body, status_code=503, media_type=PROBLEM_MEDIA_TYPE)


async def _temporal(request: Request) -> str:
    try:
        healthy = await request.app.state.client.service_client.check_health(
            timeout=timedelta(seconds=CHECK_TIMEOUT))
    except Exception as err:  # reported in the body, never raised: this endpoint answers either way
        return f"unavailable: {_one_line(err)}"
    return "ok" if healthy else "unavailable: not serving"


async def _postgres(request: Request) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await request.app.state.pool.fetchval("SELECT 1")
    except Exception as err:  # reported in the body, never raised
        return f"unavailable: {_one_line(err) or type(err).__name__}"
    return "ok"


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]

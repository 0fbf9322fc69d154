"""CSAT after an escalation (``POST /escalations/{ticket_id}/csat``, scope ``csat``) and ``GET /kpis``
(scope ``read``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Query

from escalations.api.deps import CSAT, READ, get_pool
from escalations.api.escalations import TicketIdPath
from escalations.api.problems import ProblemError
from escalations.api.responses import problems
from escalations.db import csat, kpis
from schemas.reporting import CsatRecord, CsatSubmission, KpiFilters, KpiReport

router = APIRouter()
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]


@router.post(
    "/escalations/{ticket_id}/csat",
    response_model=CsatRecord,
    tags=["escalations"],
    summary="Record the customer's CSAT score",
    responses=problems(400, 401, 403, 404, 409, 413, 422, 503, 504),
    dependencies=[Depends(CSAT)],
)
async def record_csat(ticket_id: TicketIdPath, submission: CsatSubmission, pool: PoolDep) -> CsatRecord:
    """A 1–5 score for the ticket's latest escalation, within the policy's ``csat_window`` after
    resolution; one per escalation."""
    async with pool.acquire() as conn:
        try:
            return await csat.record_csat(conn, ticket_id, submission, datetime.now(timezone.utc))
        except csat.NoEscalation as err:
            raise ProblemError(404, str(err) or f"no escalation for ticket {ticket_id}",
                               slug="escalation-not-found") from None
        except csat.NotResolved as err:
            raise ProblemError(409, str(err), slug="csat-not-resolved") from None
        except csat.OutsideWindow as err:
            raise ProblemError(409, str(err), slug="csat-outside-window") from None
        except csat.AlreadyRecorded as err:
            raise ProblemError(409, str(err), slug="csat-already-recorded") from None


@router.get(
    "/kpis",
    response_model=KpiReport,
    tags=["kpis"],
    summary="Escalation KPIs",
    responses=problems(401, 403, 422, 503, 504),
    dependencies=[Depends(READ)],
)
async def get_kpis(filters: Annotated[KpiFilters, Query()], pool: PoolDep) -> KpiReport:
    """Share resolved within SLA, time to resolution (net of pauses), CSAT, repeats, frequencies,
    the same per contract; optional ``since``/``until`` (ISO-8601 with offset), ``priority``,
    ``category``, ``contract`` (a contract key, or ``none``: under no contract)."""
    async with pool.acquire() as conn:
        return await kpis.compute_kpis(conn, filters)

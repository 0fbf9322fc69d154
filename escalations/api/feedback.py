"""CSAT after an escalation (``POST /escalations/{ticket_id}/csat``, scope ``csat``, with an
``Idempotency-Key`` like the other commands) and ``GET /kpis`` (scope ``read``; ``since`` and
``until`` as ISO-8601 with an offset or as a duration back from now: ``30d``, ``12h``, ``2w``)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, Field, TypeAdapter, ValidationError

from escalations.api import idempotency
from escalations.api.deps import CSAT, READ, Principal, get_pool, get_settings
from escalations.api.escalations import CommandKey, TicketIdPath
from escalations.api.problems import ProblemError
from escalations.api.responses import problems
from escalations.db import csat, kpis
from escalations.settings import ApiSettings
from schemas.durations import Duration
from schemas.reporting import CsatRecord, CsatSubmission, KpiFilters, KpiReport

router = APIRouter()
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
MOMENT_HELP = ("ISO-8601 with an offset (2026-05-01T00:00:00Z), or a duration back from now: 90m, 12h, 30d, "
               "2w (or ISO-8601, P30D)")
_RELATIVE = re.compile(r"^\s*(\d+(\.\d+)?\s*(ms|s|m|h|d|w)|[Pp].*)\s*$")
_DURATION: TypeAdapter[timedelta] = TypeAdapter(Duration)
_MOMENT: TypeAdapter[datetime] = TypeAdapter(AwareDatetime)


class KpiQuery(KpiFilters):
    """The query of ``GET /kpis``: ``KpiFilters`` with ``since``/``until`` as the caller writes them."""

    since: str | None = Field(default=None, max_length=64, description=f"Opened at or after: {MOMENT_HELP}",
                              examples=["30d"])
    until: str | None = Field(default=None, max_length=64, description=f"Opened before: {MOMENT_HELP}",
                              examples=["1d"])


def moment(value: str | None, name: str, now: datetime) -> datetime | None:
    """A time the caller wrote: a duration back from ``now`` or an ISO-8601 time with an offset."""
    if value is None:
        return None
    try:
        if _RELATIVE.match(value):
            return now - _DURATION.validate_python(value.strip())
        return _MOMENT.validate_python(value)
    except ValidationError:
        message = f"{value!r} is neither a duration back from now (30d, 12h, 2w) nor an ISO-8601 time with an offset"
        raise ProblemError(422, f"the request is invalid: query.{name}: {message}", slug="validation",
                           errors=[{"loc": ["query", name], "msg": message, "type": "moment_parsing"}]) from None


@router.post(
    "/escalations/{ticket_id}/csat",
    response_model=CsatRecord,
    tags=["escalations"],
    summary="Record the customer's CSAT score",
    operation_id="recordCsat",
    responses=problems(400, 401, 403, 404, 409, 413, 415, 422, 503, 504),
)
async def record_csat(ticket_id: TicketIdPath, submission: CsatSubmission, pool: PoolDep,
                      principal: Annotated[Principal, Depends(CSAT)],
                      settings: Annotated[ApiSettings, Depends(get_settings)],
                      idempotency_key: CommandKey = None) -> Any:
    """A 1–5 score for the ticket's latest escalation, within the policy's ``csat_window`` after
    resolution; one per escalation."""
    digest = idempotency.command_digest("csat", ticket_id, submission)

    async def record(_update_id: str | None) -> CsatRecord:
        return await _record(pool, ticket_id, submission)

    return await idempotency.run_command(pool, principal.via, idempotency_key, digest, settings.idempotency_ttl,
                                         record)


async def _record(pool: asyncpg.Pool, ticket_id: str, submission: CsatSubmission) -> CsatRecord:
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
    operation_id="getKpis",
    responses=problems(401, 403, 422, 503, 504),
    dependencies=[Depends(READ)],
)
async def get_kpis(query: Annotated[KpiQuery, Query()], pool: PoolDep) -> KpiReport:
    """Share resolved within SLA, time to resolution (net of pauses), CSAT, repeats, frequencies,
    the same per contract; optional ``since``/``until`` (ISO-8601 with an offset, or a duration
    back from now such as ``30d``, ``12h``, ``2w``: the report's ``filters`` give the time it
    meant), ``priority``, ``category``, ``contract`` (a contract key, or ``none``: under no contract)."""
    now = datetime.now(timezone.utc)
    filters = KpiFilters(**query.model_dump(exclude={"since", "until"}), since=moment(query.since, "since", now),
                         until=moment(query.until, "until", now))
    async with pool.acquire() as conn:
        return await kpis.compute_kpis(conn, filters)

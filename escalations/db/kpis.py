"""Escalation KPIs, computed in SQL over the read model (view ``escalation_kpi_facts``).

Filters narrow the escalations counted: ``since`` <= opened_at < ``until``,
``priority``, ``category`` and ``contract`` (exact match; ``contract`` ``none``: the
escalations under no contract). Definitions (see also 003_kpis.sql):

- escalations: escalations opened in the filter;
- resolved: of those, resolved (status resolved or closed);
- resolved within SLA: resolved with no SLA breach at or before the resolution;
  the share is resolved within SLA / resolved;
- time to resolution: resolved_at - opened_at minus the time spent paused (the
  resolved event's ``resolution_seconds``), over resolved escalations: the mean, and
  the 90th percentile by linear interpolation (``percentile_cont(0.9)``);
- CSAT: the mean score of the recorded responses; response rate = responses / resolved;
- repeat escalations: escalations opened while an earlier one of the same customer
  and issue (fingerprint: customer, category, integration) was within the policy's
  ``repeat_window`` (``repeat_count > 0``);
- ended without closing: runs that failed or were terminated (recorded by housekeeping);
  they count as escalations, never as resolved;
- frequency by category, by level reached (``highest_level``: the highest level in the
  chain the escalation reached), by kind and by priority, most frequent first;
- by contract: the counts, SLA share, time to resolution and CSAT above, per contract key
  the escalations opened under (null: none matched), most escalations first;
- weekly: escalations, resolved, resolved within SLA (count and share) and mean time to
  resolution per ISO week *opened* (Monday 00:00 UTC), every week from the first to the
  last with escalations, empty weeks included, so a trend has no silent gaps.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from schemas.policy import NO_CONTRACT
from schemas.reporting import ContractKpis, Frequency, KpiFilters, KpiReport, WeeklyKpis

_FILTERED = """
WITH f AS (
    SELECT * FROM escalation_kpi_facts
     WHERE ($1::timestamptz IS NULL OR opened_at >= $1::timestamptz)
       AND ($2::timestamptz IS NULL OR opened_at <  $2::timestamptz)
       AND ($3::text IS NULL OR priority = $3::text)
       AND ($4::text IS NULL OR category = $4::text)
       AND ($5::text IS NULL OR contract = $5::text)
       AND (NOT $6::bool OR contract IS NULL)
)
"""

# The outcome KPIs, over all the filtered escalations or per contract.
_OUTCOMES = """
       count(*)                                             AS escalations,
       count(*) FILTER (WHERE resolved)                     AS resolved,
       count(*) FILTER (WHERE resolved_within_sla)          AS resolved_within_sla,
       (count(*) FILTER (WHERE resolved_within_sla))::float8
           / NULLIF(count(*) FILTER (WHERE resolved), 0)    AS resolved_within_sla_share,
       -- numeric: exact sum, so the mean does not depend on the rows' physical order
       (avg(resolution_seconds::numeric) FILTER (WHERE resolved))::float8
                                                            AS mean_time_to_resolution_seconds,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY resolution_seconds)
           FILTER (WHERE resolved)                          AS p90_time_to_resolution_seconds,
       avg(csat_score)::float8                              AS csat_average,
       count(csat_score)                                    AS csat_responses,
       count(csat_score)::float8
           / NULLIF(count(*) FILTER (WHERE resolved), 0)    AS csat_response_rate,
       count(*) FILTER (WHERE is_repeat)                    AS repeat_escalations,
       count(*) FILTER (WHERE ended_without_closing)        AS ended_without_closing
"""

_TOTALS = _FILTERED + "SELECT" + _OUTCOMES + "  FROM f\n"

_BY_CONTRACT = _FILTERED + "SELECT contract," + _OUTCOMES + """  FROM f
 GROUP BY contract
 ORDER BY escalations DESC, contract NULLS LAST
"""

_FREQUENCIES = _FILTERED + """
SELECT dimension, key, count(*) AS escalations
  FROM (SELECT 'category' AS dimension, category      AS key FROM f
        UNION ALL SELECT 'level',       highest_level        FROM f
        UNION ALL SELECT 'kind',        kind                 FROM f
        UNION ALL SELECT 'priority',    priority             FROM f) AS keyed
 GROUP BY dimension, key
 ORDER BY dimension, escalations DESC, key
"""

# Weeks in UTC whatever the session's TimeZone; date_trunc('week') starts on Monday, as ISO weeks do.
_WEEKLY = _FILTERED + """,
w AS (
    SELECT f.*, date_trunc('week', opened_at AT TIME ZONE 'UTC') AS week_start FROM f
),
weeks AS (
    SELECT generate_series(min(week_start), max(week_start), interval '1 week') AS week_start FROM w
)
SELECT to_char(weeks.week_start, 'IYYY-"W"IW')             AS week,
       weeks.week_start::date                               AS week_start,
       count(w.escalation_id)                               AS escalations,
       count(*) FILTER (WHERE w.resolved)                   AS resolved,
       count(*) FILTER (WHERE w.resolved_within_sla)        AS resolved_within_sla,
       (count(*) FILTER (WHERE w.resolved_within_sla))::float8
           / NULLIF(count(*) FILTER (WHERE w.resolved), 0)  AS resolved_within_sla_share,
       (avg(w.resolution_seconds::numeric) FILTER (WHERE w.resolved))::float8
                                                            AS mean_time_to_resolution_seconds
  FROM weeks
  LEFT JOIN w ON w.week_start = weeks.week_start
 GROUP BY weeks.week_start
 ORDER BY weeks.week_start
"""

_RESOLUTION_TIMES = _FILTERED + """
SELECT resolution_seconds FROM f WHERE resolved ORDER BY resolution_seconds
"""


def _arguments(filters: KpiFilters) -> tuple[Any, ...]:
    under_none = filters.contract == NO_CONTRACT
    return (filters.since, filters.until, filters.priority, filters.category,
            None if under_none else filters.contract, under_none)


async def compute_kpis(conn: asyncpg.Connection, filters: KpiFilters) -> KpiReport:
    """Every KPI for the escalations the filters select."""
    args = _arguments(filters)
    totals = await conn.fetchrow(_TOTALS, *args)
    frequencies: dict[str, list[Frequency]] = {"category": [], "level": [], "kind": [], "priority": []}
    for record in await conn.fetch(_FREQUENCIES, *args):
        frequencies[record["dimension"]].append(
            Frequency(key=record["key"], escalations=record["escalations"])
        )
    return KpiReport(
        filters=filters,
        escalations=totals["escalations"],
        resolved=totals["resolved"],
        resolved_within_sla=totals["resolved_within_sla"],
        resolved_within_sla_share=totals["resolved_within_sla_share"],
        mean_time_to_resolution_seconds=totals["mean_time_to_resolution_seconds"],
        p90_time_to_resolution_seconds=totals["p90_time_to_resolution_seconds"],
        csat_average=totals["csat_average"],
        csat_responses=totals["csat_responses"],
        csat_response_rate=totals["csat_response_rate"],
        repeat_escalations=totals["repeat_escalations"],
        ended_without_closing=totals["ended_without_closing"],
        by_category=frequencies["category"],
        by_level_reached=frequencies["level"],
        by_kind=frequencies["kind"],
        by_priority=frequencies["priority"],
        by_contract=[
            ContractKpis.model_validate({field: record[field] for field in ContractKpis.model_fields})
            for record in await conn.fetch(_BY_CONTRACT, *args)
        ],
    )


async def resolution_times(conn: asyncpg.Connection, filters: KpiFilters) -> list[float]:
    """Time to resolution (seconds, net of pauses) of each resolved escalation; for charts."""
    return [r["resolution_seconds"] for r in await conn.fetch(_RESOLUTION_TIMES, *_arguments(filters))]


async def weekly_kpis(conn: asyncpg.Connection, filters: KpiFilters) -> list[WeeklyKpis]:
    """Volume, SLA share and mean time to resolution per ISO week opened, oldest first; for the trend chart."""
    return [WeeklyKpis.model_validate(dict(record)) for record in await conn.fetch(_WEEKLY, *_arguments(filters))]

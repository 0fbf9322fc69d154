"""Reading the ``escalations`` read model back as the live state's shape.

Once a run has completed there is nothing left to query, so the API's
``GET /escalations/{ticket_id}`` and the CLI's ``status`` answer from here: the
same ``EscalationState`` the workflow's ``state`` query returns, folded from
the domain events by ``escalations/db/projection.py``. Earlier escalations of a
ticket are read only here (``GET /escalations/{ticket_id}/history``,
``GET /escalation-runs/{escalation_id}``).

What the read model does not keep is left at the model's default:
``deadlines.at_risk_at`` / ``deadlines.auto_resume_at`` (derived from live
clocks) and ``resolve_remaining``. Notification counts come from the
``notifications`` ledger (rows ``sent`` / ``failed``), not from the run.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import asyncpg

from schemas.escalation import EscalationState
from schemas.runs import EscalationRun

# A read-model row with its delivery counts, as the state of an escalation shows them.
_WITH_COUNTS = """
SELECT e.*,
       (SELECT count(*) FROM notifications n
         WHERE n.escalation_id = e.escalation_id AND n.status = 'sent')   AS notifications_sent,
       (SELECT count(*) FROM notifications n
         WHERE n.escalation_id = e.escalation_id AND n.status = 'failed') AS notifications_failed
  FROM escalations e
"""
_LATEST = _WITH_COUNTS + """ WHERE e.ticket_id = $1
 ORDER BY e.opened_at DESC, e.escalation_id DESC
 LIMIT 1
"""


def _json(value: Any) -> Any:
    """jsonb as decoded by the pool's codec, or as text on a bare connection."""
    return json.loads(value) if isinstance(value, str) else value


def state_from_row(row: asyncpg.Record | dict[str, Any], *, notifications_sent: int = 0,
                   notifications_failed: int = 0) -> EscalationState:
    """Map one ``escalations`` row to the state model the ``state`` query returns."""
    return EscalationState.model_validate(
        {
            "escalation_id": row["escalation_id"],
            "ticket_id": row["ticket_id"],
            "workflow_id": row["workflow_id"],
            "title": row["title"],
            "customer": _json(row["customer"]),
            "category": row["category"],
            "kind": row["kind"],
            "status": row["status"],
            "priority": row["priority"],
            "level": row["level"],
            "level_name": row["level_name"],
            "owner": row["owner"],
            "owner_contact": _json(row["owner_contact"]),
            "route": row["route"],
            "deadlines": {
                "ack_due": row["ack_due"],
                "resolve_due": row["resolve_due"],
                "next_customer_update_due": row["next_customer_update_due"],
            },
            "sla_at_risk": row["sla_at_risk"],
            "sla_breached": row["sla_breached"],
            "breached_at": row["breached_at"],
            "path": _json(row["path"]) or [],
            "paged_levels": list(row["paged_levels"] or []),
            "consulted": _json(row["consulted"]) or [],
            "notifications_sent": notifications_sent,
            "notifications_failed": notifications_failed,
            "trigger": _json(row["trigger"]),
            "policy": {"name": row["policy_name"], "version": row["policy_version"]},
            "contract": row["contract"],
            "opened_at": row["opened_at"],
            "acknowledged_at": row["acknowledged_at"],
            "acknowledged_by": row["acknowledged_by"],
            "acknowledged_via": row["acknowledged_via"],
            "paused_since": row["paused_since"],
            "paused_total": timedelta(seconds=row["paused_seconds"] or 0.0),
            "resolved_at": row["resolved_at"],
            "closed_at": row["closed_at"],
            "resolution": _json(row["resolution"]),
            "postmortem": _json(row["postmortem"]),
            "repeat_of": row["repeat_of"],
            "repeat_count": row["repeat_count"],
            "jira_key": row["jira_key"],
            "counts": _json(row["counts"]) or {},
            "last_seq": row["last_seq"],
            "updated_at": row["updated_at"],
        }
    )


async def latest_escalation(conn: asyncpg.Connection, ticket_id: str) -> EscalationState | None:
    """The ticket's latest escalation (by ``opened_at``) from the read model, or None."""
    row = await conn.fetchrow(_LATEST, ticket_id)
    if row is None:
        return None
    return state_from_row(
        row,
        notifications_sent=row["notifications_sent"],
        notifications_failed=row["notifications_failed"],
    )


_OPEN_COUNTS = """
SELECT priority, level, count(*) AS open, count(*) FILTER (WHERE sla_breached) AS breached
  FROM escalations
 WHERE status IN ('open', 'acknowledged', 'paused')
 GROUP BY priority, level
"""


async def open_escalation_counts(pool: asyncpg.Pool, timeout: float | None = None) -> list[asyncpg.Record]:
    """Unresolved escalations (open, acknowledged, paused) by priority and level, with how many
    of them breached their resolution SLA: the API's ``escalations_open`` / ``escalations_breached``."""
    return await pool.fetch(_OPEN_COUNTS, timeout=timeout)


_BY_ID = _WITH_COUNTS + " WHERE e.escalation_id = $1\n"

_HISTORY = """
SELECT escalation_id, ticket_id, workflow_id, status, priority, kind, category, level, owner, highest_level,
       opened_at, acknowledged_at, resolved_at, closed_at, sla_breached, breached_at, repeat_of, contract,
       trigger, policy_name, policy_version, updated_at
  FROM escalations
 WHERE ticket_id = $1
 ORDER BY opened_at DESC, escalation_id DESC
"""


async def escalation_by_id(conn: asyncpg.Connection, escalation_id: str) -> EscalationState | None:
    """One escalation (any of a ticket's, not only its latest) from the read model, or None."""
    row = await conn.fetchrow(_BY_ID, escalation_id)
    if row is None:
        return None
    return state_from_row(row, notifications_sent=row["notifications_sent"],
                          notifications_failed=row["notifications_failed"])


async def escalation_history(conn: asyncpg.Connection, ticket_id: str) -> list[EscalationRun]:
    """Every escalation of the ticket the read model holds, newest first (empty: none)."""
    rows = await conn.fetch(_HISTORY, ticket_id)
    runs = []
    for row in rows:
        fields = dict(row)
        fields["trigger"] = _json(fields["trigger"])
        fields["policy"] = {"name": fields.pop("policy_name"), "version": fields.pop("policy_version")}
        runs.append(EscalationRun.model_validate(fields))
    return runs

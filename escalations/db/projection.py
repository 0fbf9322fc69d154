"""Folding domain events into the ``escalations`` read model.

One function per event type, shared by the live path (the ``record_events``
activity) and ``escalations rebuild-read-model``, so both produce the same rows.
Every event carries the facts it records plus, where the summary changed, a
``snapshot`` of status, level, owner and deadlines after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import asyncpg

from schemas.escalation import DomainEvent

Row = dict[str, Any]

COLUMNS = (
    "escalation_id", "ticket_id", "workflow_id", "status", "priority", "kind", "category",
    "customer_id", "customer", "title", "level", "level_name", "owner", "owner_contact", "route",
    "entry_level", "highest_level", "highest_rank", "levels_reached", "paged_levels", "consulted",
    "trigger", "policy_name", "policy_version", "opened_at", "acknowledged_at", "acknowledged_by", "acknowledged_via",
    "first_acknowledged_at", "resolved_at", "resolved_by", "closed_at", "ack_due", "resolve_due",
    "next_customer_update_due", "sla_at_risk", "sla_breached", "breached_at", "paused_since",
    "paused_seconds", "resolution_seconds", "counts", "fingerprint", "repeat_of", "repeat_count",
    "jira_key", "path", "resolution", "postmortem", "last_seq", "updated_at", "repeat_window_seconds",
    "ended_reason", "contract",
)
# A policy's default repeat_window (30 days), for 'opened' events that do not carry theirs.
DEFAULT_REPEAT_WINDOW_SECONDS = 30 * 24 * 3600.0


class ProjectionError(RuntimeError):
    """An event that cannot apply to the row it targets (a bug, never retried)."""


def _ts(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _apply_snapshot(row: Row, snapshot: dict[str, Any]) -> None:
    for key in ("status", "level", "level_name", "owner", "owner_contact", "sla_at_risk",
                "sla_breached", "paged_levels"):
        if key in snapshot:
            row[key] = snapshot[key]
    deadlines = snapshot.get("deadlines") or {}
    for key in ("ack_due", "resolve_due", "next_customer_update_due"):
        if key in deadlines:
            row[key] = _ts(deadlines[key])
    if "paused_since" in snapshot:
        row["paused_since"] = _ts(snapshot["paused_since"])
    if "paused_seconds" in snapshot:
        row["paused_seconds"] = snapshot["paused_seconds"]
    if "path" in snapshot:
        row["path"] = snapshot["path"]


def _opened(row: Row | None, event: DomainEvent) -> Row:
    if row is not None:
        raise ProjectionError(f"escalation {event.escalation_id} opened twice")
    view = event.payload["view"]
    deadlines = view["deadlines"]
    return {
        "escalation_id": event.escalation_id,
        "ticket_id": event.ticket_id,
        "workflow_id": view["workflow_id"],
        "status": view["status"],
        "priority": view["priority"],
        "kind": view["kind"],
        "category": view["category"],
        "customer_id": view["customer"]["id"],
        "customer": view["customer"],
        "title": view["title"],
        "level": view["level"],
        "level_name": view["level_name"],
        "owner": view.get("owner"),
        "owner_contact": view.get("owner_contact"),
        "route": view["route"],
        "entry_level": view["level"],
        "highest_level": view["level"],
        "highest_rank": event.payload["rank"],
        "levels_reached": [view["level"]],
        "paged_levels": view.get("paged_levels", []),
        "consulted": view.get("consulted", []),
        "trigger": view["trigger"],
        "policy_name": view["policy"]["name"],
        "policy_version": view["policy"]["version"],
        "opened_at": _ts(view["opened_at"]),
        "acknowledged_at": None,
        "acknowledged_by": None,
        "acknowledged_via": None,
        "first_acknowledged_at": None,
        "resolved_at": None,
        "resolved_by": None,
        "closed_at": None,
        "ack_due": _ts(deadlines.get("ack_due")),
        "resolve_due": _ts(deadlines.get("resolve_due")),
        "next_customer_update_due": _ts(deadlines.get("next_customer_update_due")),
        "sla_at_risk": False,
        "sla_breached": False,
        "breached_at": None,
        "paused_since": None,
        "paused_seconds": 0.0,
        "resolution_seconds": None,
        "counts": view.get("counts", {}),
        "fingerprint": event.payload["fingerprint"],
        "repeat_of": view.get("repeat_of"),
        "repeat_count": view.get("repeat_count", 0),
        "jira_key": None,
        "path": view.get("path", []),
        "resolution": None,
        "postmortem": None,
        "last_seq": event.seq,
        "updated_at": event.occurred_at,
        "repeat_window_seconds": float(event.payload.get("repeat_window_seconds", DEFAULT_REPEAT_WINDOW_SECONDS)),
        "ended_reason": None,
        "contract": view.get("contract"),
    }


def _acknowledged(row: Row, event: DomainEvent) -> None:
    row["acknowledged_at"] = event.occurred_at
    row["acknowledged_by"] = event.payload["by"]
    row["acknowledged_via"] = event.payload.get("via")
    row["first_acknowledged_at"] = row["first_acknowledged_at"] or event.occurred_at


def _escalated(row: Row, event: DomainEvent) -> None:
    to_level = event.payload["to_level"]
    if to_level not in row["levels_reached"]:
        row["levels_reached"] = [*row["levels_reached"], to_level]
    rank = event.payload["rank"]
    if rank > row["highest_rank"]:
        row["highest_rank"] = rank
        row["highest_level"] = to_level
    row["acknowledged_at"] = None
    row["acknowledged_by"] = None
    row["acknowledged_via"] = None


def _breached(row: Row, event: DomainEvent) -> None:
    row["breached_at"] = event.occurred_at


def _policy_applied(row: Row, event: DomainEvent) -> None:
    row["policy_version"] = event.payload["to_version"]
    if "contract" in event.payload:  # present only when the newer version chose another contract
        row["contract"] = event.payload["contract"]


def _jira_linked(row: Row, event: DomainEvent) -> None:
    row["jira_key"] = event.payload["jira_key"]


def _resolved(row: Row, event: DomainEvent) -> None:
    at = _ts(event.payload.get("resolved_at")) or event.occurred_at
    row["resolved_at"] = at
    row["resolved_by"] = event.payload["by"]
    row["resolution"] = {
        key: event.payload[key] for key in ("by", "root_cause", "mitigation", "preventive_actions")
    } | {"at": at.isoformat(), "via": event.payload.get("via")}
    row["resolution_seconds"] = event.payload["resolution_seconds"]


def _closed(row: Row, event: DomainEvent) -> None:
    row["closed_at"] = event.occurred_at


def _run_ended(row: Row, event: DomainEvent) -> None:
    """The run ended without closing (failed, terminated, timed out): recorded by the reconciler."""
    row["status"] = event.payload["status"]
    row["closed_at"] = event.occurred_at
    row["ended_reason"] = event.payload.get("reason")
    for key in ("ack_due", "resolve_due", "next_customer_update_due"):
        row[key] = None


def _nothing_more(row: Row, event: DomainEvent) -> None:
    """The generic part (snapshot, counts, path, postmortem) says it all."""


HANDLERS: dict[str, Callable[[Row, DomainEvent], None]] = {
    "acknowledged": _acknowledged,
    "consulted_acknowledged": _nothing_more,
    "escalated": _escalated,
    "ack_reminder": _nothing_more,
    "note_added": _nothing_more,
    "customer_updated": _nothing_more,
    "sla_at_risk": _nothing_more,
    "sla_breached": _breached,
    "paused": _nothing_more,
    "resumed": _nothing_more,
    "policy_applied": _policy_applied,
    "owner_changed": _nothing_more,
    "held_until_available": _nothing_more,
    "hold_released": _nothing_more,
    "jira_linked": _jira_linked,
    "notification_failed": _nothing_more,
    "resolved": _resolved,
    "csat_requested": _nothing_more,
    "postmortem_started": _nothing_more,
    "postmortem_reminder": _nothing_more,
    "postmortem_overdue": _nothing_more,
    "postmortem_completed": _nothing_more,
    "closed": _closed,
    "run_ended": _run_ended,
}


def fold(row: Row | None, event: DomainEvent) -> Row:
    """The read-model row after ``event``."""
    if event.type == "opened":
        return _opened(row, event)
    if row is None:
        raise ProjectionError(
            f"event {event.type} #{event.seq} for {event.escalation_id} precedes its 'opened' event"
        )
    if event.seq != row["last_seq"] + 1:
        raise ProjectionError(
            f"event #{event.seq} for {event.escalation_id} does not follow #{row['last_seq']}"
        )
    row = dict(row)
    payload = event.payload
    if "snapshot" in payload:
        _apply_snapshot(row, payload["snapshot"])
    if "path_entry" in payload and "path" not in payload.get("snapshot", {}):
        row["path"] = [*row["path"], payload["path_entry"]]
    for key in ("counts", "postmortem", "consulted"):
        if key in payload:
            row[key] = payload[key]
    HANDLERS[event.type](row, event)
    row["last_seq"] = event.seq
    row["updated_at"] = event.occurred_at
    return row


def fold_all(row: Row | None, events: Iterable[DomainEvent]) -> Row | None:
    for event in events:
        row = fold(row, event)
    return row


_UPSERT = (
    f"INSERT INTO escalations ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))}) "
    "ON CONFLICT (escalation_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "escalation_id")
)


async def load_row(conn: asyncpg.Connection, escalation_id: str, *, lock: bool) -> Row | None:
    query = "SELECT * FROM escalations WHERE escalation_id = $1" + (" FOR UPDATE" if lock else "")
    record = await conn.fetchrow(query, escalation_id)
    return dict(record) if record is not None else None


async def save_row(conn: asyncpg.Connection, row: Row) -> None:
    await conn.execute(_UPSERT, *(row[c] for c in COLUMNS))


def event_from_record(record: asyncpg.Record) -> DomainEvent:
    return DomainEvent(
        escalation_id=record["escalation_id"],
        ticket_id=record["ticket_id"],
        seq=record["seq"],
        type=record["type"],
        occurred_at=record["occurred_at"],
        payload=record["payload"],
    )

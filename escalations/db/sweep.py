"""The criteria sweep's statements: candidate tickets, and the claim per ticket version.

Invariants (the decisions around them live in ``activities/tickets.py``):

* a ticket is *eligible* (``ELIGIBLE``) when it has no open escalation: no read-model row
  whose status is not ``closed``, ``failed`` or ``terminated`` (or that closed at or after
  the ticket's last update), no sweep start of this or a later ticket version, and no
  start younger than the claim lease whose run the read model does not show yet, nor a
  live claim (younger than the lease) of another sweep;
* a claim row (``ticket_escalations``) exists per ticket version, primary key
  ``(ticket_id, ticket_updated_at)``; it is taken, taken over or checked only in the
  transaction that holds the ticket's row lock (``lock_ticket``);
* a claim is released only while no run is recorded for it (``run_id IS NULL``) and only
  by the sweep that holds it; once ``record_start`` has set its ``run_id`` it stays.

``$1`` of ``ELIGIBLE`` is the claim lease (an interval); ``t`` is the ticket row.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from schemas.ticket import DONE_STATUSES, TicketFacts

_DONE = ", ".join(f"'{s}'" for s in DONE_STATUSES)

# ``t`` is the ticket row; $1 is the claim lease. Shared by the candidate query and the re-check.
ELIGIBLE = """
    NOT EXISTS (
        SELECT 1 FROM escalations e
         WHERE e.ticket_id = t.id
           AND (e.status NOT IN ('closed', 'failed', 'terminated') OR e.closed_at IS NULL
                OR e.closed_at >= t.updated_at))
    AND NOT EXISTS (
        SELECT 1 FROM ticket_escalations l
         WHERE l.ticket_id = t.id
           AND CASE WHEN l.run_id IS NULL THEN l.claimed_at > now() - $1::interval
                    ELSE l.ticket_updated_at >= t.updated_at
                         OR (l.escalated_at > now() - $1::interval
                             AND NOT EXISTS (SELECT 1 FROM escalations c WHERE c.escalation_id = l.run_id))
               END)
"""

# $2: the keyset cursor (last id of the previous page); $3: the page size; $4: only these ids
# (the demo's own sweep), or NULL for every ticket (the schedule). Served by ``tickets_sweep``.
CANDIDATES = f"""
SELECT t.id, t.updated_at, t.status, t.opened_at, t.category, t.priority, t.users_affected,
       t.interactions, t.resolution_due, t.customer_segment
  FROM tickets t
 WHERE t.status NOT IN ({_DONE})
   AND t.id > $2
   AND ($4::text[] IS NULL OR t.id = ANY($4::text[]))
   AND {ELIGIBLE}
 ORDER BY t.id
 LIMIT $3
"""

_STILL_ELIGIBLE = f"SELECT ({ELIGIBLE}) FROM tickets t WHERE t.id = $2"

_LOCK_TICKET = "SELECT document, updated_at, status FROM tickets WHERE id = $1 FOR UPDATE"

_CLAIM = """SELECT sweep_id, run_id, repeat, claimed_at > now() - $3::interval AS live
                     FROM ticket_escalations WHERE ticket_id = $1 AND ticket_updated_at = $2"""

_TAKE_OVER = """UPDATE ticket_escalations SET sweep_id = $3, claimed_at = now(), rule = $4, detail = $5
                            WHERE ticket_id = $1 AND ticket_updated_at = $2"""

_ESCALATED_BEFORE = "SELECT EXISTS (SELECT 1 FROM escalations WHERE ticket_id = $1)"

_INSERT_CLAIM = """INSERT INTO ticket_escalations
                       (ticket_id, ticket_updated_at, workflow_id, rule, detail, repeat, sweep_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)"""

_RECORD_START = """UPDATE ticket_escalations SET run_id = $3, escalated_at = now()
                WHERE ticket_id = $1 AND ticket_updated_at = $2"""

_RELEASE = """DELETE FROM ticket_escalations
                WHERE ticket_id = $1 AND ticket_updated_at = $2 AND sweep_id = $3 AND run_id IS NULL"""


async def find_candidates(pool: asyncpg.Pool, lease: timedelta, after_id: str, limit: int,
                          ticket_ids: list[str] | None) -> list[TicketFacts]:
    """One page of open, eligible tickets in id order after ``after_id`` (only ``ticket_ids`` if given)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(CANDIDATES, lease, after_id, limit, ticket_ids)
    return [
        TicketFacts(
            id=r["id"], updated_at=r["updated_at"], status=r["status"], opened_at=r["opened_at"],
            category=r["category"], priority=r["priority"], users_affected=r["users_affected"],
            interactions=r["interactions"], resolution_due=r["resolution_due"],
            segment=r["customer_segment"],
        )
        for r in rows
    ]


# -- the claim: every function below runs in the caller's transaction, after ``lock_ticket`` --


async def lock_ticket(conn: asyncpg.Connection, ticket_id: str) -> asyncpg.Record | None:
    """The ticket's ``document``, ``updated_at`` and ``status``, row-locked; None if it is gone."""
    return await conn.fetchrow(_LOCK_TICKET, ticket_id)


async def claim_of(conn: asyncpg.Connection, ticket_id: str, ticket_updated_at: datetime,
                   lease: timedelta) -> asyncpg.Record | None:
    """The claim of this ticket version (``sweep_id``, ``run_id``, ``repeat``, ``live``: younger
    than ``lease``), or None."""
    return await conn.fetchrow(_CLAIM, ticket_id, ticket_updated_at, lease)


async def take_over_claim(conn: asyncpg.Connection, ticket_id: str, ticket_updated_at: datetime,
                          sweep_id: str, rule: str, detail: str) -> None:
    """Hand an expired claim of this ticket version to ``sweep_id``, renewing its lease."""
    await conn.execute(_TAKE_OVER, ticket_id, ticket_updated_at, sweep_id, rule, detail)


async def still_eligible(conn: asyncpg.Connection, lease: timedelta, ticket_id: str) -> bool | None:
    """``ELIGIBLE`` again for the locked ticket (None if there is no such ticket)."""
    return await conn.fetchval(_STILL_ELIGIBLE, lease, ticket_id)


async def escalated_before(conn: asyncpg.Connection, ticket_id: str) -> bool:
    """Whether the read model holds any escalation of the ticket (a new one is then a repeat)."""
    return await conn.fetchval(_ESCALATED_BEFORE, ticket_id)


async def insert_claim(conn: asyncpg.Connection, ticket_id: str, ticket_updated_at: datetime, workflow_id: str,
                       rule: str, detail: str, repeat: bool, sweep_id: str) -> None:
    """Claim this ticket version for ``sweep_id`` (no run recorded yet)."""
    await conn.execute(_INSERT_CLAIM, ticket_id, ticket_updated_at, workflow_id, rule, detail, repeat, sweep_id)


# -- after the claim's transaction ------------------------------------------------


async def record_start(pool: asyncpg.Pool, ticket_id: str, ticket_updated_at: datetime, run_id: str) -> None:
    """The claim of this ticket version started run ``run_id``."""
    await pool.execute(_RECORD_START, ticket_id, ticket_updated_at, run_id)


async def release_claim(pool: asyncpg.Pool, ticket_id: str, ticket_updated_at: datetime, sweep_id: str) -> None:
    """Drop ``sweep_id``'s claim of this ticket version, unless a run is recorded for it."""
    await pool.execute(_RELEASE, ticket_id, ticket_updated_at, sweep_id)

"""Storing tickets (the criteria sweep's input): an upsert ordered by ``updated_at``.

The same version again changes nothing; an older version never overwrites a newer one.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from schemas.ticket import Ticket, TicketUpsertResult, slugify


async def upsert_ticket(conn: asyncpg.Connection, ticket: Ticket, *, source: str) -> TicketUpsertResult:
    """Insert or update one ticket; never overwrite a newer version with an older one."""
    document = ticket.model_dump(mode="json")
    inserted = await conn.fetchval(
        """INSERT INTO tickets AS t
               (id, customer_id, customer_segment, subject, category, priority, status,
                users_affected, interactions, opened_at, updated_at, resolution_due, document, source)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT (id) DO UPDATE SET
               customer_id = EXCLUDED.customer_id, customer_segment = EXCLUDED.customer_segment,
               subject = EXCLUDED.subject, category = EXCLUDED.category,
               priority = EXCLUDED.priority, status = EXCLUDED.status,
               users_affected = EXCLUDED.users_affected, interactions = EXCLUDED.interactions,
               opened_at = EXCLUDED.opened_at, updated_at = EXCLUDED.updated_at,
               resolution_due = EXCLUDED.resolution_due, document = EXCLUDED.document,
               source = EXCLUDED.source, stored_at = now()
            WHERE t.updated_at < EXCLUDED.updated_at
           RETURNING (xmax = 0)""",
        ticket.id, ticket.customer.id, ticket.customer.segment, ticket.subject,
        slugify(ticket.category), ticket.priority, ticket.status, ticket.users_affected,
        ticket.interactions, ticket.opened_at, ticket.updated_at, ticket.resolution_due,
        document, source,
    )
    if inserted is not None:
        return TicketUpsertResult(
            ticket_id=ticket.id, outcome="inserted" if inserted else "updated", updated_at=ticket.updated_at
        )
    stored = await conn.fetchrow(
        "SELECT updated_at, document = $2::jsonb AS same FROM tickets WHERE id = $1", ticket.id, document
    )
    if stored["updated_at"] == ticket.updated_at:
        note = None if stored["same"] else (
            "a different version with this updated_at is already stored; nothing changed "
            "(send a later updated_at to change the ticket)"
        )
        return TicketUpsertResult(ticket_id=ticket.id, outcome="unchanged", updated_at=ticket.updated_at, note=note)
    return TicketUpsertResult(
        ticket_id=ticket.id, outcome="stale", updated_at=stored["updated_at"],
        note=f"a newer version (updated_at {stored['updated_at'].isoformat()}) is stored; nothing changed",
    )


async def upsert_ticket_unless_same(conn: asyncpg.Connection, ticket: Ticket, *, source: str) -> TicketUpsertResult:
    """Like ``upsert_ticket`` for a sender that cannot say when its ticket changed (its
    ``updated_at`` is when the delivery arrived): the same fields as the stored version again
    change nothing, so a redelivery is no new version (and never a repeat escalation)."""
    async with conn.transaction():
        stored = await conn.fetchrow("SELECT updated_at, document FROM tickets WHERE id = $1 FOR UPDATE", ticket.id)
        if stored is not None:
            document = ticket.model_dump(mode="json")
            if _without_version(stored["document"]) == _without_version(document):
                return TicketUpsertResult(ticket_id=ticket.id, outcome="unchanged", updated_at=stored["updated_at"],
                                          note="the stored version has the same fields; nothing changed")
        return await upsert_ticket(conn, ticket, source=source)


def _without_version(document: dict) -> dict:
    return {key: value for key, value in document.items() if key != "updated_at"}


async def upsert_tickets(pool: asyncpg.Pool, tickets: Iterable[Ticket], *, source: str) -> list[TicketUpsertResult]:
    """Store several tickets in order, in one transaction."""
    async with pool.acquire() as conn, conn.transaction():
        return [await upsert_ticket(conn, ticket, source=source) for ticket in tickets]

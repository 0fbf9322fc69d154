"""Erasing one customer from PostgreSQL: every row that holds or points at their data.

Found by the customer id: their escalations (the read model, and the ``opened`` events, so an
escalation whose read-model row is missing is found too) and their tickets. Deleted in one
transaction: CSAT answers, the delivery ledger, Jira links, the events (superseded ones
included), the read model, the tickets (their sweep claims go with them, ``ON DELETE
CASCADE``) and the API's stored replies for starts of those tickets. KPIs then simply no
longer count those escalations. The histories in Temporal are ``escalations erase-customer``'s
other half (``escalations/cli/erasure.py``); docs/security.md has the whole procedure.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

ESCALATIONS_OF = """
SELECT escalation_id, ticket_id FROM escalations WHERE customer_id = $1
UNION
SELECT escalation_id, ticket_id FROM escalation_events
 WHERE type = 'opened' AND payload -> 'view' -> 'customer' ->> 'id' = $1
"""

# Each deletes by escalation ids ($1), except the tickets (customer id) and the API's stored
# starts (ticket ids, kept in the reply it replays).
DELETES: tuple[tuple[str, str], ...] = (
    ("csat_responses", "DELETE FROM csat_responses WHERE escalation_id = ANY($1::text[])"),
    ("notifications", "DELETE FROM notifications WHERE escalation_id = ANY($1::text[])"),
    ("jira_issues", "DELETE FROM jira_issues WHERE escalation_id = ANY($1::text[])"),
    ("superseded_events", "DELETE FROM superseded_events WHERE escalation_id = ANY($1::text[])"),
    ("escalation_events", "DELETE FROM escalation_events WHERE escalation_id = ANY($1::text[])"),
    ("escalations", "DELETE FROM escalations WHERE escalation_id = ANY($1::text[])"),
    ("ticket_escalations", "DELETE FROM ticket_escalations WHERE run_id = ANY($1::text[])"),
)
DELETE_TICKETS = "DELETE FROM tickets WHERE customer_id = $1"
DELETE_API_REPLIES = "DELETE FROM api_idempotency WHERE response ->> 'ticket_id' = ANY($1::text[])"


@dataclass
class Erased:
    escalation_ids: list[str]
    ticket_ids: list[str]
    rows: dict[str, int]


async def customer_escalations(conn: asyncpg.Connection, customer_id: str) -> list[tuple[str, str]]:
    """``(escalation_id, ticket_id)`` of every escalation of the customer PostgreSQL knows."""
    return sorted((r["escalation_id"], r["ticket_id"]) for r in await conn.fetch(ESCALATIONS_OF, customer_id))


async def erase_customer(pool: asyncpg.Pool, customer_id: str, *, dry_run: bool = False) -> Erased:
    """Delete the customer's rows (or, ``dry_run``, count them and roll back)."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            found = await customer_escalations(conn, customer_id)
            ids = [escalation_id for escalation_id, _ in found]
            tickets = sorted({ticket_id for _, ticket_id in found})
            rows: dict[str, int] = {}
            for table, statement in DELETES:
                rows[table] = _count(await conn.execute(statement, ids))
            rows["tickets"] = _count(await conn.execute(DELETE_TICKETS, customer_id))
            rows["api_idempotency"] = _count(await conn.execute(DELETE_API_REPLIES, tickets))
        except BaseException:
            await transaction.rollback()
            raise
        if dry_run:
            await transaction.rollback()
        else:
            await transaction.commit()
    return Erased(ids, tickets, rows)


def _count(status: str) -> int:
    """``DELETE 3`` -> 3."""
    return int(status.rsplit(" ", 1)[-1])

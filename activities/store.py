"""The event store: append domain events and fold them into the read model."""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.projection import fold_all, load_row, save_row
from schemas.activities import EventBatch, RepeatInfo, RepeatQuery
from schemas.escalation import DomainEvent


class StoreActivities:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    @activity.defn(name="record_events")
    async def record_events(self, batch: EventBatch) -> int:
        """Append events, fold them, queue their notifications: one transaction.

        A retry of an already stored event is a no-op; a different payload under a
        taken (escalation_id, seq) is a bug and fails without retrying.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            fresh = [event for event in batch.events if await self._append(conn, event)]
            if fresh:
                row = await load_row(conn, batch.escalation_id, lock=True)
                row = fold_all(row, fresh)
                assert row is not None
                await save_row(conn, row)
            given_up = [
                failure["key"]
                for event in fresh if event.type == "notification_failed"
                for failure in event.payload.get("failures", [])
            ]
            if given_up:
                # The workflow stopped retrying these: the ledger must not show them as pending.
                await conn.execute(
                    """UPDATE notifications SET status = 'failed', updated_at = now()
                        WHERE idempotency_key = ANY($1) AND status IN ('pending', 'sending')""",
                    given_up,
                )
            if batch.intents:
                await conn.executemany(
                    """INSERT INTO notifications
                           (idempotency_key, escalation_id, ticket_id, seq, audience, recipient,
                            channel, target, template, context)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                       ON CONFLICT (idempotency_key) DO NOTHING""",
                    [
                        (i.key, i.escalation_id, i.ticket_id, i.seq, i.audience, i.recipient,
                         i.channel, i.target, i.template, i.context)
                        for i in batch.intents
                    ],
                )
        return len(fresh)

    async def _append(self, conn: asyncpg.Connection, event: DomainEvent) -> bool:
        payload = event.model_dump(mode="json")["payload"]
        stored = await conn.fetchval(
            """INSERT INTO escalation_events (escalation_id, ticket_id, seq, type, occurred_at, payload)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (escalation_id, seq) DO NOTHING
               RETURNING true""",
            event.escalation_id, event.ticket_id, event.seq, event.type, event.occurred_at, payload,
        )
        if stored:
            return True
        existing = await conn.fetchrow(
            """SELECT type, occurred_at, payload = $3::jsonb AS same_payload
                 FROM escalation_events WHERE escalation_id = $1 AND seq = $2""",
            event.escalation_id, event.seq, payload,
        )
        if existing["type"] == event.type and existing["occurred_at"] == event.occurred_at and existing["same_payload"]:
            return False
        raise ApplicationError(
            f"event #{event.seq} of escalation {event.escalation_id} is already stored as "
            f"{existing['type']!r} with a different payload; refusing to overwrite it",
            type="EventConflict",
            non_retryable=True,
        )

    @activity.defn(name="find_repeats")
    async def find_repeats(self, query: RepeatQuery) -> RepeatInfo:
        """Earlier escalations of the same customer and issue within the policy's window."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT escalation_id FROM escalations
                    WHERE fingerprint = $1 AND escalation_id <> $2
                      AND opened_at >= $3 AND opened_at <= $4
                    ORDER BY opened_at DESC""",
                query.fingerprint, query.escalation_id,
                query.opened_at - query.window, query.opened_at,
            )
        return RepeatInfo(
            repeat_of=rows[0]["escalation_id"] if rows else None, repeat_count=len(rows)
        )

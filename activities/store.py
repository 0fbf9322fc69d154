"""The event store: append domain events and fold them into the read model."""

from __future__ import annotations

from typing import Literal

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from escalations.db.projection import event_from_record, fold_all, load_row, save_row
from schemas.activities import EventBatch, RepeatInfo, RepeatQuery
from schemas.escalation import DomainEvent

Appended = Literal["stored", "already", "superseded"]


class StoreActivities:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    @activity.defn(name="record_events")
    async def record_events(self, batch: EventBatch) -> int:
        """Append events, fold them, queue their notifications: one transaction.

        A retry of an already stored event is a no-op. The same seq with another payload is
        accepted only from a later workflow task of the same run: the task that decided the
        stored event never completed, so its decision never became part of the run and the
        later one replaces it (kept in ``superseded_events``). Anything else is a bug and
        fails without retrying.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            outcomes = [await self._append(conn, event, batch) for event in batch.events]
            fresh = [event for event, outcome in zip(batch.events, outcomes) if outcome != "already"]
            if "superseded" in outcomes:
                records = await conn.fetch(
                    "SELECT * FROM escalation_events WHERE escalation_id = $1 ORDER BY seq",
                    batch.escalation_id,
                )
                row = fold_all(None, [event_from_record(r) for r in records])
                await conn.execute("DELETE FROM escalations WHERE escalation_id = $1", batch.escalation_id)
                assert row is not None
                await save_row(conn, row)
            elif fresh:
                row = await load_row(conn, batch.escalation_id, lock=True)
                row = fold_all(row, fresh)
                assert row is not None
                await save_row(conn, row)
            await self._mark_given_up(conn, fresh)
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

    async def _append(self, conn: asyncpg.Connection, event: DomainEvent, batch: EventBatch) -> Appended:
        payload = event.model_dump(mode="json")["payload"]
        insert = """INSERT INTO escalation_events
                        (escalation_id, ticket_id, seq, type, occurred_at, payload, run_id, decided_in)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                    ON CONFLICT (escalation_id, seq) DO NOTHING
                    RETURNING true"""
        values = (event.escalation_id, event.ticket_id, event.seq, event.type, event.occurred_at, payload,
                  batch.run_id or None, batch.decided_in or None)
        if await conn.fetchval(insert, *values):
            return "stored"
        existing = await conn.fetchrow(
            """SELECT type, occurred_at, payload = $3::jsonb AS same_payload, run_id, decided_in
                 FROM escalation_events WHERE escalation_id = $1 AND seq = $2 FOR UPDATE""",
            event.escalation_id, event.seq, payload,
        )
        if existing["type"] == event.type and existing["occurred_at"] == event.occurred_at and existing["same_payload"]:
            return "already"
        if (batch.run_id and existing["run_id"] == batch.run_id
                and existing["decided_in"] is not None and existing["decided_in"] < batch.decided_in):
            await self._withdraw(conn, event.escalation_id, batch.run_id, existing["decided_in"], batch.decided_in)
            await conn.fetchval(insert, *values)
            return "superseded"
        raise ApplicationError(
            f"event #{event.seq} of escalation {event.escalation_id} is already stored as "
            f"{existing['type']!r} with a different payload; refusing to overwrite it",
            type="EventConflict",
            non_retryable=True,
        )

    async def _withdraw(self, conn: asyncpg.Connection, escalation_id: str, run_id: str,
                        decided_in: int, superseded_by: int) -> None:
        """Move the events of a workflow task that never completed aside, with their unsent notifications."""
        withdrawn = await conn.fetch(
            """WITH moved AS (
                   DELETE FROM escalation_events
                    WHERE escalation_id = $1 AND run_id = $2 AND decided_in = $3
                   RETURNING *)
               INSERT INTO superseded_events
                   (escalation_id, ticket_id, seq, type, occurred_at, payload, run_id, decided_in,
                    recorded_at, superseded_by)
               SELECT escalation_id, ticket_id, seq, type, occurred_at, payload, run_id, decided_in,
                      recorded_at, $4 FROM moved
               RETURNING seq""",
            escalation_id, run_id, decided_in, superseded_by,
        )
        seqs = [r["seq"] for r in withdrawn]
        # Their deliveries were never scheduled: the task that would have scheduled them is the
        # one that never completed. Anything beyond 'pending' here would be a real conflict.
        sent = await conn.fetchval(
            """SELECT count(*) FROM notifications
                WHERE escalation_id = $1 AND seq = ANY($2) AND (status <> 'pending' OR attempts > 0)""",
            escalation_id, seqs,
        )
        if sent:
            raise ApplicationError(
                f"escalation {escalation_id}: {sent} notifications of withdrawn events #{seqs} were already "
                "attempted; refusing to replace those events",
                type="EventConflict",
                non_retryable=True,
            )
        await conn.execute(
            "DELETE FROM notifications WHERE escalation_id = $1 AND seq = ANY($2)", escalation_id, seqs
        )
        activity.logger.warning(
            "escalation %s: events #%s from workflow task %s of run %s never reached history; "
            "replaced by the decision of task %s", escalation_id, seqs, decided_in, run_id, superseded_by,
        )

    async def _mark_given_up(self, conn: asyncpg.Connection, fresh: list[DomainEvent]) -> None:
        """The workflow stopped retrying these: the ledger must not show them as pending."""
        given_up = [
            failure["key"]
            for event in fresh if event.type == "notification_failed"
            for failure in event.payload.get("failures", [])
        ]
        if given_up:
            await conn.execute(
                """UPDATE notifications SET status = 'failed', updated_at = now()
                    WHERE idempotency_key = ANY($1) AND status IN ('pending', 'sending')""",
                given_up,
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

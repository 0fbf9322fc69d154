"""The event store: domain events, the read model they fold into, and the delivery ledger.

Invariants (the README's "Events, read model and exactly-once"):

* ``escalation_events`` is append-only and gap-free per escalation: event ``seq`` is
  stored once; storing it again with the same type, time and payload is a no-op, with
  anything else it is a conflict (``EventConflict``), never an overwrite.
* the read-model row of an escalation is the fold of its stored events
  (``escalations.db.projection``), written in the same transaction as the events;
* a ledger row (``notifications``) exists per intent, keyed by escalation id + seq +
  recipient + channel; its status only moves forward (pending -> sent | failed).

Every function takes the connection of the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import asyncpg

from escalations.db.projection import (
    event_from_record,
    fold,
    fold_all,
    load_row,
    save_row,
)
from schemas.activities import LedgerUpdate
from schemas.escalation import DomainEvent
from schemas.notifications import NotificationIntent

Appended = Literal["stored", "already", "superseded"]


class EventConflict(RuntimeError):
    """A stored event differs from the one being stored under the same sequence number."""


_INSERT_EVENT = """
INSERT INTO escalation_events (escalation_id, ticket_id, seq, type, occurred_at, payload, run_id, decided_in)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (escalation_id, seq) DO NOTHING
RETURNING true"""

_STORED_EVENT = """
SELECT type, occurred_at, payload = $3::jsonb AS same_payload, run_id, decided_in
  FROM escalation_events WHERE escalation_id = $1 AND seq = $2 FOR UPDATE"""

_INSERT_INTENT = """
INSERT INTO notifications (idempotency_key, escalation_id, ticket_id, seq, audience, recipient,
                           channel, target, template, context)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (idempotency_key) DO NOTHING"""

# Forward only: a row already sent or failed keeps that outcome; attempts never go down.
_LEDGER = """
UPDATE notifications
   SET status = CASE WHEN status IN ('sent', 'failed') THEN status ELSE $2 END,
       attempts = GREATEST(attempts, $3),
       last_error = CASE WHEN status IN ('sent', 'failed') THEN last_error ELSE $4 END,
       provider_response_id = COALESCE(provider_response_id, $5),
       sent_at = CASE WHEN $2 = 'sent' THEN COALESCE(sent_at, $6) ELSE sent_at END,
       claimed_until = NULL,
       updated_at = now()
 WHERE idempotency_key = $1
RETURNING true"""

# The rows of these fingerprints opened at or after $2 (every row when NULL): the latest earlier
# escalation within its window, and how many. A row's facts depend only on rows opened no later
# than it, so an opening changes its own row and the (rare) rows opened after it, never the
# earlier ones: recomputing all of them made each opening cost the square of the fingerprint's rows.
_REPEATS = """
UPDATE escalations e
   SET repeat_of = r.repeat_of, repeat_count = r.repeat_count
  FROM (SELECT x.escalation_id,
               (SELECT y.escalation_id FROM escalations y
                 WHERE y.fingerprint = x.fingerprint AND y.escalation_id <> x.escalation_id
                   AND y.opened_at <= x.opened_at
                   AND y.opened_at >= x.opened_at - make_interval(secs => x.repeat_window_seconds)
                 ORDER BY y.opened_at DESC, y.escalation_id DESC LIMIT 1) AS repeat_of,
               (SELECT count(*) FROM escalations y
                 WHERE y.fingerprint = x.fingerprint AND y.escalation_id <> x.escalation_id
                   AND y.opened_at <= x.opened_at
                   AND y.opened_at >= x.opened_at - make_interval(secs => x.repeat_window_seconds)
               )::int AS repeat_count
          FROM escalations x
         WHERE x.fingerprint = ANY($1::text[]) AND ($2::timestamptz IS NULL OR x.opened_at >= $2)) r
 WHERE e.escalation_id = r.escalation_id
   AND (e.repeat_of IS DISTINCT FROM r.repeat_of OR e.repeat_count <> r.repeat_count)"""


_LATEST_SEQ_OF = "SELECT max(seq) FROM escalation_events WHERE escalation_id = $1 AND type = ANY($2::text[])"

_SHOWS_RUNNING = ("SELECT 1 FROM escalations WHERE escalation_id = $1 AND status NOT IN "
                  "('closed', 'failed', 'terminated')")


async def append(conn: asyncpg.Connection, event: DomainEvent, *, run_id: str | None = None,
                 decided_in: int | None = None) -> Literal["stored", "already"]:
    """Store one event; the same event again is a no-op, a different one an ``EventConflict``."""
    payload = event.model_dump(mode="json")["payload"]
    if await conn.fetchval(_INSERT_EVENT, event.escalation_id, event.ticket_id, event.seq, event.type,
                           event.occurred_at, payload, run_id, decided_in):
        return "stored"
    existing = await conn.fetchrow(_STORED_EVENT, event.escalation_id, event.seq, payload)
    if existing["type"] == event.type and existing["occurred_at"] == event.occurred_at and existing["same_payload"]:
        return "already"
    raise EventConflict(
        f"event #{event.seq} of escalation {event.escalation_id} is already stored as "
        f"{existing['type']!r} with a different payload; refusing to overwrite it"
    )


async def fold_into_read_model(conn: asyncpg.Connection, escalation_id: str, fresh: Sequence[DomainEvent]) -> None:
    """Apply newly stored events to the escalation's read-model row (locked)."""
    if not fresh:
        return
    row = await load_row(conn, escalation_id, lock=True)
    row = fold_all(row, fresh)
    assert row is not None
    if any(e.type == "opened" for e in fresh):
        # One transaction at a time per fingerprint: two escalations of the same issue opened
        # concurrently must each see the other when their repeat facts are derived.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", row["fingerprint"])
        await save_row(conn, row)
        await conn.execute(_REPEATS, [row["fingerprint"]], row["opened_at"])
    else:
        await save_row(conn, row)


async def refold(conn: asyncpg.Connection, escalation_id: str) -> None:
    """Rebuild one escalation's row from all of its stored events."""
    records = await conn.fetch("SELECT * FROM escalation_events WHERE escalation_id = $1 ORDER BY seq",
                               escalation_id)
    await conn.execute("DELETE FROM escalations WHERE escalation_id = $1", escalation_id)
    row = fold_all(None, [event_from_record(r) for r in records])
    if row is not None:
        await save_row(conn, row)
        await conn.execute(_REPEATS, [row["fingerprint"]], row["opened_at"])


async def recompute_repeats(conn: asyncpg.Connection, fingerprints: list[str] | None = None) -> None:
    """Repeat facts of every row (or of these fingerprints), as the live projection keeps them."""
    if fingerprints is None:
        fingerprints = [r["fingerprint"] for r in await conn.fetch("SELECT DISTINCT fingerprint FROM escalations")]
    await conn.execute(_REPEATS, fingerprints, None)


async def repeat_facts(conn: asyncpg.Connection, escalation_id: str) -> tuple[str | None, int]:
    row = await conn.fetchrow("SELECT repeat_of, repeat_count FROM escalations WHERE escalation_id = $1",
                              escalation_id)
    return (row["repeat_of"], row["repeat_count"]) if row else (None, 0)


async def insert_intents(conn: asyncpg.Connection, intents: Iterable[NotificationIntent]) -> None:
    rows = [(i.key, i.escalation_id, i.ticket_id, i.seq, i.audience, i.recipient, i.channel, i.target,
             i.template, i.context) for i in intents]
    if rows:
        await conn.executemany(_INSERT_INTENT, rows)


async def apply_ledger(conn: asyncpg.Connection, updates: Iterable[LedgerUpdate]) -> None:
    """Record delivery results; a result for an intent the ledger does not hold is a bug."""
    for update in updates:
        found = await conn.fetchval(_LEDGER, update.key, update.status, update.attempts, update.last_error,
                                    update.provider_response_id, update.at)
        if not found:
            raise EventConflict(f"delivery result for {update.key}, which the ledger does not hold")


async def project(conn: asyncpg.Connection, escalation_id: str, events: Sequence[DomainEvent],
                  intents: Iterable[NotificationIntent], ledger: Iterable[LedgerUpdate], *,
                  run_id: str | None = None) -> int:
    """One projection step, in the caller's transaction: events, their ledger rows, delivery results.

    Returns how many events were new (the rest were stored by an earlier attempt).
    """
    fresh = [event for event in events if await append(conn, event, run_id=run_id) == "stored"]
    await fold_into_read_model(conn, escalation_id, fresh)
    await insert_intents(conn, intents)
    await apply_ledger(conn, ledger)
    return len(fresh)


async def shows_running(conn: asyncpg.Connection, escalation_id: str) -> bool:
    """Whether the read model has the escalation and shows it neither closed nor ended (no lock)."""
    return await conn.fetchval(_SHOWS_RUNNING, escalation_id) is not None


async def ticket_of(conn: asyncpg.Connection, escalation_id: str) -> str | None:
    """The ticket of the escalation's read-model row, or None if there is no row."""
    return await conn.fetchval("SELECT ticket_id FROM escalations WHERE escalation_id = $1", escalation_id)


async def ended_without_closing(conn: asyncpg.Connection, escalation_id: str) -> tuple[str, int] | None:
    """(status, last seq) of an escalation the read model still shows as running; else None."""
    row = await conn.fetchrow(
        "SELECT status, last_seq FROM escalations WHERE escalation_id = $1 FOR UPDATE", escalation_id)
    if row is None or row["status"] in ("closed", "failed", "terminated"):
        return None
    return row["status"], row["last_seq"]


async def register_policy(conn: asyncpg.Connection, name: str, version: int, digest: str,
                          document: dict | None = None) -> str:
    """Pin ``name`` v``version`` to ``digest``; returns the digest stored (the first one wins)."""
    stored = await conn.fetchval(
        """INSERT INTO policy_versions (name, version, sha256, document) VALUES ($1, $2, $3, $4)
           ON CONFLICT (name, version) DO UPDATE
               SET document = COALESCE(policy_versions.document, EXCLUDED.document)
           RETURNING sha256""",
        name, version, digest, document,
    )
    return str(stored)


# -- the released commit path (runs that store events from their workflow task) -------


async def append_decided(conn: asyncpg.Connection, event: DomainEvent, run_id: str, decided_in: int) -> Appended:
    """``append`` for a run of the released path: a later task of the same run supersedes.

    The same seq with another payload is accepted only from the same run and a workflow task
    at the same or a later history length: the task that decided the stored event never
    completed (all attempts of one task see the same length), so its decision never became
    part of the run, and the later one replaces it (kept in ``superseded_events``).
    """
    try:
        return await append(conn, event, run_id=run_id or None, decided_in=decided_in or None)
    except EventConflict:
        existing = await conn.fetchrow(_STORED_EVENT, event.escalation_id, event.seq,
                                       event.model_dump(mode="json")["payload"])
        if not (run_id and existing["run_id"] == run_id and existing["decided_in"] is not None
                and existing["decided_in"] <= decided_in):
            raise
    await _withdraw(conn, event.escalation_id, run_id, existing["decided_in"], decided_in)
    await conn.fetchval(_INSERT_EVENT, event.escalation_id, event.ticket_id, event.seq, event.type,
                        event.occurred_at, event.model_dump(mode="json")["payload"], run_id, decided_in)
    return "superseded"


async def _withdraw(conn: asyncpg.Connection, escalation_id: str, run_id: str, decided_in: int,
                    superseded_by: int) -> None:
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
           ON CONFLICT (escalation_id, run_id, decided_in, seq) DO UPDATE
               SET payload = EXCLUDED.payload, superseded_by = EXCLUDED.superseded_by,
                   superseded_at = now()
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
        raise EventConflict(
            f"escalation {escalation_id}: {sent} notifications of withdrawn events #{seqs} were already "
            "attempted; refusing to replace those events"
        )
    await conn.execute("DELETE FROM notifications WHERE escalation_id = $1 AND seq = ANY($2)", escalation_id, seqs)


async def withdraw_decided_from(conn: asyncpg.Connection, escalation_id: str, run_id: str, decided_in: int, *,
                                superseded_by: int) -> list[int]:
    """Move aside the events a run decided in workflow tasks from ``decided_in`` on (a reset
    decides them again) and fold the read model again. Their ledger rows stay, so a key
    already sent is not sent again. Returns the sequence numbers moved."""
    moved = await conn.fetch(
        """WITH moved AS (
               DELETE FROM escalation_events
                WHERE escalation_id = $1 AND run_id = $2 AND decided_in >= $3
               RETURNING *)
           INSERT INTO superseded_events
               (escalation_id, ticket_id, seq, type, occurred_at, payload, run_id, decided_in,
                recorded_at, superseded_by)
           SELECT escalation_id, ticket_id, seq, type, occurred_at, payload, run_id, decided_in,
                  recorded_at, $4 FROM moved
           ON CONFLICT (escalation_id, run_id, decided_in, seq) DO UPDATE
               SET payload = EXCLUDED.payload, superseded_by = EXCLUDED.superseded_by,
                   superseded_at = now()
           RETURNING seq""",
        escalation_id, run_id, decided_in, superseded_by,
    )
    seqs = sorted(r["seq"] for r in moved)
    if seqs:
        later = await conn.fetchval("SELECT count(*) FROM escalation_events WHERE escalation_id = $1 AND seq > $2",
                                    escalation_id, seqs[0])
        if later:
            raise EventConflict(f"escalation {escalation_id}: events after #{seqs[0]} were not decided by run "
                                f"{run_id}; refusing to leave a gap")
        await refold(conn, escalation_id)
    return seqs


async def mark_given_up(conn: asyncpg.Connection, fresh: Iterable[DomainEvent]) -> None:
    """The released path's workflow stopped retrying these: the ledger must not show them pending."""
    given_up = [failure["key"] for event in fresh if event.type == "notification_failed"
                for failure in event.payload.get("failures", [])]
    if given_up:
        await conn.execute(
            """UPDATE notifications SET status = 'failed', updated_at = now()
                WHERE idempotency_key = ANY($1) AND status IN ('pending', 'sending')""",
            given_up,
        )


async def earlier_escalations(conn: asyncpg.Connection, escalation_id: str, fingerprint: str,
                              opened_at, window) -> list[str]:
    rows = await conn.fetch(
        """SELECT escalation_id FROM escalations
            WHERE fingerprint = $1 AND escalation_id <> $2 AND opened_at >= $3 AND opened_at <= $4
            ORDER BY opened_at DESC""",
        fingerprint, escalation_id, opened_at - window, opened_at,
    )
    return [r["escalation_id"] for r in rows]


async def sizes(conn: asyncpg.Connection) -> tuple[int, int]:
    """(rows of the read model, stored events)."""
    rows = await conn.fetchval("SELECT count(*) FROM escalations")
    events = await conn.fetchval("SELECT count(*) FROM escalation_events")
    return rows, events


async def latest_seq_of(conn: asyncpg.Connection, escalation_id: str, types: list[str]) -> int | None:
    """The highest seq among the escalation's stored events of these types, or None."""
    return await conn.fetchval(_LATEST_SEQ_OF, escalation_id, types)


async def rebuild(conn: asyncpg.Connection, *, batch: int = 2000) -> int:
    """Truncate the read model and fold every event again, in (escalation_id, seq) order."""
    rebuilt = 0
    async with conn.transaction():
        await conn.execute("TRUNCATE escalations")
        current_id: str | None = None
        row: dict | None = None
        cursor = conn.cursor("SELECT * FROM escalation_events ORDER BY escalation_id, seq", prefetch=batch)
        async for record in cursor:
            event = event_from_record(record)
            if event.escalation_id != current_id:
                if row is not None:
                    await save_row(conn, row)
                    rebuilt += 1
                current_id, row = event.escalation_id, None
            row = fold(row, event)
        if row is not None:
            await save_row(conn, row)
            rebuilt += 1
        await recompute_repeats(conn)
    return rebuilt

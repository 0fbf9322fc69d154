"""The delivery ledger (table ``notifications``) as delivery itself uses and reads it.

``escalations/db/eventstore.py`` writes the ledger from the projection (intents, results
recorded in history). This module holds what the sending side does with it:

* ``sent_keys``: which keys are already sent (the current path skips those);
* the released commit path (``deliver_notifications``) claims each row before sending and
  records the result itself. Invariants there:

  - ``insert_pending`` stores a row per intent once (keyed by idempotency key); a row
    already there is left as it is;
  - a row is claimed (``claim``) only while ``pending``, or ``sending`` with an expired
    lease; each claim increments ``attempts``, and that attempt number fences the result:
    ``mark_sent`` / ``mark_attempt`` change the row only while it is still ``sending``
    under the same attempt, so an attempt whose lease was taken over never overwrites
    the newer one's result;

* what the demo prints of a run's deliveries (``rows_after``, ``failed_rows``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import asyncpg

from schemas.notifications import NotificationIntent

_SENT_KEYS = "SELECT idempotency_key FROM notifications WHERE idempotency_key = ANY($1) AND status = 'sent'"

_INSERT = """
INSERT INTO notifications (idempotency_key, escalation_id, ticket_id, seq, audience, recipient,
                           channel, target, template, context)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::jsonb)
ON CONFLICT (idempotency_key) DO NOTHING"""

_CLAIM = """
UPDATE notifications
   SET status = 'sending', attempts = attempts + 1,
       claimed_until = now() + make_interval(secs => $2), updated_at = now()
 WHERE idempotency_key = $1
   AND (status = 'pending' OR (status = 'sending' AND claimed_until < now()))
RETURNING attempts"""

_STATE = """
SELECT status, last_error, provider_response_id,
       GREATEST(EXTRACT(EPOCH FROM claimed_until - now()), 0)::float8 AS lease_left
  FROM notifications WHERE idempotency_key = $1"""

# The claim's attempt number fences the update: an attempt whose lease expired
# and was taken over must not overwrite the newer attempt's result.
_MARK_SENT = """
UPDATE notifications
   SET status = 'sent', sent_at = now(), provider_response_id = $3, last_error = NULL,
       claimed_until = NULL, updated_at = now()
 WHERE idempotency_key = $1 AND status = 'sending' AND attempts = $2"""

_MARK = """
UPDATE notifications
   SET status = $3, last_error = $4, claimed_until = NULL, updated_at = now()
 WHERE idempotency_key = $1 AND status = 'sending' AND attempts = $2"""

# The demo's view: the rows of an escalation after the events already shown.
_ROWS_AFTER = """
SELECT seq, audience, recipient, channel, target, template, context, status, last_error,
       provider_response_id
  FROM notifications
 WHERE escalation_id = $1 AND seq > $2
 ORDER BY seq, audience = 'customer' DESC, recipient"""

_FAILED = ("SELECT recipient, channel, last_error FROM notifications "
           "WHERE escalation_id = $1 AND status = 'failed'")


async def sent_keys(pool: asyncpg.Pool, keys: list[str]) -> list[str]:
    """Those of ``keys`` the ledger shows as sent."""
    async with pool.acquire() as conn:
        return [r["idempotency_key"] for r in await conn.fetch(_SENT_KEYS, keys)]


# -- the released commit path ------------------------------------------------------


async def insert_pending(pool: asyncpg.Pool, intents: Iterable[NotificationIntent]) -> None:
    """A ``pending`` row per intent not in the ledger yet, in one transaction."""
    rows = [
        (
            i.key, i.escalation_id, i.ticket_id, i.seq, i.audience, i.recipient, i.channel,
            i.target, i.template, json.dumps(i.context, default=str),
        )
        for i in intents
    ]
    if not rows:
        return
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(_INSERT, rows)


async def claim(pool: asyncpg.Pool, key: str, lease_seconds: float) -> tuple[int | None, asyncpg.Record | None]:
    """Claim the row for one attempt of ``lease_seconds``.

    ``(attempt, None)`` when claimed; else ``(None, state)``: the row's ``status``,
    ``last_error``, ``provider_response_id`` and ``lease_left`` (seconds), or None
    if the ledger holds no such row.
    """
    state = None
    async with pool.acquire() as conn:
        attempt = await conn.fetchval(_CLAIM, key, lease_seconds)
        if attempt is None:
            state = await conn.fetchrow(_STATE, key)
    return attempt, state


async def mark_sent(pool: asyncpg.Pool, key: str, attempt: int, provider_response_id: str | None) -> bool:
    """Record attempt ``attempt`` as sent; False if its claim had expired and was taken over."""
    async with pool.acquire() as conn:
        updated = await conn.execute(_MARK_SENT, key, attempt, provider_response_id)
    return not updated.endswith(" 0")


async def mark_attempt(pool: asyncpg.Pool, key: str, attempt: int, status: str, error: str) -> None:
    """End attempt ``attempt`` unsent: back to ``pending`` (to retry) or ``failed`` (permanent)."""
    async with pool.acquire() as conn:
        await conn.execute(_MARK, key, attempt, status, error)


# -- reading back (the demo) -----------------------------------------------------------


async def rows_after(conn: asyncpg.Connection, escalation_id: str, seq: int) -> list[asyncpg.Record]:
    """The escalation's rows of events after ``seq``, in the order they are shown."""
    return await conn.fetch(_ROWS_AFTER, escalation_id, seq)


async def failed_rows(conn: asyncpg.Connection, escalation_id: str) -> list[asyncpg.Record]:
    """``recipient``, ``channel`` and ``last_error`` of the escalation's failed rows."""
    return await conn.fetch(_FAILED, escalation_id)

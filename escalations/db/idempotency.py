"""Idempotency keys of the API (table ``api_idempotency``), one row per principal + scope + key.

Invariants (what the API answers from them is ``escalations/api/idempotency.py``):

* a key belongs to the principal that sent it (``api:<token name>``): the same key from
  another principal is another key, so callers never see or block each other's requests;
* a request owns a key when its ``claim`` inserted the row, or took over a row that
  expired (created before ``now - ttl``) or was abandoned (no response yet and created
  before ``now - abandoned_after``); taking over clears the earlier request's response;
* ``complete`` stores the owner's response on the row; a completed row is never released:
  ``release`` deletes the row only while it has no response;
* ``purge`` deletes rows created before ``now - ttl`` (housekeeping, every minute): those are
  expired, so a claim would take them over anyway; a table that only grows is the harm.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

_CLAIM = """INSERT INTO api_idempotency (principal, scope, key, request_sha256, created_at)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (principal, scope, key) DO UPDATE
                  SET request_sha256 = EXCLUDED.request_sha256, created_at = EXCLUDED.created_at,
                      status_code = NULL, response = NULL, completed_at = NULL
                WHERE api_idempotency.created_at < $6
                   OR (api_idempotency.response IS NULL AND api_idempotency.created_at < $7)
               RETURNING true"""

_HELD = """SELECT request_sha256, status_code, response FROM api_idempotency
            WHERE principal = $1 AND scope = $2 AND key = $3"""

_COMPLETE = """UPDATE api_idempotency SET status_code = $4, response = $5, completed_at = $6
            WHERE principal = $1 AND scope = $2 AND key = $3"""

_RELEASE = "DELETE FROM api_idempotency WHERE principal = $1 AND scope = $2 AND key = $3 AND response IS NULL"

# In batches, oldest first, skipping rows a claim holds right now: short transactions.
_PURGE = """DELETE FROM api_idempotency
             WHERE ctid IN (SELECT ctid FROM api_idempotency WHERE created_at < $1
                             ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)"""


async def claim(pool: asyncpg.Pool, principal: str, scope: str, key: str, digest: str, now: datetime, *,
                ttl: timedelta, abandoned_after: timedelta) -> tuple[bool, asyncpg.Record | None]:
    """Claim ``key`` for the request whose canonical body hashes to ``digest``.

    ``(True, None)``: this request owns the key. ``(False, row)``: another request holds it;
    ``row`` has its ``request_sha256``, ``status_code`` and ``response`` (None until
    completed), or is None if that request released the key between the two statements.
    """
    async with pool.acquire() as conn:
        owned = await conn.fetchval(_CLAIM, principal, scope, key, digest, now, now - ttl, now - abandoned_after)
        if owned:
            return True, None
        return False, await conn.fetchrow(_HELD, principal, scope, key)


async def complete(pool: asyncpg.Pool, principal: str, scope: str, key: str, status_code: int,
                   body: dict[str, Any], now: datetime) -> None:
    """Store the owner's response on its key."""
    await pool.execute(_COMPLETE, principal, scope, key, status_code, body, now)


async def release(pool: asyncpg.Pool, principal: str, scope: str, key: str) -> None:
    """Give the key up (the request failed), unless a response is stored."""
    await pool.execute(_RELEASE, principal, scope, key)


async def purge(pool: asyncpg.Pool, before: datetime, *, batch: int = 1000) -> int:
    """Delete up to ``batch`` keys created before ``before``; how many went."""
    status = await pool.execute(_PURGE, before, batch)
    return int(status.split()[-1])

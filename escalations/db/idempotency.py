"""Idempotency keys of the API (table ``api_idempotency``), one row per scope + key.

Invariants (what the API answers from them is ``escalations/api/idempotency.py``):

* a request owns a key when its ``claim`` inserted the row, or took over a row that
  expired (created before ``now - ttl``) or was abandoned (no response yet and created
  before ``now - abandoned_after``); taking over clears the earlier request's response;
* ``complete`` stores the owner's response on the row; a completed row is never released:
  ``release`` deletes the row only while it has no response.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

_CLAIM = """INSERT INTO api_idempotency (scope, key, request_sha256, created_at)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (scope, key) DO UPDATE
                  SET request_sha256 = EXCLUDED.request_sha256, created_at = EXCLUDED.created_at,
                      status_code = NULL, response = NULL, completed_at = NULL
                WHERE api_idempotency.created_at < $5
                   OR (api_idempotency.response IS NULL AND api_idempotency.created_at < $6)
               RETURNING true"""

_HELD = "SELECT request_sha256, status_code, response FROM api_idempotency WHERE scope = $1 AND key = $2"

_COMPLETE = """UPDATE api_idempotency SET status_code = $3, response = $4, completed_at = $5
            WHERE scope = $1 AND key = $2"""

_RELEASE = "DELETE FROM api_idempotency WHERE scope = $1 AND key = $2 AND response IS NULL"


async def claim(pool: asyncpg.Pool, scope: str, key: str, digest: str, now: datetime, *, ttl: timedelta,
                abandoned_after: timedelta) -> tuple[bool, asyncpg.Record | None]:
    """Claim ``key`` for the request whose canonical body hashes to ``digest``.

    ``(True, None)``: this request owns the key. ``(False, row)``: another request holds it;
    ``row`` has its ``request_sha256``, ``status_code`` and ``response`` (None until
    completed), or is None if that request released the key between the two statements.
    """
    async with pool.acquire() as conn:
        owned = await conn.fetchval(_CLAIM, scope, key, digest, now, now - ttl, now - abandoned_after)
        if owned:
            return True, None
        return False, await conn.fetchrow(_HELD, scope, key)


async def complete(pool: asyncpg.Pool, scope: str, key: str, status_code: int,
                   body: dict[str, Any], now: datetime) -> None:
    """Store the owner's response on its key."""
    await pool.execute(_COMPLETE, scope, key, status_code, body, now)


async def release(pool: asyncpg.Pool, scope: str, key: str) -> None:
    """Give the key up (the request failed), unless a response is stored."""
    await pool.execute(_RELEASE, scope, key)

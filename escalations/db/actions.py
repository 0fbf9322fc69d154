"""Action links act once: the one-time-use record of each link (``action_link_uses``).

Invariant: a link's command is sent only by whoever holds its row as ``pending``, and a row
is ``done`` only once the escalation has taken the command. Claiming is one statement
(``INSERT … ON CONFLICT``), so two presses of one link at the same instant send one command;
a claim left ``pending`` for longer than ``stale_after`` (the API died between claim and
command) may be taken over. A refused or failed command releases its claim: the link did
nothing, and says so next time from the live state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

_CLAIM = """
INSERT INTO action_link_uses (token_id, escalation_id, ticket_id, action, actor, via, status, claimed_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, 'pending', now(), $7)
ON CONFLICT (token_id) DO UPDATE
    SET actor = EXCLUDED.actor, via = EXCLUDED.via, claimed_at = now()
  WHERE action_link_uses.status = 'pending' AND action_link_uses.claimed_at < now() - $8::interval
RETURNING token_id
"""
_USE = """
SELECT token_id, action, actor, via, status, claimed_at, done_at, outcome
  FROM action_link_uses WHERE token_id = $1
"""
_DONE = """
UPDATE action_link_uses SET status = 'done', done_at = $2, outcome = $3
 WHERE token_id = $1 AND status = 'pending'
"""
_RELEASE = "DELETE FROM action_link_uses WHERE token_id = $1 AND status = 'pending'"
# A link past its expiry is refused by its signature check whatever this table says.
_PURGE = """DELETE FROM action_link_uses
             WHERE token_id IN (SELECT token_id FROM action_link_uses WHERE expires_at < $1
                                 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)"""
_POLICY = "SELECT document FROM policy_versions WHERE name = $1 AND version = $2"


@dataclass(frozen=True)
class LinkUse:
    """What became of a link: who used it, through what, and what it did."""

    token_id: str
    action: str
    actor: str
    via: str
    status: str
    claimed_at: datetime
    done_at: datetime | None
    outcome: str | None

    @property
    def done(self) -> bool:
        return self.status == "done"


def _use(row: asyncpg.Record | None) -> LinkUse | None:
    return LinkUse(**dict(row)) if row is not None else None


async def use_of(pool: asyncpg.Pool, token_id: str) -> LinkUse | None:
    async with pool.acquire() as conn:
        return _use(await conn.fetchrow(_USE, token_id))


async def claim(pool: asyncpg.Pool, *, token_id: str, escalation_id: str, ticket_id: str, action: str,
                actor: str, via: str, expires_at: datetime, stale_after: timedelta) -> LinkUse | None:
    """None: the link is ours to act on now. Otherwise the use that holds it (done, or under way)."""
    async with pool.acquire() as conn, conn.transaction():
        claimed = await conn.fetchval(_CLAIM, token_id, escalation_id, ticket_id, action, actor, via, expires_at,
                                      stale_after)
        if claimed is not None:
            return None
        held = _use(await conn.fetchrow(_USE, token_id))
        assert held is not None, "a conflicting claim has a row"
        return held


async def complete(pool: asyncpg.Pool, token_id: str, *, at: datetime, outcome: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(_DONE, token_id, at, outcome)


async def release(pool: asyncpg.Pool, token_id: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(_RELEASE, token_id)


async def pinned_policy_document(pool: asyncpg.Pool, name: str, version: int) -> dict[str, Any] | None:
    """The policy version a run pinned, as the projection stored it (None: not stored, or not yet)."""
    async with pool.acquire() as conn:
        document = await conn.fetchval(_POLICY, name, version)
    return document if isinstance(document, dict) else None


async def purge_expired(pool: asyncpg.Pool, now: datetime, *, batch: int = 1000) -> int:
    """Delete up to ``batch`` uses of links that expired before ``now``; how many went."""
    status = await pool.execute(_PURGE, now, batch)
    return int(status.split()[-1])

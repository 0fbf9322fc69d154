"""The Jira issue of each escalation (table ``jira_issues``) and the lock that guards its creation.

Invariants (the sending side is ``activities/channels/jira.py``):

* one issue per escalation: ``jira_issues`` is keyed by ``escalation_id``; the first key
  recorded wins and is never overwritten (``record_issue`` says whether this one won);
* an issue is created only while ``creation_lock`` holds the escalation's advisory lock:
  a session lock on one pooled connection, outside any transaction, released when the
  block ends (or with the connection, if the worker dies), so two attempts never both create.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"
_FIND = "SELECT issue_key FROM jira_issues WHERE escalation_id = $1"
_STORE = """INSERT INTO jira_issues (escalation_id, ticket_id, issue_key) VALUES ($1, $2, $3)
            ON CONFLICT (escalation_id) DO NOTHING RETURNING issue_key"""


def _lock_name(escalation_id: str) -> str:
    return f"jira-issue:{escalation_id}"


async def issue_key(conn: asyncpg.Connection, escalation_id: str) -> str | None:
    """The key of the escalation's recorded Jira issue, or None."""
    return await conn.fetchval(_FIND, escalation_id)


async def record_issue(conn: asyncpg.Connection, escalation_id: str, ticket_id: str, key: str) -> bool:
    """Record ``key`` as the escalation's issue; False if another issue was recorded first (kept)."""
    return await conn.fetchval(_STORE, escalation_id, ticket_id, key) is not None


@asynccontextmanager
async def creation_lock(pool: asyncpg.Pool, escalation_id: str) -> AsyncIterator[asyncpg.Connection | None]:
    """Hold the escalation's issue-creation lock on one pooled connection for the block.

    Yields that connection, or None at once when another session holds the lock (nothing
    is held then; the connection goes back to the pool when the block ends).
    """
    name = _lock_name(escalation_id)
    async with pool.acquire() as conn:
        if not await conn.fetchval(_LOCK, name):
            yield None
            return
        try:
            yield conn
        finally:
            await conn.execute(_UNLOCK, name)

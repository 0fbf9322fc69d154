"""The Jira issue of each escalation (table ``jira_issues``) and the lock that guards its creation;
what the back-sync reads and records (``jira_own_comments``, ``jira_webhook_receipts``).

Invariants (the sending side is ``activities/channels/jira.py``):

* one issue per escalation: ``jira_issues`` is keyed by ``escalation_id``; the first key
  recorded wins and is never overwritten (``record_issue`` says whether this one won);
* an issue is created only while ``creation_lock`` holds the escalation's advisory lock:
  a session lock on one pooled connection, outside any transaction, released when the
  block ends (or with the connection, if the worker dies), so two attempts never both create.

The back-sync (``escalations/api/jira.py``): a comment the channel posted is recorded in
``jira_own_comments`` and never comes back; a webhook delivery, comment or change is acted on
once: ``claim_receipts`` records all its ids or none (one of them seen before: a replay).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg

_LOCK = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended($1, 0))"
_FIND = "SELECT issue_key FROM jira_issues WHERE escalation_id = $1"
_STORE = """INSERT INTO jira_issues (escalation_id, ticket_id, issue_key) VALUES ($1, $2, $3)
            ON CONFLICT (escalation_id) DO NOTHING RETURNING issue_key"""


_ESCALATION_OF = "SELECT escalation_id, ticket_id FROM jira_issues WHERE issue_key = $1"
_STORE_OWN_COMMENT = """INSERT INTO jira_own_comments (comment_id, issue_key, author_account_id, notification_key)
                        VALUES ($1, $2, $3, $4) ON CONFLICT (comment_id) DO NOTHING"""
_IS_OWN_COMMENT = """SELECT EXISTS (SELECT 1 FROM jira_own_comments WHERE comment_id = $1)
                         OR ($2::text IS NOT NULL
                             AND EXISTS (SELECT 1 FROM jira_own_comments WHERE author_account_id = $2))"""
_CLAIM = """INSERT INTO jira_webhook_receipts (receipt, issue_key, escalation_id)
            SELECT unnest($1::text[]), $2, $3 ON CONFLICT (receipt) DO NOTHING RETURNING receipt"""
_RELEASE = "DELETE FROM jira_webhook_receipts WHERE receipt = ANY($1::text[])"
_PURGE_RECEIPTS = """DELETE FROM jira_webhook_receipts
                      WHERE receipt IN (SELECT receipt FROM jira_webhook_receipts WHERE received_at < $1
                                         ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED)"""
_PINNED_JIRA = """SELECT document IS NOT NULL AS stored, document -> 'jira' AS jira
                    FROM policy_versions WHERE name = $1 AND version = $2"""


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


# -- the back-sync ------------------------------------------------------------------------


async def escalation_of_issue(conn: asyncpg.Connection, issue_key: str) -> tuple[str, str] | None:
    """``(escalation_id, ticket_id)`` of the escalation whose issue ``issue_key`` is, or None."""
    row = await conn.fetchrow(_ESCALATION_OF, issue_key)
    return (row["escalation_id"], row["ticket_id"]) if row is not None else None


async def record_own_comment(conn: asyncpg.Connection, comment_id: str, issue_key: str,
                             author_account_id: str | None, notification_key: str) -> None:
    """The channel posted comment ``comment_id`` (as ``author_account_id``): never a note."""
    await conn.execute(_STORE_OWN_COMMENT, comment_id, issue_key, author_account_id, notification_key)


async def is_own_comment(conn: asyncpg.Connection, comment_id: str, author_account_id: str | None) -> bool:
    """Whether the channel posted this comment, or its author is the account the channel posts as."""
    return bool(await conn.fetchval(_IS_OWN_COMMENT, comment_id, author_account_id))


async def claim_receipts(conn: asyncpg.Connection, receipts: list[str], issue_key: str, escalation_id: str
                         ) -> list[str]:
    """Record every id in ``receipts`` as acted on, or none: returns those recorded before
    (empty: claimed, act now; otherwise a replay, and nothing new is recorded)."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        claimed = {row["receipt"] for row in await conn.fetch(_CLAIM, receipts, issue_key, escalation_id)}
    except BaseException:
        await transaction.rollback()
        raise
    seen = [receipt for receipt in receipts if receipt not in claimed]
    if seen:
        await transaction.rollback()
    else:
        await transaction.commit()
    return seen


async def release_receipts(conn: asyncpg.Connection, receipts: list[str]) -> None:
    """Forget ``receipts`` (acting on them failed): Jira's retry acts again."""
    await conn.execute(_RELEASE, receipts)


async def pinned_jira_section(conn: asyncpg.Connection, name: str, version: int) -> tuple[bool, dict | None]:
    """``(stored, jira)``: whether PostgreSQL holds the pinned policy's document, and its ``jira`` section."""
    row = await conn.fetchrow(_PINNED_JIRA, name, version)
    if row is None or not row["stored"]:
        return False, None
    return True, row["jira"]


async def purge_receipts(pool: asyncpg.Pool, before: datetime, *, batch: int = 1000) -> int:
    """Delete up to ``batch`` receipts recorded before ``before``; how many went."""
    status = await pool.execute(_PURGE_RECEIPTS, before, batch)
    return int(status.split()[-1])

"""Purging what only guards against replays, once nothing can replay it: Idempotency-Keys
past their TTL, uses of action links past their expiry, Jira webhook receipts past a month.

Run by housekeeping every minute, so each table holds about one window of rows. Deletes in
batches (oldest first, skipping rows a request holds right now) until nothing old is left,
heartbeating between batches, so a large backlog never holds one long transaction.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
from temporalio import activity

from escalations.db import actions, idempotency, jira
from schemas.activities import PurgeRequest, PurgeResult


class PurgeActivities:
    def __init__(self, pool: asyncpg.Pool, idempotency_ttl: timedelta):
        self._pool = pool
        self._ttl = idempotency_ttl

    @activity.defn(name="purge_idempotency_keys")
    async def purge_idempotency_keys(self, request: PurgeRequest) -> PurgeResult:
        now = datetime.now(UTC)
        before = now - self._ttl
        result = PurgeResult(
            purged=await self._in_batches(lambda: idempotency.purge(self._pool, before, batch=request.batch),
                                          request.batch),
            action_link_uses=await self._in_batches(
                lambda: actions.purge_expired(self._pool, now, batch=request.batch), request.batch),
            jira_receipts=await self._in_batches(
                lambda: jira.purge_receipts(self._pool, now - request.jira_receipts_kept, batch=request.batch),
                request.batch),
        )
        if result.purged or result.action_link_uses or result.jira_receipts:
            activity.logger.info("purged %d API Idempotency-Key(s) created before %s, %d use(s) of expired action "
                                 "links, %d Jira receipt(s) older than %s", result.purged, before.isoformat(),
                                 result.action_link_uses, result.jira_receipts, request.jira_receipts_kept)
        return result

    @staticmethod
    async def _in_batches(batch_of: Callable[[], Awaitable[int]], size: int) -> int:
        total = 0
        while True:
            deleted = await batch_of()
            total += deleted
            activity.heartbeat(total)
            if deleted < size:
                return total

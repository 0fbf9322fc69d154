"""Purging what the API keeps only for a while: Idempotency-Keys past their TTL.

Run by housekeeping every minute, so the table holds about one TTL of keys. Deletes in
batches (oldest first, skipping rows a request holds right now) until nothing old is left,
heartbeating between batches, so a large backlog never holds one long transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from temporalio import activity

from escalations.db import idempotency
from schemas.activities import PurgeRequest, PurgeResult


class PurgeActivities:
    def __init__(self, pool: asyncpg.Pool, idempotency_ttl: timedelta):
        self._pool = pool
        self._ttl = idempotency_ttl

    @activity.defn(name="purge_idempotency_keys")
    async def purge_idempotency_keys(self, request: PurgeRequest) -> PurgeResult:
        before = datetime.now(UTC) - self._ttl
        result = PurgeResult()
        while True:
            deleted = await idempotency.purge(self._pool, before, batch=request.batch)
            result.purged += deleted
            activity.heartbeat(result.purged)
            if deleted < request.batch:
                break
        if result.purged:
            activity.logger.info("purged %d API Idempotency-Key(s) created before %s", result.purged,
                                 before.isoformat())
        return result

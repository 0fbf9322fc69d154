"""The projection: what Temporal history recorded, written to PostgreSQL in order.

``project_events`` takes one step of one escalation's outbox (events, their notification
intents, delivery results) and stores it in one transaction: events appended idempotently
and folded into the read model, intents inserted as ledger rows, results applied to them.
The workflow runs one step at a time, so steps arrive in order; a retried step is a no-op.
PostgreSQL being down only makes the step retry (Temporal's retry policy, no history
written); a conflicting event is a bug and fails the step without retrying.

``record_events`` and ``find_repeats`` serve runs of the released commit path, which store
their events from inside the deciding workflow task.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from escalations.db import eventstore
from escalations.observability.metrics import PROJECTION_LAG
from schemas.activities import (
    EventBatch,
    Outbox,
    ProjectionBatch,
    ProjectionResult,
    RepeatInfo,
    RepeatQuery,
)

# A frozen PostgreSQL must fail an attempt quickly, so the next one (after Temporal's back-off)
# finds it as soon as it is back.
ACQUIRE_TIMEOUT = 2.0
STEP_TIMEOUT = 15.0
# While PostgreSQL does not answer, one attempt at a time finds out (a probe); the others fail at
# once instead of each holding an activity slot for the acquire timeout, which pages share.
PROBE_AGAIN_AFTER = 1.0


def _conflict(err: eventstore.EventConflict) -> ApplicationError:
    return ApplicationError(str(err), type="EventConflict", non_retryable=True)


def _decided(batch: Outbox) -> list[datetime]:
    """When each thing in the step was decided: a timer's event was decided at ``decided_at``
    (its ``occurred_at`` is the deadline), anything else when it occurred."""
    moments = [datetime.fromisoformat(e.payload["decided_at"]) if isinstance(e.payload.get("decided_at"), str)
               else e.occurred_at for e in batch.events]
    return moments + [update.at for update in batch.ledger]


class StoreActivities:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool
        self._down = False  # the last attempt found PostgreSQL not answering
        self._probe_after = 0.0
        self._probing = False

    @activity.defn(name="project_events")
    async def project_events(self, batch: ProjectionBatch) -> ProjectionResult:
        """Store one projection step of one escalation: events, ledger rows, delivery results."""
        PROJECTION_LAG.attempt(batch.escalation_id, _decided(batch))
        if self._down and (self._probing or time.monotonic() < self._probe_after):
            raise ApplicationError("PostgreSQL is not answering; the projection step will be retried",
                                   type="DatabaseUnavailable")
        probe = self._down
        self._probing = self._probing or probe
        try:
            result = await self._project(batch)
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            self._down, self._probe_after = True, time.monotonic() + PROBE_AGAIN_AFTER
            raise
        finally:
            if probe:
                self._probing = False
        self._down = False
        PROJECTION_LAG.written(batch.escalation_id)
        return result

    async def _project(self, batch: ProjectionBatch) -> ProjectionResult:
        result = ProjectionResult()
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                if not batch.events and not batch.intents and len(batch.ledger) == 1:
                    # One delivery result (the step after most pages) is one UPDATE, atomic on its
                    # own: without BEGIN and COMMIT the step is one round trip instead of three.
                    async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                        await eventstore.apply_ledger(conn, batch.ledger)
                    return result
                async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn, conn.transaction():
                    result.stored = await eventstore.project(conn, batch.escalation_id, batch.events, batch.intents,
                                                             batch.ledger, run_id=batch.run_id)
                    result.already = len(batch.events) - result.stored
                    opened = next((e for e in batch.events if e.type == "opened"), None)
                    if opened is not None:
                        await self._pin(conn, opened.payload["view"]["policy"], batch)
                        result.repeat_of, result.repeat_count = await eventstore.repeat_facts(
                            conn, batch.escalation_id)
        except eventstore.EventConflict as err:
            raise _conflict(err) from None
        return result

    @staticmethod
    async def _pin(conn: asyncpg.Connection, ref: dict, batch: ProjectionBatch) -> None:
        """Register the run's policy version if ``pin_policy`` could not (PostgreSQL was down)."""
        if batch.policy_digest is None:
            return
        stored = await eventstore.register_policy(conn, ref["name"], ref["version"], batch.policy_digest)
        if stored != batch.policy_digest:
            activity.logger.error(
                "escalation %s opened on policy %s v%s whose file changed since other runs were pinned to it "
                "(digest %s, pinned %s); bump `version` when a policy changes",
                batch.escalation_id, ref["name"], ref["version"], batch.policy_digest[:12], stored[:12],
            )

    # -- the released commit path ------------------------------------------------

    @activity.defn(name="record_events")
    async def record_events(self, batch: EventBatch) -> int:
        """Append events, fold them, queue their notifications: one transaction (released path)."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                outcomes = [await eventstore.append_decided(conn, event, batch.run_id, batch.decided_in)
                            for event in batch.events]
                fresh = [event for event, outcome in zip(batch.events, outcomes) if outcome != "already"]
                if "superseded" in outcomes:
                    await eventstore.refold(conn, batch.escalation_id)
                else:
                    await eventstore.fold_into_read_model(conn, batch.escalation_id, fresh)
                await eventstore.mark_given_up(conn, fresh)
                await eventstore.insert_intents(conn, batch.intents)
        except eventstore.EventConflict as err:
            raise _conflict(err) from None
        if "superseded" in outcomes:
            activity.logger.warning(
                "escalation %s: events from a workflow task of run %s that never completed were replaced "
                "by the decision of a later attempt (kept in superseded_events)", batch.escalation_id, batch.run_id,
            )
        return len(fresh)

    @activity.defn(name="find_repeats")
    async def find_repeats(self, query: RepeatQuery) -> RepeatInfo:
        """Earlier escalations of the same customer and issue within the policy's window (released path)."""
        async with self._pool.acquire() as conn:
            earlier = await eventstore.earlier_escalations(conn, query.escalation_id, query.fingerprint,
                                                           query.opened_at, query.window)
        return RepeatInfo(repeat_of=earlier[0] if earlier else None, repeat_count=len(earlier))

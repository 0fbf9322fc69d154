"""Recording escalation runs that ended without closing (failed, terminated, timed out).

Such a run writes nothing more, so the read model would show it open for ever. The
reconciler finds them through Temporal visibility, reads what the run had recorded but
not yet projected (query ``outbox`` on the closed run, answered by replaying it), and
stores those events and then a ``run_ended`` event, in one transaction per run. Runs
already recorded as ended are skipped, so running it again changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from temporalio import activity
from temporalio.api.failure.v1 import Failure
from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowHistoryEventFilterType,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
)
from temporalio.service import RPCError

from escalations.db import eventstore
from schemas import keys
from schemas.activities import Outbox, ReconcileRequest, ReconcileResult
from schemas.escalation import DomainEvent

ENDED = {
    WorkflowExecutionStatus.FAILED: ("failed", "failed"),
    WorkflowExecutionStatus.TIMED_OUT: ("failed", "timed out"),
    WorkflowExecutionStatus.TERMINATED: ("terminated", "terminated"),
    WorkflowExecutionStatus.CANCELED: ("terminated", "canceled"),
}


def ended_runs_query(since: datetime) -> str:
    return (f"WorkflowType = '{keys.ESCALATION_WORKFLOW}' AND ExecutionStatus IN "
            f"('Failed', 'Terminated', 'TimedOut', 'Canceled') AND CloseTime > '{since.strftime('%Y-%m-%dT%H:%M:%SZ')}'")


class ReconcileActivities:
    def __init__(self, pool: asyncpg.Pool, client: Client):
        self._pool = pool
        self._client = client

    @activity.defn(name="reconcile_ended_runs")
    async def reconcile_ended_runs(self, request: ReconcileRequest) -> ReconcileResult:
        result = ReconcileResult()
        since = datetime.now(UTC) - request.lookback
        async for execution in self._client.list_workflows(ended_runs_query(since)):
            activity.heartbeat(result.checked)
            result.checked += 1
            if await self._record(execution):
                result.recorded.append(execution.id)
        return result

    async def _record(self, execution: WorkflowExecution) -> bool:
        escalation_id = execution.raw_info.first_run_id or execution.run_id
        async with self._pool.acquire() as conn:
            if not await eventstore.shows_running(conn, escalation_id):
                return False
        handle = self._client.get_workflow_handle(execution.id, run_id=execution.run_id)
        outbox = await self._unprojected(handle)
        status, word = ENDED[execution.status or WorkflowExecutionStatus.FAILED]
        reason = await self._reason(handle, word)
        async with self._pool.acquire() as conn, conn.transaction():
            found = await eventstore.ended_without_closing(conn, escalation_id)
            if found is None:
                return False
            await eventstore.project(conn, escalation_id, outbox.events, outbox.intents, outbox.ledger,
                                     run_id=execution.run_id)
            last_seq = max([found[1], *(e.seq for e in outbox.events)])
            ticket_id = await eventstore.ticket_of(conn, escalation_id)
            ended = DomainEvent(
                escalation_id=escalation_id, ticket_id=ticket_id, seq=last_seq + 1, type="run_ended",
                occurred_at=execution.close_time or datetime.now(UTC),
                payload={"status": status, "reason": reason, "run_id": execution.run_id,
                         "workflow_id": execution.id},
            )
            await eventstore.project(conn, escalation_id, [ended], [], [], run_id=execution.run_id)
        activity.logger.warning("escalation %s (%s) ended without closing: %s", execution.id, escalation_id, reason)
        return True

    @staticmethod
    async def _unprojected(handle) -> Outbox:
        """What the run recorded and did not project; empty for runs that store from their task."""
        try:
            return await handle.query("outbox", result_type=Outbox)
        except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError) as err:
            # Reported, not hidden: the end is recorded either way, and the log names the run.
            activity.logger.error("cannot read the unprojected events of %s (%s); recording its end without them",
                                  handle.id, " ".join(str(err).split())[:300])
            return Outbox()

    async def _reason(self, handle, word: str) -> str:
        """``terminated: <reason>``, ``failed: <message>``: from the run's close event."""
        async for event in handle.fetch_history_events(event_filter_type=WorkflowHistoryEventFilterType.CLOSE_EVENT):
            if event.HasField("workflow_execution_terminated_event_attributes"):
                detail = event.workflow_execution_terminated_event_attributes.reason
            elif event.HasField("workflow_execution_failed_event_attributes"):
                # With encryption on, the message is in the failure's encrypted attributes.
                failure = Failure()
                failure.CopyFrom(event.workflow_execution_failed_event_attributes.failure)
                error = await self._client.data_converter.decode_failure(failure)
                detail = getattr(error, "message", None) or str(error)
            elif event.HasField("workflow_execution_canceled_event_attributes"):
                detail = "canceled"
            else:
                detail = ""
            return f"{word}: {' '.join(detail.split())[:500]}" if detail else word
        return word

"""HousekeepingWorkflow: what no escalation run can do for itself, run by a Schedule.

A run that ended without closing (failed, terminated, timed out) writes nothing more; the
reconciler records how it ended in the read model, with the events it had not yet
projected, so the API, ``escalations list``, the KPIs and the sweep see it as ended.
Then the API's Idempotency-Keys past their TTL are purged (behind a patch: a run started
by the code before ends as it began).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from schemas import keys
    from schemas.activities import (
        PurgeRequest,
        PurgeResult,
        ReconcileRequest,
        ReconcileResult,
    )


@workflow.defn(name="HousekeepingWorkflow")
class HousekeepingWorkflow:
    @workflow.run
    async def run(self, request: ReconcileRequest) -> ReconcileResult:
        result = await workflow.execute_activity(
            keys.RECONCILE_ENDED_RUNS,
            request,
            result_type=ReconcileResult,
            start_to_close_timeout=timedelta(minutes=10),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=5),
            summary="record escalation runs that ended without closing",
        )
        if workflow.patched(keys.PURGE_IDEMPOTENCY):
            purged = await workflow.execute_activity(
                keys.PURGE_IDEMPOTENCY_KEYS,
                PurgeRequest(),
                result_type=PurgeResult,
                start_to_close_timeout=timedelta(minutes=5),
                heartbeat_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=30), maximum_attempts=5),
                summary="purge API Idempotency-Keys past their TTL",
            )
            result = result.model_copy(update={"idempotency_keys_purged": purged.purged,
                                               "replay_records_purged": purged.action_link_uses + purged.jira_receipts})
        workflow.set_current_details(
            f"**Checked** {result.checked} ended runs · **recorded** {len(result.recorded)}"
            + (f": {', '.join(result.recorded[:20])}" if result.recorded else "")
            + f"\n\n**Idempotency-Keys purged** {result.idempotency_keys_purged}"
            + f" · **action-link and Jira replay records purged** {result.replay_records_purged}"
        )
        return result

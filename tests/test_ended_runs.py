"""A run that ends without closing (terminated, failed) is shown as such, with nothing lost."""

from __future__ import annotations

import uuid

import pytest
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from escalations.client import list_escalations
from escalations.db.eventstore import rebuild
from escalations.db.kpis import compute_kpis
from schemas import keys
from schemas.activities import (
    ProjectionBatch,
    ProjectionResult,
    ReconcileRequest,
    ReconcileResult,
)
from schemas.escalation import (
    AcknowledgeCommand,
    EscalationState,
    ResolveCommand,
    postmortem_id_for,
)
from schemas.reporting import KpiFilters
from tests.helpers.escalations import current_state, projected, start_escalation
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request


@activity.defn(name="project_events")
async def postgres_unreachable(batch: ProjectionBatch) -> ProjectionResult:
    raise ApplicationError("PostgreSQL is down (test)", type="ConnectionRefused")


async def housekeeping(client, task_queue) -> ReconcileResult:
    return await client.execute_workflow(
        keys.HOUSEKEEPING_WORKFLOW, ReconcileRequest(), id=f"housekeeping-{uuid.uuid4()}", task_queue=task_queue,
        result_type=ReconcileResult)


async def read_model(pool) -> list[dict]:
    return [dict(r) for r in await pool.fetch("SELECT * FROM escalations ORDER BY escalation_id")]


async def test_a_terminated_run_is_recorded_with_the_events_it_had_not_projected(
        client, task_queue, start_worker, pg_pool):
    async with start_worker():
        handle = await start_escalation(client, blog_request(), task_queue)
        opened = await projected(pg_pool, handle)
    # PostgreSQL "down" for this run: its acknowledgement is recorded in history only.
    async with start_worker(replace={"project_events": postgres_unreachable}):
        acked = await handle.execute_update("acknowledge", AcknowledgeCommand(by="dana"),
                                            result_type=EscalationState)
        await handle.terminate(reason="duplicate of another ticket")
    stored = await pg_pool.fetchval("SELECT max(seq) FROM escalation_events WHERE escalation_id = $1",
                                    opened.escalation_id)
    assert stored < acked.last_seq
    async with start_worker():
        result = await housekeeping(client, task_queue)
        assert handle.id in result.recorded
        row = await pg_pool.fetchrow("SELECT status, ended_reason, acknowledged_by, closed_at, last_seq "
                                     "FROM escalations WHERE escalation_id = $1", opened.escalation_id)
        assert row["status"] == "terminated" and "duplicate of another ticket" in row["ended_reason"]
        assert row["acknowledged_by"] == "dana", "the event history held but PostgreSQL did not is there"
        assert row["last_seq"] == acked.last_seq + 1
        seqs = [r["seq"] for r in await pg_pool.fetch(
            "SELECT seq FROM escalation_events WHERE escalation_id = $1 ORDER BY seq", opened.escalation_id)]
        assert seqs == list(range(1, acked.last_seq + 2))
        again = await housekeeping(client, task_queue)
        assert handle.id not in again.recorded
        # Among the suite's many runs on the shared server: filtered, and visibility catches up.
        async def listed_as_terminated() -> None:
            [listed] = [item for item in await list_escalations(client, status="terminated", limit=1000)
                        if item.workflow_id == handle.id]
            assert listed.status == "terminated"

        await eventually(listed_as_terminated, timeout=15)
    live = await read_model(pg_pool)
    async with pg_pool.acquire() as conn:
        await rebuild(conn)
    assert await read_model(pg_pool) == live


async def test_a_run_that_fails_is_recorded_failed_and_counted(client, task_queue, start_worker, pg_pool):
    """Its postmortem terminated, a resolved escalation cannot close: the run fails, and the
    read model, the KPI facts and the sweep see it as ended rather than open."""
    async with start_worker():
        handle = await start_escalation(client, blog_request(), task_queue)
        await handle.execute_update("resolve", ResolveCommand(by="dana", root_cause="a", mitigation="b"),
                                    result_type=EscalationState)
        resolved = await projected(pg_pool, handle)
        await client.get_workflow_handle(postmortem_id_for(resolved.ticket_id)).terminate(reason="abandoned")
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        result = await housekeeping(client, task_queue)
        assert handle.id in result.recorded
        facts = await pg_pool.fetchrow(
            "SELECT status, ended_without_closing, resolved FROM escalation_kpi_facts WHERE escalation_id = $1",
            resolved.escalation_id)
        assert dict(facts) == {"status": "failed", "ended_without_closing": True, "resolved": True}
        reason = await pg_pool.fetchval("SELECT ended_reason FROM escalations WHERE escalation_id = $1",
                                        resolved.escalation_id)
        assert reason.startswith("failed: postmortem postmortem-") and "did not complete" in reason
        async with pg_pool.acquire() as conn:
            report = await compute_kpis(conn, KpiFilters())
        assert report.ended_without_closing == 1 and report.resolved == 1
        state = await current_state(handle)  # a closed run still answers its query
        assert state.status == "resolved"

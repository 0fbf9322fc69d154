"""SLA clocks on the real dev server with second-scale policies: the code paths of hour-scale ones."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError

from schemas.escalation import (
    AddNoteCommand,
    ApplyPolicyCommand,
    EscalationState,
    PauseCommand,
    ResumeCommand,
)
from tests.helpers.escalations import current_state, projected, start_escalation
from tests.helpers.policies import level_ack, write_policy
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request

SLOW_ACK = level_ack("fast", tier2="60s", engineering="60s", management="60s")


async def event_types(pg_pool, escalation_id: str) -> list[str]:
    rows = await pg_pool.fetch(
        "SELECT type FROM escalation_events WHERE escalation_id = $1 ORDER BY seq", escalation_id
    )
    return [r["type"] for r in rows]


async def test_breach_marks_and_notifies_without_moving_the_level(client, task_queue, start_worker, pg_pool, tmp_path):
    policy = write_policy(tmp_path, levels=SLOW_ACK, priorities={"P1": {"resolve_within": "3s", "at_risk_at": 0.5}})
    async with start_worker(policy):
        handle = await start_escalation(client, blog_request(kind="hierarchical"), task_queue)

        async def breached() -> EscalationState:
            state = await current_state(handle)
            assert state.sla_breached
            return state

        state = await eventually(breached, timeout=15)
        assert state.level == "tier2" and state.path == [] and state.sla_at_risk
        types = await event_types(pg_pool, state.escalation_id)
        assert types.index("sla_at_risk") < types.index("sla_breached")
        breach_seq = await pg_pool.fetchval(
            "SELECT seq FROM escalation_events WHERE escalation_id = $1 AND type = 'sla_breached'",
            state.escalation_id,
        )
        recipients = await pg_pool.fetch(
            "SELECT recipient, template FROM notifications WHERE escalation_id = $1 AND seq = $2",
            state.escalation_id, breach_seq,
        )
        assert [(r["recipient"], r["template"]) for r in recipients] == [("Head of Support", "sla_breached")]
        # The breach deadline acted on time: no later than a second after it was due.
        breach_at = await pg_pool.fetchval(
            "SELECT occurred_at FROM escalation_events WHERE escalation_id = $1 AND type = 'sla_breached'",
            state.escalation_id,
        )
        assert timedelta(0) <= breach_at - (state.opened_at + timedelta(seconds=3)) < timedelta(seconds=1)
        description = await handle.describe()
        assert description.search_attributes["SlaBreached"] == [True]


async def test_customer_cadence_and_visible_notes(client, task_queue, start_worker, pg_pool, tmp_path):
    policy = write_policy(tmp_path, levels=SLOW_ACK, priorities={"P1": {"customer_update_every": "2s"}})
    async with start_worker(policy):
        handle = await start_escalation(client, blog_request(), task_queue)

        async def one_update() -> EscalationState:
            state = await current_state(handle)
            assert state.counts.customer_updates >= 1
            return state

        state = await eventually(one_update, timeout=10)
        assert state.level == "tier2" and state.path == []
        await projected(pg_pool, handle)
        rows = await pg_pool.fetch(
            """SELECT n.audience, n.template FROM notifications n JOIN escalation_events e
                 ON e.escalation_id = n.escalation_id AND e.seq = n.seq
                WHERE e.escalation_id = $1 AND e.type = 'customer_updated' AND (e.payload->>'number') = '1'""",
            state.escalation_id,
        )
        assert sorted((r["audience"], r["template"]) for r in rows) == [
            ("customer", "customer_update"), ("owner", "customer_update_due"),
        ]
        noted = await handle.execute_update(
            "add_note", AddNoteCommand(author="dana", text="Hotfix in review", customer_visible=True),
            result_type=EscalationState,
        )
        assert noted.deadlines.next_customer_update_due == noted.updated_at + timedelta(seconds=2)


async def test_pause_stops_resolution_and_cadence_and_keeps_budget(client, task_queue, start_worker, pg_pool, tmp_path):
    policy = write_policy(tmp_path, levels=level_ack("fast", tier2="2s", engineering="60s"),
                          priorities={"P1": {"resolve_within": "4s", "customer_update_every": "3s"}})
    async with start_worker(policy):
        handle = await start_escalation(client, blog_request(kind="hierarchical"), task_queue)
        await eventually(lambda: current_state(handle))
        paused = await handle.execute_update("pause", PauseCommand(by="dana", reason="waiting on customer logs"),
                                             result_type=EscalationState)
        assert paused.status == "paused" and paused.deadlines.resolve_due is None
        assert paused.deadlines.next_customer_update_due is None
        with pytest.raises(WorkflowUpdateFailedError) as twice:
            await handle.execute_update("pause", PauseCommand(by="x", reason="again"), result_type=EscalationState)
        assert "already paused" in str(twice.value.cause)

        # The ack clock keeps running while paused: tier2 times out and engineering takes over.
        async def moved() -> EscalationState:
            state = await current_state(handle)
            assert state.level == "engineering"
            return state

        state = await eventually(moved, timeout=10)
        assert state.status == "paused" and not state.sla_breached and state.counts.customer_updates == 0
        assert abs(state.resolve_remaining - paused.resolve_remaining) < timedelta(milliseconds=50)
        resumed = await handle.execute_update("resume", ResumeCommand(by="dana"), result_type=EscalationState)
        assert resumed.status == "open" and resumed.paused_total >= timedelta(seconds=1)
        assert resumed.deadlines.resolve_due == resumed.updated_at + paused.resolve_remaining
        with pytest.raises(WorkflowUpdateFailedError) as not_paused:
            await handle.execute_update("resume", ResumeCommand(by="x"), result_type=EscalationState)
        assert "not paused" in str(not_paused.value.cause)

        async def breached() -> None:
            assert (await current_state(handle)).sla_breached

        await eventually(breached, timeout=10)
        types = await event_types(pg_pool, state.escalation_id)
        assert types[:2] == ["opened", "paused"] and "resumed" in types


async def test_a_pause_longer_than_the_maximum_resumes_itself(client, task_queue, start_worker, pg_pool, tmp_path):
    policy = write_policy(tmp_path, levels=SLOW_ACK, max_pause="2s")
    async with start_worker(policy):
        handle = await start_escalation(client, blog_request(), task_queue)
        await eventually(lambda: current_state(handle))
        await handle.execute_update("pause", PauseCommand(by="dana", reason="waiting"), result_type=EscalationState)

        async def resumed() -> EscalationState:
            state = await current_state(handle)
            assert state.status == "open"
            return state

        state = await eventually(resumed, timeout=10)
        payload = await pg_pool.fetchval(
            "SELECT payload FROM escalation_events WHERE escalation_id = $1 AND type = 'resumed'", state.escalation_id
        )
        assert payload["auto"] is True and "maximum of 2s" in payload["reason"]


async def test_runs_keep_their_policy_version_until_told(client, task_queue, start_worker, pg_pool, tmp_path):
    policy = write_policy(tmp_path, levels=SLOW_ACK)
    async with start_worker(policy):
        handle = await start_escalation(client, blog_request(), task_queue)
        first = await eventually(lambda: current_state(handle))
        assert first.policy.version == 1
        # Publish version 2: tier2 must answer in 90 s; the running escalation is not affected.
        write_policy(tmp_path, version=2, levels=level_ack("fast", tier2="90s", engineering="60s", management="60s"))
        noted = await handle.execute_update("add_note", AddNoteCommand(author="x", text="still v1"),
                                            result_type=EscalationState)
        assert noted.policy.version == 1 and noted.deadlines.ack_due == first.deadlines.ack_due
        with pytest.raises(WorkflowUpdateFailedError) as older:
            await handle.execute_update("apply_policy", ApplyPolicyCommand(version=1), result_type=EscalationState)
        assert "only newer versions" in str(older.value.cause)
        moved = await handle.execute_update("apply_policy", ApplyPolicyCommand(by="ops", version=2),
                                            result_type=EscalationState)
        assert moved.policy.version == 2
        assert moved.deadlines.ack_due == first.opened_at + timedelta(seconds=90)
        await projected(pg_pool, handle)
        types = await event_types(pg_pool, moved.escalation_id)
        assert types[-1] == "policy_applied"
        assert await pg_pool.fetchval(
            "SELECT policy_version FROM escalations WHERE escalation_id = $1", moved.escalation_id) == 2

        # Editing version 2 without bumping it is refused for new runs, loudly.
        write_policy(tmp_path, version=2, levels=level_ack("fast", tier2="91s"))
        refused = await start_escalation(client, blog_request(), task_queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await refused.result()
        assert "changed since runs were pinned" in str(failed.value.cause)


async def test_continue_as_new_keeps_every_clock(client, task_queue, start_worker, pg_pool, tmp_path):
    policy = write_policy(tmp_path, levels=SLOW_ACK, continue_as_new_after_events=60,
                          priorities={"P1": {"customer_update_every": "300ms", "resolve_within": "120s"}})
    async with start_worker(policy):
        handle = await start_escalation(client, blog_request(), task_queue)
        first = await eventually(lambda: current_state(handle))

        async def continued() -> EscalationState:
            state = await current_state(handle)
            assert state.counts.continued_as_new >= 2
            return state

        state = await eventually(continued, timeout=40)
        description = await handle.describe()
        assert description.run_id != first.escalation_id
        assert state.escalation_id == first.escalation_id
        assert state.deadlines.resolve_due == first.deadlines.resolve_due
        assert state.deadlines.ack_due == first.deadlines.ack_due
        assert description.search_attributes["EscalationLevel"] == ["tier2"]
        seqs = [r["seq"] for r in await pg_pool.fetch(
            "SELECT seq FROM escalation_events WHERE escalation_id = $1 ORDER BY seq", state.escalation_id)]
        assert seqs == list(range(1, len(seqs) + 1))
        metadata = await handle.query("__temporal_workflow_metadata")
        assert "P1 · Acme Corp" in metadata.current_details

"""The core escalation workflow on a real dev server and a real Postgres (second-scale policy)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError

from schemas.escalation import (
    AcknowledgeCommand,
    AddNoteCommand,
    EscalateCommand,
    EscalationState,
    ResolveCommand,
)
from tests.helpers.escalations import current_state, projected, start_escalation
from tests.helpers.policies import write_policy
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request


async def events_of(pg_pool, escalation_id: str) -> list[tuple[int, str]]:
    rows = await pg_pool.fetch(
        "SELECT seq, type FROM escalation_events WHERE escalation_id = $1 ORDER BY seq", escalation_id
    )
    return [(r["seq"], r["type"]) for r in rows]


async def test_unacknowledged_p1_climbs_the_chain(client, task_queue, start_worker, pg_pool):
    async with start_worker("fast"):
        handle = await start_escalation(client, blog_request(kind="hierarchical"), task_queue)

        async def at_management() -> EscalationState:
            state = await current_state(handle)
            assert state.level == "management"
            return state

        state = await eventually(at_management, timeout=20)
        moves = [(p.from_level, p.to_level, p.auto) for p in state.path]
        assert moves == [("tier2", "engineering", True), ("engineering", "management", True)]
        assert state.status == "open"
        assert "no acknowledgement from tier2 within 2s" in state.path[0].reason
        assert state.notifications_sent >= 3

        # At the last level it keeps re-notifying every ack_within.
        async def reminded() -> None:
            assert (await current_state(handle)).counts.ack_reminders >= 1

        await eventually(reminded, timeout=10)
        seqs = [seq for seq, _ in await events_of(pg_pool, state.escalation_id)]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_acknowledge_stops_the_climb(client, task_queue, start_worker, tmp_path):
    # The customer-update clock (5 s) proves two ack windows (2 s each) went by: the run acts
    # on its deadlines in order, so once it has sent update #1, any move due before it is made.
    policy = write_policy(tmp_path, priorities={"P1": {"customer_update_every": "5s"}})
    async with start_worker(policy):
        handle = await start_escalation(client, blog_request(), task_queue)
        state = await handle.execute_update("acknowledge", AcknowledgeCommand(by="dana"),
                                            result_type=EscalationState)
        assert state.status == "acknowledged"
        assert state.deadlines.ack_due is None
        two_windows = state.opened_at + timedelta(seconds=2 + 2)  # tier2's, then engineering's
        assert state.deadlines.next_customer_update_due > two_windows

        async def updated() -> EscalationState:
            after = await current_state(handle)
            assert after.counts.customer_updates >= 1
            return after

        after = await eventually(updated, timeout=20)
        assert after.level == "tier2" and after.path == [], "a move after the acknowledgement"
        assert after.counts.auto_escalations == 0 and after.counts.ack_reminders == 0
        assert after.status == "acknowledged" and after.acknowledged_by == "dana"


async def test_validators_reject_commands_the_state_forbids(client, task_queue, start_worker, pg_pool):
    async with start_worker("fast"):
        handle = await start_escalation(client, blog_request(), task_queue)
        await handle.execute_update("acknowledge", AcknowledgeCommand(by="dana"), result_type=EscalationState)
        with pytest.raises(WorkflowUpdateFailedError) as twice:
            await handle.execute_update("acknowledge", AcknowledgeCommand(by="sam"), result_type=EscalationState)
        assert "acknowledged" in str(twice.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as unknown:
            await handle.execute_update("escalate", EscalateCommand(by="x", reason="r", to_level="nope"),
                                        result_type=EscalationState)
        assert "not a level" in str(unknown.value.cause)
        resolved = await handle.execute_update(
            "resolve",
            ResolveCommand(by="dana", root_cause="API schema change", mitigation="hotfix",
                           preventive_actions=["monitor schema changes"]),
            result_type=EscalationState,
        )
        assert resolved.status == "resolved"
        await projected(pg_pool, handle)
        before = await events_of(pg_pool, resolved.escalation_id)
        for name, command in [
            ("acknowledge", AcknowledgeCommand(by="x")),
            ("resolve", ResolveCommand(by="x", root_cause="a", mitigation="b")),
            ("add_note", AddNoteCommand(author="x", text="late")),
        ]:
            with pytest.raises(WorkflowUpdateFailedError) as rejected:
                await handle.execute_update(name, command, result_type=EscalationState)
            assert "is resolved" in str(rejected.value.cause)
        await projected(pg_pool, handle)
        assert await events_of(pg_pool, resolved.escalation_id) == before


async def test_the_owner_is_searchable_and_details_show_the_whole_path(client, task_queue, start_worker):
    async with start_worker("fast"):
        handle = await start_escalation(client, blog_request(kind="hierarchical"), task_queue)

        async def climbed() -> EscalationState:
            state = await current_state(handle)
            assert len(state.path) >= 2
            return state

        state = await eventually(climbed, timeout=20)
        description = await handle.describe()
        assert description.search_attributes["EscalationOwner"] == [state.owner]
        metadata = await handle.query("__temporal_workflow_metadata")
        details = metadata.current_details
        assert "**Path**" in details
        for move in state.path[:2]:
            assert f"{move.from_level} → {move.to_level} (auto)" in details and move.reason in details

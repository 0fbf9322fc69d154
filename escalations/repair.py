"""Repairing escalation runs that no longer replay (``escalations repair``).

A run of the released commit path could get stuck when a local activity outlived its
workflow task (PostgreSQL slow or down): on replay the decision after it ran in another
task, and every later task failed with a nondeterminism error. The repair, per stuck run:

1. finds the reset point: the last workflow task its history replays up to with the
   installed code (found by replaying prefixes), and never later than the first task whose
   local activity outlived it (from there on, replay may run decisions in other tasks than
   the original did, without an error to show for it);
2. moves the events that tasks from that point on had stored in PostgreSQL aside, into
   ``superseded_events``, and folds the read model again: the new run decides them again;
   their ledger rows stay, so a page already sent under a key is not sent twice;
3. resets the run to that task (Temporal's reset: history up to that point is kept, the
   rest is decided again by the installed code, signals after it are reapplied);
4. sends ``upgrade``, which continues the run as new on the current commit path.

Nothing is lost: the withdrawn events are kept, and a decision the new run makes again
under the same sequence number keeps its notification keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, ResetReapplyType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHistory, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.worker import Replayer

from escalations.db import eventstore
from schemas import keys
from schemas.escalation import EscalationState, UpgradeCommand


class NotRepairable(RuntimeError):
    """The run cannot be repaired automatically; the message says why."""


@dataclass(frozen=True)
class ResetPoint:
    """Reset to the workflow task that completed at ``completed_event_id`` (it is decided again)."""

    completed_event_id: int
    started_event_id: int


@dataclass(frozen=True)
class Repaired:
    workflow_id: str
    old_run_id: str
    new_run_id: str
    reset_point: ResetPoint
    withdrawn: list[int]
    upgraded: bool


async def replays(replayer: Replayer, history: WorkflowHistory) -> str | None:
    """None if ``history`` replays with the installed code, else the reason it does not."""
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    return None if result.replay_failure is None else " ".join(str(result.replay_failure).split())[:500]


def _prefix(history: WorkflowHistory, last_event_id: int) -> WorkflowHistory:
    return WorkflowHistory(history.workflow_id, [e for e in history.events if e.event_id <= last_event_id])


async def reset_point(replayer: Replayer, history: WorkflowHistory) -> ResetPoint:
    """The last workflow task up to which ``history`` replays (prefixes replay or fail monotonically)."""
    events = list(history.events)
    completed = [e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
    started_of = {e.event_id: e.workflow_task_completed_event_attributes.started_event_id
                  for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED}
    if not completed:
        raise NotRepairable("the run has no completed workflow task to reset to")
    low, high, best = 0, len(completed) - 1, None
    while low <= high:
        middle = (low + high) // 2
        candidate = completed[middle]
        # The new run replays up to the task's started event and decides that task again.
        if await replays(replayer, _prefix(history, started_of[candidate])) is None:
            best, low = candidate, middle + 1
        else:
            high = middle - 1
    if best is None:
        raise NotRepairable("not even the first workflow task replays with the installed code")
    # A task kept open for a local activity completes with no command and is followed at once
    # by the next task (its heartbeat): the decision awaiting that activity is decided again.
    following = {e.event_id: n.event_type for e, n in zip(events, events[1:])}
    heartbeats = [c for c in completed if following.get(c) == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED]
    if heartbeats and heartbeats[0] < best:
        best = heartbeats[0]
    return ResetPoint(completed_event_id=best, started_event_id=started_of[best])


def released_path(history: WorkflowHistory) -> bool:
    """True for runs of the released commit path (no ``HISTORY_FIRST`` patch marker)."""
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_patch" and any(
                keys.HISTORY_FIRST.encode() in payload.data
                for payloads in marker.details.values() for payload in payloads.payloads
            ):
                return False
    return True


async def withdraw_from(pool: asyncpg.Pool, escalation_id: str, run_id: str, point: ResetPoint) -> list[int]:
    """Move aside what tasks from ``point`` on stored, and fold the read model again."""
    async with pool.acquire() as conn, conn.transaction():
        return await eventstore.withdraw_decided_from(conn, escalation_id, run_id, point.started_event_id,
                                                      superseded_by=point.completed_event_id)


async def repair(client: Client, pool: asyncpg.Pool, replayer: Replayer, workflow_id: str,
                 run_id: str | None = None, *, upgrade: bool = True) -> Repaired | None:
    """Repair one run; None when it replays and needs nothing."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    history = await handle.fetch_history()
    if await replays(replayer, history) is None:
        return None
    description = await handle.describe()
    run_id = description.run_id
    if not released_path(history):
        raise NotRepairable(
            f"{workflow_id} records its events in history first; it does not replay, which is a bug to "
            "fix in the code, not something a reset can repair")
    escalation_id = description.raw_description.workflow_execution_info.first_run_id or run_id
    point = await reset_point(replayer, history)
    withdrawn = await withdraw_from(pool, escalation_id, run_id, point)
    response = await client.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
        namespace=client.namespace,
        workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
        reason=f"escalations repair: replay failed after workflow task {point.completed_event_id}",
        workflow_task_finish_event_id=point.completed_event_id,
        request_id=str(uuid.uuid4()),
        reset_reapply_type=ResetReapplyType.RESET_REAPPLY_TYPE_SIGNAL,
    ))
    upgraded = False
    if upgrade:
        reset_run = client.get_workflow_handle(workflow_id, run_id=response.run_id)
        try:
            await reset_run.execute_update("upgrade", UpgradeCommand(by="escalations repair"),
                                           result_type=EscalationState)
            upgraded = True
        except WorkflowUpdateFailedError as err:
            # Reset to its first task, a run takes the current path from the start ("nothing to
            # upgrade"); a resolved one finishes on the path it started on. Else a real failure.
            if "nothing to upgrade" in str(err.cause):
                upgraded = True
            elif "cannot upgrade" not in str(err.cause):
                raise
        except RPCError as err:
            # The run may continue as new in the very task that completed the update, and the
            # server then reports the update aborted: the new run is the proof it went through.
            if "aborted by closing workflow" not in str(err):
                raise
            latest = await client.get_workflow_handle(workflow_id).describe()
            upgraded = latest.run_id != response.run_id
    return Repaired(workflow_id=workflow_id, old_run_id=run_id, new_run_id=response.run_id, reset_point=point,
                    withdrawn=withdrawn, upgraded=upgraded)


async def stuck_runs(client: Client, replayer: Replayer, query: str) -> Sequence[tuple[str, str, str]]:
    """(workflow id, run id, reason) of every matching run that does not replay."""
    stuck = []
    async for execution in client.list_workflows(query):
        history = await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        reason = await replays(replayer, history)
        if reason is not None:
            stuck.append((execution.id, execution.run_id, reason))
    return stuck

"""Starting escalation runs and reading them: live state, projection, fired timers."""

from __future__ import annotations

from typing import Any

import asyncpg
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from escalations.temporal import data_converter
from schemas import keys
from schemas.escalation import EscalationRequest, EscalationState, start_options
from tests.helpers.codec import TEST_CODEC
from tests.helpers.polling import eventually


async def start_escalation(
    client: Client, request: EscalationRequest, task_queue: str
) -> WorkflowHandle[Any, EscalationState]:
    return await client.start_workflow(
        keys.ESCALATION_WORKFLOW, request, task_queue=task_queue, result_type=EscalationState,
        **start_options(request),
    )


async def current_state(handle: WorkflowHandle[Any, Any]) -> EscalationState:
    return await handle.query("state", result_type=EscalationState)


async def projected(pool: asyncpg.Pool, handle: WorkflowHandle[Any, Any], *, timeout: float = 20.0) -> EscalationState:
    """Wait until PostgreSQL holds every event the run has recorded (the projection lags history)."""

    async def caught_up() -> EscalationState:
        state = await current_state(handle)
        stored = await pool.fetchval("SELECT max(seq) FROM escalation_events WHERE escalation_id = $1",
                                     state.escalation_id)
        assert stored == state.last_seq, f"projected up to #{stored}, history holds #{state.last_seq}"
        outbox = await handle.query("outbox")
        assert not any(outbox.get(part) for part in ("events", "intents", "ledger")), "outbox not drained"
        return state

    return await eventually(caught_up, timeout=timeout)


async def fired_timers(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The summaries of the run's timers the server has fired, in order (``"ack deadline tier2 (5s)"``).

    The server fires a timer at its time whether or not a worker runs: this is how a test
    sees that a deadline has passed on the server's clock without sleeping past it.
    """
    started: dict[int, str] = {}
    fired: list[str] = []
    converter = data_converter(TEST_CODEC)  # summaries are payloads: encrypted like the rest
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            summary = event.user_metadata.summary
            started[event.event_id] = (await converter.decode([summary]))[0] if summary.data else ""
        elif event.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
            fired.append(started.get(event.timer_fired_event_attributes.started_event_id, ""))
    return fired

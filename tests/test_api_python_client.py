"""The typed Python client (escalations/client.py, re-exported by starter) as another service uses it."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from escalations.client import live_state, visibility_query
from schemas.escalation import (
    AcknowledgeCommand,
    AddNoteCommand,
    CompletePostmortemCommand,
    EscalateCommand,
    PauseCommand,
    ResolveCommand,
    ResumeCommand,
)
from starter import (
    CommandRejected,
    EscalationAlreadyOpen,
    EscalationClosed,
    EscalationNotFound,
    InvalidRequest,
    acknowledge,
    add_note,
    complete_postmortem,
    escalate,
    get_state,
    pause,
    resolve,
    resume,
    start_escalation,
)
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request


async def test_a_service_drives_an_escalation_with_typed_errors(client, task_queue, start_worker):
    request = blog_request()
    ticket = request.ticket_id
    async with start_worker("fast"):
        handle = await start_escalation(client, request, task_queue=task_queue)
        assert handle.id == f"escalation-{ticket}"
        with pytest.raises(EscalationAlreadyOpen) as already:
            await start_escalation(client, request, task_queue=task_queue)
        assert already.value.workflow_id == handle.id and already.value.run_id == handle.first_execution_run_id

        state = await acknowledge(client, ticket, AcknowledgeCommand(by="dana"))
        assert state.status == "acknowledged" and state.trigger.source == "client"
        with pytest.raises(CommandRejected, match="is acknowledged"):
            await acknowledge(client, ticket, AcknowledgeCommand(by="sam"))
        assert (await escalate(client, ticket, EscalateCommand(by="dana", reason="r"))).path[-1].by == "dana"
        assert (await add_note(client, ticket, AddNoteCommand(author="dana", text="n"))).counts.notes == 1
        assert (await pause(client, ticket, PauseCommand(by="dana", reason="w"))).status == "paused"
        assert (await resume(client, ticket, ResumeCommand(by="dana"))).status != "paused"
        with pytest.raises(ValidationError) as nul:  # Postgres cannot store NUL: the model refuses it
            AddNoteCommand(author="dana", text="\x00")
        assert nul.value.errors()[0]["loc"] == ("text",)
        resolved = await resolve(client, ticket, ResolveCommand(by="dana", root_cause="rc", mitigation="m"))
        assert resolved.status == "resolved"
        final = await complete_postmortem(client, ticket, CompletePostmortemCommand(
            by="dana", summary="s", root_cause="rc", improvements=["i"]))
        assert final.status == "closed"
        assert (await get_state(client, ticket)).status == "closed"  # the completed run's result
        with pytest.raises(EscalationClosed, match=f"escalation {ticket} is closed"):
            await live_state(client, ticket)
        with pytest.raises(EscalationClosed):
            await acknowledge(client, ticket, AcknowledgeCommand(by="sam"))
        with pytest.raises(CommandRejected, match="already completed"):
            await complete_postmortem(client, ticket, CompletePostmortemCommand(
                by="sam", summary="s", root_cause="rc", improvements=["i"]))

        async def listed() -> None:
            found = [w.id async for w in client.list_workflows(
                visibility_query(customer_id="acme", status="closed") + f" AND WorkflowId = '{handle.id}'")]
            assert found == [handle.id]

        await eventually(listed, timeout=15)

    unknown = f"NOPE-{uuid.uuid4().hex[:6]}"
    with pytest.raises(EscalationNotFound, match=f"no escalation for ticket {unknown}"):
        await get_state(client, unknown)
    with pytest.raises(EscalationNotFound):
        await resolve(client, unknown, ResolveCommand(by="x", root_cause="a", mitigation="b"))
    with pytest.raises(EscalationNotFound):
        await complete_postmortem(client, unknown, CompletePostmortemCommand(
            by="x", summary="s", root_cause="r", improvements=["i"]))


def test_visibility_queries_quote_only_slugs():
    assert visibility_query() == "WorkflowType = 'EscalationWorkflow' AND ExecutionStatus != 'ContinuedAsNew'"
    assert visibility_query(status="open", level="tier2").endswith(
        "EscalationStatus = 'open' AND EscalationLevel = 'tier2' AND ExecutionStatus = 'Running'")
    assert "ExecutionStatus = 'Running'" not in visibility_query(status="closed")
    for bad in ("a'b", "a b", "", "x\\y", "é"):
        with pytest.raises(InvalidRequest):
            visibility_query(customer_id=bad)

"""Driving escalations from Python: typed helpers over a ``temporalio`` Client.

Backend services written in Python call these directly instead of the HTTP API;
the API and the ``escalations`` CLI use them too, so every Temporal call (start,
updates, queries, visibility) is written once. Each function takes a Client
connected with ``pydantic_data_converter`` and raises a typed error:

- ``EscalationNotFound``: the ticket has no escalation;
- ``EscalationClosed``: the ticket's escalation has already completed;
- ``CommandRejected``: the workflow's validator refused the command (its message says why);
- ``EscalationAlreadyOpen``: a start for a ticket that has an open escalation;
- ``InvalidRequest``: the policy named by the request is unknown or cannot route it, or a
  text holds a NUL character (Postgres cannot store it);
- ``EscalationNotReady``: the run is still opening (retry shortly).

Example (another service)::

    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from schemas.escalation import AcknowledgeCommand, EscalationRequest
    from starter import acknowledge, start_escalation

    client = await Client.connect("localhost:7233", data_converter=pydantic_data_converter)
    handle = await start_escalation(client, EscalationRequest.model_validate(body),
                                    task_queue="escalations")
    state = await acknowledge(client, "SF-1042", AcknowledgeCommand(by="dana"))
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.policy import PolicySource
from schemas import keys
from schemas.escalation import (
    AcknowledgeCommand,
    AddNoteCommand,
    CompletePostmortemCommand,
    EscalateCommand,
    EscalationRequest,
    EscalationState,
    PauseCommand,
    ResolveCommand,
    ResumeCommand,
    Status,
    TriggerSource,
    postmortem_id_for,
    start_options,
    workflow_id_for,
)
from schemas.policy import Kind, Policy, PolicyError, Priority
from workflows.postmortem import PostmortemStatus
from workflows.routing import RoutingError, entry_point

SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
"""Values a visibility filter accepts: safe inside a single-quoted query literal."""
_SLUG = re.compile(SLUG_PATTERN)
QUERY_TIMEOUT = timedelta(seconds=10)


# -- errors -------------------------------------------------------------------


class EscalationError(Exception):
    """Base of the errors below; ``message`` is one line, fit for an operator."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EscalationNotFound(EscalationError):
    def __init__(self, ticket_id: str, message: str | None = None) -> None:
        super().__init__(message or f"no escalation for ticket {ticket_id}")
        self.ticket_id = ticket_id


class EscalationClosed(EscalationError):
    """The ticket's latest escalation run is no longer running (``status``: how it ended)."""

    def __init__(self, ticket_id: str, status: WorkflowExecutionStatus | None) -> None:
        how = "" if status in (None, WorkflowExecutionStatus.COMPLETED) else f" (run {status.name.lower()})"
        super().__init__(f"escalation {ticket_id} is closed{how}")
        self.ticket_id = ticket_id
        self.status = status


class CommandRejected(EscalationError):
    """The workflow refused the command; the message is the validator's."""


class EscalationAlreadyOpen(EscalationError):
    def __init__(self, ticket_id: str, workflow_id: str, run_id: str | None) -> None:
        super().__init__(f"ticket {ticket_id} already has an open escalation ({workflow_id})")
        self.ticket_id = ticket_id
        self.workflow_id = workflow_id
        self.run_id = run_id


class EscalationNotReady(EscalationError):
    """The run exists but has not finished opening (policy loading); ask again shortly."""


class InvalidRequest(EscalationError):
    """A request that cannot be taken: ``loc`` names the field, ``known`` lists what would work."""

    def __init__(self, message: str, *, loc: tuple[str | int, ...], kind: str,
                 known: list[str] | None = None) -> None:
        super().__init__(message)
        self.loc = loc
        self.kind = kind
        self.known = known or []

    @property
    def field(self) -> str:
        return str(self.loc[0])


# -- starting -----------------------------------------------------------------


def check_request(policies: PolicySource, request: EscalationRequest) -> Policy:
    """Load the request's policy and route it, as the workflow will; raise InvalidRequest."""
    try:
        policy = policies.load(request.policy)
    except PolicyError as err:
        if request.policy is None:
            raise  # the default policy itself is broken: a server problem, not the caller's
        raise InvalidRequest(str(err), loc=("policy",), kind="unknown_policy") from None
    try:
        entry_point(policy, request)
    except RoutingError as err:
        raise InvalidRequest(str(err), loc=("category",), kind="unroutable_category",
                             known=sorted(policy.routes)) from None
    return policy


def with_source(request: EscalationRequest, source: TriggerSource) -> EscalationRequest:
    """The request as opened by ``source`` (api, cli, sweep, client); criterion/detail kept."""
    return request.model_copy(update={"trigger": request.trigger.model_copy(update={"source": source})})


async def start_escalation(
    client: Client,
    request: EscalationRequest,
    *,
    task_queue: str,
    source: TriggerSource = "client",
) -> WorkflowHandle[Any, EscalationState]:
    """Start ``escalation-<ticket_id>``; EscalationAlreadyOpen while one is open for the ticket."""
    request = with_source(request, source)
    try:
        return await client.start_workflow(
            keys.ESCALATION_WORKFLOW,
            request,
            task_queue=task_queue,
            result_type=EscalationState,
            **start_options(request),
        )
    except WorkflowAlreadyStartedError as err:
        raise EscalationAlreadyOpen(request.ticket_id, err.workflow_id, err.run_id) from None


# -- reading ------------------------------------------------------------------


def escalation_handle(client: Client, ticket_id: str) -> WorkflowHandle[Any, EscalationState]:
    """The ticket's latest escalation run (no run id: follows continue-as-new)."""
    return client.get_workflow_handle(workflow_id_for(ticket_id), result_type=EscalationState)


async def describe(client: Client, ticket_id: str) -> WorkflowExecutionDescription:
    try:
        return await escalation_handle(client, ticket_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise EscalationNotFound(ticket_id) from None
        raise


async def live_state(client: Client, ticket_id: str, *, opening_timeout: float = 1.0) -> EscalationState:
    """The running escalation's state (query ``state``); EscalationClosed once it has ended.

    A run that is still opening (loading its policy) is asked again for up to
    ``opening_timeout`` seconds, then EscalationNotReady.
    """
    description = await describe(client, ticket_id)
    if description.status != WorkflowExecutionStatus.RUNNING:
        raise EscalationClosed(ticket_id, description.status)
    handle = client.get_workflow_handle(description.id, run_id=description.run_id,
                                        result_type=EscalationState)
    deadline = time.monotonic() + opening_timeout
    while True:
        try:
            return await handle.query("state", result_type=EscalationState, rpc_timeout=QUERY_TIMEOUT)
        except WorkflowQueryFailedError as err:
            if "still opening" not in str(err):
                raise
            if time.monotonic() >= deadline:
                raise EscalationNotReady(f"escalation {ticket_id} is still opening; ask again shortly") from None
        await asyncio.sleep(0.05)


async def final_state(client: Client, ticket_id: str) -> EscalationState:
    """The state a completed escalation run returned; EscalationClosed if it ended otherwise."""
    description = await describe(client, ticket_id)
    if description.status != WorkflowExecutionStatus.COMPLETED:
        raise EscalationClosed(ticket_id, description.status)
    handle = client.get_workflow_handle(description.id, run_id=description.run_id,
                                        result_type=EscalationState)
    return await handle.result(follow_runs=False)


async def get_state(client: Client, ticket_id: str) -> EscalationState:
    """Live state while running, the run's final state once completed."""
    try:
        return await live_state(client, ticket_id)
    except EscalationClosed:
        return await final_state(client, ticket_id)


# -- commands (workflow updates) ------------------------------------------------


def _failure_message(err: WorkflowUpdateFailedError) -> str:
    cause = err.cause
    return str(getattr(cause, "message", None) or cause)


async def _update(client: Client, ticket_id: str, name: str, command: BaseModel) -> EscalationState:
    handle = escalation_handle(client, ticket_id)
    for attempt in range(2):
        try:
            return await handle.execute_update(name, command, result_type=EscalationState)
        except WorkflowUpdateFailedError as err:
            raise CommandRejected(_failure_message(err)) from None
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            # Either no such workflow or its run has completed: tell which.
            description = await describe(client, ticket_id)
            if description.status != WorkflowExecutionStatus.RUNNING:
                raise EscalationClosed(ticket_id, description.status) from None
            if attempt == 1:
                raise
            # A run just continued as new under us: send it to the new run once.
    raise AssertionError("unreachable")


async def acknowledge(client: Client, ticket_id: str, command: AcknowledgeCommand) -> EscalationState:
    return await _update(client, ticket_id, "acknowledge", command)


async def escalate(client: Client, ticket_id: str, command: EscalateCommand) -> EscalationState:
    return await _update(client, ticket_id, "escalate", command)


async def add_note(client: Client, ticket_id: str, command: AddNoteCommand) -> EscalationState:
    return await _update(client, ticket_id, "add_note", command)


async def pause(client: Client, ticket_id: str, command: PauseCommand) -> EscalationState:
    return await _update(client, ticket_id, "pause", command)


async def resume(client: Client, ticket_id: str, command: ResumeCommand) -> EscalationState:
    return await _update(client, ticket_id, "resume", command)


async def resolve(client: Client, ticket_id: str, command: ResolveCommand) -> EscalationState:
    return await _update(client, ticket_id, "resolve", command)


async def complete_postmortem(
    client: Client, ticket_id: str, command: CompletePostmortemCommand, *, wait: float = 10.0
) -> EscalationState:
    """Complete the postmortem task, then wait up to ``wait`` s for the escalation to close.

    Returns the escalation's final state (the run's result); if it has not closed
    within ``wait`` (notifications still going out), its live state.
    """
    postmortem = client.get_workflow_handle(postmortem_id_for(ticket_id))
    try:
        await postmortem.execute_update("complete", command, result_type=PostmortemStatus)
    except WorkflowUpdateFailedError as err:
        raise CommandRejected(_failure_message(err)) from None
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        raise await _no_open_postmortem(client, ticket_id) from None
    escalation = escalation_handle(client, ticket_id)
    try:
        return await asyncio.wait_for(escalation.result(), timeout=wait)
    except TimeoutError:
        return await live_state(client, ticket_id)


async def _no_open_postmortem(client: Client, ticket_id: str) -> EscalationError:
    """Why ``complete`` found no running postmortem: no escalation, not resolved yet, or done."""
    description = await describe(client, ticket_id)  # EscalationNotFound when there is none
    if description.status == WorkflowExecutionStatus.RUNNING:
        state = await live_state(client, ticket_id)
        if state.status not in ("resolved", "closed"):
            return CommandRejected(
                f"no postmortem is open for {ticket_id}: the escalation is {state.status} (resolve it first)"
            )
        return CommandRejected(f"the postmortem of {ticket_id} is already completed")
    if await postmortem_completed(client, ticket_id):
        return CommandRejected(f"the postmortem of {ticket_id} is already completed")
    return EscalationClosed(ticket_id, description.status)


async def postmortem_completed(client: Client, ticket_id: str) -> bool:
    """Whether the ticket's latest postmortem task has been completed."""
    try:
        description = await client.get_workflow_handle(postmortem_id_for(ticket_id)).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status == WorkflowExecutionStatus.COMPLETED


# -- listing (visibility) -------------------------------------------------------


class EscalationSummary(BaseModel):
    """One escalation run as Temporal visibility lists it (from its search attributes)."""

    workflow_id: str
    run_id: str
    ticket_id: str
    status: str | None
    priority: str | None
    level: str | None
    customer_id: str | None
    category: str | None
    kind: str | None
    sla_breached: bool | None
    next_deadline: datetime | None
    started_at: datetime
    closed_at: datetime | None
    execution_status: str | None


def visibility_query(
    *,
    status: Status | None = None,
    priority: Priority | None = None,
    level: str | None = None,
    customer_id: str | None = None,
    category: str | None = None,
    kind: Kind | None = None,
) -> str:
    """A visibility query over escalation runs; closed ones included unless ``status`` narrows.

    Values must be simple slugs (InvalidRequest otherwise), so quoting them is safe.
    """
    clauses = [f"WorkflowType = '{keys.ESCALATION_WORKFLOW}'", "ExecutionStatus != 'ContinuedAsNew'"]
    filters = [(keys.STATUS, "status", status), (keys.PRIORITY, "priority", priority),
               (keys.LEVEL, "level", level), (keys.CUSTOMER, "customer_id", customer_id),
               (keys.CATEGORY, "category", category), (keys.KIND, "kind", kind)]
    for key, name, value in filters:
        if value is None:
            continue
        if not _SLUG.match(value):
            raise InvalidRequest(f"{name} must match {SLUG_PATTERN}, got {value!r}", loc=(name,),
                                 kind="invalid_filter")
        clauses.append(f"{key.name} = '{value}'")
    if status is not None and status != "closed":
        clauses.append("ExecutionStatus = 'Running'")
    return " AND ".join(clauses)


async def list_escalations(
    client: Client,
    *,
    status: Status | None = None,
    priority: Priority | None = None,
    level: str | None = None,
    customer_id: str | None = None,
    category: str | None = None,
    kind: Kind | None = None,
    limit: int = 100,
) -> list[EscalationSummary]:
    query = visibility_query(status=status, priority=priority, level=level, customer_id=customer_id,
                             category=category, kind=kind)
    items: list[EscalationSummary] = []
    async for execution in client.list_workflows(query, limit=limit, page_size=min(limit, 1000)):
        attrs = execution.typed_search_attributes
        items.append(EscalationSummary(
            workflow_id=execution.id,
            run_id=execution.run_id,
            ticket_id=execution.id.removeprefix("escalation-"),
            status=attrs.get(keys.STATUS),
            priority=attrs.get(keys.PRIORITY),
            level=attrs.get(keys.LEVEL),
            customer_id=attrs.get(keys.CUSTOMER),
            category=attrs.get(keys.CATEGORY),
            kind=attrs.get(keys.KIND),
            sla_breached=attrs.get(keys.BREACHED),
            next_deadline=attrs.get(keys.NEXT_DEADLINE),
            started_at=execution.start_time,
            closed_at=execution.close_time,
            execution_status=execution.status.name.lower() if execution.status else None,
        ))
    return items


def ui_link(ui_url: str | None, namespace: str, workflow_id: str, run_id: str | None = None) -> str | None:
    """Temporal UI page of a run, when the UI's address is known."""
    if not ui_url:
        return None
    link = f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{workflow_id}"
    return f"{link}/{run_id}/history" if run_id else link


__all__ = [
    "CommandRejected", "EscalationAlreadyOpen", "EscalationClosed", "EscalationError",
    "EscalationNotFound", "EscalationNotReady", "EscalationSummary", "InvalidRequest",
    "acknowledge", "add_note", "check_request", "complete_postmortem", "describe", "escalate",
    "escalation_handle", "final_state", "get_state", "list_escalations", "live_state", "pause",
    "resolve", "resume", "start_escalation", "ui_link", "visibility_query",
]

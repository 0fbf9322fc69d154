"""Driving escalations from Python: typed helpers over a ``temporalio`` Client.

Backend services written in Python call these directly instead of the HTTP API;
the API and the ``escalations`` CLI use them too, so every Temporal call (start,
updates, queries, visibility) is written once. Each function takes a Client
connected with the project's data converter (``escalations.temporal.connect``: pydantic
JSON, encrypted with ``ESCALATION_ENCRYPTION_KEYS``) and raises a typed error:

- ``EscalationNotFound``: the ticket has no escalation;
- ``EscalationClosed``: the ticket's escalation has already completed;
- ``CommandRejected``: the workflow's validator refused the command (its message says why);
- ``EscalationAlreadyOpen``: a start for a ticket that has an open escalation;
- ``InvalidRequest``: the policy named by the request is unknown (``known`` lists the set) or
  cannot route it, or a text holds a NUL character (Postgres cannot store it);
- ``EscalationNotReady``: the run is still opening (retry shortly);
- ``TemporalUnavailable``: Temporal refused the connection or is unreachable (retry later);
- ``TemporalTimeout``: Temporal did not answer in time (it may be overloaded or stuck);
- ``WorkerUnavailable``: Temporal answers, but no worker answered the query or update in time.

``via=`` on a start or a command names the calling principal (the API passes
``api:<token name>``, the CLI ``cli:<os user>``); the run records it beside ``by``/``author``.
``update_id=`` on a command is the Temporal update id: a command sent again with the same id
to the same run is not applied twice, the server answers with the first outcome (the API
derives it from the caller's ``Idempotency-Key``).

Every call is bounded (``Timeouts``: ``rpc`` for what Temporal answers itself,
``workflow`` for queries and updates a worker must answer, ``probe`` for telling a
missing worker from a stuck Temporal), so none waits forever on an outage.

Example (another service)::

    from escalations.settings import CodecSettings, temporal_connect_config
    from escalations.temporal import connect
    from schemas.escalation import AcknowledgeCommand, EscalationRequest
    from starter import acknowledge, start_escalation

    client = await connect(temporal_connect_config(), CodecSettings.from_env())
    handle = await start_escalation(client, EscalationRequest.model_validate(body),
                                    task_queue="escalations")
    state = await acknowledge(client, "SF-1042", AcknowledgeCommand(by="dana"))
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from escalations.links import workflow_url
from escalations.policies import PolicySource, UnknownPolicy
from schemas import keys
from schemas.escalation import (
    OPEN_STATUSES,
    TICKET_ID_PATTERN,
    AcknowledgeCommand,
    AddNoteCommand,
    CompletePostmortemCommand,
    EscalateCommand,
    EscalationRequest,
    EscalationState,
    PauseCommand,
    PostmortemStatus,
    ResolveCommand,
    ResumeCommand,
    StatusFilter,
    Trigger,
    TriggerSource,
    UnroutableRequest,
    entry_level,
    postmortem_id_for,
    start_options,
    workflow_id_for,
)
from schemas.policy import Kind, Policy, Priority

C = TypeVar("C", bound=BaseModel)
SLUG_PATTERN = TICKET_ID_PATTERN
"""Values a visibility filter accepts: safe inside a single-quoted query literal."""
_SLUG = re.compile(SLUG_PATTERN)


@dataclass(frozen=True)
class Timeouts:
    """Seconds each kind of Temporal call may take before it fails with a typed error.

    - ``rpc``: a call Temporal answers itself (start, describe, list, a run's result), the
      first connection of a lazily connected client included;
    - ``workflow``: a query or an update, which a worker has to answer;
    - ``probe``: the describe made after a query or update timed out, to tell "no worker"
      (``WorkerUnavailable``) from "Temporal is stuck" (``TemporalTimeout``).
    """

    rpc: float = 10.0
    workflow: float = 30.0
    probe: float = 2.0


DEFAULT_TIMEOUTS = Timeouts()


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


class TemporalUnavailable(EscalationError):
    """Temporal refused the connection, is unreachable, or is shedding load: retry later."""


class TemporalTimeout(EscalationError):
    """Temporal did not answer within the time allowed (frozen, overloaded, or far away)."""


class WorkerUnavailable(EscalationError):
    """Temporal answers, but no worker answered the escalation's query or update in time.

    ``command`` names the update (None for a query). An update that timed out was not
    confirmed, but it may still be applied once a worker picks it up.
    """

    def __init__(self, ticket_id: str, seconds: float, command: str | None = None) -> None:
        if command is None:
            message = (f"no worker is processing escalations right now (escalation {ticket_id} did not "
                       f"answer its state query within {seconds:g}s); retry later")
        else:
            message = (f"no worker is processing escalations right now: {command} on escalation "
                       f"{ticket_id} was not confirmed within {seconds:g}s and may still be applied "
                       "once a worker picks it up; read the escalation before retrying")
        super().__init__(message)
        self.ticket_id = ticket_id
        self.seconds = seconds
        self.command = command


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


# -- bounding and typing Temporal's failures -------------------------------------


def temporal_fault(err: BaseException, what: str, seconds: float | None = None) -> EscalationError | None:
    """The typed error for an SDK failure that means "Temporal is down or slow", else None."""
    within = f" within {seconds:g}s" if seconds is not None else " in time"
    if isinstance(err, RPCError):
        if err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.RESOURCE_EXHAUSTED):
            return TemporalUnavailable(f"Temporal is unavailable ({what}); retry later")
        if err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            return TemporalTimeout(f"Temporal did not answer {what}{within}")
        return None
    if isinstance(err, RPCTimeoutOrCancelledError):
        return TemporalTimeout(f"Temporal did not answer {what}{within}")
    if isinstance(err, RuntimeError) and str(err).startswith("Failed client connect"):
        return TemporalUnavailable(f"cannot connect to Temporal ({what}); retry later")
    if isinstance(err, TimeoutError):
        return TemporalTimeout(f"Temporal did not answer {what}{within}")
    if isinstance(err, ConnectionError):
        return TemporalUnavailable(f"Temporal is unavailable ({what}); retry later")
    return None


class _Bounded:
    """``async with _Bounded("describe", 5):`` at most that long; Temporal's faults typed.

    The SDK turns a cancelled update into ``WorkflowUpdateRPCTimeoutOrCancelledError``;
    when the cancellation came from outside (not from this deadline) it is re-raised
    as the cancellation it was.
    """

    def __init__(self, what: str, seconds: float) -> None:
        self.what = what
        self.seconds = seconds
        self._timeout = asyncio.timeout(seconds)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as expired:
            raise TemporalTimeout(f"Temporal did not answer {self.what} within {self.seconds:g}s") from expired
        if exc is None or isinstance(exc, EscalationError):
            return False
        if (isinstance(exc, RPCTimeoutOrCancelledError) and isinstance(exc.__cause__, asyncio.CancelledError)
                and not self._timeout.expired()):
            raise asyncio.CancelledError() from exc
        typed = temporal_fault(exc, self.what, self.seconds)
        if typed is not None:
            raise typed from exc
        return False


def _rpc(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


async def _worker_or_temporal(client: Client, ticket_id: str, timed_out: TemporalTimeout, timeouts: Timeouts,
                              command: str | None) -> EscalationError:
    """A query or update got no answer in time: blame the worker if Temporal itself answers a
    describe within ``timeouts.probe``, else Temporal (``timed_out``, or unavailable)."""
    try:
        async with _Bounded("a describe", timeouts.probe):
            description = await escalation_handle(client, ticket_id).describe(rpc_timeout=_rpc(timeouts.probe))
    except TemporalTimeout:
        if command is None:
            return timed_out
        return TemporalTimeout(f"{timed_out.message}; {command} may still be applied: read the escalation "
                               "before retrying")
    except TemporalUnavailable as err:
        return err
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return EscalationNotFound(ticket_id)
        raise
    if description.status != WorkflowExecutionStatus.RUNNING:
        return EscalationClosed(ticket_id, description.status)
    return WorkerUnavailable(ticket_id, timeouts.workflow, command)


# -- starting -----------------------------------------------------------------


def check_request(policies: PolicySource, request: EscalationRequest) -> Policy:
    """Load the request's policy and route it, as the workflow will; raise InvalidRequest."""
    try:
        policy = policies.load(request.policy)
    except UnknownPolicy as err:
        raise InvalidRequest(str(err), loc=("policy",), kind="unknown_policy", known=err.known) from None
    try:
        entry_level(policy, request)
    except UnroutableRequest as err:
        raise InvalidRequest(str(err), loc=("category",), kind="unroutable_category",
                             known=sorted(policy.routes)) from None
    return policy


def with_source(request: EscalationRequest, source: TriggerSource, via: str | None = None) -> EscalationRequest:
    """The request as opened by ``source`` (api, cli, sweep, client) and principal ``via``.

    The API and the CLI open with ``{source, via}`` only: a criterion or detail is the sweep's
    (or a trusted Python client's) to set, never their caller's."""
    if source in ("api", "cli"):
        trigger = Trigger(source=source, via=via)
    else:
        trigger = request.trigger.model_copy(update={"source": source, **({"via": via} if via else {})})
    return request.model_copy(update={"trigger": trigger})


async def start_escalation(
    client: Client,
    request: EscalationRequest,
    *,
    task_queue: str,
    source: TriggerSource | None = "client",
    via: str | None = None,
    memo: dict[str, Any] | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> WorkflowHandle[Any, EscalationState]:
    """Start ``escalation-<ticket_id>``; EscalationAlreadyOpen while one is open for the ticket.

    The one way every starter opens an escalation (API, CLI, demo, sweep, benchmarks, tests):
    ids, summary, details and timeouts from ``schemas.escalation.start_options``. ``source``
    None keeps the request's own trigger (the sweep sets its rule and detail); ``via`` is the
    calling principal (``api:<token name>``, ``cli:<user>``), recorded in the trigger."""
    if source is not None:
        request = with_source(request, source, via)
    try:
        async with _Bounded("the start", timeouts.rpc):
            return await client.start_workflow(
                keys.ESCALATION_WORKFLOW,
                request,
                task_queue=task_queue,
                result_type=EscalationState,
                rpc_timeout=_rpc(timeouts.rpc),
                memo=memo,
                **start_options(request),
            )
    except WorkflowAlreadyStartedError as err:
        raise EscalationAlreadyOpen(request.ticket_id, err.workflow_id, err.run_id) from None


# -- reading ------------------------------------------------------------------


def escalation_handle(client: Client, ticket_id: str) -> WorkflowHandle[Any, EscalationState]:
    """The ticket's latest escalation run (no run id: follows continue-as-new)."""
    return client.get_workflow_handle(workflow_id_for(ticket_id), result_type=EscalationState)


async def describe(client: Client, ticket_id: str, *, timeouts: Timeouts = DEFAULT_TIMEOUTS
                   ) -> WorkflowExecutionDescription:
    try:
        async with _Bounded("a describe", timeouts.rpc):
            return await escalation_handle(client, ticket_id).describe(rpc_timeout=_rpc(timeouts.rpc))
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise EscalationNotFound(ticket_id) from None
        raise


async def live_state(client: Client, ticket_id: str, *, opening_timeout: float = 1.0,
                     timeouts: Timeouts = DEFAULT_TIMEOUTS) -> EscalationState:
    """The running escalation's state (query ``state``); EscalationClosed once it has ended.

    A run that is still opening (loading its policy) is asked again for up to
    ``opening_timeout`` seconds, then EscalationNotReady. A query no worker answers
    within ``timeouts.workflow`` raises WorkerUnavailable.
    """
    description = await describe(client, ticket_id, timeouts=timeouts)
    if description.status != WorkflowExecutionStatus.RUNNING:
        raise EscalationClosed(ticket_id, description.status)
    handle = client.get_workflow_handle(description.id, run_id=description.run_id,
                                        result_type=EscalationState)
    deadline = time.monotonic() + opening_timeout
    while True:
        try:
            async with _Bounded("the state query", timeouts.workflow):
                return await handle.query("state", result_type=EscalationState,
                                          rpc_timeout=_rpc(timeouts.workflow))
        except TemporalTimeout as timed_out:
            raise await _worker_or_temporal(client, ticket_id, timed_out, timeouts, None) from timed_out
        except WorkflowQueryFailedError as err:
            if "still opening" not in str(err):
                raise
            if time.monotonic() >= deadline:
                raise EscalationNotReady(f"escalation {ticket_id} is still opening; ask again shortly") from None
        await asyncio.sleep(0.05)


async def final_state(client: Client, ticket_id: str, *, timeouts: Timeouts = DEFAULT_TIMEOUTS
                      ) -> EscalationState:
    """The state a completed escalation run returned; EscalationClosed if it ended otherwise."""
    description = await describe(client, ticket_id, timeouts=timeouts)
    if description.status != WorkflowExecutionStatus.COMPLETED:
        raise EscalationClosed(ticket_id, description.status)
    handle = client.get_workflow_handle(description.id, run_id=description.run_id,
                                        result_type=EscalationState)
    async with _Bounded("the run's result", timeouts.rpc):
        return await handle.result(follow_runs=False, rpc_timeout=_rpc(timeouts.rpc))


RecordedState = Callable[[str], Awaitable[EscalationState | None]]
"""The read model's latest escalation of a ticket (``escalations.db.readmodel.latest_escalation``)."""


async def get_state(client: Client, ticket_id: str, *, recorded: RecordedState | None = None,
                    opening_timeout: float = 1.0, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> EscalationState:
    """The state of a ticket's latest escalation: the one answer the API, the CLI and services use.

    Live (query ``state``) while the run is running; once it has ended, the read model's row
    when ``recorded`` is given (a run that failed or was terminated shows as such even before
    housekeeping records it), else the state the run returned. EscalationNotFound if none.
    """
    try:
        return await live_state(client, ticket_id, opening_timeout=opening_timeout, timeouts=timeouts)
    except EscalationClosed as closed:
        state = await recorded(ticket_id) if recorded is not None else None
        if state is None:
            if closed.status != WorkflowExecutionStatus.COMPLETED and recorded is not None:
                raise EscalationNotFound(ticket_id, f"no escalation recorded for ticket {ticket_id} "
                                                    f"({closed.message})") from None
            return await final_state(client, ticket_id, timeouts=timeouts)
        ended = ended_status(closed.status)
        if ended is not None and state.status in OPEN_STATUSES:
            state = state.model_copy(update={"status": ended})
        return state


# -- commands (workflow updates) ------------------------------------------------


def _failure_message(err: WorkflowUpdateFailedError) -> str:
    cause = err.cause
    return str(getattr(cause, "message", None) or cause)


def _as(command: C, via: str | None) -> C:
    """The command as sent by principal ``via`` (None: as it is)."""
    return command if via is None else command.model_copy(update={"via": via})


async def _update(client: Client, ticket_id: str, name: str, command: BaseModel,
                  timeouts: Timeouts = DEFAULT_TIMEOUTS, update_id: str | None = None) -> EscalationState:
    handle = escalation_handle(client, ticket_id)
    for attempt in range(2):
        try:
            async with _Bounded(f"the {name} update", timeouts.workflow):
                return await handle.execute_update(name, command, id=update_id, result_type=EscalationState,
                                                   rpc_timeout=_rpc(timeouts.workflow))
        except WorkflowUpdateFailedError as err:
            raise CommandRejected(_failure_message(err)) from None
        except TemporalTimeout as timed_out:
            raise await _worker_or_temporal(client, ticket_id, timed_out, timeouts, name) from timed_out
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            # Either no such workflow or its run has completed: tell which.
            description = await describe(client, ticket_id, timeouts=timeouts)
            if description.status != WorkflowExecutionStatus.RUNNING:
                raise EscalationClosed(ticket_id, description.status) from None
            if attempt == 1:
                raise
            # A run just continued as new under us: send it to the new run once.
    raise AssertionError("unreachable")


async def acknowledge(client: Client, ticket_id: str, command: AcknowledgeCommand, *,
                      timeouts: Timeouts = DEFAULT_TIMEOUTS, via: str | None = None,
                      update_id: str | None = None) -> EscalationState:
    return await _update(client, ticket_id, "acknowledge", _as(command, via), timeouts, update_id)


async def escalate(client: Client, ticket_id: str, command: EscalateCommand, *,
                   timeouts: Timeouts = DEFAULT_TIMEOUTS, via: str | None = None,
                   update_id: str | None = None) -> EscalationState:
    return await _update(client, ticket_id, "escalate", _as(command, via), timeouts, update_id)


async def add_note(client: Client, ticket_id: str, command: AddNoteCommand, *,
                   timeouts: Timeouts = DEFAULT_TIMEOUTS, via: str | None = None,
                   update_id: str | None = None) -> EscalationState:
    return await _update(client, ticket_id, "add_note", _as(command, via), timeouts, update_id)


async def pause(client: Client, ticket_id: str, command: PauseCommand, *,
                timeouts: Timeouts = DEFAULT_TIMEOUTS, via: str | None = None,
                update_id: str | None = None) -> EscalationState:
    return await _update(client, ticket_id, "pause", _as(command, via), timeouts, update_id)


async def resume(client: Client, ticket_id: str, command: ResumeCommand, *,
                 timeouts: Timeouts = DEFAULT_TIMEOUTS, via: str | None = None,
                 update_id: str | None = None) -> EscalationState:
    return await _update(client, ticket_id, "resume", _as(command, via), timeouts, update_id)


async def resolve(client: Client, ticket_id: str, command: ResolveCommand, *,
                  timeouts: Timeouts = DEFAULT_TIMEOUTS, via: str | None = None,
                  update_id: str | None = None) -> EscalationState:
    return await _update(client, ticket_id, "resolve", _as(command, via), timeouts, update_id)


async def complete_postmortem(
    client: Client, ticket_id: str, command: CompletePostmortemCommand, *, wait: float = 10.0,
    timeouts: Timeouts = DEFAULT_TIMEOUTS, via: str | None = None, update_id: str | None = None,
) -> EscalationState:
    """Complete the postmortem task, then wait up to ``wait`` s for the escalation to close.

    Returns the escalation's final state (the run's result); if it has not closed
    within ``wait`` (notifications still going out), its live state.
    """
    postmortem = client.get_workflow_handle(postmortem_id_for(ticket_id))
    command = _as(command, via)
    try:
        async with _Bounded("the complete update", timeouts.workflow):
            await postmortem.execute_update("complete", command, id=update_id, result_type=PostmortemStatus,
                                            rpc_timeout=_rpc(timeouts.workflow))
    except WorkflowUpdateFailedError as err:
        raise CommandRejected(_failure_message(err)) from None
    except TemporalTimeout as timed_out:
        raise await _worker_or_temporal(client, ticket_id, timed_out, timeouts,
                                        "complete (postmortem)") from timed_out
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        raise await _no_open_postmortem(client, ticket_id, timeouts) from None
    escalation = escalation_handle(client, ticket_id)
    try:
        async with asyncio.timeout(wait):
            return await escalation.result()
    except TimeoutError:
        return await live_state(client, ticket_id, timeouts=timeouts)
    except Exception as err:
        typed = temporal_fault(err, "the escalation's result")
        if typed is None:
            raise
        raise typed from err


async def _no_open_postmortem(client: Client, ticket_id: str, timeouts: Timeouts) -> EscalationError:
    """Why ``complete`` found no running postmortem: no escalation, not resolved yet, or done."""
    description = await describe(client, ticket_id, timeouts=timeouts)  # EscalationNotFound when there is none
    if description.status == WorkflowExecutionStatus.RUNNING:
        state = await live_state(client, ticket_id, timeouts=timeouts)
        if state.status not in ("resolved", "closed"):
            return CommandRejected(
                f"no postmortem is open for {ticket_id}: the escalation is {state.status} (resolve it first)"
            )
        return CommandRejected(f"the postmortem of {ticket_id} is already completed")
    if await postmortem_completed(client, ticket_id, timeouts=timeouts):
        return CommandRejected(f"the postmortem of {ticket_id} is already completed")
    return EscalationClosed(ticket_id, description.status)


async def postmortem_completed(client: Client, ticket_id: str, *, timeouts: Timeouts = DEFAULT_TIMEOUTS
                               ) -> bool:
    """Whether the ticket's latest postmortem task has been completed."""
    try:
        async with _Bounded("a describe", timeouts.rpc):
            description = await client.get_workflow_handle(postmortem_id_for(ticket_id)).describe(
                rpc_timeout=_rpc(timeouts.rpc))
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return description.status == WorkflowExecutionStatus.COMPLETED


# -- listing (visibility) -------------------------------------------------------


class EscalationSummary(BaseModel):
    """One escalation run as Temporal visibility lists it (from its search attributes).

    ``status`` is the escalation's status, ``failed`` or ``terminated`` for a run that ended
    without closing (None only for a run whose first workflow task has not set it yet)."""

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


@dataclass(frozen=True)
class EscalationPage:
    """One page of a listing: ``next_page_token`` is Temporal's own (None on the last page)."""

    items: list[EscalationSummary]
    next_page_token: bytes | None


# ``--status``/``?status=`` as a visibility query, in one place. The run's own status is the
# EscalationStatus search attribute while it runs; a run that ended without closing keeps its
# last one, so failed and terminated are Temporal's execution statuses.
_RUNNING = "ExecutionStatus = 'Running'"
_ENDED_AS: dict[str, str] = {
    "failed": "ExecutionStatus IN ('Failed', 'TimedOut')",
    "terminated": "ExecutionStatus IN ('Terminated', 'Canceled')",
}


def visibility_query(
    *,
    status: StatusFilter | None = None,
    priority: Priority | None = None,
    level: str | None = None,
    customer_id: str | None = None,
    category: str | None = None,
    kind: Kind | None = None,
) -> str:
    """A visibility query over escalation runs; closed ones included unless ``status`` narrows.

    ``status``: a state's status (``open`` means the state's ``open``: not yet acknowledged), or
    ``active`` (every run still going: open, acknowledged, paused, resolved).
    Values must be simple slugs (InvalidRequest otherwise), so quoting them is safe.
    """
    clauses = [f"WorkflowType = '{keys.ESCALATION_WORKFLOW}'", "ExecutionStatus != 'ContinuedAsNew'"]
    by_attribute = status if status not in (None, "active", *_ENDED_AS) else None
    filters = [(keys.STATUS, "status", by_attribute), (keys.PRIORITY, "priority", priority),
               (keys.LEVEL, "level", level), (keys.CUSTOMER, "customer_id", customer_id),
               (keys.CATEGORY, "category", category), (keys.KIND, "kind", kind)]
    for key, name, value in filters:
        if value is None:
            continue
        if not _SLUG.match(value):
            raise InvalidRequest(f"{name} must match {SLUG_PATTERN}, got {value!r}", loc=(name,),
                                 kind="invalid_filter")
        clauses.append(f"{key.name} = '{value}'")
    if status in _ENDED_AS:
        clauses.append(_ENDED_AS[status])
    elif status is not None and status != "closed":
        clauses.append(_RUNNING)
    return " AND ".join(clauses)


async def list_escalations(
    client: Client,
    *,
    status: StatusFilter | None = None,
    priority: Priority | None = None,
    level: str | None = None,
    customer_id: str | None = None,
    category: str | None = None,
    kind: Kind | None = None,
    limit: int = 100,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> list[EscalationSummary]:
    query = visibility_query(status=status, priority=priority, level=level, customer_id=customer_id,
                             category=category, kind=kind)
    async with _Bounded("the list", timeouts.rpc):
        return await _listed(client, query, limit, timeouts)


async def list_escalations_page(
    client: Client,
    *,
    status: StatusFilter | None = None,
    priority: Priority | None = None,
    level: str | None = None,
    customer_id: str | None = None,
    category: str | None = None,
    kind: Kind | None = None,
    page_size: int = 100,
    page_token: bytes | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
) -> EscalationPage:
    """One page of ``page_size`` (at most) escalation runs, newest first, from ``page_token``
    (None: the first page). Pass the page's ``next_page_token`` back with the same filters for
    the next one; None means this was the last. A page can be empty only when it is the last."""
    query = visibility_query(status=status, priority=priority, level=level, customer_id=customer_id,
                             category=category, kind=kind)
    listing = client.list_workflows(query, page_size=page_size, next_page_token=page_token,
                                    rpc_timeout=_rpc(timeouts.rpc))
    async with _Bounded("the list", timeouts.rpc):
        await listing.fetch_next_page()
    return EscalationPage(items=[_summary(execution) for execution in listing.current_page or ()],
                          next_page_token=listing.next_page_token)


async def _listed(client: Client, query: str, limit: int, timeouts: Timeouts) -> list[EscalationSummary]:
    return [_summary(execution) async for execution in client.list_workflows(
        query, limit=limit, page_size=min(limit, 1000), rpc_timeout=_rpc(timeouts.rpc))]


def _summary(execution: WorkflowExecution) -> EscalationSummary:
    attrs = execution.typed_search_attributes
    return EscalationSummary(
        workflow_id=execution.id,
        run_id=execution.run_id,
        ticket_id=execution.id.removeprefix("escalation-"),
        status=ended_status(execution.status) or attrs.get(keys.STATUS),
        priority=attrs.get(keys.PRIORITY),
        level=attrs.get(keys.LEVEL),
        customer_id=attrs.get(keys.CUSTOMER),
        category=attrs.get(keys.CATEGORY),
        kind=attrs.get(keys.KIND),
        sla_breached=attrs.get(keys.BREACHED),
        next_deadline=attrs.get(keys.NEXT_DEADLINE),
        started_at=execution.start_time,
        closed_at=execution.close_time,
    )


def ended_status(execution: WorkflowExecutionStatus | None) -> str | None:
    """``failed`` or ``terminated`` for a run that ended without closing; None otherwise."""
    if execution in (WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TIMED_OUT):
        return "failed"
    if execution in (WorkflowExecutionStatus.TERMINATED, WorkflowExecutionStatus.CANCELED):
        return "terminated"
    return None


ui_link = workflow_url  # Temporal UI page of a run (escalations/links.py)


__all__ = [
    "DEFAULT_TIMEOUTS", "CommandRejected", "EscalationAlreadyOpen", "EscalationClosed", "EscalationError",
    "EscalationNotFound", "EscalationNotReady", "EscalationPage", "EscalationSummary", "InvalidRequest",
    "TemporalTimeout", "TemporalUnavailable", "Timeouts", "WorkerUnavailable",
    "acknowledge", "add_note", "check_request", "complete_postmortem", "describe", "escalate",
    "escalation_handle", "final_state", "get_state", "list_escalations", "list_escalations_page", "live_state",
    "pause", "resolve", "resume", "start_escalation", "temporal_fault", "ui_link", "visibility_query",
]

"""``/escalations``: start, read, list, and act on escalations (workflow updates).

Scopes: ``read`` for GET, ``start`` for POST /escalations, ``act`` for the commands. The calling
principal (``api:<token name>``) is recorded by every start and command (``via``); a body that
sets ``via`` or ``trigger`` itself is refused.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from temporalio.client import Client

from escalations import client as escalations
from escalations.api import idempotency
from escalations.api.deps import (
    ACT,
    READ,
    START,
    Principal,
    get_client,
    get_policies,
    get_pool,
    get_settings,
    get_timeouts,
    refuse_server_set,
)
from escalations.api.responses import problems
from escalations.db import readmodel
from escalations.policies import PolicySource
from escalations.settings import ApiSettings
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
)
from schemas.policy import Kind, Priority

router = APIRouter(prefix="/escalations", tags=["escalations"])

START_SCOPE = "POST /escalations"
TicketIdPath = Annotated[str, Path(pattern=escalations.SLUG_PATTERN, description="The ticket id, e.g. SF-1042",
                                   examples=["SF-1042"])]
SlugQuery = Annotated[str | None, Query(pattern=escalations.SLUG_PATTERN)]
ClientDep = Annotated[Client, Depends(get_client)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]
TimeoutsDep = Annotated[escalations.Timeouts, Depends(get_timeouts)]
# The scope each route needs; the dependency answers the calling principal.
Starter = Annotated[Principal, Depends(START)]
Actor = Annotated[Principal, Depends(ACT)]

BLOG_EXAMPLE = EscalationRequest.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]


class StartResponse(BaseModel):
    workflow_id: str = Field(examples=["escalation-SF-1042"])
    run_id: str = Field(description="The run's id; also the escalation_id of a new escalation")
    ticket_id: str = Field(examples=["SF-1042"])
    ui_url: str | None = Field(default=None, description="The run in Temporal UI, when its address is configured")


class EscalationList(BaseModel):
    items: list[escalations.EscalationSummary]
    count: int


def _now() -> datetime:
    return datetime.now(timezone.utc)


@router.post(
    "",
    status_code=201,
    response_model=StartResponse,
    summary="Start an escalation",
    responses=problems(400, 401, 403, 409, 413, 422, 503, 504),
)
async def start_escalation(
    principal: Starter,
    body: Annotated[
        EscalationRequest,
        Body(openapi_examples={"salesforce-sync": {
            "summary": "The blog's Salesforce-sync escalation (P1, priority)", "value": BLOG_EXAMPLE}}),
    ],
    response: Response,
    client: ClientDep,
    pool: PoolDep,
    settings: SettingsDep,
    timeouts: TimeoutsDep,
    policies: Annotated[PolicySource, Depends(get_policies)],
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", pattern=idempotency.KEY_PATTERN,
               description="Retry-safe starts: the same key and body replay the first 201"),
    ] = None,
) -> Any:
    """Open ``escalation-<ticket_id>``. 409 names the open escalation when the ticket has one.

    Scope ``start``. The trigger is ``{source: api, via: api:<token name>}``; a body that sets
    ``trigger`` is refused (422)."""
    refuse_server_set(body)
    escalations.check_request(policies, body)
    digest = idempotency.request_digest(body)
    caller = principal.via
    if idempotency_key is not None:
        replay = await idempotency.claim(pool, caller, START_SCOPE, idempotency_key, digest, _now(),
                                         settings.idempotency_ttl)
        if replay is not None:
            return JSONResponse(replay.body, status_code=replay.status_code,
                                headers={"Location": f"/escalations/{body.ticket_id}",
                                         "Idempotent-Replayed": "true"})
    try:
        handle = await escalations.start_escalation(client, body, task_queue=settings.task_queue, source="api",
                                                    via=caller, timeouts=timeouts)
    except Exception:
        if idempotency_key is not None:
            await idempotency.release(pool, caller, START_SCOPE, idempotency_key)
        raise
    run_id = handle.first_execution_run_id or handle.result_run_id or ""
    result = StartResponse(
        workflow_id=handle.id, run_id=run_id, ticket_id=body.ticket_id,
        ui_url=escalations.ui_link(settings.ui_url, settings.namespace, handle.id, run_id),
    )
    if idempotency_key is not None:
        await idempotency.complete(pool, caller, START_SCOPE, idempotency_key, 201, result.model_dump(mode="json"),
                                   _now())
    response.headers["Location"] = f"/escalations/{body.ticket_id}"
    return result


@router.get(
    "",
    response_model=EscalationList,
    summary="List escalations (Temporal visibility)",
    responses=problems(401, 403, 422, 503, 504),
    dependencies=[Depends(READ)],
)
async def list_escalations(
    client: ClientDep,
    timeouts: TimeoutsDep,
    status: Annotated[Status | None, Query(description="Only this status (running runs, or closed ones)")] = None,
    priority: Annotated[Priority | None, Query()] = None,
    level: SlugQuery = None,
    customer_id: SlugQuery = None,
    category: SlugQuery = None,
    kind: Annotated[Kind | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EscalationList:
    """Escalation runs with their search attributes, newest first; closed ones included unless
    ``status`` narrows the list."""
    items = await escalations.list_escalations(
        client, status=status, priority=priority, level=level, customer_id=customer_id,
        category=category, kind=kind, limit=limit, timeouts=timeouts,
    )
    return EscalationList(items=items, count=len(items))


@router.get(
    "/{ticket_id}",
    response_model=EscalationState,
    summary="The ticket's latest escalation",
    responses=problems(401, 403, 404, 422, 503, 504),
    dependencies=[Depends(READ)],
)
async def get_escalation(ticket_id: TicketIdPath, client: ClientDep, pool: PoolDep,
                         timeouts: TimeoutsDep) -> EscalationState:
    """Live state (query ``state``) while running; the read model once closed."""

    async def recorded(ticket: str) -> EscalationState | None:
        async with pool.acquire() as conn:
            return await readmodel.latest_escalation(conn, ticket)

    return await escalations.get_state(client, ticket_id, recorded=recorded, timeouts=timeouts)


COMMAND_RESPONSES = problems(400, 401, 403, 404, 409, 413, 422, 503, 504)


@router.post("/{ticket_id}/acknowledge", response_model=EscalationState, summary="Acknowledge",
             responses=COMMAND_RESPONSES)
async def acknowledge(ticket_id: TicketIdPath, command: AcknowledgeCommand, principal: Actor, client: ClientDep,
                      timeouts: TimeoutsDep) -> EscalationState:
    """Update ``acknowledge``: stops the current level's acknowledgement clock."""
    refuse_server_set(command)
    return await escalations.acknowledge(client, ticket_id, command, timeouts=timeouts, via=principal.via)


@router.post("/{ticket_id}/escalate", response_model=EscalationState, summary="Escalate",
             responses=COMMAND_RESPONSES)
async def escalate(ticket_id: TicketIdPath, command: EscalateCommand, principal: Actor, client: ClientDep,
                   timeouts: TimeoutsDep) -> EscalationState:
    """Update ``escalate``: to the next level, or to ``to_level``."""
    refuse_server_set(command)
    return await escalations.escalate(client, ticket_id, command, timeouts=timeouts, via=principal.via)


@router.post("/{ticket_id}/notes", response_model=EscalationState, summary="Add a note",
             responses=COMMAND_RESPONSES)
async def add_note(ticket_id: TicketIdPath, command: AddNoteCommand, principal: Actor, client: ClientDep,
                   timeouts: TimeoutsDep) -> EscalationState:
    """Update ``add_note``; a customer-visible note restarts the customer update cadence."""
    refuse_server_set(command)
    return await escalations.add_note(client, ticket_id, command, timeouts=timeouts, via=principal.via)


@router.post("/{ticket_id}/pause", response_model=EscalationState, summary="Pause (waiting on customer)",
             responses=COMMAND_RESPONSES)
async def pause(ticket_id: TicketIdPath, command: PauseCommand, principal: Actor, client: ClientDep,
                timeouts: TimeoutsDep) -> EscalationState:
    """Update ``pause``: stops the resolution and cadence clocks, keeping their budget."""
    refuse_server_set(command)
    return await escalations.pause(client, ticket_id, command, timeouts=timeouts, via=principal.via)


@router.post("/{ticket_id}/resume", response_model=EscalationState, summary="Resume",
             responses=COMMAND_RESPONSES)
async def resume(ticket_id: TicketIdPath, command: ResumeCommand, principal: Actor, client: ClientDep,
                 timeouts: TimeoutsDep) -> EscalationState:
    """Update ``resume``."""
    refuse_server_set(command)
    return await escalations.resume(client, ticket_id, command, timeouts=timeouts, via=principal.via)


@router.post("/{ticket_id}/resolve", response_model=EscalationState, summary="Resolve",
             responses=COMMAND_RESPONSES)
async def resolve(ticket_id: TicketIdPath, command: ResolveCommand, principal: Actor, client: ClientDep,
                  timeouts: TimeoutsDep) -> EscalationState:
    """Update ``resolve``: tells the customer, requests CSAT, opens the postmortem task."""
    refuse_server_set(command)
    return await escalations.resolve(client, ticket_id, command, timeouts=timeouts, via=principal.via)


@router.post("/{ticket_id}/postmortem", response_model=EscalationState, summary="Complete the postmortem",
             responses=COMMAND_RESPONSES)
async def complete_postmortem(ticket_id: TicketIdPath, command: CompletePostmortemCommand, principal: Actor,
                              client: ClientDep, settings: SettingsDep, timeouts: TimeoutsDep) -> EscalationState:
    """Update ``complete`` on ``postmortem-<ticket_id>``; answers the closed escalation's final state
    (or its live state if it has not closed within the wait)."""
    refuse_server_set(command)
    return await escalations.complete_postmortem(client, ticket_id, command, wait=settings.postmortem_wait,
                                                 timeouts=timeouts, via=principal.via)

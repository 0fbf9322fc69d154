"""``/escalations``: start, read, list, and act on escalations (workflow updates); every
escalation of a ticket (``/escalations/{ticket_id}/history``) and one of them by its id
(``/escalation-runs/{escalation_id}``), from the read model.

Scopes: ``read`` for GET, ``start`` for POST /escalations, ``act`` for the commands. The calling
principal (``api:<token name>``) is recorded by every start and command (``via``); a body that
sets ``via`` or ``trigger`` itself is refused. Starts and commands take an ``Idempotency-Key``
(``escalations.api.idempotency``); the list pages with opaque tokens (``escalations.api.pagination``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Annotated, Any
from urllib.parse import urlencode

import asyncpg
from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from escalations import client as escalations
from escalations.api import idempotency, pagination
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
from escalations.api.problems import ProblemError
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
    StatusFilter,
)
from schemas.policy import Kind, Priority
from schemas.runs import EscalationHistory

router = APIRouter(prefix="/escalations", tags=["escalations"])
runs_router = APIRouter(prefix="/escalation-runs", tags=["escalations"])

START_SCOPE = idempotency.START_SCOPE
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
CommandKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", pattern=idempotency.KEY_PATTERN,
           description="Retry-safe commands: the same key and body from the same token replay the first 200 "
                       "(Idempotent-Replayed: true); the same key with another command, ticket or body is a 422"),
]
EscalationIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
                                       description="An escalation_id (the run chain's first run id)")]

BLOG_EXAMPLE = EscalationRequest.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]


class StartResponse(BaseModel):
    workflow_id: str = Field(examples=["escalation-SF-1042"])
    run_id: str = Field(description="The run's id; also the escalation_id of a new escalation")
    ticket_id: str = Field(examples=["SF-1042"])
    ui_url: str | None = Field(default=None, description="The run in Temporal UI, when its address is configured")


class EscalationList(BaseModel):
    items: list[escalations.EscalationSummary]
    next_page_token: str | None = Field(
        description="Pass it back as page_token, with the same filters, for the next page; null on the last page")


def _now() -> datetime:
    return datetime.now(timezone.utc)


@router.post(
    "",
    status_code=201,
    response_model=StartResponse,
    summary="Start an escalation",
    operation_id="startEscalation",
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
    summary="List escalations (Temporal visibility), a page at a time",
    operation_id="listEscalations",
    responses=problems(401, 403, 422, 503, 504),
    dependencies=[Depends(READ)],
)
async def list_escalations(
    request: Request,
    response: Response,
    client: ClientDep,
    timeouts: TimeoutsDep,
    status: Annotated[StatusFilter | None, Query(description="Only this status; `active`: every run not ended")] = None,
    priority: Annotated[Priority | None, Query()] = None,
    level: SlugQuery = None,
    customer_id: SlugQuery = None,
    category: SlugQuery = None,
    kind: Annotated[Kind | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size")] = 100,
    page_token: Annotated[str | None, Query(
        min_length=1, max_length=4096, pattern=r"^[A-Za-z0-9_-]+$",
        description="next_page_token of the previous page (opaque; only good with the same filters)")] = None,
) -> EscalationList:
    """Escalation runs with their search attributes, newest first; closed ones included unless
    ``status`` narrows the list. Up to ``limit`` per page; the next page's URL is also in the
    ``Link`` header (``rel="next"``). There is no total: visibility is a stream, not a count."""
    query = escalations.visibility_query(status=status, priority=priority, level=level, customer_id=customer_id,
                                         category=category, kind=kind)
    inner = pagination.decode(page_token, query) if page_token is not None else None
    try:
        page = await escalations.list_escalations_page(
            client, status=status, priority=priority, level=level, customer_id=customer_id, category=category,
            kind=kind, page_size=limit, page_token=inner, timeouts=timeouts,
        )
    except RPCError as err:
        # Visibility answers a token it cannot read with INVALID_ARGUMENT or, for some stores, UNKNOWN.
        if inner is not None and err.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.UNKNOWN):
            raise pagination.invalid("Temporal refused page_token; start again without it") from None
        raise
    next_token = pagination.encode(page.next_page_token, query) if page.next_page_token else None
    if next_token is not None:
        params = {**request.query_params, "page_token": next_token}
        response.headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return EscalationList(items=page.items, next_page_token=next_token)


@router.get(
    "/{ticket_id}",
    response_model=EscalationState,
    summary="The ticket's latest escalation",
    operation_id="getEscalation",
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


@router.get(
    "/{ticket_id}/history",
    response_model=EscalationHistory,
    summary="Every escalation of the ticket (read model)",
    operation_id="getEscalationHistory",
    responses=problems(401, 403, 404, 422, 503, 504),
    dependencies=[Depends(READ)],
)
async def get_escalation_history(ticket_id: TicketIdPath, pool: PoolDep) -> EscalationHistory:
    """Each escalation the ticket has had, newest first, as the read model records it: its
    ``escalation_id`` (for ``GET /escalation-runs/{escalation_id}``), status, level, owner, when it
    opened, was acknowledged, resolved and closed, and whether it breached. A just-started
    escalation shows once its first event is projected. 404 when none is recorded."""
    async with pool.acquire() as conn:
        items = await readmodel.escalation_history(conn, ticket_id)
    if not items:
        raise escalations.EscalationNotFound(ticket_id, f"no escalation recorded for ticket {ticket_id}")
    return EscalationHistory(ticket_id=ticket_id, items=items)


@runs_router.get(
    "/{escalation_id}",
    response_model=EscalationState,
    summary="One escalation by its escalation_id (read model)",
    operation_id="getEscalationRun",
    responses=problems(401, 403, 404, 422, 503, 504),
    dependencies=[Depends(READ)],
)
async def get_escalation_run(escalation_id: EscalationIdPath, pool: PoolDep) -> EscalationState:
    """Any escalation of a ticket, not only its latest: the state the read model folded from its
    events (deadlines, path, resolution, postmortem). 404 when no escalation has that id."""
    async with pool.acquire() as conn:
        state = await readmodel.escalation_by_id(conn, escalation_id)
    if state is None:
        raise ProblemError(404, f"no escalation recorded with escalation_id {escalation_id}",
                           slug="escalation-not-found")
    return state


# -- commands -------------------------------------------------------------------------

COMMAND_RESPONSES = problems(400, 401, 403, 404, 409, 413, 415, 422, 503, 504)


async def _command(name: str, ticket_id: str, command: BaseModel, principal: Principal, pool: asyncpg.Pool,
                   settings: ApiSettings, key: str | None,
                   call: Callable[[str | None], Awaitable[BaseModel]]) -> Any:
    """Refuse server-set fields, then run the update once per Idempotency-Key (when given)."""
    refuse_server_set(command)
    digest = idempotency.command_digest(name, ticket_id, command)
    return await idempotency.run_command(pool, principal.via, key, digest, settings.idempotency_ttl, call)


@router.post("/{ticket_id}/acknowledge", response_model=EscalationState, summary="Acknowledge",
             operation_id="acknowledgeEscalation", responses=COMMAND_RESPONSES)
async def acknowledge(ticket_id: TicketIdPath, command: AcknowledgeCommand, principal: Actor, client: ClientDep,
                      pool: PoolDep, settings: SettingsDep, timeouts: TimeoutsDep,
                      idempotency_key: CommandKey = None) -> Any:
    """Update ``acknowledge``: stops the current level's acknowledgement clock."""
    return await _command("acknowledge", ticket_id, command, principal, pool, settings, idempotency_key,
                          lambda update_id: escalations.acknowledge(client, ticket_id, command, timeouts=timeouts,
                                                                    via=principal.via, update_id=update_id))


@router.post("/{ticket_id}/escalate", response_model=EscalationState, summary="Escalate",
             operation_id="escalateEscalation", responses=COMMAND_RESPONSES)
async def escalate(ticket_id: TicketIdPath, command: EscalateCommand, principal: Actor, client: ClientDep,
                   pool: PoolDep, settings: SettingsDep, timeouts: TimeoutsDep,
                   idempotency_key: CommandKey = None) -> Any:
    """Update ``escalate``: to the next level, or to ``to_level``."""
    return await _command("escalate", ticket_id, command, principal, pool, settings, idempotency_key,
                          lambda update_id: escalations.escalate(client, ticket_id, command, timeouts=timeouts,
                                                                 via=principal.via, update_id=update_id))


@router.post("/{ticket_id}/notes", response_model=EscalationState, summary="Add a note",
             operation_id="addEscalationNote", responses=COMMAND_RESPONSES)
async def add_note(ticket_id: TicketIdPath, command: AddNoteCommand, principal: Actor, client: ClientDep,
                   pool: PoolDep, settings: SettingsDep, timeouts: TimeoutsDep,
                   idempotency_key: CommandKey = None) -> Any:
    """Update ``add_note``; a customer-visible note restarts the customer update cadence."""
    return await _command("notes", ticket_id, command, principal, pool, settings, idempotency_key,
                          lambda update_id: escalations.add_note(client, ticket_id, command, timeouts=timeouts,
                                                                 via=principal.via, update_id=update_id))


@router.post("/{ticket_id}/pause", response_model=EscalationState, summary="Pause (waiting on customer)",
             operation_id="pauseEscalation", responses=COMMAND_RESPONSES)
async def pause(ticket_id: TicketIdPath, command: PauseCommand, principal: Actor, client: ClientDep,
                pool: PoolDep, settings: SettingsDep, timeouts: TimeoutsDep,
                idempotency_key: CommandKey = None) -> Any:
    """Update ``pause``: stops the resolution and cadence clocks, keeping their budget."""
    return await _command("pause", ticket_id, command, principal, pool, settings, idempotency_key,
                          lambda update_id: escalations.pause(client, ticket_id, command, timeouts=timeouts,
                                                              via=principal.via, update_id=update_id))


@router.post("/{ticket_id}/resume", response_model=EscalationState, summary="Resume",
             operation_id="resumeEscalation", responses=COMMAND_RESPONSES)
async def resume(ticket_id: TicketIdPath, command: ResumeCommand, principal: Actor, client: ClientDep,
                 pool: PoolDep, settings: SettingsDep, timeouts: TimeoutsDep,
                 idempotency_key: CommandKey = None) -> Any:
    """Update ``resume``."""
    return await _command("resume", ticket_id, command, principal, pool, settings, idempotency_key,
                          lambda update_id: escalations.resume(client, ticket_id, command, timeouts=timeouts,
                                                               via=principal.via, update_id=update_id))


@router.post("/{ticket_id}/resolve", response_model=EscalationState, summary="Resolve",
             operation_id="resolveEscalation", responses=COMMAND_RESPONSES)
async def resolve(ticket_id: TicketIdPath, command: ResolveCommand, principal: Actor, client: ClientDep,
                  pool: PoolDep, settings: SettingsDep, timeouts: TimeoutsDep,
                  idempotency_key: CommandKey = None) -> Any:
    """Update ``resolve``: tells the customer, requests CSAT, opens the postmortem task."""
    return await _command("resolve", ticket_id, command, principal, pool, settings, idempotency_key,
                          lambda update_id: escalations.resolve(client, ticket_id, command, timeouts=timeouts,
                                                                via=principal.via, update_id=update_id))


@router.post("/{ticket_id}/postmortem", response_model=EscalationState, summary="Complete the postmortem",
             operation_id="completePostmortem", responses=COMMAND_RESPONSES)
async def complete_postmortem(ticket_id: TicketIdPath, command: CompletePostmortemCommand, principal: Actor,
                              client: ClientDep, pool: PoolDep, settings: SettingsDep, timeouts: TimeoutsDep,
                              idempotency_key: CommandKey = None) -> Any:
    """Update ``complete`` on ``postmortem-<ticket_id>``; answers the closed escalation's final state
    (or its live state if it has not closed within the wait)."""
    return await _command("postmortem", ticket_id, command, principal, pool, settings, idempotency_key,
                          lambda update_id: escalations.complete_postmortem(
                              client, ticket_id, command, wait=settings.postmortem_wait, timeouts=timeouts,
                              via=principal.via, update_id=update_id))

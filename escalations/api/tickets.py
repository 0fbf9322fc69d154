"""``/tickets``: feed the criteria sweep. Our ticket format, and Zendesk's.

``POST /tickets`` takes a ``Ticket`` (unknown keys are a 422) and upserts it: 201 when new,
200 otherwise, the body saying ``inserted`` / ``updated`` / ``unchanged`` (the same
``updated_at`` again) / ``stale`` (an older ``updated_at`` than the stored one: nothing
changes). Scope ``tickets``. ``POST /tickets/zendesk`` takes Zendesk's ticket JSON, maps it
(``schemas.ticket.from_zendesk``) and stores the result the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Body, Depends, Response
from pydantic import ValidationError

from escalations.api.deps import TICKETS, get_pool, get_settings
from escalations.api.problems import (
    Problem,
    ProblemError,
    ValidationProblem,
    field_errors,
)
from escalations.api.responses import DESCRIPTIONS
from escalations.db.tickets import upsert_ticket
from escalations.settings import ApiSettings
from schemas.ticket import Ticket, TicketUpsertResult, ZendeskWebhook, from_zendesk

router = APIRouter(prefix="/tickets", tags=["tickets"], dependencies=[Depends(TICKETS)])

PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": TicketUpsertResult, "description": "Already stored: updated, unchanged or stale"},
    401: {"model": Problem, "description": "Missing or unknown bearer token"},
    403: {"model": Problem, "description": DESCRIPTIONS[403]},
    422: {"model": ValidationProblem, "description": "Field errors; nothing was stored"},
    503: {"model": Problem, "description": DESCRIPTIONS[503]},
    504: {"model": Problem, "description": DESCRIPTIONS[504]},
}
TICKET_EXAMPLE = Ticket.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]
ZENDESK_EXAMPLE = {
    "ticket": {
        "id": 35436, "subject": "Salesforce sync failing since yesterday", "status": "open",
        "priority": "urgent", "type": "incident",
        "created_at": "2026-11-27T09:00:00Z", "updated_at": "2026-11-27T10:30:00Z",
        "description": "Our data stopped syncing yesterday. Board meeting tomorrow!",
        "requester": {"id": 20978392, "name": "Head of Operations", "email": "ops@acme.example"},
        "organization": {"id": 57542, "name": "Acme Corp", "organization_fields": {"segment": "enterprise"}},
        "tags": ["salesforce", "sync"],
        "custom_fields": [{"id": 360001, "name": "users_affected", "value": "250"},
                          {"id": 360002, "name": "integration_id", "value": "sf-prod-7"}],
        "comment_count": 4,
    }
}


async def _store(ticket: Ticket, source: str, pool: asyncpg.Pool, response: Response) -> TicketUpsertResult:
    async with pool.acquire() as conn:
        result = await upsert_ticket(conn, ticket, source=source)
    response.status_code = 201 if result.outcome == "inserted" else 200
    return result


@router.post("", status_code=201, response_model=TicketUpsertResult, responses=RESPONSES,
             summary="Upsert a ticket for the criteria sweep")
async def post_ticket(
    ticket: Annotated[Ticket, Body(openapi_examples={"ticket": {"summary": "A ticket", "value": TICKET_EXAMPLE}})],
    response: Response,
    pool: PoolDep,
) -> TicketUpsertResult:
    """201 on first insert; 200 when updated, unchanged (same ``updated_at``) or stale (older)."""
    return await _store(ticket, "api", pool, response)


@router.post("/zendesk", status_code=201, response_model=TicketUpsertResult, responses=RESPONSES,
             summary="Upsert a ticket from Zendesk's ticket JSON (webhook)")
async def post_zendesk_ticket(
    webhook: Annotated[ZendeskWebhook, Body(openapi_examples={
        "zendesk": {"summary": "A Zendesk ticket", "value": ZENDESK_EXAMPLE}})],
    response: Response,
    pool: PoolDep,
    settings: Annotated[ApiSettings, Depends(get_settings)],
) -> TicketUpsertResult:
    """Map Zendesk's fields to a ticket (id ``ZD-<id>``, see the README's table) and upsert it."""
    # Optional ``zendesk_fields`` setting: Zendesk custom field id -> our field name.
    field_ids: Mapping[str, str] = getattr(settings, "zendesk_fields", None) or {}
    try:
        ticket = from_zendesk(webhook, field_ids)
    except ValidationError as exc:
        errors = field_errors(
            {**error, "loc": ("mapped", *error["loc"])} for error in exc.errors(include_url=False)
        )
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        raise ProblemError(422, f"the Zendesk ticket does not map to a valid ticket: {summary}",
                           slug="validation", errors=errors) from None
    return await _store(ticket, "zendesk", pool, response)

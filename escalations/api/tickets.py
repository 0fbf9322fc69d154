"""``/tickets``: feed the criteria sweep. Our ticket format, Zendesk's, Freshdesk's and Intercom's.

``POST /tickets`` takes a ``Ticket`` (unknown keys are a 422) and upserts it: 201 when new,
200 otherwise, the body saying ``inserted`` / ``updated`` / ``unchanged`` (the same
``updated_at`` again) / ``stale`` (an older ``updated_at`` than the stored one: nothing
changes). Scope ``tickets``. ``POST /tickets/zendesk`` takes Zendesk's ticket JSON, maps it
(``schemas.ticket.from_zendesk``) and stores the result the same way; so do
``POST /tickets/freshdesk`` (the body the admin's automation rule sends, which also carries a
shared secret in ``X-Freshdesk-Secret``) and ``POST /tickets/intercom`` (Intercom's signed
notifications, mapped by ``schemas.intake``).

Intercom cannot send a bearer token (a webhook subscription is a URL and topics, nothing
else): its route is on ``signed_router``, authenticated by the ``X-Hub-Signature`` Intercom
computes with the app's client secret, and nothing else. The others need the ``tickets`` scope.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import asyncpg
from fastapi import APIRouter, Body, Depends, Request, Response
from pydantic import SecretStr, ValidationError

from escalations.api.deps import TICKETS, get_pool, get_settings, settings_of, signed
from escalations.api.media import json_body_only
from escalations.api.problems import (
    Problem,
    ProblemError,
    ValidationProblem,
    field_errors,
    malformed_json,
)
from escalations.api.responses import DESCRIPTIONS
from escalations.db.tickets import upsert_ticket, upsert_ticket_unless_same
from escalations.settings import ApiSettings
from schemas.intake import (
    FreshdeskWebhook,
    IntakeIgnored,
    IntercomNotification,
    MappingError,
    from_freshdesk,
    from_intercom,
    relevant,
)
from schemas.ticket import Ticket, TicketUpsertResult, ZendeskWebhook, from_zendesk

log = logging.getLogger("escalations.api")
router = APIRouter(prefix="/tickets", tags=["tickets"], dependencies=[Depends(TICKETS)])
signed_router = APIRouter(prefix="/tickets", tags=["tickets"], dependencies=[Depends(signed)])
FRESHDESK_SECRET_HEADER = "X-Freshdesk-Secret"
INTERCOM_SIGNATURE_HEADER = "X-Hub-Signature"

PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": TicketUpsertResult, "description": "Already stored: updated, unchanged or stale"},
    401: {"model": Problem, "description": "Missing or unknown bearer token"},
    403: {"model": Problem, "description": DESCRIPTIONS[403]},
    422: {"model": ValidationProblem, "description": "Field errors; nothing was stored"},
    503: {"model": Problem, "description": DESCRIPTIONS[503]},
    504: {"model": Problem, "description": DESCRIPTIONS[504]},
}
FRESHDESK_RESPONSES: dict[int | str, dict[str, Any]] = {
    **RESPONSES,
    401: {"model": Problem, "description": f"Missing or unknown bearer token, or a wrong {FRESHDESK_SECRET_HEADER}"},
    503: {"model": Problem, "description": "ESCALATION_FRESHDESK_WEBHOOK_SECRET is not set; or " + DESCRIPTIONS[503]},
}
INTERCOM_RESPONSES: dict[int | str, dict[str, Any]] = {
    **RESPONSES,
    200: {"model": TicketUpsertResult | IntakeIgnored,
          "description": "Already stored (updated, unchanged or stale), or a topic that carries no ticket: ignored"},
    401: {"model": Problem, "description": f"Missing or wrong {INTERCOM_SIGNATURE_HEADER}"},
    503: {"model": Problem, "description": "ESCALATION_INTERCOM_CLIENT_SECRET is not set; or " + DESCRIPTIONS[503]},
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


FRESHDESK_EXAMPLE = {
    "ticket": {
        "id": "1042", "subject": "Salesforce sync failing since yesterday",
        "description": "Our data stopped syncing yesterday. Board meeting tomorrow!",
        "status": "Open", "priority": "Urgent", "type": "Incident", "tags": "salesforce, sync",
        "created_at": "2026-11-27 09:00:00 UTC", "updated_at": "2026-11-27 10:30:00 UTC",
        "due_by": "November 27 2026 at 01:00 PM UTC",
        "requester": {"name": "Head of Operations", "email": "ops@acme.example"},
        "company": {"name": "Acme Corp", "segment": "Enterprise"},
        "users_affected": "250", "integration_id": "sf-prod-7",
    }
}
INTERCOM_EXAMPLE = {
    "type": "notification_event", "id": "notif_78c122d0-23ba-11e4-9464-79b01267cc2e",
    "topic": "conversation.user.created", "app_id": "a86dr8yl", "created_at": 1795770000,
    "data": {"type": "notification_event_data", "item": {
        "type": "conversation", "id": "1911149811", "title": "Salesforce sync failing since yesterday",
        "created_at": 1795770000, "updated_at": 1795775400, "state": "open", "open": True, "priority": "priority",
        "source": {"type": "conversation", "subject": "", "body": "<p>Our data stopped syncing yesterday.</p>"},
        "contacts": {"type": "contact.list", "contacts": [{"type": "contact", "id": "5bc8f7ae2d96695c18a"}]},
        "company": {"type": "company", "id": "6321f8e4", "company_id": "acme", "name": "Acme Corp",
                    "plan": {"name": "Enterprise"}, "custom_attributes": {}},
        "custom_attributes": {"Users affected": 250, "integration_id": "sf-prod-7"},
        "statistics": {"type": "conversation_statistics", "count_conversation_parts": 4},
    }},
}


async def _store(ticket: Ticket, source: str, pool: asyncpg.Pool, response: Response, *,
                 versioned: bool = True) -> TicketUpsertResult:
    async with pool.acquire() as conn:
        store = upsert_ticket if versioned else upsert_ticket_unless_same
        result = await store(conn, ticket, source=source)
    response.status_code = 201 if result.outcome == "inserted" else 200
    return result


def _invalid(what: str, errors: Iterable[Mapping[str, Any]]) -> ProblemError:
    listed = field_errors(errors)
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in listed[:5])
    return ProblemError(422, f"{what}: {summary}", slug="validation", errors=listed)


def _unmappable(tool: str, exc: ValidationError) -> ProblemError:
    return _invalid(f"the {tool} ticket does not map to a valid ticket", (
        {**error, "loc": ("mapped", *error["loc"])} for error in exc.errors(include_url=False)))


def _not_configured(tool: str, variable: str) -> ProblemError:
    return ProblemError(503, f"{tool} intake is not configured: set {variable}", slug="intake-not-configured")


def _secret(value: SecretStr | None) -> bytes | None:
    return value.get_secret_value().encode() if value is not None and value.get_secret_value() else None


@router.post("", status_code=201, response_model=TicketUpsertResult, responses=RESPONSES,
             summary="Upsert a ticket for the criteria sweep", operation_id="upsertTicket")
async def post_ticket(
    ticket: Annotated[Ticket, Body(openapi_examples={"ticket": {"summary": "A ticket", "value": TICKET_EXAMPLE}})],
    response: Response,
    pool: PoolDep,
) -> TicketUpsertResult:
    """201 on first insert; 200 when updated, unchanged (same ``updated_at``) or stale (older)."""
    return await _store(ticket, "api", pool, response)


@router.post("/zendesk", status_code=201, response_model=TicketUpsertResult, responses=RESPONSES,
             summary="Upsert a ticket from Zendesk's ticket JSON (webhook)", operation_id="zendeskTicketWebhook")
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
        raise _unmappable("Zendesk", exc) from None
    return await _store(ticket, "zendesk", pool, response)


async def require_freshdesk_secret(request: Request) -> None:
    """503 while no secret is configured; 401 unless ``X-Freshdesk-Secret`` holds it (constant time)."""
    secret = _secret(settings_of(request).freshdesk_webhook_secret)
    if secret is None:
        raise _not_configured("Freshdesk", "ESCALATION_FRESHDESK_WEBHOOK_SECRET")
    presented = request.headers.get(FRESHDESK_SECRET_HEADER)
    if presented is None:
        raise ProblemError(401, f"the {FRESHDESK_SECRET_HEADER} header is missing", slug="bad-webhook-secret")
    if not hmac.compare_digest(presented.strip().encode(), secret):
        raise ProblemError(401, f"the {FRESHDESK_SECRET_HEADER} header does not hold the configured secret",
                           slug="bad-webhook-secret")


@router.post("/freshdesk", status_code=201, response_model=TicketUpsertResult, responses=FRESHDESK_RESPONSES,
             dependencies=[Depends(require_freshdesk_secret)], operation_id="freshdeskTicketWebhook",
             summary="Upsert a ticket from a Freshdesk automation rule's webhook")
async def post_freshdesk_ticket(
    webhook: Annotated[FreshdeskWebhook, Body(openapi_examples={
        "freshdesk": {"summary": "A Freshdesk ticket, as the documented body renders", "value": FRESHDESK_EXAMPLE}})],
    response: Response,
    pool: PoolDep,
    settings: Annotated[ApiSettings, Depends(get_settings)],
) -> TicketUpsertResult:
    """Map the rule's body to a ticket (id ``FD-<id>``, see docs/sweep.md) and upsert it.

    Without ``updated_at`` in the body the ticket is stamped with the time it arrived, and a
    delivery whose fields equal the stored ticket's changes nothing."""
    # Full precision: two changes a second apart must still be two versions.
    received = datetime.now(timezone.utc)
    try:
        ticket = from_freshdesk(webhook, ZoneInfo(settings.freshdesk_timezone), received)
    except MappingError as exc:
        raise _invalid("the Freshdesk ticket does not map to a valid ticket", exc.errors) from None
    except ValidationError as exc:
        raise _unmappable("Freshdesk", exc) from None
    return await _store(ticket, "freshdesk", pool, response, versioned=webhook.ticket.updated_at is not None)


async def verified_intercom_body(request: Request) -> bytes:
    """The raw body, once ``X-Hub-Signature`` is ``sha1=`` + HMAC-SHA1 of it with the client secret."""
    secret = _secret(settings_of(request).intercom_client_secret)
    if secret is None:
        raise _not_configured("Intercom", "ESCALATION_INTERCOM_CLIENT_SECRET")
    body = await request.body()
    presented = request.headers.get(INTERCOM_SIGNATURE_HEADER)
    if presented is None:
        raise ProblemError(401, f"the {INTERCOM_SIGNATURE_HEADER} header is missing", slug="bad-signature")
    expected = "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest()
    if not hmac.compare_digest(presented.strip().lower().encode(), expected.encode()):
        raise ProblemError(401, f"the {INTERCOM_SIGNATURE_HEADER} signature does not match the body",
                           slug="bad-signature")
    await json_body_only(request)
    return body


@signed_router.post(
    "/intercom", status_code=201, response_model=TicketUpsertResult | IntakeIgnored, responses=INTERCOM_RESPONSES,
    summary="Upsert a ticket from an Intercom webhook notification (signed; no bearer token)",
    operation_id="intercomTicketWebhook",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "description": "Intercom's notification_event: {type, id, topic, app_id, "
                   "created_at, data: {item}}, item a conversation or ticket"},
        "examples": {"intercom": {"summary": "A new conversation", "value": INTERCOM_EXAMPLE}}}}}},
)
async def post_intercom_notification(
    body: Annotated[bytes, Depends(verified_intercom_body)],
    response: Response,
    pool: PoolDep,
) -> TicketUpsertResult | IntakeIgnored:
    """Map the notification's conversation or ticket (id ``IC-<id>``, see docs/sweep.md) and upsert it;
    a topic that carries neither is answered 200 and logged, and nothing is stored."""
    try:
        document = json.loads(body)
    except ValueError:
        raise malformed_json() from None
    try:
        notification = IntercomNotification.model_validate(document)
    except ValidationError as exc:
        raise _invalid("the Intercom notification is invalid", (
            {**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False))) from None
    reason = relevant(notification)
    if reason is not None:
        log.info("Intercom notification %s ignored: %s", notification.id or "(no id)", reason)
        response.status_code = 200
        return IntakeIgnored(topic=notification.topic, reason=reason, notification_id=notification.id)
    try:
        ticket = from_intercom(notification)
    except MappingError as exc:
        raise _invalid("the Intercom item does not map to a valid ticket", exc.errors) from None
    except ValidationError as exc:
        raise _unmappable("Intercom", exc) from None
    return await _store(ticket, "intercom", pool, response)

"""``POST /integrations/jira/webhook``: comments and transitions on an escalation's Jira issue
come back to the escalation (Jira back-sync).

A Jira admin webhook cannot send a bearer token; it signs each delivery with the secret it was
registered with (``X-Hub-Signature: sha256=<hex HMAC-SHA256 of the raw body>``), checked in
constant time against ``ESCALATION_JIRA_WEBHOOK_SECRET`` before anything is read: the route is
``Depends(signed)``. Unset secret: 503 naming the variable; a missing or wrong signature: 401; then a body that
is not JSON: 415 (another media type) or 400; either way nothing changes.

The issue key leads to the escalation through ``jira_issues`` (filled by the Jira channel).
What the pinned policy's ``jira`` section says decides (``schemas.jira.decide``): a comment
becomes a note (author: the comment's author, ``via`` ``jira:<accountId>``), a transition into
a status it names becomes a note announcing it or a ``resolve``. Everything else is answered
200 ``{"outcome": "ignored", "reason": …}`` and logged, and changes nothing: an event or status
the policy does not use, an issue no escalation has, a comment the Jira channel posted itself
(recorded in ``jira_own_comments``, or by ``ESCALATION_JIRA_ACCOUNT_ID``), a replay (the same
``X-Atlassian-Webhook-Identifier``, comment id or change id again: ``jira_webhook_receipts``),
or an escalation that has ended or refuses the command (resolved already).

A receipt is kept once the escalation has answered; if acting fails otherwise (Temporal or
the worker down), it is dropped again and the error answered (503/504), so Jira's retry acts.
Each command also carries an update id made from the receipt, so a retry that reaches the
same run twice is applied once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, ValidationError
from temporalio.client import Client

from escalations import client as escalations
from escalations.api.deps import get_client, get_policies, get_pool, get_settings, get_timeouts, settings_of, signed
from escalations.api.media import json_body_only
from escalations.api.problems import Problem, ProblemError, field_errors, malformed_json
from escalations.api.responses import DESCRIPTIONS
from escalations.db import jira as jira_db
from escalations.policies import PolicySource
from escalations.settings import ApiSettings
from schemas.escalation import AddNoteCommand, EscalationState, ResolveCommand
from schemas.jira import CommentEvent, Ignored, JiraWebhook, Note, Resolve, TransitionEvent, decide, read_event
from schemas.policy import JiraSync, PolicyError

log = logging.getLogger("escalations.api")
router = APIRouter(prefix="/integrations/jira", tags=["integrations"], dependencies=[Depends(signed)])

SIGNATURE_HEADER = "X-Hub-Signature"
DELIVERY_HEADER = "X-Atlassian-Webhook-Identifier"
SECRET_VARIABLE = "ESCALATION_JIRA_WEBHOOK_SECRET"
RECEIPT_MAX = 200


class JiraWebhookOutcome(BaseModel):
    """What became of a delivery: ``noted``, ``resolved``, or ``ignored`` (with the reason)."""

    outcome: Literal["noted", "resolved", "ignored"]
    reason: str | None = Field(default=None, description="why nothing changed (ignored)")
    issue_key: str | None = None
    ticket_id: str | None = None


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": JiraWebhookOutcome,
          "description": "Acted on (a note, a resolve), or ignored: an unused event or status, an unknown issue, "
                         "our own comment, a replay, an ended escalation"},
    400: {"model": Problem, "description": "The body is not valid JSON"},
    401: {"model": Problem, "description": f"Missing or wrong {SIGNATURE_HEADER}"},
    415: {"model": Problem, "description": "A body that is not application/json"},
    422: {"model": Problem, "description": "Not a Jira webhook body (no webhookEvent, no issue key)"},
    503: {"model": Problem, "description": f"{SECRET_VARIABLE} is not set; or " + DESCRIPTIONS[503]},
    504: {"model": Problem, "description": DESCRIPTIONS[504]},
}
EXAMPLE = {
    "timestamp": 1795770000000, "webhookEvent": "comment_created",
    "comment": {"id": "10148", "author": {"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "Dana Engineer"},
                "body": "Found it: the AccountRegion__c field was renamed.", "created": "2026-11-27T14:02:00.000+0000"},
    "issue": {"id": "10001", "key": "ESC-17", "fields": {"status": {"name": "In Progress"}}},
}


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, detail, slug="bad-signature")


async def verified_jira_body(request: Request) -> bytes:
    """The raw body, once ``X-Hub-Signature`` is ``sha256=`` + HMAC-SHA256 of it with the secret."""
    configured = settings_of(request).jira_webhook_secret
    secret = configured.get_secret_value().encode() if configured is not None else b""
    if not secret:
        raise ProblemError(503, f"Jira back-sync is not configured: set {SECRET_VARIABLE}",
                           slug="integration-not-configured")
    body = await request.body()
    presented = request.headers.get(SIGNATURE_HEADER)
    if presented is None:
        raise _unauthorized(f"the {SIGNATURE_HEADER} header is missing")
    method, _, digest = presented.strip().partition("=")
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    # compare_digest on the whole value (method included): no early exit on a wrong method.
    if not hmac.compare_digest(f"{method.lower()}={digest.lower()}".encode(), f"sha256={expected}".encode()):
        raise _unauthorized(f"the {SIGNATURE_HEADER} signature does not match the body (sha256=<hex HMAC-SHA256 "
                            "of the raw body with the webhook's secret>)")
    await json_body_only(request)
    return body


def _parse(body: bytes) -> JiraWebhook:
    try:
        document = json.loads(body)
    except ValueError:
        raise malformed_json() from None
    try:
        return JiraWebhook.model_validate(document)
    except ValidationError as exc:
        errors = field_errors({**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False))
        summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        raise ProblemError(422, f"the Jira webhook body is invalid: {summary}", slug="validation",
                           errors=errors) from None


def _receipt(kind: str, value: str) -> str:
    """``kind:value``, hashed when long: receipts are keys, whatever Jira sends."""
    if len(value) <= RECEIPT_MAX:
        return f"{kind}:{value}"
    return f"{kind}:sha256:{hashlib.sha256(value.encode()).hexdigest()}"


def _ignored(reason: str, *, issue_key: str | None = None, ticket_id: str | None = None,
             delivery: str | None = None) -> JiraWebhookOutcome:
    log.info("Jira webhook %s ignored: %s", delivery or "(no delivery id)", reason)
    return JiraWebhookOutcome(outcome="ignored", reason=reason, issue_key=issue_key, ticket_id=ticket_id)


async def _policy_jira(pool: asyncpg.Pool, policies: PolicySource, state: EscalationState) -> JiraSync:
    """The ``jira`` section of the policy version the run pinned (defaults when it has none)."""
    name, version = state.policy.name, state.policy.version
    async with pool.acquire() as conn:
        stored, section = await jira_db.pinned_jira_section(conn, name, version)
    if stored:
        return JiraSync.model_validate(section) if section is not None else JiraSync()
    # Pinned while PostgreSQL was down (the projection registers it later): the file, if it
    # is still that version.
    try:
        policy = policies.load(name)
    except PolicyError as err:
        log.warning("Jira back-sync: policy %s v%s of %s is neither in PostgreSQL nor readable (%s); "
                    "using the jira defaults", name, version, state.ticket_id, " ".join(str(err).split())[:300])
        return JiraSync()
    if policy.version != version:
        log.warning("Jira back-sync: policy %s v%s of %s is not in PostgreSQL and the file is v%s; "
                    "using the jira defaults", name, version, state.ticket_id, policy.version)
        return JiraSync()
    return policy.jira or JiraSync()


@router.post(
    "/webhook", response_model=JiraWebhookOutcome, responses=RESPONSES,
    summary="Jira webhook: comments and transitions on an escalation's issue (signed; no bearer token)",
    operation_id="jiraWebhook",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"type": "object", "description": "Jira's webhook body: {webhookEvent, timestamp, issue, "
                   "comment?, changelog?, user?}; comment_created and jira:issue_updated are used"},
        "examples": {"comment": {"summary": "A comment on the escalation's issue", "value": EXAMPLE}}}}}},
)
async def jira_webhook(
    request: Request,
    body: Annotated[bytes, Depends(verified_jira_body)],
    client: Annotated[Client, Depends(get_client)],
    pool: Annotated[asyncpg.Pool, Depends(get_pool)],
    settings: Annotated[ApiSettings, Depends(get_settings)],
    policies: Annotated[PolicySource, Depends(get_policies)],
    timeouts: Annotated[escalations.Timeouts, Depends(get_timeouts)],
) -> JiraWebhookOutcome:
    """A comment becomes a note; a transition the policy names, a note or a resolve; see docs/notifications.md."""
    hook = _parse(body)
    delivery = request.headers.get(DELIVERY_HEADER, "").strip() or None
    event = read_event(hook)
    if isinstance(event, Ignored):
        return _ignored(event.reason, issue_key=hook.issue.key if hook.issue else None, delivery=delivery)
    key = event.issue_key
    async with pool.acquire() as conn:
        found = await jira_db.escalation_of_issue(conn, key)
        if found is None:
            return _ignored(f"no escalation has the Jira issue {key}", issue_key=key, delivery=delivery)
        escalation_id, ticket_id = found
        if isinstance(event, CommentEvent) and (
                (settings.jira_account_id is not None and event.account_id == settings.jira_account_id)
                or await jira_db.is_own_comment(conn, event.comment_id, event.account_id)):
            return _ignored(f"comment {event.comment_id} on {key} was posted by the escalation service",
                            issue_key=key, ticket_id=ticket_id, delivery=delivery)
        receipts = [_receipt("webhook", delivery)] if delivery else []
        if event.receipt is not None:
            receipts.append(_receipt(*event.receipt.split(":", 1)))
        if not receipts:
            # Nothing identifies it (a change without an id, no delivery header): it is acted on.
            log.warning("Jira webhook on %s carries no delivery id and no change id: a replay cannot be told", key)
        seen = await jira_db.claim_receipts(conn, receipts, key, escalation_id) if receipts else []
    if seen:
        return _ignored(f"already processed ({', '.join(seen)})", issue_key=key, ticket_id=ticket_id,
                        delivery=delivery)
    try:
        return await _act(event, client, pool, policies, timeouts, key=key, ticket_id=ticket_id,
                          escalation_id=escalation_id, update_id=receipts[-1] if receipts else None,
                          delivery=delivery)
    except BaseException:
        if receipts:
            async with pool.acquire() as conn:
                await jira_db.release_receipts(conn, receipts)
        raise


async def _act(event: CommentEvent | TransitionEvent, client: Client, pool: asyncpg.Pool, policies: PolicySource,
               timeouts: escalations.Timeouts, *, key: str, ticket_id: str, escalation_id: str,
               update_id: str | None, delivery: str | None) -> JiraWebhookOutcome:
    try:
        state = await escalations.live_state(client, ticket_id, timeouts=timeouts)
    except (escalations.EscalationClosed, escalations.EscalationNotFound) as err:
        return _ignored(f"the escalation of {key} has ended ({err.message})", issue_key=key, ticket_id=ticket_id,
                        delivery=delivery)
    if state.escalation_id != escalation_id:
        return _ignored(f"{key} belongs to an escalation of {ticket_id} that has ended", issue_key=key,
                        ticket_id=ticket_id, delivery=delivery)
    action = decide(event, await _policy_jira(pool, policies, state))
    if isinstance(action, Ignored):
        return _ignored(action.reason, issue_key=key, ticket_id=ticket_id, delivery=delivery)
    try:
        if isinstance(action, Note):
            await escalations.add_note(
                client, ticket_id,
                AddNoteCommand(author=action.author, text=action.text, customer_visible=action.customer_visible),
                timeouts=timeouts, via=action.via, update_id=update_id)
            log.info("Jira webhook %s: %s on %s became a note on %s by %s", delivery or "(no delivery id)",
                     "comment" if isinstance(event, CommentEvent) else "transition", key, ticket_id, action.author)
            return JiraWebhookOutcome(outcome="noted", issue_key=key, ticket_id=ticket_id)
        assert isinstance(action, Resolve)
        await escalations.resolve(
            client, ticket_id,
            ResolveCommand(by=action.by, root_cause=action.root_cause, mitigation=action.mitigation),
            timeouts=timeouts, via=action.via, update_id=update_id)
    except (escalations.CommandRejected, escalations.EscalationClosed) as err:
        return _ignored(f"the escalation of {key} refused it: {err.message}", issue_key=key, ticket_id=ticket_id,
                        delivery=delivery)
    log.info("Jira webhook %s: %s moved to %s; %s resolved by %s", delivery or "(no delivery id)", key,
             event.to_status if isinstance(event, TransitionEvent) else "?", ticket_id, action.by)
    return JiraWebhookOutcome(outcome="resolved", issue_key=key, ticket_id=ticket_id)

"""Slack interactivity: ``POST /integrations/slack/interactions`` (a page's buttons act in Slack).

A Slack page's Acknowledge and Escalate buttons (``action_id`` ``acknowledge``/``escalate``)
carry the page's signed action token as their ``value`` once ``ESCALATION_SLACK_SIGNING_SECRET``
is set (``activities.channels.slack``); the Slack app's *Interactivity* request URL points here.
Slack cannot send a bearer token (``Depends(signed)``): every request must carry Slack's
signature, checked exactly as Slack documents it (https://docs.slack.dev/authentication/
verifying-requests-from-slack/) with ``slack_sdk``'s ``SignatureVerifier``: ``X-Slack-Signature``
is ``v0=`` + hex HMAC-SHA256 of ``v0:{X-Slack-Request-Timestamp}:{raw body}`` under the app's
signing secret, compared in constant time, the timestamp within five minutes of now. Anything
else is a 401 and nothing is read from the body.

Slack wants an answer within three seconds, so a verified press is answered ``200`` at once
and acted on right after: the pressing member is looked up in the escalation's pinned policy
(contacts' ``slack_user_id``) and acts as that contact (``escalations.api.responders``, ``via``
``slack:<member id>``). The outcome replaces the original message through the payload's
``response_url`` ("Acknowledged by Dana at 14:02 UTC"); a member mapped to no contact, or one who
may not act, gets an ephemeral explanation there instead, and nothing is done. Other
interactions (the link buttons, other payload types) are answered 200 and ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel
from slack_sdk.signature import SignatureVerifier

from escalations import client as ec
from escalations.api.deps import settings_of, signed, timeouts_of
from escalations.api.problems import Problem, ProblemError, classify_fault
from escalations.api.responders import Refused, Responders
from escalations.links import ActionSigner, InvalidLink, is_loopback_http
from schemas.actions import contacts_of_slack_user

log = logging.getLogger("escalations.api")
router = APIRouter(prefix="/integrations/slack", tags=["integrations"], dependencies=[Depends(signed)])

TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
IN_SLACK = ("acknowledge", "escalate")
RESPONSE_TIMEOUT = 10.0


class SlackAccepted(BaseModel):
    """What the route answered (Slack reads nothing of it)."""

    accepted: bool
    detail: str


RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": SlackAccepted, "description": "Verified: a press is acted on right after, its outcome posted "
                                                 "to the payload's response_url; anything else is ignored"},
    401: {"model": Problem, "description": f"Missing or wrong {SIGNATURE_HEADER}, or a timestamp more than five "
                                           "minutes away (nothing is read)"},
    422: {"model": Problem, "description": "Signed, but not Slack's form (no payload= JSON)"},
    503: {"model": Problem, "description": "ESCALATION_SLACK_SIGNING_SECRET or ESCALATION_ACTION_KEY is not set"},
}


def verify_slack_request(secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    """401 unless ``body`` is signed by Slack with ``secret`` within the last five minutes."""
    timestamp, signature = headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER)
    if not timestamp or not signature:
        missing = " and ".join(name for name, value in ((TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, signature))
                               if not value)
        raise ProblemError(401, f"{missing} missing: not a request from Slack", slug="bad-signature")
    if not timestamp.isdigit():
        raise ProblemError(401, f"{TIMESTAMP_HEADER} is not unix seconds", slug="bad-signature")
    if not SignatureVerifier(secret).is_valid(body, timestamp, signature):
        raise ProblemError(401, f"{SIGNATURE_HEADER} does not match the body, or {TIMESTAMP_HEADER} is more than "
                                "five minutes away from now", slug="bad-signature")


@router.post("/interactions", response_model=SlackAccepted, responses=RESPONSES,
             summary="Slack's interactivity requests: a page's buttons (signed by Slack; no bearer token)",
             operation_id="slackInteractions",
             openapi_extra={"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
                 "schema": {"type": "object", "properties": {"payload": {
                     "type": "string", "description": "Slack's interaction payload (JSON), type block_actions"}}}}}}})
async def slack_interactions(request: Request) -> SlackAccepted:
    """Verify Slack's signature, answer at once, then act on a press and report to ``response_url``."""
    settings = settings_of(request)
    if settings.slack_signing_secret is None:
        raise ProblemError(503, "Slack interactivity is not configured: set ESCALATION_SLACK_SIGNING_SECRET",
                           slug="slack-not-configured")
    body = await request.body()
    verify_slack_request(settings.slack_signing_secret.get_secret_value(), body, request.headers)
    try:
        payload = json.loads(parse_qs(body.decode("utf-8"), strict_parsing=True)["payload"][0])
    except (ValueError, KeyError, IndexError, UnicodeDecodeError):
        raise ProblemError(422, "not Slack's interaction form: payload=<JSON> expected", slug="validation") from None
    press = _press(payload)
    if press is None:
        return SlackAccepted(accepted=False, detail="not a press of an escalation's Acknowledge or Escalate button")
    if not settings.action_keys:
        raise ProblemError(503, "action links are not configured: set ESCALATION_ACTION_KEY", slug="links-off")
    token, user_id, response_url = press
    app_state = request.app.state
    responders = Responders(app_state.client, app_state.pool, app_state.policies, timeouts_of(request))
    task = asyncio.create_task(_act(request.app, responders, token, user_id, response_url),
                               name=f"slack-press-{user_id}")
    background: set[asyncio.Task[None]] = request.app.state.background
    background.add(task)
    task.add_done_callback(background.discard)
    return SlackAccepted(accepted=True, detail="acting on it; the outcome goes to the response_url")


def _press(payload: Any) -> tuple[str, str, str] | None:
    """(token, member id, response_url) of a press of Acknowledge or Escalate; None for anything else."""
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    user = payload.get("user")
    response_url = payload.get("response_url")
    if not isinstance(actions, list) or not actions or not isinstance(user, dict):
        return None
    action = actions[0]
    if not isinstance(action, dict) or action.get("action_id") not in IN_SLACK:
        return None
    token, user_id = action.get("value"), user.get("id")
    if not isinstance(token, str) or not isinstance(user_id, str) or not isinstance(response_url, str):
        return None
    return token, user_id, response_url


async def _act(app: FastAPI, responders: Responders, token_text: str, user_id: str, response_url: str) -> None:
    """Act on one press and tell Slack how it went; every failure ends in an answer to the member."""
    if not _usable(response_url):
        log.warning("Slack press by %s ignored: its response_url is neither https nor local", user_id)
        return
    try:
        reply = await _outcome(app, responders, token_text, user_id)
    except Exception as exc:  # reported to the member and logged; a press never fails silently
        fault = classify_fault(exc)
        if fault is None:
            log.exception("Slack press by %s failed", user_id)
            reply = _ephemeral("Something went wrong; nothing was done. Try again, or act from the link.")
        else:
            log.warning("Slack press by %s: %s", user_id, fault.detail)
            reply = _ephemeral(f"{fault.detail}. Nothing was done; press again in a moment.")
    http: httpx.AsyncClient = app.state.http
    try:
        answer = await http.post(response_url, json=reply, timeout=RESPONSE_TIMEOUT)
        if answer.status_code >= 300:
            log.warning("Slack's response_url answered HTTP %s to the outcome of a press by %s",
                        answer.status_code, user_id)
    except httpx.HTTPError as exc:
        log.warning("the outcome of a press by %s did not reach Slack's response_url: %s", user_id,
                    type(exc).__name__)


async def _outcome(app: FastAPI, responders: Responders, token_text: str, user_id: str) -> dict[str, Any]:
    settings = app.state.settings
    try:
        token = ActionSigner(settings.action_keys).verify(token_text)
    except InvalidLink as exc:
        return _ephemeral(f"This button is not valid ({exc}). Nothing was done.")
    try:
        state = await ec.live_state(responders.client, token.ticket_id, timeouts=responders.timeouts)
        policy = await responders.pinned_policy(state)
        names = contacts_of_slack_user(policy, user_id)
        if not names:
            return _ephemeral(
                f"Your Slack account ({user_id}) is not a contact of policy {policy.name} v{policy.version}, so "
                f"you cannot act on {token.ticket_id} from Slack. Nothing was done. Ask whoever keeps the policy "
                "to set slack_user_id on your contact.")
        done = await responders.act(token, names[0], f"slack:{user_id}")
    except Refused as refused:
        return _ephemeral(f"{refused.title}: {refused.detail}. Nothing was done.")
    except (ec.EscalationClosed, ec.EscalationNotFound, ec.EscalationNotReady) as exc:
        return _ephemeral(f"{exc.message}. Nothing was done.")
    state = done.state
    return {
        "replace_original": True,
        "text": escape(done.summary),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "verbatim": True,
                                         "text": f"*{escape(done.summary)}*\n{escape(state.ticket_id)} · "
                                                 f"{escape(state.title)} · {escape(state.level_name)} · "
                                                 f"{escape(state.status)}"}},
        ],
    }


def _ephemeral(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "replace_original": False, "text": escape(text)}


def escape(text: str) -> str:
    """Slack's control characters (mentions, links): ``&``, ``<``, ``>``."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _usable(url: str) -> bool:
    """Slack's response_url is https (hooks.slack.com); a local one is a test's receiver."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return (parts.scheme == "https" and bool(parts.hostname)) or is_loopback_http(url)

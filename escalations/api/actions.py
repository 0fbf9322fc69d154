"""Signed action links: ``GET``/``POST /actions/{action}/{token}``, small HTML pages.

A page to a person carries one link per action it allows (``activities.notifications`` signs
them; ``escalations.links`` knows their layout). The token is the credential, so these routes
take no bearer token (``Depends(signed)``): the API verifies the token's signature with
``ESCALATION_ACTION_KEY`` (any configured key) instead.

- ``GET`` shows what the link would do, to which escalation (its live state), and a confirm
  button (a form ``POST`` to the same address). It changes nothing: mail scanners and link
  previews follow GETs.
- ``POST`` takes the action as the link's recipient (``escalations.api.responders``: ``by`` is
  the recipient's name, ``via`` ``link:<channel>``) and shows the result. A second ``POST``
  says who already did it and when; an expired, superseded, tampered or not-allowed link says
  why, with the current state, and changes nothing (4xx).

Pages are rendered on the server with every value escaped, carry no script, and are served
with a Content-Security-Policy that allows none (only their own inline style and a form
posting back to this API), ``Referrer-Policy: no-referrer`` (the address holds the token) and
``Cache-Control: no-store``.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse

from escalations.api.deps import settings_of, signed, timeouts_of
from escalations.api.problems import classify_fault
from escalations.api.responders import Ready, Refused, Responders
from escalations.links import ACTIONS_PATH, ActionSigner, ActionToken, InvalidLink
from schemas.actions import ACTION_LABELS, ACTIONS
from schemas.escalation import EscalationState

log = logging.getLogger("escalations.api")
router = APIRouter(prefix=ACTIONS_PATH, tags=["action links"], dependencies=[Depends(signed)])

HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                "base-uri 'none'; frame-ancestors 'none'"),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
ActionPath = Annotated[str, Path(description="acknowledge, escalate or note", examples=["acknowledge"])]
TokenPath = Annotated[str, Path(description="the signed token", max_length=5000)]
PAGE_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"text/html": {}}, "description": "GET: what the link does, and a confirm button; "
                                                       "POST: the result"},
    400: {"content": {"text/html": {}}, "description": "Not an action link (malformed, changed, unknown key), "
                                                       "or the wrong action for it"},
    403: {"content": {"text/html": {}}, "description": "The link's recipient may not act on the escalation"},
    409: {"content": {"text/html": {}}, "description": "Already done through this link, or not possible now"},
    410: {"content": {"text/html": {}}, "description": "Expired, or superseded (the escalation moved on or closed)"},
    422: {"content": {"text/html": {}}, "description": "POST of a note without text"},
    503: {"content": {"text/html": {}}, "description": "Links are not configured (ESCALATION_ACTION_KEY), or "
                                                       "Temporal/PostgreSQL unavailable (Retry-After)"},
    504: {"content": {"text/html": {}}, "description": "Temporal, PostgreSQL or the worker did not answer in time"},
}
NOTE_FIELD = "text"


def _responders(request: Request) -> Responders:
    state = request.app.state
    return Responders(state.client, state.pool, state.policies, timeouts_of(request))


def _token(request: Request, action: str, token: str) -> ActionToken:
    keys = settings_of(request).action_keys
    if not keys:
        raise Refused(503, "Action links are off", "this API has no ESCALATION_ACTION_KEY, so it cannot check "
                                                   "links; act with the API or the command line")
    try:
        verified = ActionSigner(keys).verify(token)
    except InvalidLink as exc:
        raise Refused(400, "Not a valid action link", f"{exc}; use the link exactly as the page gave it") from None
    if action not in ACTIONS or action != verified.action:
        raise Refused(400, "Wrong action for this link",
                      f"this link is for {verified.action!r}, not {action[:40]!r}; use the link as the page gave it")
    return verified


@router.get("/{action}/{token}", response_class=HTMLResponse, responses=PAGE_RESPONSES,
            summary="What an action link does, and a confirm button (changes nothing)", operation_id="showActionLink")
async def show_action(request: Request, action: ActionPath, token: TokenPath) -> HTMLResponse:
    """Verify the link and the escalation's live state; show the action and a confirm form."""
    try:
        verified = _token(request, action, token)
        ready = await _responders(request).check(verified, verified.recipient)
    except Refused as refused:
        return _refused_page(refused)
    except Exception as exc:
        return _fault_page(exc)
    return _page(200, f"{ACTION_LABELS[verified.action]} {ready.state.ticket_id}?", _intro(ready),
                 ready.state, form=_form(ready))


@router.post("/{action}/{token}", response_class=HTMLResponse, responses=PAGE_RESPONSES,
             summary="Take the action of a link, as its recipient (once)", operation_id="takeActionLink")
async def take_action(request: Request, action: ActionPath, token: TokenPath) -> HTMLResponse:
    """Take the action as the link's recipient (``via link:<channel>``) and show the result."""
    try:
        verified = _token(request, action, token)
        fields = parse_qs((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True)
        text = (fields.get(NOTE_FIELD) or [None])[0]
        done = await _responders(request).act(verified, verified.recipient, f"link:{verified.channel}", text=text)
    except Refused as refused:
        return _refused_page(refused)
    except Exception as exc:
        return _fault_page(exc)
    return _page(200, done.summary, f"Through the link in the page to {verified.recipient} ({verified.channel}).",
                 done.state)


# -- the pages ------------------------------------------------------------------------

_STYLE = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;font-size:15px;line-height:1.5;
color:#1d1d1f;margin:0;background:#f5f5f7}
main{max-width:40rem;margin:2rem auto;background:#fff;padding:1.5rem 2rem;border-radius:8px;
box-shadow:0 1px 3px rgba(0,0,0,.1)}
h1{font-size:1.3rem;margin:0 0 .5rem}h2{font-size:1rem;margin:1.5rem 0 .5rem;color:#444}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}dt{color:#555;font-weight:600}
dd{margin:0}.refused h1{color:#b42318}.done h1{color:#067647}
textarea,input[type=text]{width:100%;box-sizing:border-box;font:inherit;padding:.4rem;margin:.25rem 0 .75rem}
button{font:inherit;font-weight:600;padding:.5rem 1.25rem;border:0;border-radius:4px;background:#1d4ed8;color:#fff;
cursor:pointer}
"""


def _intro(ready: Ready) -> str:
    token, who = ready.token, ready.who
    action = {"acknowledge": "acknowledge", "escalate": "escalate", "note": "add an internal note to"}[token.action]
    role = {"owner": f"a contact of {ready.policy.responder_name(who.as_level)}",
            "consulted": f"consulted as {ready.policy.responder_name(who.as_level)}",
            "above": f"of {ready.policy.responder_name(who.as_level)}, above it"}[who.role]
    target = ""
    if token.action == "escalate":
        nxt = ready.policy.next_responder(ready.state.level)
        target = f" to {ready.policy.responder_name(nxt)}" if nxt else ""
    return (f"You are about to {action} this escalation{target} as {token.recipient} ({role}). "
            "Nothing happens until you confirm.")


def _form(ready: Ready) -> str:
    e = html.escape
    action = ready.token.action
    label = f"{ACTION_LABELS[action]} as {ready.token.recipient}"
    field = ""
    if action == "note":
        field = (f'<label for="text">Note (internal, not sent to the customer)</label>'
                 f'<textarea id="text" name="{NOTE_FIELD}" rows="5" maxlength="8000" required></textarea>')
    elif action == "escalate":
        field = (f'<label for="text">Reason</label><input type="text" id="text" name="{NOTE_FIELD}" maxlength="2000" '
                 f'value="{e(f"escalated by {ready.token.recipient} from the page")}">')
    return f'<form method="post">{field}<button type="submit">{e(label)}</button></form>'


def _when(moment: datetime | None) -> str:
    return f"{moment.astimezone(UTC):%a %d %b %Y, %H:%M} UTC" if moment is not None else "—"


def _state_rows(state: EscalationState) -> list[tuple[str, str]]:
    rows = [
        ("Ticket", f"{state.ticket_id}: {state.title}"),
        ("Customer", state.customer.name),
        ("Priority", state.priority),
        ("Status", state.status),
        ("Level", f"{state.level_name} ({state.level})"),
        ("Owner", state.owner or "—"),
    ]
    if state.acknowledged_by:
        via = f" ({state.acknowledged_via})" if state.acknowledged_via else ""
        rows.append(("Acknowledged", f"by {state.acknowledged_by}{via}, {_when(state.acknowledged_at)}"))
    deadlines = state.deadlines
    for label, value in (("Acknowledge by", deadlines.ack_due), ("Resolve by", deadlines.resolve_due)):
        if value is not None:
            rows.append((label, _when(value)))
    if state.sla_breached:
        rows.append(("SLA", "breached"))
    moves = [p for p in state.path if p.from_level != p.to_level]
    if moves:
        last = moves[-1]
        how = "automatically" if last.auto else f"by {last.by or '?'}" + (f" ({last.via})" if last.via else "")
        rows.append(("Last move", f"{last.from_level} → {last.to_level} {how}, {_when(last.at)}: {last.reason}"))
    return rows


def _page(status: int, title: str, detail: str, state: EscalationState | None, *, form: str = "",
          kind: str = "", headers: dict[str, str] | None = None) -> HTMLResponse:
    e = html.escape
    body = [f"<h1>{e(title)}</h1>", f'<p class="detail">{e(detail)}</p>']
    if form:
        body.append(form)
    if state is not None:
        rows = "".join(f"<dt>{e(label)}</dt><dd>{e(value)}</dd>" for label, value in _state_rows(state))
        body.append(f'<h2>The escalation now</h2><dl class="state">{rows}</dl>')
    kind = kind or ("done" if status == 200 and not form else "refused" if status >= 400 else "confirm")
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="referrer" content="no-referrer"><title>{e(title)}</title><style>{_STYLE}</style></head>\n'
            f'<body><main class="{kind}">' + "\n".join(body) + "</main></body></html>\n")
    return HTMLResponse(page, status_code=status, headers={**HEADERS, **(headers or {})})


def _refused_page(refused: Refused) -> HTMLResponse:
    return _page(refused.status, refused.title, refused.detail, refused.state)


def _fault_page(exc: Exception) -> HTMLResponse:
    """An outage of Temporal, PostgreSQL or the worker: 503/504, never 500; anything else is a bug."""
    fault = classify_fault(exc)
    if fault is None:
        raise exc
    log.warning("action link: %s (%s)", fault.detail, type(exc).__name__)
    headers = {"Retry-After": "5"} if fault.status == 503 else {}
    return _page(fault.status, "Try again in a moment", f"{fault.detail}. Nothing was changed"
                 + (" unless the page you come back to says so." if fault.status == 504 else "."),
                 None, headers=headers)

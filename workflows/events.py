"""Turning a decision into domain events and notification intents (pure).

Invariant: sequence numbers are consecutive per escalation; the ``n``-th change of a
decision becomes event ``last_seq + n``, and every notification it causes is keyed by
that event (escalation id + seq + recipient + channel), so the same decision always
yields the same events and the same idempotency keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.actions import PAGE_TEMPLATES, ActionGrant, possible, standing
from schemas.escalation import DomainEvent, EscalationState
from schemas.notifications import NotificationIntent, notification_key
from schemas.policy import Policy
from workflows import routing
from workflows.transitions import Change, Notify, RunState, refresh


@dataclass(frozen=True)
class Assembled:
    events: list[DomainEvent]
    intents: list[NotificationIntent]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def assemble(state: RunState, changes: list[Change], at: datetime, *, handoff: dict[str, Any] | None,
             impact: dict[str, Any], decided_at: datetime | None = None) -> Assembled:
    """Number ``changes`` as events after the state's last one, with their intents.

    Updates ``state`` in place (deadlines, ``last_seq``, counts): call it on the decision's
    own copy. ``handoff`` is copied into each intent's context only when given (the
    released commit path); otherwise deliveries carry it once per batch. ``decided_at``
    (when the workflow task acted, if later than ``at``) is kept in the payload so lateness
    can be measured without changing what is decided.
    """
    refresh(state, at)
    view = state.view
    view.updated_at = at
    first_seq = view.last_seq + 1
    view.last_seq += len(changes)
    view.counts.events += len(changes)
    snapshot = _snapshot(view)
    context = _context(view, handoff=handoff, impact=impact)
    events: list[DomainEvent] = []
    intents: list[NotificationIntent] = []
    for seq, change in enumerate(changes, start=first_seq):
        payload = dict(change.payload)
        if change.type == "opened":
            payload["view"] = view.model_dump(mode="json")
        else:
            payload["snapshot"] = snapshot
            payload["counts"] = view.counts.model_dump(mode="json")
        if decided_at is not None:
            payload["decided_at"] = decided_at.isoformat()
        events.append(DomainEvent(escalation_id=view.escalation_id, ticket_id=view.ticket_id,
                                  seq=seq, type=change.type, occurred_at=at, payload=payload))
        for notify in change.notify:
            intents.extend(_intents(state, seq, notify, context, at))
    return Assembled(events, intents)


def _intents(state: RunState, seq: int, notify: Notify, context: dict[str, Any],
             at: datetime) -> list[NotificationIntent]:
    view, policy = state.view, state.policy
    extra = {**context, **notify.extra}
    if notify.customer:
        channel = policy.customer.channel
        target = policy.customer.target or (view.customer.email if channel == "email" else None)
        recipients = [(view.customer.id, channel, target)]
    elif notify.contacts is not None:
        recipients = [(c.name, c.channel, c.target) for c in notify.contacts]
    else:
        assert notify.responder is not None
        recipients = [(c.name, c.channel, c.target) for c in routing.paging(policy, notify.responder, at).recipients]
        extra.setdefault("to_level", notify.responder)
        extra.setdefault("to_level_name", policy.responder_name(notify.responder))
    pages = notify.responder is not None and notify.template in PAGE_TEMPLATES
    # The Jira issue's priority field, as the policy maps the escalation's priority (on its create).
    jira_priority = policy.jira.priorities.get(view.priority) if policy.jira is not None else None
    jira_extra = {**extra, "jira_priority": jira_priority} if jira_priority is not None else extra
    return [
        NotificationIntent(
            key=notification_key(view.escalation_id, seq, name, channel),
            escalation_id=view.escalation_id, ticket_id=view.ticket_id, seq=seq,
            audience=notify.audience, recipient=name, channel=channel, target=target,
            template=notify.template, context=jira_extra if channel == "jira" else extra,
            actions=_grant(policy, view, name, at) if pages else None,
        )
        for name, channel, target in recipients
    ]


def _grant(policy: Policy, view: EscalationState, recipient: str, at: datetime) -> ActionGrant | None:
    """The action links a page to ``recipient`` carries: what they may do now, at this level."""
    who = standing(policy, recipient, view)
    actions = possible(policy, who, view) if who is not None else []
    if not actions:
        return None
    return ActionGrant(level=view.level, actions=actions, expires_at=at + policy.links.expire_after)


def _context(view: EscalationState, *, handoff: dict[str, Any] | None, impact: dict[str, Any]) -> dict[str, Any]:
    deadlines = view.deadlines
    escalation: dict[str, Any] = {
        "ticket_id": view.ticket_id, "title": view.title, "priority": view.priority,
        "kind": view.kind, "category": view.category, "status": view.status,
        "level": view.level, "level_name": view.level_name, "owner": view.owner,
        "workflow_id": view.workflow_id,
        "customer": view.customer.model_dump(mode="json"),
        "impact": impact,
        "deadlines": {
            "ack_due": _iso(deadlines.ack_due),
            "resolve_due": _iso(deadlines.resolve_due),
            "next_customer_update_due": _iso(deadlines.next_customer_update_due),
        },
    }
    if handoff is not None:
        escalation["handoff"] = handoff
    return {"escalation": escalation, "next_update_by": _iso(deadlines.next_customer_update_due)}


def _snapshot(view: EscalationState) -> dict[str, Any]:
    return {
        "status": view.status, "level": view.level, "level_name": view.level_name,
        "owner": view.owner,
        "owner_contact": view.owner_contact.model_dump(mode="json") if view.owner_contact else None,
        "sla_at_risk": view.sla_at_risk, "sla_breached": view.sla_breached,
        "paged_levels": list(view.paged_levels),
        "deadlines": {
            "ack_due": _iso(view.deadlines.ack_due),
            "resolve_due": _iso(view.deadlines.resolve_due),
            "next_customer_update_due": _iso(view.deadlines.next_customer_update_due),
        },
        "paused_since": _iso(view.paused_since),
        "paused_seconds": view.paused_total.total_seconds(),
        "path": [entry.model_dump(mode="json") for entry in view.path],
    }


def delivery_summary(changes: list[Change]) -> str:
    """``notify engineering on-call``, ``customer update #3``: what a delivery is for."""
    parts = []
    for change in changes:
        if change.type == "customer_updated":
            parts.append(f"customer update #{change.payload['number']}")
            continue
        for notify in change.notify:
            if notify.customer:
                parts.append("notify customer")
            elif notify.responder:
                parts.append(f"notify {notify.responder} on-call")
            else:
                parts.append(f"notify {notify.audience} owner")
    return ", ".join(dict.fromkeys(parts))[:200]

"""Who is paged, and who owns an escalation, at a given instant. Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from schemas.escalation import EscalationRequest, UnroutableRequest, entry_level
from schemas.policy import ALWAYS_OPEN, Contact, Policy
from workflows.calendar import WorkingCalendar, calendar_named
from workflows.rotation import next_handover, on_call


@dataclass(frozen=True)
class Paging:
    recipients: list[Contact]
    owner: Contact | None
    why: str | None = None
    skipped: list[str] = field(default_factory=list)


RoutingError = UnroutableRequest


def entry_point(policy: Policy, request: EscalationRequest) -> str:
    """Where an escalation of this kind opens (raises ``RoutingError``)."""
    return entry_level(policy, request)


def consulted_level(policy: Policy, request: EscalationRequest, entry: str) -> str | None:
    """The manager role a hierarchical escalation brings in at once."""
    if request.kind != "hierarchical":
        return None
    responder = policy.responder(entry)
    manager = getattr(responder, "manager", None)
    return manager or policy.priorities[request.priority].breach_notifies


def paged_alongside(policy: Policy, request: EscalationRequest, entry: str) -> str | None:
    """The level a priority escalation pages together with its entry level."""
    if request.kind != "priority":
        return None
    return policy.next_responder(entry)


def _available(policy: Policy, contact: Contact, at: datetime) -> bool:
    if contact.availability == ALWAYS_OPEN:
        return True
    return calendar_named(policy, contact.availability).is_working(at)


def paging(policy: Policy, responder_id: str, at: datetime) -> Paging:
    """The people to notify now: whoever is on call and available, else their backups."""
    responder = policy.responder(responder_id)
    by_name = {c.name: c for c in responder.contacts}
    if responder.oncall is not None:
        primary = [by_name[on_call(responder.oncall, at)]]
    else:
        primary = list(responder.contacts)
    available = [c for c in primary if _available(policy, c, at)]
    if available:
        return Paging(recipients=available, owner=available[0])
    away = [c.name for c in primary]
    backups: list[Contact] = []
    for contact in primary:
        if contact.backup and by_name[contact.backup] not in backups:
            backups.append(by_name[contact.backup])
    if backups:
        names = ", ".join(b.name for b in backups)
        return Paging(
            recipients=backups,
            owner=backups[0],
            why=f"{', '.join(away)} not available now; paged backup {names}",
            skipped=away,
        )
    return Paging(
        recipients=primary,
        owner=primary[0],
        why=f"nobody in {responder_id} is available now and no backup is set; paged {', '.join(away)} anyway",
        skipped=[],
    )


def owner_handover(policy: Policy, responder_id: str, at: datetime) -> datetime | None:
    """When the owner of this responder changes next (rotations only)."""
    rotation = policy.responder(responder_id).oncall
    if rotation is None or len(rotation.people) < 2:
        return None
    return next_handover(rotation, at)


def responder_calendar(policy: Policy, responder_id: str) -> WorkingCalendar:
    return calendar_named(policy, policy.responder(responder_id).availability)


_NOISE = re.compile(r"[^a-z0-9]+")


def _norm(value: str | None) -> str:
    return _NOISE.sub("-", (value or "").strip().lower()).strip("-")


def fingerprint(request: EscalationRequest) -> str:
    """Same customer, same category, same integration: the same issue coming back."""
    return "|".join(
        [_norm(request.customer.id), _norm(request.category), _norm(request.handoff.integration_id)]
    )

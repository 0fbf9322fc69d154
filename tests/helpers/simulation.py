"""Simulated escalation runs: a run's domain events without a workflow, for read-model tests.

``Sim`` builds one escalation's events the way ``EscalationWorkflow._commit`` builds them
(opened with the full view, then snapshot + counts on every other event); tests store them
through the real ``record_events`` activity so the real projection folds the read model.
``pin_policies`` pins the policies through the real ``load_policy`` activity, as a run does.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
from temporalio.testing import ActivityEnvironment

from activities.policy import PolicyActivities
from escalations.policies import PolicySource, packaged_policy
from schemas.activities import EventBatch, PolicyRequest, RepeatInfo
from schemas.durations import format_duration
from schemas.escalation import (
    Consulted,
    Deadlines,
    DomainEvent,
    EscalationRequest,
    EscalationState,
    PathEntry,
    PolicyRef,
    PostmortemState,
    Resolution,
    postmortem_id_for,
    workflow_id_for,
)
from schemas.notifications import NotificationIntent, notification_key
from schemas.policy import ContactPoint, Policy
from tests.helpers.policies import policy_path
from workflows.routing import fingerprint

BASE = datetime(2026, 3, 2, tzinfo=timezone.utc)
"""A Monday: simulated runs open from here on."""


class Sim:
    """One escalation's events, built as EscalationWorkflow commits them."""

    def __init__(self, policy: Policy, request: EscalationRequest, escalation_id: str,
                 notify: bool = False, channel: str = "log", target: str | None = None):
        self.policy = policy
        self.request = request
        self.escalation_id = escalation_id
        self.notify = notify  # one customer notification per event, on ``channel``
        self.channel, self.target = channel, target
        self.view: EscalationState | None = None
        self.batches: list[EventBatch] = []
        self.ack_started: datetime | None = None
        self.ack_budget = timedelta(0)
        self.ack_reminders = 0
        self.paused_since: datetime | None = None
        self.paused_total = timedelta(0)
        self.cadence_from: datetime | None = None
        self.customer_updates = 0
        self.stored = 0  # batches already stored

    @property
    def events(self) -> list[DomainEvent]:
        return [e for b in self.batches for e in b.events]

    @property
    def targets(self):  # type: ignore[no-untyped-def]
        return self.policy.priorities[self.request.priority]

    @property
    def v(self) -> EscalationState:
        assert self.view is not None
        return self.view

    # the workflow's _refresh / _snapshot / _commit, for 24x7 clocks

    def _refresh(self) -> None:
        v = self.v
        v.paused_since = self.paused_since
        v.paused_total = self.paused_total
        if v.status in ("resolved", "closed"):
            v.deadlines = Deadlines()
            return
        v.status = "paused" if self.paused_since else ("open" if self.ack_started else "acknowledged")
        running = self.paused_since is None
        v.deadlines = Deadlines(
            ack_due=self.ack_started + self.ack_budget if self.ack_started else None,
            resolve_due=(v.opened_at + self.targets.resolve_within + self.paused_total) if running else None,
            next_customer_update_due=(self.cadence_from + self.targets.customer_update_every
                                      if running and self.cadence_from else None),
        )

    def _snapshot(self) -> dict[str, Any]:
        v = self.v
        iso = lambda d: d.isoformat() if d else None  # noqa: E731
        return {
            "status": v.status, "level": v.level, "level_name": v.level_name, "owner": v.owner,
            "owner_contact": v.owner_contact.model_dump(mode="json") if v.owner_contact else None,
            "sla_at_risk": v.sla_at_risk, "sla_breached": v.sla_breached,
            "paged_levels": list(v.paged_levels),
            "deadlines": {"ack_due": iso(v.deadlines.ack_due), "resolve_due": iso(v.deadlines.resolve_due),
                          "next_customer_update_due": iso(v.deadlines.next_customer_update_due)},
            "paused_since": iso(v.paused_since),
            "paused_seconds": v.paused_total.total_seconds(),
        }

    def _context(self) -> dict[str, Any]:
        """What the workflow's ``_context`` puts into every notification intent."""
        v, snapshot = self.v, self._snapshot()
        return {
            "escalation": {
                "ticket_id": v.ticket_id, "title": v.title, "priority": v.priority, "kind": v.kind,
                "category": v.category, "status": v.status, "level": v.level,
                "level_name": v.level_name, "owner": v.owner, "workflow_id": v.workflow_id,
                "customer": v.customer.model_dump(mode="json"),
                "impact": self.request.impact.model_dump(mode="json"),
                "handoff": self.request.handoff.model_dump(mode="json"),
                "deadlines": snapshot["deadlines"],
            },
            "next_update_by": snapshot["deadlines"]["next_customer_update_due"],
        }

    def commit(self, now: datetime, changes: list[tuple[str, dict[str, Any]]]) -> None:
        v = self.v
        self._refresh()
        v.updated_at = now
        first = v.last_seq + 1
        v.last_seq += len(changes)
        v.counts.events += len(changes)
        snapshot = self._snapshot()
        events, intents = [], []
        for seq, (kind, payload) in enumerate(changes, start=first):
            payload = dict(payload)
            if kind == "opened":
                payload["view"] = v.model_dump(mode="json")
            else:
                payload["snapshot"] = snapshot
                payload["counts"] = v.counts.model_dump(mode="json")
            events.append(DomainEvent(escalation_id=self.escalation_id, ticket_id=v.ticket_id, seq=seq,
                                      type=kind, occurred_at=now, payload=payload))
            if self.notify:
                recipient = v.customer.id
                intents.append(NotificationIntent(
                    key=notification_key(self.escalation_id, seq, recipient, self.channel),
                    escalation_id=self.escalation_id, ticket_id=v.ticket_id, seq=seq,
                    audience="customer", recipient=recipient, channel=self.channel, target=self.target,
                    template="customer_update", context=self._context(),
                ))
        self.batches.append(EventBatch(escalation_id=self.escalation_id, ticket_id=v.ticket_id,
                                       events=events, intents=intents))

    # transitions

    def _enter(self, level: str, now: datetime) -> None:
        v, responder = self.v, self.policy.responder(level)
        contact = responder.contacts[0]
        v.level, v.level_name = level, self.policy.responder_name(level)
        v.owner = contact.name
        v.owner_contact = ContactPoint(name=contact.name, channel=contact.channel, target=contact.target)
        v.acknowledged_at = v.acknowledged_by = None
        if level not in v.paged_levels:
            v.paged_levels.append(level)
        self.ack_started, self.ack_budget, self.ack_reminders = now, responder.ack_within, 0

    def open(self, now: datetime, repeats: RepeatInfo) -> None:
        request, policy = self.request, self.policy
        entry = (policy.routes[request.category] if request.kind == "functional"
                 else self.targets.entry_level)
        self.view = EscalationState(
            escalation_id=self.escalation_id, ticket_id=request.ticket_id,
            workflow_id=workflow_id_for(request.ticket_id), title=request.title,
            customer=request.customer, category=request.category, kind=request.kind, status="open",
            priority=request.priority, level=entry, level_name=policy.responder_name(entry),
            owner=None, route=entry, deadlines=Deadlines(), trigger=request.trigger,
            policy=PolicyRef(name=policy.name, version=policy.version), opened_at=now,
            repeat_of=repeats.repeat_of, repeat_count=repeats.repeat_count, updated_at=now,
        )
        self._enter(entry, now)
        if request.kind == "priority" and policy.next_responder(entry):
            self.v.paged_levels.append(policy.next_responder(entry))  # type: ignore[arg-type]
        if request.kind == "hierarchical":
            self.v.consulted.append(Consulted(level=self.targets.breach_notifies, notified_at=now))
        self.cadence_from = now
        self.commit(now, [("opened", {"fingerprint": fingerprint(request), "rank": policy.rank(entry)})])

    def move(self, now: datetime, to_level: str, *, reason: str, auto: bool, by: str | None) -> None:
        v = self.v
        entry = PathEntry(from_level=v.level, to_level=to_level, reason=reason, auto=auto, at=now, by=by)
        v.path.append(entry)
        if auto:
            v.counts.auto_escalations += 1
        else:
            v.counts.manual_escalations += 1
        payload = {"from_level": v.level, "to_level": to_level, "reason": reason, "auto": auto, "by": by,
                   "rank": self.policy.rank(to_level), "path_entry": entry.model_dump(mode="json")}
        self._enter(to_level, now)
        self.commit(now, [("escalated", payload)])

    def ack_timeout(self, now: datetime) -> None:
        v = self.v
        nxt = self.policy.next_responder(v.level)
        if nxt is None:
            self.ack_reminders += 1
            v.counts.ack_reminders += 1
            self.ack_started = now
            self.commit(now, [("ack_reminder", {"level": v.level, "number": self.ack_reminders})])
        else:
            self.move(now, nxt, auto=True, by=None,
                      reason=f"no acknowledgement from {v.level} within {format_duration(self.ack_budget)}")

    def acknowledge(self, now: datetime, by: str) -> None:
        self.ack_started = None
        self.v.acknowledged_at, self.v.acknowledged_by = now, by
        self.commit(now, [("acknowledged", {"level": self.v.level, "by": by})])

    def note(self, now: datetime, author: str) -> None:
        self.v.counts.notes += 1
        self.v.counts.customer_updates += 1
        self.cadence_from = now
        self.commit(now, [("note_added", {"author": author, "text": "Fix is being rolled out",
                                          "customer_visible": True})])

    def customer_update(self, now: datetime) -> None:
        self.customer_updates += 1
        self.v.counts.customer_updates += 1
        self.cadence_from = now
        self.commit(now, [("customer_updated", {"number": self.customer_updates, "auto": True})])

    def pause(self, now: datetime, by: str) -> None:
        self.paused_since = now
        self.v.counts.pauses += 1
        self.commit(now, [("paused", {"by": by, "reason": "waiting on the customer"})])

    def resume(self, now: datetime, by: str) -> None:
        assert self.paused_since is not None
        seconds = (now - self.paused_since).total_seconds()
        self.paused_total += now - self.paused_since
        self.paused_since = None
        self.commit(now, [("resumed", {"by": by, "auto": False, "paused_seconds": seconds})])

    def at_risk(self, now: datetime) -> None:
        self.v.sla_at_risk = True
        left = self.v.opened_at + self.paused_total + self.targets.resolve_within - now
        self.commit(now, [("sla_at_risk", {"remaining_seconds": left.total_seconds()})])

    def breach(self, now: datetime) -> None:
        v = self.v
        v.sla_breached = v.sla_at_risk = True
        v.breached_at = now
        self.commit(now, [("sla_breached",
                           {"resolve_within_seconds": self.targets.resolve_within.total_seconds()})])

    def resolve(self, now: datetime, by: str) -> None:
        v = self.v
        if self.paused_since is not None:  # resolving a paused escalation ends the pause
            self.paused_total += now - self.paused_since
            self.paused_since = None
        self.ack_started = self.cadence_from = None
        net = (now - v.opened_at) - self.paused_total
        v.status, v.resolved_at = "resolved", now
        v.resolution = Resolution(by=by, at=now, root_cause="API schema change", mitigation="hotfix",
                                  preventive_actions=["monitor schema changes"])
        v.postmortem = PostmortemState(workflow_id=postmortem_id_for(v.ticket_id),
                                       owner=v.owner or v.level, due=now + self.policy.postmortem_due)
        self.commit(now, [
            ("resolved", {"by": by, "root_cause": "API schema change", "mitigation": "hotfix",
                          "preventive_actions": ["monitor schema changes"],
                          "resolution_seconds": net.total_seconds(), "within_sla": not v.sla_breached}),
            ("csat_requested", {"window_seconds": self.policy.csat_window.total_seconds()}),
            ("postmortem_started", {"postmortem": v.postmortem.model_dump(mode="json")}),
        ])

    def postmortem_reminder(self, now: datetime, number: int) -> None:
        postmortem = self.v.postmortem
        assert postmortem is not None
        postmortem.reminders_sent = number
        self.commit(now, [("postmortem_reminder",
                           {"number": number, "postmortem": postmortem.model_dump(mode="json")})])

    def close(self, now: datetime, by: str) -> None:
        v = self.v
        postmortem = v.postmortem
        assert postmortem is not None
        postmortem.completed_at, postmortem.completed_by = now, by
        postmortem.summary = postmortem.root_cause = "API schema change"
        postmortem.improvements = ["alert on third-party API changes"]
        v.status, v.closed_at = "closed", now
        self.commit(now, [("postmortem_completed", {"postmortem": postmortem.model_dump(mode="json"), "by": by}),
                          ("closed", {})])


async def pin_policies(pg_pool: asyncpg.Pool) -> dict[str, Policy]:
    """Load the packaged default and the seconds-scale test policy as a run would."""
    env, policies = ActivityEnvironment(), {}
    for path in (packaged_policy("default"), policy_path("fast")):
        activities = PolicyActivities(pg_pool, PolicySource.from_setting(str(path)))
        policy = await env.run(activities.load_policy, PolicyRequest())
        policies[policy.name] = policy
    return policies

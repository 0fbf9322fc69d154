"""What each thing that happens to an escalation changes: pure functions over the run state.

Invariant: a transition depends only on its arguments. The time it acts at is one of
them (``at``): for a deadline, the deadline the fired timer was armed for; for a command,
the time of the workflow task that accepted it. So a decision never depends on which
workflow task it runs in, and replay always decides the same.

Every transition copies the state it is given and returns the copy with the changes it
made (``Decision``); it never touches the caller's state. ``check_*`` functions are the
validators: they raise ``InvalidCommand`` naming the current status and change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from schemas.durations import format_duration
from schemas.escalation import (
    AcknowledgeCommand,
    AddNoteCommand,
    ApplyPolicyCommand,
    Consulted,
    Deadlines,
    EscalateCommand,
    EscalationRequest,
    EscalationState,
    PathEntry,
    PauseCommand,
    PolicyRef,
    PostmortemReport,
    PostmortemState,
    Resolution,
    ResolveCommand,
    ResumeCommand,
    postmortem_id_for,
)
from schemas.policy import Contact as PolicyContact
from schemas.policy import ContactPoint, Policy, PriorityTargets
from workflows import clocks as clk
from workflows import routing
from workflows.calendar import WorkingCalendar, calendar_named

RunState = clk.RunState


class InvalidCommand(ValueError):
    """A command the current state forbids; the message names the status."""


class Unroutable(ValueError):
    """The request cannot be routed by the policy (unknown category, ...)."""


@dataclass
class Notify:
    """Who hears about a change: a responder's people, explicit contacts, or the customer."""

    audience: str
    template: str
    responder: str | None = None
    contacts: list[ContactPoint] | None = None
    customer: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Change:
    """One domain event to record, and who to tell about it."""

    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    notify: list[Notify] = field(default_factory=list)


@dataclass
class Decision:
    state: RunState
    changes: list[Change]


@dataclass(frozen=True)
class PostmortemPlan:
    """What resolving starts: the postmortem child's id, owner and due date."""

    workflow_id: str
    owner: str
    owner_contact: ContactPoint | None
    due: datetime


# -- helpers ------------------------------------------------------------------


def draft(state: RunState) -> RunState:
    """A copy to change. The policy is immutable (apply_policy swaps it), so it is shared."""
    return state.model_copy(update={"view": state.view.model_copy(deep=True),
                                    "clocks": state.clocks.model_copy(deep=True)})


def targets(state: RunState) -> PriorityTargets:
    """The run's SLA targets: its priority's, as its contract (chosen at open) overrides them."""
    return state.policy.targets(state.view.priority, state.view.contract)


def ack_within(state: RunState, level: str) -> timedelta:
    """How long ``level`` has to acknowledge this run (its contract may shorten or lengthen it)."""
    return state.policy.ack_within(level, state.view.priority, state.view.contract)


def sla_calendar(state: RunState) -> WorkingCalendar:
    return calendar_named(state.policy, targets(state).calendar)


def ack_calendar(state: RunState) -> WorkingCalendar:
    return calendar_named(state.policy, state.clocks.ack_calendar)


def upcoming(state: RunState) -> list[clk.Due]:
    """Every pending deadline of the run, earliest first."""
    return clk.upcoming(
        state.clocks,
        level=state.view.level,
        priority=state.view.priority,
        at_risk_fraction=targets(state).at_risk_at,
        sla_calendar=sla_calendar(state),
        ack_calendar=ack_calendar(state),
    )


def due_by(state: RunState, at: datetime) -> set[str]:
    """The kinds of deadline due at or before ``at`` (the deadline a fired timer was armed for)."""
    return {d.kind for d in upcoming(state) if d.at <= at}


def refresh(state: RunState, at: datetime) -> None:
    """Derive the view's status and deadlines from the clocks (in place, on a draft)."""
    view, clocks = state.view, state.clocks
    calendar = sla_calendar(state)
    at_risk_fraction = targets(state).at_risk_at
    view.paused_since = clocks.paused_since
    view.paused_total = clocks.paused_total
    if view.status not in ("resolved", "closed"):
        if clocks.paused_since is not None:
            view.status = "paused"
        elif clocks.ack is None:
            view.status = "acknowledged"
        else:
            view.status = "open"
        view.deadlines = Deadlines(
            ack_due=clk.due_at(clocks.ack, ack_calendar(state)) if clocks.ack else None,
            resolve_due=clk.due_at(clocks.resolve, calendar),
            next_customer_update_due=clk.due_at(clocks.cadence, calendar) if clocks.cadence else None,
            at_risk_at=(None if clocks.at_risk_notified
                        else clk.due_at(clocks.resolve, calendar, at_risk_fraction)),
            auto_resume_at=(clocks.paused_since + clocks.max_pause
                            if clocks.paused_since and clocks.max_pause else None),
        )
    else:
        view.deadlines = Deadlines()
    view.resolve_remaining = clk.remaining(clocks.resolve, calendar, at)


def _contact(contact: PolicyContact | None) -> ContactPoint | None:
    return contact.point() if contact is not None else None


def _require_unresolved(state: RunState, action: str) -> None:
    view = state.view
    if view.status in ("resolved", "closed"):
        raise InvalidCommand(f"cannot {action}: escalation {view.ticket_id} is {view.status}")


def _name(policy: Policy, responder_id: str | None) -> str | None:
    """A level's name for a page; its id when the pinned policy no longer has it."""
    if responder_id is None:
        return None
    try:
        return policy.responder_name(responder_id)
    except KeyError:
        return responder_id


def _move_page(policy: Policy, entry: PathEntry) -> dict[str, Any]:
    """What a page to the level a move reached says about the move: from where, who, why."""
    return {"from_level": entry.from_level, "from_level_name": _name(policy, entry.from_level),
            "to_level": entry.to_level, "to_level_name": _name(policy, entry.to_level),
            "auto": entry.auto, "by": entry.by, "via": entry.via, "reason": entry.reason}


def _enter_level(state: RunState, level: str, at: datetime, changes: list[Change], *,
                 opening: bool = False, page: dict[str, Any] | None = None) -> None:
    """Make ``level`` the owner: page its people and start its ack clock (or hold it).

    ``page`` is what the page says about how the escalation got here (``_move_page``); the
    paging note (a backup paged, nobody available) goes beside it as ``paging_note``.
    """
    view, policy, clocks = state.view, state.policy, state.clocks
    responder = policy.responder(level)
    view.level = level
    view.level_name = policy.responder_name(level)
    view.acknowledged_at = None
    view.acknowledged_by = None
    view.acknowledged_via = None
    if level not in view.paged_levels:
        view.paged_levels.append(level)
    paging = routing.paging(policy, level, at)
    view.owner = paging.owner.name if paging.owner else None
    view.owner_contact = _contact(paging.owner)
    clocks.handover_at = routing.owner_handover(policy, level, at)
    clocks.ack_reminders = 0
    clocks.ack_calendar = targets(state).calendar
    starts = at
    available = routing.responder_calendar(policy, level)
    if responder.hold_until_available and not available.is_working(at):
        starts = available.next_opening(at)
        reason = f"{level} is outside its service hours; held until {starts:%Y-%m-%d %H:%M} UTC"
        entry = PathEntry(from_level=level, to_level=level, reason=reason, auto=True, at=at)
        view.path.append(entry)
        changes.append(
            Change("held_until_available",
                   {"level": level, "until": starts.isoformat(), "reason": reason,
                    "path_entry": entry.model_dump(mode="json")})
        )
    clocks.ack = clk.Clock(budget=ack_within(state, level), running_since=starts)
    # The people of a held level hear about it when the hold ends, not now.
    clocks.held_until = starts if starts != at else None
    if clocks.held_until is None:
        template = "escalation_opened" if opening else "escalated"
        extra = {**(page or {}), "paging_note": paging.why}
        changes[-1].notify.insert(0, Notify("owner", template, responder=level, extra=extra))
        if paging.why:
            view.path.append(PathEntry(from_level=level, to_level=level, reason=paging.why, auto=True, at=at))


def _move(state: RunState, to_level: str, at: datetime, changes: list[Change], *,
          reason: str, auto: bool, by: str | None, via: str | None = None) -> None:
    view, policy = state.view, state.policy
    from_level = view.level
    entry = PathEntry(from_level=from_level, to_level=to_level, reason=reason, auto=auto, at=at, by=by, via=via)
    view.path.append(entry)
    if auto:
        view.counts.auto_escalations += 1
    else:
        view.counts.manual_escalations += 1
    change = Change(
        "escalated",
        {"from_level": from_level, "to_level": to_level, "reason": reason, "auto": auto, "by": by, "via": via,
         "rank": policy.rank(to_level), "path_entry": entry.model_dump(mode="json")},
    )
    changes.append(change)
    _enter_level(state, to_level, at, changes, page=_move_page(policy, entry))
    change.notify.append(
        Notify("customer", "customer_escalated", customer=True, extra={"team_name": state.view.level_name})
    )


def _resume(state: RunState, at: datetime, *, by: str, auto: bool, changes: list[Change],
            via: str | None = None) -> None:
    paused_since = state.clocks.paused_since
    assert paused_since is not None
    state.clocks = clk.unpaused(state.clocks, at)
    payload: dict[str, Any] = {"by": by, "via": via, "auto": auto,
                               "paused_seconds": (at - paused_since).total_seconds()}
    if auto:
        payload["reason"] = (
            f"paused longer than the maximum of {format_duration(state.clocks.max_pause or timedelta(0))}"
        )
    changes.append(Change("resumed", payload))


# -- opening ------------------------------------------------------------------


def open_escalation(request: EscalationRequest, policy: Policy, *, escalation_id: str, workflow_id: str,
                    at: datetime, repeat_of: str | None = None, repeat_count: int = 0) -> Decision:
    """The first decision: entry level paged, customer told, every clock started at ``at``."""
    try:
        entry = routing.entry_point(policy, request)
    except routing.RoutingError as err:
        raise Unroutable(str(err)) from None
    fingerprint = routing.fingerprint(request)
    customer = request.customer
    contract = policy.choose_contract(customer_id=customer.id, segment=customer.segment, plan=customer.plan)
    chosen = policy.targets(request.priority, contract)
    clocks = clk.ClockSet(
        resolve=clk.started(chosen.resolve_within, at),
        cadence=clk.started(chosen.customer_update_every, at),
    )
    view = EscalationState(
        escalation_id=escalation_id, ticket_id=request.ticket_id, workflow_id=workflow_id,
        title=request.title, customer=request.customer, category=request.category, kind=request.kind,
        status="open", priority=request.priority, level=entry, level_name=policy.responder_name(entry),
        owner=None, route=entry, deadlines=Deadlines(), trigger=request.trigger,
        policy=PolicyRef(name=policy.name, version=policy.version), contract=contract, opened_at=at,
        repeat_of=repeat_of, repeat_count=repeat_count, updated_at=at,
    )
    state = RunState(view=view, policy=policy, clocks=clocks, fingerprint=fingerprint)
    changes: list[Change] = []
    opened = Change("opened")
    changes.append(opened)
    _enter_level(state, entry, at, changes, opening=True)
    opened.notify.append(
        Notify("customer", "customer_escalated", customer=True, extra={"team_name": state.view.level_name})
    )
    alongside = routing.paged_alongside(policy, request, entry)
    if alongside is not None:
        # Paged, not moved: the level stays at the entry, so the path (moves) is unchanged.
        state.view.paged_levels.append(alongside)
        opened.notify.append(
            Notify("owner", "escalation_opened", responder=alongside,
                   extra={"reason": f"paged together with {entry} (priority escalation)"})
        )
    consulted = routing.consulted_level(policy, request, entry)
    if consulted is not None:
        state.view.consulted.append(Consulted(level=consulted, notified_at=at))
        opened.notify.append(
            Notify("consulted", "consulted", responder=consulted,
                   extra={"auto": True, "reason": f"hierarchical escalation: {consulted} consulted from the start"})
        )
    opened.payload = {"fingerprint": fingerprint, "rank": policy.rank(entry),
                      "repeat_window_seconds": policy.repeat_window.total_seconds()}
    return Decision(state, changes)


# -- deadlines ----------------------------------------------------------------


def deadlines(state: RunState, at: datetime, due: set[str]) -> Decision:
    """Act on the deadlines ``due`` at ``at``; clocks that restart restart from ``at``."""
    state = draft(state)
    view, clocks, policy = state.view, state.clocks, state.policy
    chosen = targets(state)
    calendar = sla_calendar(state)
    changes: list[Change] = []
    if "at_risk" in due and "breach" not in due:
        clocks.at_risk_notified = True
        view.sla_at_risk = True
        left = clk.remaining(clocks.resolve, calendar, at)
        changes.append(
            Change("sla_at_risk", {"remaining_seconds": left.total_seconds()},
                   [Notify("owner", "sla_at_risk", responder=view.level,
                           extra={"reason": f"{format_duration(left)} of the resolution SLA left"})])
        )
    if "breach" in due:
        clocks.breached = True
        clocks.at_risk_notified = True
        view.sla_breached = True
        view.sla_at_risk = True
        view.breached_at = at
        changes.append(
            Change("sla_breached", {"resolve_within_seconds": chosen.resolve_within.total_seconds()},
                   [Notify("breach", "sla_breached", responder=chosen.breach_notifies,
                           extra={"reason": f"not resolved within {format_duration(chosen.resolve_within)}"})])
        )
    if "ack" in due:
        _ack_timeout(state, at, changes)
    if "hold" in due:
        clocks.held_until = None
        changes.append(
            Change("hold_released", {"level": view.level},
                   [Notify("owner", "escalated", responder=view.level, extra=_held_page(state))])
        )
    if "cadence" in due:
        clocks.customer_updates += 1
        view.counts.customer_updates += 1
        clocks.cadence = clk.started(chosen.customer_update_every, at)
        number = clocks.customer_updates
        changes.append(
            Change("customer_updated", {"number": number, "auto": True},
                   [Notify("customer", "customer_update", customer=True, extra={"n": number}),
                    Notify("owner", "customer_update_due", responder=view.level, extra={"n": number})])
        )
    if "auto_resume" in due:
        _resume(state, at, by="policy", auto=True, changes=changes)
    if "handover" in due:
        paging = routing.paging(policy, view.level, at)
        previous = view.owner
        view.owner = paging.owner.name if paging.owner else None
        view.owner_contact = _contact(paging.owner)
        clocks.handover_at = routing.owner_handover(policy, view.level, at)
        if view.owner != previous:
            changes.append(Change("owner_changed", {"from": previous, "to": view.owner}))
    return Decision(state, changes)


def _held_page(state: RunState) -> dict[str, Any]:
    """The page a held level gets when its service hours start: the move that reached it, if any."""
    view = state.view
    held = f"held until {view.level_name}'s service hours started"
    move = next((entry for entry in reversed(view.path)
                 if entry.to_level == view.level and entry.from_level != view.level), None)
    if move is None:  # held since the escalation opened
        return {"reason": f"{view.level} service hours started", "held_note": held}
    return {**_move_page(state.policy, move), "held_note": held}


def _ack_timeout(state: RunState, at: datetime, changes: list[Change]) -> None:
    view, policy, clocks = state.view, state.policy, state.clocks
    ack = clocks.ack
    assert ack is not None
    waited = format_duration(ack.budget)
    nxt = policy.next_responder(view.level)
    if nxt is None:
        clocks.ack_reminders += 1
        view.counts.ack_reminders += 1
        clocks.ack = clk.started(ack_within(state, view.level), at)
        changes.append(
            Change("ack_reminder", {"level": view.level, "number": clocks.ack_reminders},
                   [Notify("owner", "ack_reminder", responder=view.level,
                           extra={"n": clocks.ack_reminders, "was_due": at.isoformat(),
                                  "reason": f"not acknowledged within {waited} at the last level"})])
        )
        return
    _move(state, nxt, at, changes, reason=f"no acknowledgement from {view.level} within {waited}",
          auto=True, by=None)


# -- commands -----------------------------------------------------------------


def check_acknowledge(state: RunState, command: AcknowledgeCommand) -> None:
    view = state.view
    _require_unresolved(state, "acknowledge")
    if command.level is not None and command.level != view.level:
        consulted = next((c for c in view.consulted if c.level == command.level), None)
        if consulted is None:
            raise InvalidCommand(
                f"cannot acknowledge as {command.level}: the escalation is at {view.level}"
                + (f" and consults {', '.join(c.level for c in view.consulted)}" if view.consulted else "")
            )
        if consulted.acknowledged_at is not None:
            raise InvalidCommand(f"{command.level} already acknowledged as consulted by {consulted.acknowledged_by}")
        return
    if state.clocks.ack is None:
        raise InvalidCommand(
            f"cannot acknowledge: escalation {view.ticket_id} is {view.status}; already "
            f"acknowledged at {view.level} by {view.acknowledged_by}"
        )


def acknowledge(state: RunState, command: AcknowledgeCommand, at: datetime) -> Decision:
    check_acknowledge(state, command)
    state = draft(state)
    view = state.view
    consulted = next((c for c in view.consulted if c.level == command.level), None)
    if consulted is not None and command.level != view.level:
        consulted.acknowledged_by = command.by
        consulted.acknowledged_via = command.via
        consulted.acknowledged_at = at
        return Decision(state, [Change("consulted_acknowledged",
                                       {"level": consulted.level, "by": command.by, "via": command.via,
                                        "consulted": [c.model_dump(mode="json") for c in view.consulted]})])
    state.clocks.ack = None
    state.clocks.ack_reminders = 0
    view.acknowledged_at = at
    view.acknowledged_by = command.by
    view.acknowledged_via = command.via
    return Decision(state, [Change("acknowledged", {"level": view.level, "by": command.by, "via": command.via})])


def check_escalate(state: RunState, command: EscalateCommand) -> str:
    """The level the command moves to (the next one when it names none)."""
    _require_unresolved(state, "escalate")
    view, policy = state.view, state.policy
    if command.from_level is not None and command.from_level != view.level:
        raise InvalidCommand(f"cannot escalate from {command.from_level}: the escalation is at {view.level} now")
    if command.to_level is None:
        target = policy.next_responder(view.level)
        if target is None:
            raise InvalidCommand(f"cannot escalate: {view.level} is the last level of policy {policy.name}")
        return target
    known = [*policy.level_ids, *policy.departments]
    if command.to_level not in known:
        raise InvalidCommand(f"cannot escalate to {command.to_level!r}: not a level of policy "
                             f"{policy.name} (levels: {', '.join(known)})")
    if command.to_level == view.level:
        raise InvalidCommand(f"cannot escalate: already at {view.level}")
    return command.to_level


def escalate(state: RunState, command: EscalateCommand, at: datetime) -> Decision:
    target = check_escalate(state, command)
    state = draft(state)
    changes: list[Change] = []
    _move(state, target, at, changes, reason=command.reason, auto=False, by=command.by, via=command.via)
    return Decision(state, changes)


def check_add_note(state: RunState, command: AddNoteCommand) -> None:
    _require_unresolved(state, "add a note")


def add_note(state: RunState, command: AddNoteCommand, at: datetime) -> Decision:
    check_add_note(state, command)
    state = draft(state)
    state.view.counts.notes += 1
    change = Change("note_added", {"author": command.author, "via": command.via, "text": command.text,
                                   "customer_visible": command.customer_visible})
    if command.customer_visible:
        state.view.counts.customer_updates += 1
        every = targets(state).customer_update_every
        if state.clocks.paused_since is None:
            state.clocks.cadence = clk.started(every, at)
        else:
            state.clocks.cadence = clk.Clock(budget=every)
        change.notify.append(
            Notify("customer", "customer_update", customer=True, extra={"text": command.text, "by": command.author})
        )
    return Decision(state, [change])


def check_pause(state: RunState, command: PauseCommand | None = None) -> None:
    _require_unresolved(state, "pause")
    if state.clocks.paused_since is not None:
        raise InvalidCommand(f"cannot pause: escalation {state.view.ticket_id} is already paused")


def pause(state: RunState, command: PauseCommand, at: datetime) -> Decision:
    check_pause(state, command)
    state = draft(state)
    chosen = targets(state)
    state.clocks = clk.paused(
        state.clocks, sla_calendar(state), at,
        stop_ack=chosen.pause_stops_ack,
        ack_calendar=ack_calendar(state),
        max_pause=chosen.max_pause or state.policy.max_pause,
    )
    state.view.counts.pauses += 1
    return Decision(state, [Change("paused", {"by": command.by, "via": command.via, "reason": command.reason})])


def check_resume(state: RunState, command: ResumeCommand | None = None) -> None:
    view = state.view
    if state.clocks.paused_since is None:
        raise InvalidCommand(f"cannot resume: escalation {view.ticket_id} is {view.status}, not paused")


def resume(state: RunState, command: ResumeCommand, at: datetime) -> Decision:
    check_resume(state, command)
    state = draft(state)
    changes: list[Change] = []
    _resume(state, at, by=command.by, auto=False, changes=changes, via=command.via)
    return Decision(state, changes)


def check_resolve(state: RunState, command: ResolveCommand | None = None) -> None:
    _require_unresolved(state, "resolve")


def postmortem_plan(state: RunState, at: datetime) -> PostmortemPlan:
    """Due after ``postmortem_due``; on a business calendar, never outside working hours."""
    view = state.view
    due = sla_calendar(state).next_opening(at + state.policy.postmortem_due)
    return PostmortemPlan(workflow_id=postmortem_id_for(view.ticket_id), owner=view.owner or view.level,
                          owner_contact=view.owner_contact, due=due)


def resolve(state: RunState, command: ResolveCommand, at: datetime, plan: PostmortemPlan) -> Decision:
    """Resolved: every clock stops, the customer is told, the postmortem (``plan``) begins."""
    check_resolve(state, command)
    state = draft(state)
    view, policy = state.view, state.policy
    if state.clocks.paused_since is not None:
        state.clocks = clk.unpaused(state.clocks, at)
    state.clocks = state.clocks.model_copy(update={
        "ack": None, "cadence": None, "handover_at": None,
        "resolve": clk.stopped(state.clocks.resolve, sla_calendar(state), at),
    })
    net = (at - view.opened_at) - state.clocks.paused_total
    view.status = "resolved"
    view.resolved_at = at
    view.resolution = Resolution(by=command.by, at=at, root_cause=command.root_cause,
                                 mitigation=command.mitigation,
                                 preventive_actions=list(command.preventive_actions), via=command.via)
    view.postmortem = PostmortemState(workflow_id=plan.workflow_id, owner=plan.owner, due=plan.due)
    owner_notify = Notify("postmortem", "postmortem_assigned",
                          contacts=[plan.owner_contact] if plan.owner_contact else None,
                          responder=None if plan.owner_contact else view.level,
                          extra={"postmortem_due": plan.due.isoformat()})
    resolution = view.resolution.model_dump(mode="json")
    return Decision(state, [
        Change("resolved", {"by": command.by, "via": command.via, "resolved_at": at.isoformat(),
                            "root_cause": command.root_cause, "mitigation": command.mitigation,
                            "preventive_actions": list(command.preventive_actions),
                            "resolution_seconds": net.total_seconds(),
                            "within_sla": not view.sla_breached},
               [Notify("customer", "customer_resolved", customer=True, extra={"resolution": resolution})]),
        Change("csat_requested", {"window_seconds": policy.csat_window.total_seconds()},
               [Notify("customer", "csat_request", customer=True,
                       extra={"csat_window": format_duration(policy.csat_window)})]),
        Change("postmortem_started", {"postmortem": view.postmortem.model_dump(mode="json")}, [owner_notify]),
    ])


def check_apply_policy(state: RunState, command: ApplyPolicyCommand) -> None:
    _require_unresolved(state, "apply a policy")
    current = state.policy
    if command.version <= current.version:
        raise InvalidCommand(f"cannot apply version {command.version}: the run already uses "
                             f"{current.name} v{current.version}; only newer versions can be applied")


def apply_policy(state: RunState, command: ApplyPolicyCommand, policy: Policy) -> Decision:
    """Move the run onto a newer version of its policy; clocks keep what they used."""
    check_apply_policy(state, command)
    view = state.view
    if view.level not in [*policy.level_ids, *policy.departments]:
        raise InvalidCommand(f"policy {policy.name} v{policy.version} has no level {view.level!r}; "
                             "escalate to one of its levels first")
    state = draft(state)
    view = state.view
    old, old_contract = state.policy.version, view.contract
    # The newer version's contracts decide again, as if the run had opened under it.
    customer = view.customer
    contract = policy.choose_contract(customer_id=customer.id, segment=customer.segment, plan=customer.plan)
    chosen = policy.targets(view.priority, contract)
    clocks = state.clocks
    state.clocks = clocks.model_copy(update={
        "resolve": clk.rebudgeted(clocks.resolve, chosen.resolve_within),
        "cadence": clk.rebudgeted(clocks.cadence, chosen.customer_update_every) if clocks.cadence else None,
        "ack": (clk.rebudgeted(clocks.ack, policy.ack_within(view.level, view.priority, contract))
                if clocks.ack else None),
    })
    state.policy = policy
    view.policy = PolicyRef(name=policy.name, version=policy.version)
    view.contract = contract
    payload: dict[str, Any] = {"by": command.by, "via": command.via, "from_version": old, "to_version": policy.version}
    if contract != old_contract:
        payload.update(from_contract=old_contract, contract=contract)
    return Decision(state, [Change("policy_applied", payload)])


def postmortem_report(state: RunState, report: PostmortemReport) -> Decision | None:
    """A reminder or overdue notice from the postmortem child; None when no postmortem is open."""
    if state.view.postmortem is None or state.view.status == "closed":
        return None
    state = draft(state)
    postmortem = state.view.postmortem
    assert postmortem is not None
    if report.kind == "reminder":
        postmortem.reminders_sent = report.number
        contact = state.view.owner_contact
        notify = Notify("postmortem", "postmortem_reminder", contacts=[contact] if contact else None,
                        responder=None if contact else state.view.level,
                        extra={"n": report.number, "postmortem_due": postmortem.due.isoformat()})
        change = Change("postmortem_reminder", {"number": report.number}, [notify])
    else:
        postmortem.overdue_notified = True
        top = state.policy.level_ids[-1]
        change = Change("postmortem_overdue", {}, [
            Notify("postmortem", "postmortem_overdue", responder=top,
                   extra={"postmortem_due": postmortem.due.isoformat()})])
    change.payload["postmortem"] = postmortem.model_dump(mode="json")
    return Decision(state, [change])


def close(state: RunState, result: Any, at: datetime) -> Decision:
    """The postmortem child reported completion: record it and close."""
    state = draft(state)
    postmortem = state.view.postmortem
    assert postmortem is not None
    postmortem.completed_at = result.completed_at
    postmortem.completed_by = result.completed_by
    postmortem.completed_via = result.completed_via
    postmortem.summary = result.summary
    postmortem.root_cause = result.root_cause
    postmortem.improvements = result.improvements
    postmortem.kb_article_url = result.kb_article_url
    # The child's own count wins if a late reminder report was never recorded.
    postmortem.reminders_sent = max(postmortem.reminders_sent, result.reminders_sent)
    postmortem.overdue_notified = postmortem.overdue_notified or result.overdue
    state.view.status = "closed"
    state.view.closed_at = at
    return Decision(state, [
        Change("postmortem_completed", {"postmortem": postmortem.model_dump(mode="json"),
                                        "by": result.completed_by, "via": result.completed_via}),
        Change("closed"),
    ])


def deliveries_reported(state: RunState, *, sent: int, failures: list[dict[str, Any]],
                        jira_key: str | None) -> Decision:
    """What a delivery activity reported: counts always, events for failures and a new Jira link."""
    state = draft(state)
    view = state.view
    view.notifications_sent += sent
    changes: list[Change] = []
    if failures:
        view.notifications_failed += len(failures)
        last = failures[-1]
        view.last_notification_error = f"{last.get('channel')} to {last.get('recipient')}: {last.get('error')}"[:300]
        changes.append(Change("notification_failed", {"failures": failures}))
    if jira_key and jira_key != view.jira_key:
        view.jira_key = jira_key
        changes.append(Change("jira_linked", {"jira_key": jira_key}))
    return Decision(state, changes)


def fingerprint(request: EscalationRequest) -> str:
    """Same customer and issue: what makes an escalation a repeat of an earlier one."""
    return routing.fingerprint(request)

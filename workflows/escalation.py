"""EscalationWorkflow: one escalation from opening to the closed postmortem.

The workflow owns the SLA clocks (pure maths in ``workflows/clocks.py``) and waits
on one durable timer for the earliest of them. Every state change is a domain
event, stored by a local activity in the same workflow task that decided it;
notifications then go out through a regular activity in the background, so a
failing channel never holds a clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from schemas import keys
    from schemas.activities import EventBatch, PolicyRequest, RepeatInfo, RepeatQuery
    from schemas.durations import format_duration
    from schemas.escalation import (
        AcknowledgeCommand,
        AddNoteCommand,
        ApplyPolicyCommand,
        Consulted,
        Contact,
        Deadlines,
        DomainEvent,
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
        summary_for,
    )
    from schemas.notifications import (
        DeliveryBatch,
        DeliveryFailure,
        DeliveryOutcome,
        NotificationIntent,
        notification_key,
    )
    from schemas.policy import Contact as PolicyContact
    from schemas.policy import Policy
    from workflows import clocks as clk
    from workflows import routing
    from workflows.calendar import WorkingCalendar, calendar_named
    from workflows.postmortem import PostmortemInput, PostmortemResult, PostmortemWorkflow

STORE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
LOAD_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=12,
)


# Defined in workflows/clocks.py (passed through the sandbox: built once per worker process).
RunState = clk.RunState
EscalationRunInput = clk.EscalationRunInput


@dataclass
class Notify:
    """Who hears about an event: a responder's people, explicit contacts, or the customer."""

    audience: str
    template: str
    responder: str | None = None
    contacts: list[Contact] | None = None
    customer: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Change:
    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    notify: list[Notify] = field(default_factory=list)


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type="InvalidCommand", non_retryable=True)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _contact(contact: PolicyContact | None) -> Contact | None:
    if contact is None:
        return None
    return Contact(name=contact.name, channel=contact.channel, target=contact.target)


@workflow.defn(name="EscalationWorkflow")
class EscalationWorkflow:
    @workflow.init
    def __init__(self, input: EscalationRunInput) -> None:
        self._request = EscalationRequest.model_validate(input.model_dump(exclude={"carried"}))
        self._run: RunState | None = input.carried
        self._lock = asyncio.Lock()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._changed = False
        self._timer: tuple[datetime, asyncio.Task[None]] | None = None
        self._published: dict[str, Any] = {}
        self._postmortem: workflow.ChildWorkflowHandle[Any, PostmortemResult] | None = None

    # -- life cycle ---------------------------------------------------------

    @workflow.run
    async def run(self, input: EscalationRunInput) -> EscalationState:
        if self._run is None:
            await self._begin()
        else:
            self._publish()
        await self._watch_clocks()
        assert self._postmortem is not None
        try:
            result = await self._postmortem
        except ChildWorkflowError as err:
            raise ApplicationError(
                f"postmortem {postmortem_id_for(self._request.ticket_id)} did not complete: {err.cause}",
                type="PostmortemFailed",
                non_retryable=True,
            ) from err
        async with self._lock:
            await self._close(result)
        await workflow.wait_condition(lambda: not self._deliveries and workflow.all_handlers_finished())
        return self._state.view

    @property
    def _state(self) -> RunState:
        assert self._run is not None, "escalation is not open yet"
        return self._run

    async def _begin(self) -> None:
        request = self._request
        info = workflow.info()
        policy = await workflow.execute_local_activity(
            keys.LOAD_POLICY,
            PolicyRequest(name=request.policy),
            result_type=Policy,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=LOAD_RETRY,
            summary=f"load policy {request.policy or 'default'}",
        )
        now = workflow.now()
        try:
            entry = routing.entry_point(policy, request)
        except routing.RoutingError as err:
            raise ApplicationError(str(err), type="UnroutableEscalation", non_retryable=True) from None
        fingerprint = routing.fingerprint(request)
        escalation_id = info.first_execution_run_id
        repeats = await workflow.execute_local_activity(
            keys.FIND_REPEATS,
            RepeatQuery(
                escalation_id=escalation_id, fingerprint=fingerprint, opened_at=now,
                window=policy.repeat_window,
            ),
            result_type=RepeatInfo,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=STORE_RETRY,
            summary="find earlier escalations of this issue",
        )
        targets = policy.priorities[request.priority]
        clocks = clk.ClockSet(
            resolve=clk.started(targets.resolve_within, now),
            cadence=clk.started(targets.customer_update_every, now),
        )
        view = EscalationState(
            escalation_id=escalation_id,
            ticket_id=request.ticket_id,
            workflow_id=info.workflow_id,
            title=request.title,
            customer=request.customer,
            category=request.category,
            kind=request.kind,
            status="open",
            priority=request.priority,
            level=entry,
            level_name=policy.responder_name(entry),
            owner=None,
            route=entry,
            deadlines=Deadlines(),
            trigger=request.trigger,
            policy=PolicyRef(name=policy.name, version=policy.version),
            opened_at=now,
            repeat_of=repeats.repeat_of,
            repeat_count=repeats.repeat_count,
            updated_at=now,
        )
        draft = RunState(view=view, policy=policy, clocks=clocks, fingerprint=fingerprint)
        changes: list[Change] = []
        opened = Change("opened")
        changes.append(opened)
        self._enter_level(draft, entry, now, changes, opening=True)
        opened.notify.append(
            Notify("customer", "customer_escalated", customer=True,
                   extra={"team_name": draft.view.level_name})
        )
        alongside = routing.paged_alongside(policy, request, entry)
        if alongside is not None:
            # Paged, not moved: the level stays at the entry, so the path (moves) is unchanged.
            draft.view.paged_levels.append(alongside)
            opened.notify.append(
                Notify("owner", "escalation_opened", responder=alongside,
                       extra={"reason": f"paged together with {entry} (priority escalation)"})
            )
        consulted = routing.consulted_level(policy, request, entry)
        if consulted is not None:
            draft.view.consulted.append(Consulted(level=consulted, notified_at=now))
            opened.notify.append(
                Notify("consulted", "consulted", responder=consulted,
                       extra={"reason": f"hierarchical escalation: {consulted} consulted from the start"})
            )
        opened.payload = {"fingerprint": fingerprint, "rank": policy.rank(entry)}
        await self._commit(draft, changes)

    async def _close(self, result: PostmortemResult) -> None:
        draft = self._draft()
        postmortem = draft.view.postmortem
        assert postmortem is not None
        postmortem.completed_at = result.completed_at
        postmortem.completed_by = result.completed_by
        postmortem.summary = result.summary
        postmortem.root_cause = result.root_cause
        postmortem.improvements = result.improvements
        postmortem.kb_article_url = result.kb_article_url
        # The child's own count wins if a late reminder report was never recorded.
        postmortem.reminders_sent = max(postmortem.reminders_sent, result.reminders_sent)
        postmortem.overdue_notified = postmortem.overdue_notified or result.overdue
        draft.view.status = "closed"
        draft.view.closed_at = workflow.now()
        await self._commit(
            draft,
            [
                Change("postmortem_completed", {"postmortem": postmortem.model_dump(mode="json"),
                                                "by": result.completed_by}),
                Change("closed"),
            ],
        )

    # -- the clock loop -----------------------------------------------------

    async def _watch_clocks(self) -> None:
        while self._state.view.status not in ("resolved", "closed"):
            if self._continue_as_new_due() and self._quiet():
                self._continue_as_new()
            upcoming = self._upcoming()
            now = workflow.now()
            if upcoming and upcoming[0].at <= now:
                async with self._lock:
                    await self._fire_due(workflow.now())
                continue
            self._arm(upcoming[0] if upcoming else None, now)
            self._changed = False
            timer = self._timer[1] if self._timer else None
            await workflow.wait_condition(
                lambda: self._changed
                or (timer is not None and timer.done())
                or (self._continue_as_new_due() and self._quiet())
            )

    def _arm(self, due: clk.Due | None, now: datetime) -> None:
        """Keep one timer for the earliest deadline; restart it only when that moves."""
        if self._timer is not None:
            at, task = self._timer
            if due is not None and at == due.at and not task.done():
                return
            if not task.done():
                task.cancel()
            self._timer = None
        if due is not None:
            task = asyncio.create_task(workflow.sleep(due.at - now, summary=due.label))
            self._timer = (due.at, task)

    def _upcoming(self) -> list[clk.Due]:
        state = self._state
        targets = state.policy.priorities[state.view.priority]
        return clk.upcoming(
            state.clocks,
            level=state.view.level,
            priority=state.view.priority,
            at_risk_fraction=targets.at_risk_at,
            sla_calendar=self._sla_calendar(state),
            ack_calendar=calendar_named(state.policy, state.clocks.ack_calendar),
        )

    async def _fire_due(self, now: datetime) -> None:
        draft = self._draft()
        view, clocks, policy = draft.view, draft.clocks, draft.policy
        targets = policy.priorities[view.priority]
        calendar = self._sla_calendar(draft)
        changes: list[Change] = []
        due = {d.kind: d for d in self._upcoming() if d.at <= now}
        if "at_risk" in due and "breach" not in due:
            clocks.at_risk_notified = True
            view.sla_at_risk = True
            left = clk.remaining(clocks.resolve, calendar, now)
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
            view.breached_at = now
            changes.append(
                Change("sla_breached",
                       {"resolve_within_seconds": targets.resolve_within.total_seconds()},
                       [Notify("breach", "sla_breached", responder=targets.breach_notifies,
                               extra={"reason": f"not resolved within {format_duration(targets.resolve_within)}"})])
            )
        if "ack" in due:
            self._ack_timeout(draft, now, changes)
        if "hold" in due:
            clocks.held_until = None
            changes.append(
                Change("hold_released", {"level": view.level},
                       [Notify("owner", "escalated", responder=view.level,
                               extra={"reason": f"{view.level} service hours started"})])
            )
        if "cadence" in due:
            clocks.customer_updates += 1
            view.counts.customer_updates += 1
            clocks.cadence = clk.started(targets.customer_update_every, now)
            number = clocks.customer_updates
            changes.append(
                Change("customer_updated", {"number": number, "auto": True},
                       [Notify("customer", "customer_update", customer=True, extra={"n": number}),
                        Notify("owner", "customer_update_due", responder=view.level, extra={"n": number})])
            )
        if "auto_resume" in due:
            self._resume(draft, now, by="policy", auto=True, changes=changes)
        if "handover" in due:
            paging = routing.paging(policy, view.level, now)
            previous = view.owner
            view.owner = paging.owner.name if paging.owner else None
            view.owner_contact = _contact(paging.owner)
            clocks.handover_at = routing.owner_handover(policy, view.level, now)
            if view.owner != previous:
                changes.append(Change("owner_changed", {"from": previous, "to": view.owner}))
        if changes:
            await self._commit(draft, changes)
        else:
            # Only the hand-over timer moved (same owner); keep the new plan.
            self._run = draft

    def _ack_timeout(self, draft: RunState, now: datetime, changes: list[Change]) -> None:
        view, policy, clocks = draft.view, draft.policy, draft.clocks
        ack = clocks.ack
        assert ack is not None
        waited = format_duration(ack.budget)
        nxt = policy.next_responder(view.level)
        if nxt is None:
            clocks.ack_reminders += 1
            view.counts.ack_reminders += 1
            clocks.ack = clk.started(policy.responder(view.level).ack_within, now)
            changes.append(
                Change("ack_reminder", {"level": view.level, "number": clocks.ack_reminders},
                       [Notify("owner", "ack_reminder", responder=view.level,
                               extra={"n": clocks.ack_reminders,
                                      "reason": f"not acknowledged within {waited} at the last level"})])
            )
            return
        reason = f"no acknowledgement from {view.level} within {waited}"
        self._move(draft, nxt, now, changes, reason=reason, auto=True, by=None)

    def _move(self, draft: RunState, to_level: str, now: datetime, changes: list[Change], *,
              reason: str, auto: bool, by: str | None) -> None:
        view, policy = draft.view, draft.policy
        from_level = view.level
        entry = PathEntry(from_level=from_level, to_level=to_level, reason=reason, auto=auto, at=now, by=by)
        view.path.append(entry)
        if auto:
            view.counts.auto_escalations += 1
        else:
            view.counts.manual_escalations += 1
        change = Change(
            "escalated",
            {"from_level": from_level, "to_level": to_level, "reason": reason, "auto": auto, "by": by,
             "rank": policy.rank(to_level), "path_entry": entry.model_dump(mode="json")},
        )
        changes.append(change)
        self._enter_level(draft, to_level, now, changes)
        change.notify.append(
            Notify("customer", "customer_escalated", customer=True,
                   extra={"team_name": draft.view.level_name})
        )

    def _enter_level(self, draft: RunState, level: str, now: datetime, changes: list[Change],
                     opening: bool = False) -> None:
        """Make ``level`` the owner: page its people and start its ack clock (or hold it)."""
        view, policy, clocks = draft.view, draft.policy, draft.clocks
        responder = policy.responder(level)
        view.level = level
        view.level_name = policy.responder_name(level)
        view.acknowledged_at = None
        view.acknowledged_by = None
        if level not in view.paged_levels:
            view.paged_levels.append(level)
        paging = routing.paging(policy, level, now)
        view.owner = paging.owner.name if paging.owner else None
        view.owner_contact = _contact(paging.owner)
        clocks.handover_at = routing.owner_handover(policy, level, now)
        clocks.ack_reminders = 0
        clocks.ack_calendar = self._sla_calendar_name(draft)
        starts = now
        available = routing.responder_calendar(policy, level)
        if responder.hold_until_available and not available.is_working(now):
            starts = available.next_opening(now)
            reason = f"{level} is outside its service hours; held until {starts:%Y-%m-%d %H:%M} UTC"
            entry = PathEntry(from_level=level, to_level=level, reason=reason, auto=True, at=now)
            view.path.append(entry)
            changes.append(
                Change("held_until_available",
                       {"level": level, "until": starts.isoformat(), "reason": reason,
                        "path_entry": entry.model_dump(mode="json")})
            )
        clocks.ack = clk.Clock(budget=responder.ack_within, running_since=starts)
        # The people of a held level hear about it when the hold ends, not now.
        clocks.held_until = starts if starts != now else None
        if clocks.held_until is None:
            template = "escalation_opened" if opening else "escalated"
            changes[-1].notify.insert(
                0, Notify("owner", template, responder=level, extra={"reason": paging.why})
            )
            if paging.why:
                view.path.append(
                    PathEntry(from_level=level, to_level=level, reason=paging.why, auto=True, at=now)
                )

    # -- commands -----------------------------------------------------------

    @workflow.update(name="acknowledge")
    async def acknowledge(self, command: AcknowledgeCommand) -> EscalationState:
        await workflow.wait_condition(lambda: self._run is not None)
        async with self._lock:
            self._check_acknowledge(command)
            now = workflow.now()
            draft = self._draft()
            view = draft.view
            consulted = next((c for c in view.consulted if c.level == command.level), None)
            if consulted is not None and command.level != view.level:
                consulted.acknowledged_by = command.by
                consulted.acknowledged_at = now
                changes = [Change("consulted_acknowledged",
                                  {"level": consulted.level, "by": command.by,
                                   "consulted": [c.model_dump(mode="json") for c in view.consulted]})]
            else:
                draft.clocks.ack = None
                draft.clocks.ack_reminders = 0
                view.acknowledged_at = now
                view.acknowledged_by = command.by
                changes = [Change("acknowledged", {"level": view.level, "by": command.by})]
            await self._commit(draft, changes)
            return self._state.view

    @acknowledge.validator
    def _validate_acknowledge(self, command: AcknowledgeCommand) -> None:
        if self._run is not None:
            self._check_acknowledge(command)

    def _check_acknowledge(self, command: AcknowledgeCommand) -> None:
        view = self._state.view
        self._require_unresolved("acknowledge")
        if command.level is not None and command.level != view.level:
            consulted = next((c for c in view.consulted if c.level == command.level), None)
            if consulted is None:
                raise _invalid(
                    f"cannot acknowledge as {command.level}: the escalation is at {view.level}"
                    + (f" and consults {', '.join(c.level for c in view.consulted)}" if view.consulted else "")
                )
            if consulted.acknowledged_at is not None:
                raise _invalid(f"{command.level} already acknowledged as consulted by {consulted.acknowledged_by}")
            return
        if self._state.clocks.ack is None:
            raise _invalid(
                f"cannot acknowledge: escalation {view.ticket_id} is {view.status}; already "
                f"acknowledged at {view.level} by {view.acknowledged_by}"
            )

    @workflow.update(name="escalate")
    async def escalate(self, command: EscalateCommand) -> EscalationState:
        await workflow.wait_condition(lambda: self._run is not None)
        async with self._lock:
            target = self._check_escalate(command)
            now = workflow.now()
            draft = self._draft()
            changes: list[Change] = []
            self._move(draft, target, now, changes, reason=command.reason, auto=False, by=command.by)
            await self._commit(draft, changes)
            return self._state.view

    @escalate.validator
    def _validate_escalate(self, command: EscalateCommand) -> None:
        if self._run is not None:
            self._check_escalate(command)

    def _check_escalate(self, command: EscalateCommand) -> str:
        self._require_unresolved("escalate")
        view, policy = self._state.view, self._state.policy
        if command.to_level is None:
            target = policy.next_responder(view.level)
            if target is None:
                raise _invalid(f"cannot escalate: {view.level} is the last level of policy {policy.name}")
            return target
        known = [*policy.level_ids, *policy.departments]
        if command.to_level not in known:
            raise _invalid(f"cannot escalate to {command.to_level!r}: not a level of policy "
                           f"{policy.name} (levels: {', '.join(known)})")
        if command.to_level == view.level:
            raise _invalid(f"cannot escalate: already at {view.level}")
        return command.to_level

    @workflow.update(name="add_note")
    async def add_note(self, command: AddNoteCommand) -> EscalationState:
        await workflow.wait_condition(lambda: self._run is not None)
        async with self._lock:
            self._require_unresolved("add a note")
            now = workflow.now()
            draft = self._draft()
            draft.view.counts.notes += 1
            change = Change("note_added", {"author": command.author, "text": command.text,
                                           "customer_visible": command.customer_visible})
            if command.customer_visible:
                draft.view.counts.customer_updates += 1
                targets = draft.policy.priorities[draft.view.priority]
                if draft.clocks.paused_since is None:
                    draft.clocks.cadence = clk.started(targets.customer_update_every, now)
                else:
                    draft.clocks.cadence = clk.Clock(budget=targets.customer_update_every)
                change.notify.append(
                    Notify("customer", "customer_update", customer=True,
                           extra={"text": command.text, "by": command.author})
                )
            await self._commit(draft, [change])
            return self._state.view

    @add_note.validator
    def _validate_add_note(self, command: AddNoteCommand) -> None:
        if self._run is not None:
            self._require_unresolved("add a note")

    @workflow.update(name="pause")
    async def pause(self, command: PauseCommand) -> EscalationState:
        await workflow.wait_condition(lambda: self._run is not None)
        async with self._lock:
            self._check_pause()
            now = workflow.now()
            draft = self._draft()
            targets = draft.policy.priorities[draft.view.priority]
            draft.clocks = clk.paused(
                draft.clocks, self._sla_calendar(draft), now,
                stop_ack=targets.pause_stops_ack,
                ack_calendar=calendar_named(draft.policy, draft.clocks.ack_calendar),
                max_pause=targets.max_pause or draft.policy.max_pause,
            )
            draft.view.counts.pauses += 1
            await self._commit(draft, [Change("paused", {"by": command.by, "reason": command.reason})])
            return self._state.view

    @pause.validator
    def _validate_pause(self, command: PauseCommand) -> None:
        if self._run is not None:
            self._check_pause()

    def _check_pause(self) -> None:
        self._require_unresolved("pause")
        if self._state.clocks.paused_since is not None:
            raise _invalid(f"cannot pause: escalation {self._state.view.ticket_id} is already paused")

    @workflow.update(name="resume")
    async def resume(self, command: ResumeCommand) -> EscalationState:
        await workflow.wait_condition(lambda: self._run is not None)
        async with self._lock:
            self._check_resume()
            draft = self._draft()
            changes: list[Change] = []
            self._resume(draft, workflow.now(), by=command.by, auto=False, changes=changes)
            await self._commit(draft, changes)
            return self._state.view

    @resume.validator
    def _validate_resume(self, command: ResumeCommand) -> None:
        if self._run is not None:
            self._check_resume()

    def _check_resume(self) -> None:
        view = self._state.view
        if self._state.clocks.paused_since is None:
            raise _invalid(f"cannot resume: escalation {view.ticket_id} is {view.status}, not paused")

    def _resume(self, draft: RunState, now: datetime, *, by: str, auto: bool, changes: list[Change]) -> None:
        paused_since = draft.clocks.paused_since
        assert paused_since is not None
        draft.clocks = clk.unpaused(draft.clocks, now)
        payload: dict[str, Any] = {"by": by, "auto": auto,
                                   "paused_seconds": (now - paused_since).total_seconds()}
        if auto:
            payload["reason"] = f"paused longer than the maximum of {format_duration(draft.clocks.max_pause or timedelta(0))}"
        changes.append(Change("resumed", payload))

    @workflow.update(name="resolve")
    async def resolve(self, command: ResolveCommand) -> EscalationState:
        await workflow.wait_condition(lambda: self._run is not None)
        async with self._lock:
            self._require_unresolved("resolve")
            now = workflow.now()
            draft = self._draft()
            view, policy = draft.view, draft.policy
            if draft.clocks.paused_since is not None:
                draft.clocks = clk.unpaused(draft.clocks, now)
            calendar = self._sla_calendar(draft)
            draft.clocks = draft.clocks.model_copy(update={
                "ack": None, "cadence": None, "handover_at": None,
                "resolve": clk.stopped(draft.clocks.resolve, calendar, now),
            })
            net = (now - view.opened_at) - draft.clocks.paused_total
            view.status = "resolved"
            view.resolved_at = now
            view.resolution = Resolution(by=command.by, at=now, root_cause=command.root_cause,
                                         mitigation=command.mitigation,
                                         preventive_actions=list(command.preventive_actions))
            due = self._postmortem_due(draft, now)
            owner_contact = view.owner_contact
            view.postmortem = PostmortemState(
                workflow_id=postmortem_id_for(view.ticket_id), owner=view.owner or view.level, due=due,
            )
            # Start the child first: if it cannot start, nothing has been written.
            self._postmortem = await workflow.start_child_workflow(
                PostmortemWorkflow.run,
                PostmortemInput(
                    escalation_id=view.escalation_id, ticket_id=view.ticket_id,
                    parent_workflow_id=workflow.info().workflow_id, title=view.title,
                    priority=view.priority, owner=view.postmortem.owner, owner_contact=owner_contact,
                    due=due, remind_every=policy.postmortem_remind_every,
                ),
                id=view.postmortem.workflow_id,
                task_queue=workflow.info().task_queue,
                task_timeout=workflow.info().task_timeout,
                static_summary=f"Postmortem · {summary_for(self._request)}"[:400],
                static_details=(
                    f"**Postmortem** of escalation `{view.workflow_id}`\n\n"
                    f"**Owner** {view.postmortem.owner} · **Due** {due:%Y-%m-%d %H:%M} UTC\n\n"
                    f"**Root cause (from resolution)** {command.root_cause}"
                ),
            )
            owner_notify = Notify("postmortem", "postmortem_assigned",
                                  contacts=[owner_contact] if owner_contact else None,
                                  responder=None if owner_contact else view.level,
                                  extra={"postmortem_due": due.isoformat()})
            resolution = view.resolution.model_dump(mode="json")
            await self._commit(draft, [
                Change("resolved", {"by": command.by, "resolved_at": now.isoformat(),
                                    "root_cause": command.root_cause,
                                    "mitigation": command.mitigation,
                                    "preventive_actions": list(command.preventive_actions),
                                    "resolution_seconds": net.total_seconds(),
                                    "within_sla": not view.sla_breached},
                       [Notify("customer", "customer_resolved", customer=True,
                               extra={"resolution": resolution})]),
                Change("csat_requested", {"window_seconds": policy.csat_window.total_seconds()},
                       [Notify("customer", "csat_request", customer=True,
                               extra={"csat_window": format_duration(policy.csat_window)})]),
                Change("postmortem_started", {"postmortem": view.postmortem.model_dump(mode="json")},
                       [owner_notify]),
            ])
            return self._state.view

    @resolve.validator
    def _validate_resolve(self, command: ResolveCommand) -> None:
        if self._run is not None:
            self._require_unresolved("resolve")

    @workflow.update(name="apply_policy")
    async def apply_policy(self, command: ApplyPolicyCommand) -> EscalationState:
        await workflow.wait_condition(lambda: self._run is not None)
        async with self._lock:
            self._check_apply_policy(command)
            policy = await workflow.execute_local_activity(
                keys.LOAD_POLICY,
                PolicyRequest(name=self._state.policy.name, version=command.version),
                result_type=Policy,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=LOAD_RETRY,
                summary=f"load policy {self._state.policy.name} v{command.version}",
            )
            draft = self._draft()
            view = draft.view
            if view.level not in [*policy.level_ids, *policy.departments]:
                raise _invalid(f"policy {policy.name} v{policy.version} has no level {view.level!r}; "
                               "escalate to one of its levels first")
            old = draft.policy.version
            targets = policy.priorities[view.priority]
            clocks = draft.clocks
            draft.clocks = clocks.model_copy(update={
                "resolve": clk.rebudgeted(clocks.resolve, targets.resolve_within),
                "cadence": clk.rebudgeted(clocks.cadence, targets.customer_update_every) if clocks.cadence else None,
                "ack": clk.rebudgeted(clocks.ack, policy.responder(view.level).ack_within) if clocks.ack else None,
            })
            draft.policy = policy
            view.policy = PolicyRef(name=policy.name, version=policy.version)
            await self._commit(draft, [Change("policy_applied", {"by": command.by, "from_version": old,
                                                                  "to_version": policy.version})])
            return self._state.view

    @apply_policy.validator
    def _validate_apply_policy(self, command: ApplyPolicyCommand) -> None:
        if self._run is not None:
            self._check_apply_policy(command)

    def _check_apply_policy(self, command: ApplyPolicyCommand) -> None:
        self._require_unresolved("apply a policy")
        current = self._state.policy
        if command.version <= current.version:
            raise _invalid(f"cannot apply version {command.version}: the run already uses "
                           f"{current.name} v{current.version}; only newer versions can be applied")

    @workflow.signal(name="postmortem_report")
    async def postmortem_report(self, report: PostmortemReport) -> None:
        await workflow.wait_condition(lambda: self._run is not None)
        async with self._lock:
            draft = self._draft()
            postmortem = draft.view.postmortem
            if postmortem is None or draft.view.status == "closed":
                workflow.logger.warning("ignoring postmortem report %s: no open postmortem", report.kind)
                return
            if report.kind == "reminder":
                postmortem.reminders_sent = report.number
                contact = draft.view.owner_contact
                notify = Notify("postmortem", "postmortem_reminder",
                                contacts=[contact] if contact else None,
                                responder=None if contact else draft.view.level,
                                extra={"n": report.number, "postmortem_due": postmortem.due.isoformat()})
                change = Change("postmortem_reminder", {"number": report.number}, [notify])
            else:
                postmortem.overdue_notified = True
                top = draft.policy.level_ids[-1]
                change = Change("postmortem_overdue", {}, [
                    Notify("postmortem", "postmortem_overdue", responder=top,
                           extra={"postmortem_due": postmortem.due.isoformat()})])
            change.payload["postmortem"] = postmortem.model_dump(mode="json")
            await self._commit(draft, [change])

    @workflow.query(name="state")
    def state(self) -> EscalationState:
        if self._run is None:
            raise ApplicationError("escalation is still opening; query again shortly", type="NotReady")
        return self._run.view

    def _require_unresolved(self, action: str) -> None:
        view = self._state.view
        if view.status in ("resolved", "closed"):
            raise _invalid(f"cannot {action}: escalation {view.ticket_id} is {view.status}")

    # -- committing changes -------------------------------------------------

    def _draft(self) -> RunState:
        """A copy to change. The policy is never changed in place (apply_policy swaps it), so it
        is shared rather than deep-copied on every transition."""
        state = self._state
        return state.model_copy(update={"view": state.view.model_copy(deep=True),
                                        "clocks": state.clocks.model_copy(deep=True)})

    async def _commit(self, draft: RunState, changes: list[Change]) -> None:
        """Store the events (and queue their notifications) in one local activity, then adopt."""
        now = workflow.now()
        self._refresh(draft, now)
        view = draft.view
        view.updated_at = now
        first_seq = view.last_seq + 1
        view.last_seq += len(changes)
        view.counts.events += len(changes)
        snapshot = self._snapshot(view)
        context = self._context(draft)
        events: list[DomainEvent] = []
        intents: list[NotificationIntent] = []
        for seq, change in enumerate(changes, start=first_seq):
            payload = dict(change.payload)
            if change.type == "opened":
                payload["view"] = view.model_dump(mode="json")
            else:
                payload["snapshot"] = snapshot
                payload["counts"] = view.counts.model_dump(mode="json")
            events.append(DomainEvent(escalation_id=view.escalation_id, ticket_id=view.ticket_id,
                                      seq=seq, type=change.type, occurred_at=now, payload=payload))
            for notify in change.notify:
                intents.extend(self._intents(draft, seq, notify, context, now))
        await workflow.execute_local_activity(
            keys.RECORD_EVENTS,
            EventBatch(escalation_id=view.escalation_id, ticket_id=view.ticket_id,
                       events=events, intents=intents, run_id=workflow.info().run_id,
                       decided_in=workflow.info().get_current_history_length()),
            result_type=int,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=STORE_RETRY,
            summary="record " + ", ".join(c.type for c in changes),
        )
        self._run = draft
        self._changed = True
        self._publish(last=changes[-1])
        if intents:
            self._dispatch(DeliveryBatch(escalation_id=view.escalation_id, ticket_id=view.ticket_id,
                                         intents=intents), changes)

    def _intents(self, draft: RunState, seq: int, notify: Notify, context: dict[str, Any],
                 now: datetime) -> list[NotificationIntent]:
        view, policy = draft.view, draft.policy
        extra = {**context, **notify.extra}
        if notify.customer:
            channel = policy.customer.channel
            target = policy.customer.target or (view.customer.email if channel == "email" else None)
            recipients = [(view.customer.id, channel, target)]
        elif notify.contacts is not None:
            recipients = [(c.name, c.channel, c.target) for c in notify.contacts]
        else:
            assert notify.responder is not None
            recipients = [(c.name, c.channel, c.target)
                          for c in routing.paging(policy, notify.responder, now).recipients]
            extra.setdefault("to_level", notify.responder)
            extra.setdefault("to_level_name", policy.responder_name(notify.responder))
        return [
            NotificationIntent(
                key=notification_key(view.escalation_id, seq, name, channel),
                escalation_id=view.escalation_id, ticket_id=view.ticket_id, seq=seq,
                audience=notify.audience, recipient=name, channel=channel, target=target,
                template=notify.template, context=extra,
            )
            for name, channel, target in recipients
        ]

    def _context(self, draft: RunState) -> dict[str, Any]:
        view = draft.view
        request = self._request
        deadlines = view.deadlines
        return {
            "escalation": {
                "ticket_id": view.ticket_id, "title": view.title, "priority": view.priority,
                "kind": view.kind, "category": view.category, "status": view.status,
                "level": view.level, "level_name": view.level_name, "owner": view.owner,
                "workflow_id": view.workflow_id,
                "customer": view.customer.model_dump(mode="json"),
                "impact": request.impact.model_dump(mode="json"),
                "handoff": request.handoff.model_dump(mode="json"),
                "deadlines": {
                    "ack_due": _iso(deadlines.ack_due),
                    "resolve_due": _iso(deadlines.resolve_due),
                    "next_customer_update_due": _iso(deadlines.next_customer_update_due),
                },
            },
            "next_update_by": _iso(deadlines.next_customer_update_due),
        }

    def _snapshot(self, view: EscalationState) -> dict[str, Any]:
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

    def _refresh(self, draft: RunState, now: datetime) -> None:
        """Derive the view's status and deadlines from the clocks."""
        view, clocks = draft.view, draft.clocks
        calendar = self._sla_calendar(draft)
        targets = draft.policy.priorities[view.priority]
        view.paused_since = clocks.paused_since
        view.paused_total = clocks.paused_total
        if view.status not in ("resolved", "closed"):
            if clocks.paused_since is not None:
                view.status = "paused"
            elif clocks.ack is None:
                view.status = "acknowledged"
            else:
                view.status = "open"
            ack_calendar = calendar_named(draft.policy, clocks.ack_calendar)
            view.deadlines = Deadlines(
                ack_due=clk.due_at(clocks.ack, ack_calendar) if clocks.ack else None,
                resolve_due=clk.due_at(clocks.resolve, calendar),
                next_customer_update_due=clk.due_at(clocks.cadence, calendar) if clocks.cadence else None,
                at_risk_at=(None if clocks.at_risk_notified
                            else clk.due_at(clocks.resolve, calendar, targets.at_risk_at)),
                auto_resume_at=(clocks.paused_since + clocks.max_pause
                                if clocks.paused_since and clocks.max_pause else None),
            )
        else:
            view.deadlines = Deadlines()
        view.resolve_remaining = clk.remaining(clocks.resolve, calendar, now)

    def _sla_calendar_name(self, state: RunState) -> str:
        return state.policy.priorities[state.view.priority].calendar

    def _sla_calendar(self, state: RunState) -> WorkingCalendar:
        return calendar_named(state.policy, self._sla_calendar_name(state))

    def _postmortem_due(self, draft: RunState, now: datetime) -> datetime:
        """Due after ``postmortem_due``; on a business calendar, never outside working hours."""
        due = now + draft.policy.postmortem_due
        return self._sla_calendar(draft).next_opening(due)

    # -- notifications ------------------------------------------------------

    def _dispatch(self, batch: DeliveryBatch, changes: list[Change]) -> None:
        task = asyncio.create_task(self._deliver(batch, self._delivery_summary(changes)))
        self._deliveries.add(task)
        task.add_done_callback(self._delivery_finished)

    def _delivery_finished(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._changed = True

    @staticmethod
    def _delivery_summary(changes: list[Change]) -> str:
        """``notify engineering on-call``, ``customer update #3``: what the activity is for."""
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
        return ", ".join(dict.fromkeys(parts))

    async def _deliver(self, batch: DeliveryBatch, summary: str) -> None:
        try:
            outcome = await workflow.execute_activity(
                keys.DELIVER_NOTIFICATIONS,
                batch,
                result_type=DeliveryOutcome,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=DELIVERY_RETRY,
                summary=summary[:200],
            )
        except ActivityError as err:
            reason = str(err.cause or err)
            outcome = DeliveryOutcome(failed=[
                DeliveryFailure(key=i.key, recipient=i.recipient, channel=i.channel,
                                error=f"gave up: {reason}"[:500], permanent=False)
                for i in batch.intents
            ])
        async with self._lock:
            view = self._state.view
            view.notifications_sent += len(outcome.sent) + len(outcome.already_sent)
            changes: list[Change] = []
            if outcome.failed:
                view.notifications_failed += len(outcome.failed)
                changes.append(Change("notification_failed",
                                      {"failures": [f.model_dump(mode="json") for f in outcome.failed]}))
            if outcome.jira_key and outcome.jira_key != view.jira_key:
                view.jira_key = outcome.jira_key
                changes.append(Change("jira_linked", {"jira_key": outcome.jira_key}))
            if changes:
                await self._commit(self._draft(), changes)

    # -- operator's view ----------------------------------------------------

    def _publish(self, last: Change | None = None) -> None:
        """Keep search attributes (only those that changed) and current details up to date."""
        view = self._state.view
        deadlines = [d for d in (view.deadlines.ack_due, view.deadlines.resolve_due if not view.sla_breached else None,
                                 view.deadlines.next_customer_update_due) if d is not None]
        wanted: dict[str, Any] = {
            keys.PRIORITY.name: view.priority,
            keys.LEVEL.name: view.level,
            keys.STATUS.name: view.status,
            keys.CUSTOMER.name: view.customer.id,
            keys.CATEGORY.name: view.category,
            keys.KIND.name: view.kind,
            keys.BREACHED.name: view.sla_breached,
            keys.NEXT_DEADLINE.name: min(deadlines) if deadlines else None,
        }
        by_name = {key.name: key for key in keys.SEARCH_ATTRIBUTES}
        updates = [
            by_name[name].value_set(value) if value is not None else by_name[name].value_unset()
            for name, value in wanted.items()
            if self._published.get(name, ...) != value
        ]
        if updates:
            workflow.upsert_search_attributes(updates)
            self._published.update(wanted)
        workflow.set_current_details(self._details(last))

    def _details(self, last: Change | None) -> str:
        view = self._state.view
        upcoming = self._upcoming() if view.status not in ("resolved", "closed") else []
        nxt = (f"{upcoming[0].label} at {upcoming[0].at:%Y-%m-%d %H:%M:%S} UTC" if upcoming else "none")
        owner = view.owner or "—"
        if view.owner_contact:
            owner += f" ({view.owner_contact.channel}: {view.owner_contact.target})"
        lines = [
            f"**{summary_for(self._request)}**",
            f"**Status** {view.status} · **Level** {view.level_name} (`{view.level}`) · **Owner** {owner}",
            f"**Next deadline** {nxt}",
            f"**SLA** {'BREACHED' if view.sla_breached else ('at risk' if view.sla_at_risk else 'on track')}"
            + (f" · resolve by {view.deadlines.resolve_due:%Y-%m-%d %H:%M:%S} UTC" if view.deadlines.resolve_due else ""),
        ]
        if view.path:
            move = view.path[-1]
            lines.append(f"**Last transition** {move.from_level} → {move.to_level} "
                         f"({'auto' if move.auto else 'by ' + (move.by or '?')}) at {move.at:%H:%M:%S} UTC: {move.reason}")
        if last is not None:
            lines.append(f"**Last event** `{last.type}` #{view.last_seq}")
        if view.postmortem:
            lines.append(f"**Postmortem** owner {view.postmortem.owner}, due {view.postmortem.due:%Y-%m-%d %H:%M} UTC"
                         + (" · done" if view.postmortem.completed_at else ""))
        return "\n\n".join(lines)

    # -- continue-as-new ----------------------------------------------------

    def _continue_as_new_due(self) -> bool:
        info = workflow.info()
        return (info.is_continue_as_new_suggested()
                or info.get_current_history_length() >= self._state.policy.continue_as_new_after_events)

    def _quiet(self) -> bool:
        return not self._deliveries and not self._lock.locked() and workflow.all_handlers_finished()

    def _continue_as_new(self) -> None:
        state = self._state.model_copy(deep=True)
        state.view.counts.continued_as_new += 1
        if self._timer is not None and not self._timer[1].done():
            self._timer[1].cancel()
        workflow.continue_as_new(
            EscalationRunInput(**self._request.model_dump(), carried=state),
            task_timeout=workflow.info().task_timeout,
        )

"""EscalationWorkflow: one escalation from opening to the closed postmortem.

The class only orchestrates: it waits on one durable timer for the earliest deadline,
takes commands as updates, runs activities, the postmortem child and continue-as-new.
What each event changes is decided in ``workflows/transitions.py``, turned into events
and intents in ``workflows/events.py`` and shown to operators by
``workflows/operator_view.py``.

Commit path (``workflow.patched(HISTORY_FIRST)``): a decision is adopted in the workflow
task that makes it, so Temporal history is the record; its events, the read model and
the delivery ledger are written to PostgreSQL afterwards by one ordered projection
activity per run, and its pages go out at once beside it. PostgreSQL can be slow or
down without holding a clock. A deadline is acted on as of the deadline its timer was
armed for, so the decision does not depend on which workflow task it runs in.

Runs started by the released code (no patch marker) keep its path to the end: events
stored by a local activity in the deciding task, and deadlines acted on as of the task's
time. ``upgrade`` moves such a run onto the new path by continuing it as new.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    # ``import package.module`` (not ``from package import module``): the sandbox passes a
    # module through only when its full name is imported, and these must be the host's
    # modules, so every run shares one RunState class.
    import workflows.clocks as clk
    import workflows.events as events
    import workflows.operator_view as operator_view
    import workflows.shared as shared
    import workflows.transitions as tr
    from schemas import keys
    from schemas.activities import (
        EventBatch,
        LedgerUpdate,
        LoadedPolicy,
        Outbox,
        PolicyRequest,
        ProjectionBatch,
        ProjectionResult,
        RepeatInfo,
        RepeatQuery,
    )
    from schemas.escalation import (
        AcknowledgeCommand,
        AddNoteCommand,
        ApplyPolicyCommand,
        EscalateCommand,
        EscalationRequest,
        EscalationState,
        PauseCommand,
        PostmortemInput,
        PostmortemReport,
        PostmortemResult,
        ResolveCommand,
        ResumeCommand,
        UpgradeCommand,
        summary_for,
    )
    from schemas.notifications import (
        DeliveryBatch,
        DeliveryFailure,
        DeliveryOutcome,
        SendOutcome,
    )
    from schemas.policy import Policy
    from workflows.postmortem import PostmortemWorkflow

STORE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
LOAD_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10))
# The projection retries without limit and without writing history: an outage of any length
# costs the events of one activity. Five seconds between attempts keeps catching up prompt.
PROJECTION_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), backoff_coefficient=2.0,
                               maximum_interval=timedelta(seconds=5))
PROJECTION_TIMEOUT = timedelta(seconds=30)
# A projection step that fails without retrying is a bug (a conflicting event); the run goes
# on and tries again this much later, with the error in its state and details.
PROJECTION_AFTER_BUG = timedelta(minutes=10)
PROJECTION_MAX_EVENTS = 100
# A crashed delivery is detected by its missing heartbeat and resent within seconds.
SEND_TIMEOUT = timedelta(minutes=2)
SEND_HEARTBEAT = timedelta(seconds=5)
SEND_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
DELIVERY_ROUNDS = 12
DELIVERY_BACKOFF_MAX = timedelta(seconds=60)
DELIVERY_RETRY_AFTER_MAX = timedelta(minutes=5)
# The released commit path's delivery retries (one activity retried by Temporal).
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=12,
)
MIN_TIMER = timedelta(milliseconds=1)


# Defined in workflows/clocks.py (passed through the sandbox: built once per worker process).
RunState = clk.RunState
EscalationRunInput = clk.EscalationRunInput


def _invalid(message: str) -> ApplicationError:
    return ApplicationError(message, type="InvalidCommand", non_retryable=True)


@dataclass
class _Timer:
    at: datetime
    task: asyncio.Task[None]


@workflow.defn(name="EscalationWorkflow")
class EscalationWorkflow:
    @workflow.init
    def __init__(self, input: EscalationRunInput) -> None:
        carried = input.carried
        # The SDK holds the input for the whole run: without the carried state (which the run
        # replaces with every decision) it is the request alone, and the run uses it as that.
        input.carried = None
        self._request: EscalationRequest = input
        self._outbox = (carried.outbox if carried is not None and carried.outbox is not None else Outbox())
        if carried is not None:
            carried.policy = shared.policy(carried.policy)
        self._run: RunState | None = carried.model_copy(update={"outbox": None}) if carried else None
        self._history_first = False
        self._lock = asyncio.Lock()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._changed = False
        self._timer: _Timer | None = None
        self._published: dict[str, Any] = {}
        self._postmortem: workflow.ChildWorkflowHandle[Any, PostmortemResult] | None = None
        self._policy_digest: str | None = None
        self._projecting = False
        self._projection_error: str | None = None
        self._projection_done = False
        self._upgrade_requested = False
        # A background coroutine (a delivery, the projection) that raised: a bug, re-raised by
        # the main coroutine so the workflow task fails and is retried, never swallowed.
        self._broken: BaseException | None = None

    # -- life cycle ---------------------------------------------------------

    @workflow.run
    async def run(self, input: EscalationRunInput) -> EscalationState:
        self._history_first = workflow.patched(keys.HISTORY_FIRST)
        projection = self._background(self._project_forever()) if self._history_first else None
        if self._run is None:
            await (self._begin() if self._history_first else self._begin_released())
        else:
            self._publish()
        await self._watch_clocks()
        assert self._postmortem is not None
        child = asyncio.create_task(self._child_result())
        await self._until(child.done)
        try:
            result = child.result()
        except ChildWorkflowError as err:
            raise ApplicationError(
                f"postmortem {self._state.view.postmortem.workflow_id if self._state.view.postmortem else ''} "
                f"did not complete: {err.cause}",
                type="PostmortemFailed",
                non_retryable=True,
            ) from err
        async with self._lock:
            decision = tr.close(self._state, result, workflow.now())
            await self._commit(decision, workflow.now())
        await self._until(lambda: not self._deliveries and workflow.all_handlers_finished())
        if projection is not None:
            await self._until(lambda: not self._outbox and not self._projecting)
            self._projection_done = True
            await projection
        return self._state.view

    async def _child_result(self) -> PostmortemResult:
        assert self._postmortem is not None
        return await self._postmortem

    def _background(self, work: Any) -> asyncio.Task[None]:
        """A coroutine beside the main one whose failure fails the workflow task (see ``_until``)."""
        task = asyncio.create_task(work)
        task.add_done_callback(self._watch_background)
        return task

    def _watch_background(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._broken is None:
            self._broken = task.exception()

    async def _until(self, condition: Callable[[], bool]) -> None:
        """``wait_condition``, but a failed background coroutine fails this workflow task."""
        await workflow.wait_condition(lambda: condition() or self._broken is not None)
        if self._broken is not None:
            # Not an ApplicationError: the task is retried (the run never fails for a bug).
            raise RuntimeError(f"a background part of the escalation failed: {self._broken!r}") from self._broken

    @property
    def _state(self) -> RunState:
        assert self._run is not None, "escalation is not open yet"
        return self._run

    async def _begin(self) -> None:
        request = self._request
        info = workflow.info()
        try:
            loaded = await workflow.execute_activity(
                keys.PIN_POLICY,
                PolicyRequest(name=request.policy),
                result_type=LoadedPolicy,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=LOAD_RETRY,
                summary=f"load policy {request.policy or 'default'}",
            )
        except ActivityError as err:
            # An unusable policy (invalid, changed without a new version) ends the run, saying why.
            if isinstance(err.cause, ApplicationError):
                raise ApplicationError(err.cause.message, type=err.cause.type, non_retryable=True) from err
            raise
        self._policy_digest = loaded.digest
        # The request's own start time, not the task's: the same on every replay.
        at = info.workflow_start_time
        decision = self._opening(shared.policy(loaded.policy, loaded.digest), at)
        async with self._lock:
            await self._commit(decision, at)

    async def _begin_released(self) -> None:
        request = self._request
        policy = await workflow.execute_local_activity(
            keys.LOAD_POLICY,
            PolicyRequest(name=request.policy),
            result_type=Policy,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=LOAD_RETRY,
            summary=f"load policy {request.policy or 'default'}",
        )
        policy = shared.policy(policy)
        now = workflow.now()
        repeats = await workflow.execute_local_activity(
            keys.FIND_REPEATS,
            RepeatQuery(escalation_id=workflow.info().first_execution_run_id,
                        fingerprint=tr.fingerprint(request), opened_at=now, window=policy.repeat_window),
            result_type=RepeatInfo,
            start_to_close_timeout=timedelta(seconds=10),
            retry_policy=STORE_RETRY,
            summary="find earlier escalations of this issue",
        )
        decision = self._opening(policy, now, repeats)
        await self._commit(decision, now)

    def _opening(self, policy: Policy, at: datetime, repeats: RepeatInfo | None = None) -> tr.Decision:
        info = workflow.info()
        try:
            return tr.open_escalation(
                self._request, policy, escalation_id=info.first_execution_run_id, workflow_id=info.workflow_id,
                at=at, repeat_of=repeats.repeat_of if repeats else None,
                repeat_count=repeats.repeat_count if repeats else 0,
            )
        except tr.Unroutable as err:
            raise ApplicationError(str(err), type="UnroutableEscalation", non_retryable=True) from None

    # -- the clock loop -----------------------------------------------------

    async def _watch_clocks(self) -> None:
        while self._state.view.status not in ("resolved", "closed"):
            if self._continue_as_new_due() and self._quiet():
                self._continue_as_new()
            upcoming = tr.upcoming(self._state)
            if not self._history_first:
                now = workflow.now()
                if upcoming and upcoming[0].at <= now:
                    async with self._lock:
                        await self._fire_due_released(workflow.now())
                    continue
            self._arm(upcoming[0] if upcoming else None)
            self._changed = False
            timer = self._timer
            await self._until(
                lambda: self._changed
                or (timer is not None and timer.task.done())
                or (self._continue_as_new_due() and self._quiet())
            )
            if self._history_first and timer is not None and timer.task.done() and not timer.task.cancelled():
                self._timer = None
                async with self._lock:
                    await self._fire_due(timer.at)

    def _arm(self, due: clk.Due | None) -> None:
        """Keep one timer for the earliest deadline; restart it only when that moves."""
        if self._timer is not None:
            if due is not None and self._timer.at == due.at and not self._timer.task.done():
                return
            if not self._timer.task.done():
                self._timer.task.cancel()
            self._timer = None
        if due is not None:
            delay = due.at - workflow.now()
            if self._history_first:
                # A deadline already past still gets its own timer: what is due is decided
                # when a timer fires, from the deadline it was armed for.
                delay = max(delay, MIN_TIMER)
            task = asyncio.create_task(workflow.sleep(delay, summary=due.label))
            self._timer = _Timer(due.at, task)

    async def _fire_due(self, deadline: datetime) -> None:
        """A timer armed for ``deadline`` fired: act on what is due by then, as of then."""
        if self._state.view.status in ("resolved", "closed"):
            return
        due = tr.due_by(self._state, deadline)
        if not due:
            return
        self._measure_lateness({kind: deadline for kind in due})
        decision = tr.deadlines(self._state, deadline, due)
        if decision.changes:
            await self._commit(decision, deadline, decided_at=workflow.now())
        else:
            # Only the hand-over timer moved (same owner); keep the new plan.
            self._run = decision.state
            self._changed = True

    async def _fire_due_released(self, now: datetime) -> None:
        self._measure_lateness({d.kind: d.at for d in tr.upcoming(self._state) if d.at <= now})
        decision = tr.deadlines(self._state, now, tr.due_by(self._state, now))
        if decision.changes:
            await self._commit(decision, now)
        else:
            self._run = decision.state

    # -- commands -----------------------------------------------------------

    async def _command(self, decide: Callable[[RunState, datetime], tr.Decision]) -> EscalationState:
        """The frame of every update: wait until open, decide under the lock, commit."""
        await workflow.wait_condition(lambda: self._run is not None)
        async with self._lock:
            now = workflow.now()
            try:
                decision = decide(self._state, now)
            except tr.InvalidCommand as err:
                raise _invalid(str(err)) from None
            await self._commit(decision, now)
            return self._state.view

    def _validate(self, check: Callable[[RunState], object]) -> None:
        """The frame of every validator: a command the state forbids is rejected, nothing written."""
        if self._run is None:
            return
        try:
            check(self._state)
        except tr.InvalidCommand as err:
            raise _invalid(str(err)) from None

    @workflow.update(name="acknowledge")
    async def acknowledge(self, command: AcknowledgeCommand) -> EscalationState:
        return await self._command(lambda state, at: tr.acknowledge(state, command, at))

    @acknowledge.validator
    def _validate_acknowledge(self, command: AcknowledgeCommand) -> None:
        self._validate(lambda state: tr.check_acknowledge(state, command))

    @workflow.update(name="escalate")
    async def escalate(self, command: EscalateCommand) -> EscalationState:
        return await self._command(lambda state, at: tr.escalate(state, command, at))

    @escalate.validator
    def _validate_escalate(self, command: EscalateCommand) -> None:
        self._validate(lambda state: tr.check_escalate(state, command))

    @workflow.update(name="add_note")
    async def add_note(self, command: AddNoteCommand) -> EscalationState:
        return await self._command(lambda state, at: tr.add_note(state, command, at))

    @add_note.validator
    def _validate_add_note(self, command: AddNoteCommand) -> None:
        self._validate(lambda state: tr.check_add_note(state, command))

    @workflow.update(name="pause")
    async def pause(self, command: PauseCommand) -> EscalationState:
        return await self._command(lambda state, at: tr.pause(state, command, at))

    @pause.validator
    def _validate_pause(self, command: PauseCommand) -> None:
        self._validate(lambda state: tr.check_pause(state, command))

    @workflow.update(name="resume")
    async def resume(self, command: ResumeCommand) -> EscalationState:
        return await self._command(lambda state, at: tr.resume(state, command, at))

    @resume.validator
    def _validate_resume(self, command: ResumeCommand) -> None:
        self._validate(lambda state: tr.check_resume(state, command))

    @workflow.update(name="resolve")
    async def resolve(self, command: ResolveCommand) -> EscalationState:
        await workflow.wait_condition(lambda: self._run is not None)
        async with self._lock:
            try:
                tr.check_resolve(self._state, command)
            except tr.InvalidCommand as err:
                raise _invalid(str(err)) from None
            now = workflow.now()
            plan = tr.postmortem_plan(self._state, now)
            view = self._state.view
            # Start the child first: if it cannot start, nothing has been written.
            self._postmortem = await workflow.start_child_workflow(
                PostmortemWorkflow.run,
                PostmortemInput(
                    escalation_id=view.escalation_id, ticket_id=view.ticket_id,
                    parent_workflow_id=workflow.info().workflow_id, title=view.title,
                    priority=view.priority, owner=plan.owner, owner_contact=plan.owner_contact,
                    due=plan.due, remind_every=self._state.policy.postmortem_remind_every,
                ),
                id=plan.workflow_id,
                task_queue=workflow.info().task_queue,
                task_timeout=workflow.info().task_timeout,
                static_summary=f"Postmortem · {summary_for(self._request)}"[:400],
                static_details=(
                    f"**Postmortem** of escalation `{view.workflow_id}`\n\n"
                    f"**Owner** {plan.owner} · **Due** {plan.due:%Y-%m-%d %H:%M} UTC\n\n"
                    f"**Root cause (from resolution)** {command.root_cause}"
                ),
            )
            decision = tr.resolve(self._state, command, now, plan)
            await self._commit(decision, now if self._history_first else workflow.now())
            return self._state.view

    @resolve.validator
    def _validate_resolve(self, command: ResolveCommand) -> None:
        self._validate(lambda state: tr.check_resolve(state, command))

    @workflow.update(name="apply_policy")
    async def apply_policy(self, command: ApplyPolicyCommand) -> EscalationState:
        await workflow.wait_condition(lambda: self._run is not None)
        async with self._lock:
            try:
                tr.check_apply_policy(self._state, command)
            except tr.InvalidCommand as err:
                raise _invalid(str(err)) from None
            now = workflow.now()
            request = PolicyRequest(name=self._state.policy.name, version=command.version)
            summary = f"load policy {self._state.policy.name} v{command.version}"
            if self._history_first:
                loaded = await workflow.execute_activity(
                    keys.PIN_POLICY, request, result_type=LoadedPolicy,
                    start_to_close_timeout=timedelta(seconds=10), retry_policy=LOAD_RETRY, summary=summary,
                )
                policy = shared.policy(loaded.policy, loaded.digest)
            else:
                policy = await workflow.execute_local_activity(
                    keys.LOAD_POLICY, request, result_type=Policy,
                    start_to_close_timeout=timedelta(seconds=10), retry_policy=LOAD_RETRY, summary=summary,
                )
                policy = shared.policy(policy)
            try:
                decision = tr.apply_policy(self._state, command, policy)
            except tr.InvalidCommand as err:
                raise _invalid(str(err)) from None
            await self._commit(decision, now if self._history_first else workflow.now())
            return self._state.view

    @apply_policy.validator
    def _validate_apply_policy(self, command: ApplyPolicyCommand) -> None:
        self._validate(lambda state: tr.check_apply_policy(state, command))

    @workflow.update(name="upgrade")
    async def upgrade(self, command: UpgradeCommand) -> EscalationState:
        """Move a run of the released commit path onto the current one (continue-as-new)."""
        await workflow.wait_condition(lambda: self._run is not None)
        self._upgrade_requested = True
        self._changed = True
        return self._state.view

    @upgrade.validator
    def _validate_upgrade(self, command: UpgradeCommand) -> None:
        if self._history_first:
            raise _invalid("nothing to upgrade: this run already records its events in history first")
        if self._run is not None and self._state.view.status in ("resolved", "closed"):
            raise _invalid(f"cannot upgrade: escalation {self._state.view.ticket_id} is {self._state.view.status}; "
                           "it finishes on the path it started on")

    @workflow.signal(name="postmortem_report")
    async def postmortem_report(self, report: PostmortemReport) -> None:
        await workflow.wait_condition(lambda: self._run is not None)
        async with self._lock:
            decision = tr.postmortem_report(self._state, report)
            if decision is None:
                workflow.logger.warning("ignoring postmortem report %s: no open postmortem", report.kind)
                return
            await self._commit(decision, workflow.now())

    @workflow.query(name="state")
    def state(self) -> EscalationState:
        if self._run is None:
            raise ApplicationError("escalation is still opening; query again shortly", type="NotReady")
        return self._run.view

    @workflow.query(name="outbox")
    def outbox(self) -> Outbox:
        """What history holds and PostgreSQL does not yet (read by the reconciler of ended runs)."""
        return self._outbox

    # -- committing ---------------------------------------------------------

    async def _commit(self, decision: tr.Decision, at: datetime, *, decided_at: datetime | None = None) -> None:
        """Make ``decision`` the run's state and record its events.

        On the current path nothing here awaits: the events join the outbox that the
        projection writes to PostgreSQL, and their pages are dispatched at once.
        """
        state, changes = decision.state, decision.changes
        request = self._request
        assembled = events.assemble(
            state, changes, at,
            handoff=None if self._history_first else request.handoff.model_dump(mode="json"),
            impact=request.impact.model_dump(mode="json"),
            decided_at=decided_at if decided_at is not None and decided_at != at else None,
        )
        if not self._history_first:
            view = state.view
            await workflow.execute_local_activity(
                keys.RECORD_EVENTS,
                EventBatch(escalation_id=view.escalation_id, ticket_id=view.ticket_id,
                           events=assembled.events, intents=assembled.intents, run_id=workflow.info().run_id,
                           decided_in=workflow.info().get_current_history_length()),
                result_type=int,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=STORE_RETRY,
                summary="record " + ", ".join(c.type for c in changes),
            )
        else:
            self._outbox.events.extend(assembled.events)
            self._outbox.intents.extend(assembled.intents)
        self._count_events(assembled.events)
        self._run = state
        self._changed = True
        self._publish(last=changes[-1])
        if assembled.intents:
            view = state.view
            batch = DeliveryBatch(
                escalation_id=view.escalation_id, ticket_id=view.ticket_id, intents=assembled.intents,
                handoff=request.handoff.model_dump(mode="json") if self._history_first else None,
            )
            deliver = self._deliver if self._history_first else self._deliver_released
            task = self._background(deliver(batch, events.delivery_summary(changes)))
            self._deliveries.add(task)
            task.add_done_callback(self._delivery_finished)

    def _delivery_finished(self, task: asyncio.Task[None]) -> None:
        self._deliveries.discard(task)
        self._changed = True

    # -- notifications ------------------------------------------------------

    async def _deliver(self, batch: DeliveryBatch, summary: str) -> None:
        """Rounds of delivery: what fails retryably goes again after a durable back-off."""
        pending = batch
        for number in range(1, DELIVERY_ROUNDS + 1):
            pending = pending.model_copy(update={"round": number})
            try:
                outcome = await workflow.execute_activity(
                    keys.SEND_NOTIFICATIONS, pending, result_type=SendOutcome,
                    start_to_close_timeout=SEND_TIMEOUT, heartbeat_timeout=SEND_HEARTBEAT,
                    retry_policy=SEND_RETRY, summary=summary if number == 1 else f"{summary} (round {number})",
                )
            except ActivityError as err:
                reason = " ".join(str(err.cause or err).split())[:500]
                outcome = SendOutcome(retry=[{"key": i.key, "error": reason} for i in pending.intents])
            last = number == DELIVERY_ROUNDS
            async with self._lock:
                self._record_round(pending, outcome, number, give_up=last)
            retry_keys = {r.key for r in outcome.retry}
            if not retry_keys or last:
                return
            pending = pending.model_copy(update={"intents": [i for i in pending.intents if i.key in retry_keys]})
            delay = self._backoff(number, [r.retry_after for r in outcome.retry if r.retry_after is not None])
            await workflow.sleep(delay, summary=f"retry {len(retry_keys)} notification(s) in {delay.total_seconds():g}s")

    def _record_round(self, batch: DeliveryBatch, outcome: SendOutcome, number: int, *, give_up: bool) -> None:
        at = workflow.now()
        by_key = {i.key: i for i in batch.intents}
        ledger = [LedgerUpdate(key=s.key, status="sent", attempts=number,
                               provider_response_id=s.provider_response_id, at=s.at) for s in outcome.sent]
        ledger += [LedgerUpdate(key=f.key, status="failed", attempts=number, last_error=f.error, at=at)
                   for f in outcome.failed]
        failures = [f.model_dump(mode="json") for f in outcome.failed]
        for retry in outcome.retry:
            if give_up:
                error = f"gave up after {number} rounds: {retry.error}"[:500]
                ledger.append(LedgerUpdate(key=retry.key, status="failed", attempts=number, last_error=error, at=at))
                intent = by_key[retry.key]
                failures.append(DeliveryFailure(key=retry.key, recipient=intent.recipient, channel=intent.channel,
                                                error=error, permanent=False).model_dump(mode="json"))
            else:
                ledger.append(LedgerUpdate(key=retry.key, status="pending", attempts=number,
                                           last_error=retry.error[:500], at=at))
        self._outbox.ledger.extend(ledger)
        decision = tr.deliveries_reported(self._state, sent=len(outcome.sent), failures=failures,
                                          jira_key=outcome.jira_key)
        if decision.changes:
            # Synchronous on this path: the events join the outbox in this task.
            self._adopt(decision, at)
        else:
            self._run = decision.state
        self._changed = True

    def _adopt(self, decision: tr.Decision, at: datetime) -> None:
        assembled = events.assemble(decision.state, decision.changes, at, handoff=None,
                                    impact=self._request.impact.model_dump(mode="json"))
        self._outbox.events.extend(assembled.events)
        self._outbox.intents.extend(assembled.intents)
        self._count_events(assembled.events)
        self._run = decision.state
        self._publish(last=decision.changes[-1])

    @staticmethod
    def _backoff(number: int, hints: list[float]) -> timedelta:
        if hints:
            return min(timedelta(seconds=max(hints)), DELIVERY_RETRY_AFTER_MAX)
        return min(timedelta(seconds=2 ** (number - 1)), DELIVERY_BACKOFF_MAX)

    async def _deliver_released(self, batch: DeliveryBatch, summary: str) -> None:
        try:
            outcome = await workflow.execute_activity(
                keys.DELIVER_NOTIFICATIONS, batch, result_type=DeliveryOutcome,
                start_to_close_timeout=timedelta(seconds=60), retry_policy=DELIVERY_RETRY, summary=summary,
            )
        except ActivityError as err:
            reason = str(err.cause or err)
            outcome = DeliveryOutcome(failed=[
                DeliveryFailure(key=i.key, recipient=i.recipient, channel=i.channel,
                                error=f"gave up: {reason}"[:500], permanent=False)
                for i in batch.intents
            ])
        async with self._lock:
            decision = tr.deliveries_reported(
                self._state, sent=len(outcome.sent) + len(outcome.already_sent),
                failures=[f.model_dump(mode="json") for f in outcome.failed], jira_key=outcome.jira_key,
            )
            if decision.changes:
                await self._commit(decision, workflow.now())
            else:
                self._run = decision.state

    # -- the projection -----------------------------------------------------

    async def _project_forever(self) -> None:
        """Write the outbox to PostgreSQL in order, one step at a time, until the run ends."""
        while True:
            await workflow.wait_condition(lambda: bool(self._outbox) or self._projection_done)
            if not self._outbox:
                return
            batch = self._projection_batch()
            self._projecting = True
            try:
                result = await workflow.execute_activity(
                    keys.PROJECT_EVENTS, batch, result_type=ProjectionResult,
                    start_to_close_timeout=PROJECTION_TIMEOUT, retry_policy=PROJECTION_RETRY,
                    summary=self._projection_summary(batch),
                )
            except ActivityError as err:
                self._projecting = False
                self._projection_error = " ".join(str(err.cause or err).split())[:500]
                workflow.logger.error("projection of %s failed; retrying in %s: %s",
                                      batch.escalation_id, PROJECTION_AFTER_BUG, self._projection_error)
                self._publish()
                await workflow.sleep(PROJECTION_AFTER_BUG, summary="retry the failed projection")
                continue
            self._projecting = False
            self._outbox = Outbox(
                events=self._outbox.events[len(batch.events):],
                intents=self._outbox.intents[len(batch.intents):],
                ledger=self._outbox.ledger[len(batch.ledger):],
            )
            if self._projection_error is not None:
                self._projection_error = None
                self._publish()
            if result.repeat_count is not None and self._run is not None:
                self._run.view.repeat_of = result.repeat_of
                self._run.view.repeat_count = result.repeat_count
            self._changed = True

    def _projection_batch(self) -> ProjectionBatch:
        """The next step: up to PROJECTION_MAX_EVENTS events, their intents, then ledger updates."""
        outbox = self._outbox
        view = self._state.view
        taken = outbox.events[:PROJECTION_MAX_EVENTS]
        whole = len(taken) == len(outbox.events)
        last_seq = taken[-1].seq if taken else None
        intents = outbox.intents if whole else [i for i in outbox.intents if last_seq is not None and i.seq <= last_seq]
        # Intents are appended in seq order, so a prefix is taken; ledger updates only with the rest.
        intents = outbox.intents[:len(intents)]
        return ProjectionBatch(
            escalation_id=view.escalation_id, ticket_id=view.ticket_id, run_id=workflow.info().run_id,
            events=taken, intents=intents, ledger=list(outbox.ledger) if whole else [],
            policy_digest=self._policy_digest if any(e.type == "opened" for e in taken) else None,
        )

    @staticmethod
    def _projection_summary(batch: ProjectionBatch) -> str:
        parts = []
        if batch.events:
            first, last = batch.events[0].seq, batch.events[-1].seq
            parts.append(f"project event #{first}" if first == last else f"project events #{first}–#{last}")
        if batch.ledger:
            parts.append(f"{len(batch.ledger)} delivery result(s)")
        return ", ".join(parts) or "project"

    # -- metrics ------------------------------------------------------------
    # Through the SDK's meter, which records nothing while history replays: each decision is
    # counted once, when it is made, and no command changes (old histories replay as before).

    def _measure_lateness(self, deadlines: dict[str, datetime]) -> None:
        """How long after each due deadline the decision runs (the events' ``decided_at`` minus
        ``occurred_at``)."""
        histogram = workflow.metric_meter().create_histogram_float(
            keys.LATENESS_METRIC, "How late a timer-driven decision ran after its deadline", "s")
        now = workflow.now()
        for kind, at in deadlines.items():
            histogram.record(max(0.0, (now - at).total_seconds()), {"clock": keys.LATENESS_CLOCKS.get(kind, kind)})

    @staticmethod
    def _count_events(recorded: list[Any]) -> None:
        counter = workflow.metric_meter().create_counter(keys.EVENTS_METRIC, "Domain events recorded, by type")
        for event in recorded:
            counter.add(1, {"type": event.type})

    # -- operator's view ----------------------------------------------------

    def _publish(self, last: tr.Change | None = None) -> None:
        """Keep search attributes (only those that changed) and current details up to date."""
        wanted = operator_view.search_attributes(self._state, owner=self._history_first)
        updates = operator_view.changed_attributes(wanted, self._published)
        if updates:
            workflow.upsert_search_attributes(updates)
            self._published.update(wanted)
        details = operator_view.details(self._state, summary_for(self._request), last, full=self._history_first)
        if self._projection_error:
            details += f"\n\n**Projection to PostgreSQL failing** {self._projection_error}"
        workflow.set_current_details(details)

    # -- continue-as-new ----------------------------------------------------

    def _continue_as_new_due(self) -> bool:
        if self._upgrade_requested:
            return True
        info = workflow.info()
        return (info.is_continue_as_new_suggested()
                or info.get_current_history_length() >= self._state.policy.continue_as_new_after_events)

    def _quiet(self) -> bool:
        """Nothing in flight and nothing about to be: no delivery, handler or projection step.

        The outbox must be empty too, not only the projection idle: a step scheduled in the same
        task as continue-as-new would be abandoned. During a PostgreSQL outage this postpones
        continue-as-new until the projection catches up (the history grows only by decisions).
        """
        return (not self._deliveries and not self._lock.locked() and workflow.all_handlers_finished()
                and not self._projecting and not self._outbox)

    def _continue_as_new(self) -> None:
        state = tr.draft(self._state)
        state.view.counts.continued_as_new += 1
        if self._history_first or self._upgrade_requested:
            state.outbox = self._outbox.model_copy(deep=True) if self._outbox else None
        if self._timer is not None and not self._timer.task.done():
            self._timer.task.cancel()
        workflow.continue_as_new(
            EscalationRunInput(**self._request.model_dump(exclude={"carried"}), carried=state),
            task_timeout=workflow.info().task_timeout,
        )

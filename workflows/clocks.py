"""The SLA clocks of an escalation, as pure functions over an explicit ``now``.

A clock is a budget of working time on a calendar. It runs from ``running_since``
and has already used ``consumed`` in earlier running stretches; pausing folds the
current stretch into ``consumed``. Its due time is therefore always recomputed
from absolute values, so nothing shifts across pause/resume or continue-as-new.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel

from schemas.activities import Outbox
from schemas.durations import format_duration
from schemas.escalation import EscalationRequest, EscalationState
from schemas.policy import Policy
from workflows.calendar import WorkingCalendar

ZERO = timedelta(0)


class Clock(BaseModel):
    budget: timedelta
    consumed: timedelta = ZERO
    running_since: AwareDatetime | None = None

    @property
    def running(self) -> bool:
        return self.running_since is not None


def started(budget: timedelta, now: datetime) -> Clock:
    return Clock(budget=budget, running_since=now)


def used(clock: Clock, calendar: WorkingCalendar, now: datetime) -> timedelta:
    """Working time used so far (a clock starting in the future has used nothing yet)."""
    if clock.running_since is None:
        return clock.consumed
    return clock.consumed + calendar.between(clock.running_since, now)


def remaining(clock: Clock, calendar: WorkingCalendar, now: datetime) -> timedelta:
    return max(ZERO, clock.budget - used(clock, calendar, now))


def due_at(clock: Clock, calendar: WorkingCalendar, fraction: float = 1.0) -> datetime | None:
    """When ``fraction`` of the budget will have been used; None while stopped."""
    if clock.running_since is None:
        return None
    target = clock.budget * fraction
    left = target - clock.consumed
    if left <= ZERO:
        return clock.running_since
    return calendar.add(clock.running_since, left)


def stopped(clock: Clock, calendar: WorkingCalendar, now: datetime) -> Clock:
    if clock.running_since is None:
        return clock
    return Clock(budget=clock.budget, consumed=used(clock, calendar, now), running_since=None)


def resumed(clock: Clock, now: datetime) -> Clock:
    if clock.running_since is not None:
        return clock
    return Clock(budget=clock.budget, consumed=clock.consumed, running_since=now)


def rebudgeted(clock: Clock, budget: timedelta) -> Clock:
    """The same clock under a new target (an operator moved the run to a newer policy)."""
    return Clock(budget=budget, consumed=clock.consumed, running_since=clock.running_since)


class ClockSet(BaseModel):
    """Every clock of one escalation; carried whole across continue-as-new."""

    ack: Clock | None = None
    ack_calendar: str = "24x7"
    resolve: Clock
    cadence: Clock | None = None
    at_risk_notified: bool = False
    breached: bool = False
    paused_since: AwareDatetime | None = None
    paused_total: timedelta = ZERO
    max_pause: timedelta | None = None
    ack_reminders: int = 0
    customer_updates: int = 0
    handover_at: AwareDatetime | None = None
    held_until: AwareDatetime | None = None


ClockKind = Literal["ack", "at_risk", "breach", "cadence", "auto_resume", "handover", "hold"]


@dataclass(frozen=True)
class Due:
    kind: ClockKind
    at: datetime
    label: str


def upcoming(
    clocks: ClockSet,
    *,
    level: str,
    priority: str,
    at_risk_fraction: float,
    sla_calendar: WorkingCalendar,
    ack_calendar: WorkingCalendar,
) -> list[Due]:
    """Every pending deadline, earliest first, each with the label its timer carries."""
    found: list[Due] = []
    if clocks.ack is not None:
        at = due_at(clocks.ack, ack_calendar)
        if at is not None:
            found.append(Due("ack", at, f"ack deadline {level} ({format_duration(clocks.ack.budget)})"))
    if not clocks.breached:
        if not clocks.at_risk_notified:
            at = due_at(clocks.resolve, sla_calendar, at_risk_fraction)
            if at is not None:
                found.append(Due("at_risk", at, f"at-risk warning {priority} ({at_risk_fraction:.0%})"))
        at = due_at(clocks.resolve, sla_calendar)
        if at is not None:
            found.append(
                Due("breach", at, f"resolution SLA {priority} ({format_duration(clocks.resolve.budget)})")
            )
    if clocks.cadence is not None:
        at = due_at(clocks.cadence, sla_calendar)
        if at is not None:
            found.append(
                Due(
                    "cadence",
                    at,
                    f"customer update #{clocks.customer_updates + 1} "
                    f"({format_duration(clocks.cadence.budget)})",
                )
            )
    if clocks.paused_since is not None and clocks.max_pause is not None:
        found.append(
            Due(
                "auto_resume",
                clocks.paused_since + clocks.max_pause,
                f"auto-resume after max pause ({format_duration(clocks.max_pause)})",
            )
        )
    if clocks.held_until is not None:
        found.append(Due("hold", clocks.held_until, f"hold {level} until its service hours"))
    if clocks.handover_at is not None:
        found.append(Due("handover", clocks.handover_at, f"on-call hand-over {level}"))
    found.sort(key=lambda d: d.at)
    return found


def paused(clocks: ClockSet, calendar: WorkingCalendar, now: datetime, *, stop_ack: bool,
           ack_calendar: WorkingCalendar, max_pause: timedelta | None) -> ClockSet:
    """Stop the resolution and cadence clocks (and ack, if the policy says so)."""
    return clocks.model_copy(
        update={
            "resolve": stopped(clocks.resolve, calendar, now),
            "cadence": stopped(clocks.cadence, calendar, now) if clocks.cadence else None,
            "ack": stopped(clocks.ack, ack_calendar, now) if clocks.ack and stop_ack else clocks.ack,
            "paused_since": now,
            "max_pause": max_pause,
        }
    )


def unpaused(clocks: ClockSet, now: datetime) -> ClockSet:
    assert clocks.paused_since is not None
    return clocks.model_copy(
        update={
            "resolve": resumed(clocks.resolve, now),
            "cadence": resumed(clocks.cadence, now) if clocks.cadence else None,
            "ack": resumed(clocks.ack, now) if clocks.ack else None,
            "paused_total": clocks.paused_total + (now - clocks.paused_since),
            "paused_since": None,
        }
    )


# -- the state a run carries -------------------------------------------------
# Models, not maths, but kept here rather than in workflows/escalation.py on purpose: the
# workflow sandbox (strict mode) re-imports the workflow's own module for every new run, and
# would build these pydantic classes (validators, serializers) again each time, in CPU and in
# memory held by every cached run. Imported through ``imports_passed_through``, they are built
# once per process.


class RunState(BaseModel):
    """Everything a run needs to go on; the continue-as-new payload."""

    view: EscalationState
    policy: Policy
    clocks: ClockSet
    fingerprint: str
    # What history holds but PostgreSQL does not yet; only set in the continue-as-new payload.
    outbox: Outbox | None = None


class EscalationRunInput(EscalationRequest):
    """The workflow input: a request, plus the carried state after continue-as-new."""

    carried: RunState | None = None

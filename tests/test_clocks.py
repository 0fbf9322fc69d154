"""The SLA clock module: pure functions, no server."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from schemas.policy import Calendar
from workflows import clocks as clk
from workflows.calendar import ALWAYS_OPEN_CALENDAR, business_calendar

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
EU = business_calendar(
    "business-eu",
    Calendar(timezone="Europe/Berlin", weekdays=["mon", "tue", "wed", "thu", "fri"],
             hours="09:00-17:00", holidays=[date(2026, 12, 24), date(2026, 12, 25)]),
)


def test_a_running_clock_is_due_after_its_budget():
    clock = clk.started(timedelta(hours=4), T0)
    assert clk.due_at(clock, ALWAYS_OPEN_CALENDAR) == T0 + timedelta(hours=4)
    assert clk.due_at(clock, ALWAYS_OPEN_CALENDAR, 0.75) == T0 + timedelta(hours=3)
    assert clk.remaining(clock, ALWAYS_OPEN_CALENDAR, T0 + timedelta(hours=1)) == timedelta(hours=3)
    assert clk.remaining(clock, ALWAYS_OPEN_CALENDAR, T0 + timedelta(hours=9)) == timedelta(0)


def test_pause_keeps_the_remaining_budget():
    clock = clk.started(timedelta(hours=4), T0)
    paused = clk.stopped(clock, ALWAYS_OPEN_CALENDAR, T0 + timedelta(hours=1))
    assert paused.consumed == timedelta(hours=1) and clk.due_at(paused, ALWAYS_OPEN_CALENDAR) is None
    # Three days waiting on the customer cost nothing.
    later = T0 + timedelta(days=3, hours=1)
    assert clk.remaining(paused, ALWAYS_OPEN_CALENDAR, later) == timedelta(hours=3)
    resumed = clk.resumed(paused, later)
    assert clk.due_at(resumed, ALWAYS_OPEN_CALENDAR) == later + timedelta(hours=3)
    assert clk.resumed(resumed, later + timedelta(hours=1)) == resumed  # resuming twice is a no-op


def test_rebudget_keeps_what_was_used():
    clock = clk.stopped(clk.started(timedelta(hours=4), T0), ALWAYS_OPEN_CALENDAR, T0 + timedelta(hours=1))
    assert clk.rebudgeted(clock, timedelta(hours=8)).consumed == timedelta(hours=1)


def test_upcoming_lists_every_deadline_earliest_first_with_timer_labels():
    clocks = clk.ClockSet(
        ack=clk.started(timedelta(minutes=15), T0),
        resolve=clk.started(timedelta(hours=4), T0),
        cadence=clk.started(timedelta(hours=2), T0),
    )
    due = clk.upcoming(clocks, level="tier2", priority="P1", at_risk_fraction=0.75,
                       sla_calendar=ALWAYS_OPEN_CALENDAR, ack_calendar=ALWAYS_OPEN_CALENDAR)
    assert [(d.kind, d.at - T0) for d in due] == [
        ("ack", timedelta(minutes=15)),
        ("cadence", timedelta(hours=2)),
        ("at_risk", timedelta(hours=3)),
        ("breach", timedelta(hours=4)),
    ]
    assert [d.label for d in due] == [
        "ack deadline tier2 (15m)", "customer update #1 (2h)",
        "at-risk warning P1 (75%)", "resolution SLA P1 (4h)",
    ]
    breached = clocks.model_copy(update={"breached": True, "at_risk_notified": True, "ack": None})
    assert [d.kind for d in clk.upcoming(breached, level="tier2", priority="P1", at_risk_fraction=0.75,
                                         sla_calendar=ALWAYS_OPEN_CALENDAR,
                                         ack_calendar=ALWAYS_OPEN_CALENDAR)] == ["cadence"]


def test_paused_clocks_stop_resolution_and_cadence_but_not_ack():
    clocks = clk.ClockSet(
        ack=clk.started(timedelta(minutes=15), T0),
        resolve=clk.started(timedelta(hours=4), T0),
        cadence=clk.started(timedelta(hours=2), T0),
    )
    at = T0 + timedelta(minutes=5)
    paused = clk.paused(clocks, ALWAYS_OPEN_CALENDAR, at, stop_ack=False,
                        ack_calendar=ALWAYS_OPEN_CALENDAR, max_pause=timedelta(days=3))
    kinds = {d.kind: d.at for d in clk.upcoming(paused, level="tier2", priority="P1", at_risk_fraction=0.75,
                                                sla_calendar=ALWAYS_OPEN_CALENDAR,
                                                ack_calendar=ALWAYS_OPEN_CALENDAR)}
    assert kinds == {"ack": T0 + timedelta(minutes=15), "auto_resume": at + timedelta(days=3)}
    back = clk.unpaused(paused, at + timedelta(days=1))
    assert back.paused_total == timedelta(days=1)
    assert clk.due_at(back.resolve, ALWAYS_OPEN_CALENDAR) == T0 + timedelta(days=1, hours=4)
    stops_ack = clk.paused(clocks, ALWAYS_OPEN_CALENDAR, at, stop_ack=True,
                           ack_calendar=ALWAYS_OPEN_CALENDAR, max_pause=None)
    assert stops_ack.ack is not None and not stops_ack.ack.running


def test_p3_opened_in_the_evening_before_holidays():
    """The README's worked example: P3, 8 working hours, business-eu, opened Wed 23 Dec 16:30."""
    opened = datetime(2026, 12, 23, 16, 30, tzinfo=BERLIN).astimezone(UTC)
    resolve = clk.started(timedelta(hours=8), opened)
    # 30 min on Wednesday, Thursday 24th and Friday 25th are holidays, the weekend is closed:
    # the remaining 7 h 30 run from Monday 28th 09:00 → 16:30.
    assert clk.due_at(resolve, EU) == datetime(2026, 12, 28, 16, 30, tzinfo=BERLIN)
    assert clk.due_at(resolve, EU, 0.75) == datetime(2026, 12, 28, 14, 30, tzinfo=BERLIN)
    friday = datetime(2026, 11, 27, 16, 30, tzinfo=BERLIN).astimezone(UTC)
    assert clk.due_at(clk.started(timedelta(hours=8), friday), EU) == datetime(2026, 11, 30, 16, 30, tzinfo=BERLIN)


def test_a_clock_that_starts_later_uses_nothing_before_it_starts():
    held = clk.Clock(budget=timedelta(minutes=30), running_since=T0 + timedelta(hours=2))
    assert clk.used(held, ALWAYS_OPEN_CALENDAR, T0) == timedelta(0)
    assert clk.due_at(held, ALWAYS_OPEN_CALENDAR) == T0 + timedelta(hours=2, minutes=30)

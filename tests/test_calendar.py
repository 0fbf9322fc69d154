"""Working-time calendars: worked examples, DST days, 24x7, errors and properties.

Pure unit tests: no servers, no fixtures from conftest.
"""

from __future__ import annotations

import time as clock
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.policy import WEEKDAYS, Calendar, parse_policy
from workflows.calendar import (
    ALWAYS_OPEN_CALENDAR,
    BusinessCalendar,
    business_calendar,
    calendar_named,
)

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
WORKDAYS = ["mon", "tue", "wed", "thu", "fri"]
EVERY_DAY = list(WEEKDAYS)
H = timedelta(hours=1)
M = timedelta(minutes=1)
US = timedelta(microseconds=1)


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    """A local wall time as a UTC instant (comparing across zones ignores fold otherwise)."""
    return datetime(*args, tzinfo=zone, fold=fold).astimezone(UTC)


def make(
    zone: str, hours: str, weekdays: list[str] = WORKDAYS, holidays: list[date] = ()
) -> BusinessCalendar:
    spec = Calendar(timezone=zone, weekdays=weekdays, hours=hours, holidays=list(holidays))
    return business_calendar("test", spec)


@pytest.fixture
def business_eu() -> BusinessCalendar:
    return make("Europe/Berlin", "09:00-17:00", holidays=[date(2026, 12, 25)])


# -- worked examples ----------------------------------------------------------


def test_friday_afternoon_p3_is_due_monday_afternoon(business_eu):
    # 30 min on Friday, weekend closed, 7h30 from Monday 09:00.
    opened = datetime(2026, 12, 18, 16, 30, tzinfo=BERLIN)
    due = business_eu.add(opened, 8 * H)
    assert due == local(BERLIN, 2026, 12, 21, 16, 30)
    assert due.tzinfo is UTC
    assert business_eu.between(opened, due) == 8 * H


def test_christmas_eve_skips_the_holiday_and_the_weekend(business_eu):
    # 30 min on Thursday 24th, Friday 25th is a holiday, then the weekend.
    opened = datetime(2026, 12, 24, 16, 30, tzinfo=BERLIN)
    due = business_eu.add(opened, 8 * H)
    assert due == local(BERLIN, 2026, 12, 28, 16, 30)
    assert business_eu.between(opened, due) == 8 * H
    assert business_eu.next_change(opened) == local(BERLIN, 2026, 12, 24, 17, 0)
    assert business_eu.next_change(local(BERLIN, 2026, 12, 24, 17, 0)) == local(
        BERLIN, 2026, 12, 28, 9, 0
    )
    assert not business_eu.is_working(local(BERLIN, 2026, 12, 25, 10, 0))


def test_budget_ending_at_close_is_due_at_the_closing_instant(business_eu):
    saturday = datetime(2026, 12, 12, 11, 0, tzinfo=BERLIN)
    monday_close = local(BERLIN, 2026, 12, 14, 17, 0)
    assert business_eu.next_opening(saturday) == local(BERLIN, 2026, 12, 14, 9, 0)
    assert business_eu.add(saturday, 8 * H) == monday_close
    assert not business_eu.is_working(monday_close)
    assert business_eu.is_working(monday_close - US)
    # From the closing instant the clock continues at the next opening.
    assert business_eu.add(monday_close, H) == local(BERLIN, 2026, 12, 15, 10, 0)
    assert business_eu.add(saturday, 9 * H) == local(BERLIN, 2026, 12, 15, 10, 0)


def test_zero_work_is_no_wait_even_when_closed(business_eu):
    saturday = datetime(2026, 12, 12, 11, 0, tzinfo=BERLIN)
    assert business_eu.add(saturday, timedelta(0)) == saturday
    assert business_eu.add(saturday, timedelta(0)).tzinfo is UTC


def test_open_close_and_next_change(business_eu):
    monday = datetime(2026, 12, 14, tzinfo=BERLIN)
    assert not business_eu.is_working(monday.replace(hour=8, minute=59))
    assert business_eu.is_working(monday.replace(hour=9))
    assert business_eu.next_opening(monday.replace(hour=10)) == monday.replace(hour=10)
    assert business_eu.next_change(monday.replace(hour=9)) == local(BERLIN, 2026, 12, 14, 17)
    assert business_eu.next_change(monday.replace(hour=8)) == local(BERLIN, 2026, 12, 14, 9)
    assert business_eu.next_opening(monday.replace(hour=17)) == local(BERLIN, 2026, 12, 15, 9)


def test_between(business_eu):
    friday = datetime(2026, 12, 18, 16, 30, tzinfo=BERLIN)
    assert business_eu.between(friday, friday + 3 * 24 * H) == 8 * H
    assert business_eu.between(friday, friday) == timedelta(0)
    assert business_eu.between(friday + H, friday) == timedelta(0)
    week = datetime(2026, 12, 14, tzinfo=BERLIN)
    assert business_eu.between(week, week + 7 * 24 * H) == 40 * H
    christmas_week = datetime(2026, 12, 21, tzinfo=BERLIN)
    assert business_eu.between(christmas_week, christmas_week + 7 * 24 * H) == 32 * H


def test_long_budget_is_fast(business_eu):
    opened = datetime(2026, 12, 18, 16, 30, tzinfo=BERLIN)
    began = clock.perf_counter()
    due = business_eu.add(opened, timedelta(days=30))
    assert business_eu.between(opened, due) == timedelta(days=30)
    assert clock.perf_counter() - began < 0.5
    # 90 working days of 8h, one of them the 25th: over four months later.
    assert local(BERLIN, 2027, 4, 1) < due < local(BERLIN, 2027, 6, 1)


def test_input_in_another_zone_is_the_same_instant(business_eu):
    opened = datetime(2026, 12, 18, 16, 30, tzinfo=BERLIN)
    in_tokyo = opened.astimezone(ZoneInfo("Asia/Tokyo"))
    assert business_eu.add(in_tokyo, 8 * H) == business_eu.add(opened, 8 * H)


# -- DST ----------------------------------------------------------------------


def test_berlin_spring_forward_business_hours():
    cal = make("Europe/Berlin", "09:00-17:00")
    friday = datetime(2026, 3, 27, 16, 0, tzinfo=BERLIN)
    assert cal.add(friday, 2 * H) == local(BERLIN, 2026, 3, 30, 10, 0)
    assert cal.add(friday, 2 * H) == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)
    assert cal.between(friday, local(BERLIN, 2026, 3, 30, 17, 0)) == 9 * H
    assert cal.between(friday, local(BERLIN, 2026, 3, 31, 16, 0)) == 16 * H


def test_berlin_fall_back_business_hours():
    cal = make("Europe/Berlin", "09:00-17:00")
    friday = datetime(2026, 10, 23, 16, 0, tzinfo=BERLIN)
    assert cal.add(friday, 2 * H) == datetime(2026, 10, 26, 9, 0, tzinfo=UTC)


def test_berlin_spring_forward_inside_opening_hours():
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 00:00-06:00 lasts 5 hours.
    cal = make("Europe/Berlin", "00:00-06:00", EVERY_DAY)
    midnight = local(BERLIN, 2026, 3, 29, 0, 0)
    assert cal.between(midnight, local(BERLIN, 2026, 3, 29, 12, 0)) == 5 * H
    assert cal.add(midnight, 2 * H) == local(BERLIN, 2026, 3, 29, 3, 0)
    assert cal.add(midnight, 5 * H) == local(BERLIN, 2026, 3, 29, 6, 0)
    assert cal.add(midnight, 5 * H + M) == local(BERLIN, 2026, 3, 30, 0, 1)


def test_opening_in_the_skipped_hour_opens_at_the_jump():
    cal = make("Europe/Berlin", "02:30-05:00", EVERY_DAY)
    midnight = local(BERLIN, 2026, 3, 29, 0, 0)
    assert cal.next_opening(midnight) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert cal.between(midnight, midnight + 24 * H) == 2 * H
    assert cal.between(midnight + 24 * H, midnight + 48 * H) == 2 * H + 30 * M


def test_berlin_fall_back_inside_opening_hours():
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET, so 00:00-06:00 lasts 7 hours.
    cal = make("Europe/Berlin", "00:00-06:00", EVERY_DAY)
    midnight = local(BERLIN, 2026, 10, 25, 0, 0)
    assert cal.between(midnight, local(BERLIN, 2026, 10, 25, 12, 0)) == 7 * H
    assert cal.add(midnight, 2 * H + 30 * M) == local(BERLIN, 2026, 10, 25, 2, 30)
    assert cal.add(midnight, 3 * H + 30 * M) == local(BERLIN, 2026, 10, 25, 2, 30, fold=1)
    assert cal.add(midnight, 7 * H) == local(BERLIN, 2026, 10, 25, 6, 0)
    assert cal.is_working(local(BERLIN, 2026, 10, 25, 2, 15, fold=1))


def test_closing_in_the_repeated_hour_closes_at_its_first_occurrence():
    cal = make("Europe/Berlin", "01:00-02:30", EVERY_DAY)
    one = local(BERLIN, 2026, 10, 25, 1, 0)
    assert cal.add(one, 90 * M) == local(BERLIN, 2026, 10, 25, 2, 30)
    assert not cal.is_working(local(BERLIN, 2026, 10, 25, 2, 15, fold=1))


def test_new_york_spring_forward():
    # 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    cal = make("America/New_York", "01:00-05:00", EVERY_DAY)
    one = local(NEW_YORK, 2026, 3, 8, 1, 0)
    assert cal.between(one - H, one + 23 * H) == 3 * H
    assert cal.add(one, H) == local(NEW_YORK, 2026, 3, 8, 3, 0)
    assert cal.add(one, 90 * M) == local(NEW_YORK, 2026, 3, 8, 3, 30)
    assert cal.add(one, 3 * H) == local(NEW_YORK, 2026, 3, 8, 5, 0)
    assert cal.add(one, 3 * H) == datetime(2026, 3, 8, 9, 0, tzinfo=UTC)


def test_new_york_fall_back():
    # 2026-11-01: 02:00 EDT goes back to 01:00 EST.
    cal = make("America/New_York", "01:00-05:00", EVERY_DAY)
    one = local(NEW_YORK, 2026, 11, 1, 1, 0)
    assert one == datetime(2026, 11, 1, 5, 0, tzinfo=UTC)
    assert cal.between(one - H, one + 23 * H) == 5 * H
    assert cal.add(one, 90 * M) == local(NEW_YORK, 2026, 11, 1, 1, 30, fold=1)
    assert cal.add(one, 5 * H) == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def test_hours_entirely_inside_the_gap_give_no_working_time_that_day():
    cal = make("America/New_York", "02:00-02:59", EVERY_DAY)
    midnight = local(NEW_YORK, 2026, 3, 8, 0, 0)
    assert cal.next_opening(midnight) == local(NEW_YORK, 2026, 3, 9, 2, 0)
    assert cal.between(midnight, midnight + 23 * H) == timedelta(0)


def test_new_york_business_hours_across_both_switches():
    cal = make("America/New_York", "09:00-17:00")
    friday = datetime(2026, 3, 6, 16, 0, tzinfo=NEW_YORK)
    assert cal.add(friday, 2 * H) == datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # 10:00 EDT
    friday = datetime(2026, 10, 30, 16, 0, tzinfo=NEW_YORK)
    assert cal.add(friday, 2 * H) == datetime(2026, 11, 2, 15, 0, tzinfo=UTC)  # 10:00 EST


# -- 24x7 and lookup ------------------------------------------------------------


def test_always_open():
    start = datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN)
    assert ALWAYS_OPEN_CALENDAR.name == "24x7"
    assert ALWAYS_OPEN_CALENDAR.add(start, 4 * H) == start.astimezone(UTC) + 4 * H
    assert ALWAYS_OPEN_CALENDAR.add(start, 4 * H).tzinfo is UTC
    # Elapsed time, not wall time (`start + 4 * H` would say 04:30): the night is an hour short.
    assert ALWAYS_OPEN_CALENDAR.add(start, 4 * H) == local(BERLIN, 2026, 3, 29, 5, 30)
    assert ALWAYS_OPEN_CALENDAR.between(start, start + 90 * M) == 90 * M
    assert ALWAYS_OPEN_CALENDAR.between(start + H, start) == timedelta(0)
    assert ALWAYS_OPEN_CALENDAR.is_working(start)
    assert ALWAYS_OPEN_CALENDAR.next_opening(start) == start
    assert ALWAYS_OPEN_CALENDAR.next_change(start) is None


def _policy():
    level = {
        "id": "tier1",
        "ack_within": "15m",
        "contacts": [{"name": "Support", "channel": "log", "target": "support"}],
    }
    targets = {
        "entry_level": "tier1",
        "resolve_within": "8h",
        "customer_update_every": "4h",
        "breach_notifies": "tier1",
    }
    return parse_policy(
        {
            "name": "test",
            "version": 1,
            "levels": [level],
            "calendars": {
                "business-eu": {
                    "timezone": "Europe/Berlin",
                    "weekdays": WORKDAYS,
                    "hours": "09:00-17:00",
                    "holidays": ["2026-12-25"],
                }
            },
            "priorities": {
                "P1": targets,
                "P2": targets,
                "P3": {**targets, "calendar": "business-eu"},
                "P4": {**targets, "calendar": "business-eu"},
            },
        }
    )


def test_calendar_named():
    policy = _policy()
    assert calendar_named(policy, "24x7") is ALWAYS_OPEN_CALENDAR
    cal = calendar_named(policy, "business-eu")
    assert cal.name == "business-eu"
    opened = datetime(2026, 12, 24, 16, 30, tzinfo=BERLIN)
    assert cal.add(opened, 8 * H) == local(BERLIN, 2026, 12, 28, 16, 30)
    with pytest.raises(KeyError, match=r"business-us.*known: 24x7, business-eu"):
        calendar_named(policy, "business-us")


# -- errors -----------------------------------------------------------------------


@pytest.mark.parametrize("cal", [ALWAYS_OPEN_CALENDAR, make("Europe/Berlin", "09:00-17:00")])
def test_naive_datetimes_are_rejected(cal):
    naive = datetime(2026, 12, 18, 16, 30)
    aware = naive.replace(tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.add(naive, H)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.between(naive, aware)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.between(aware, naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.is_working(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.next_opening(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.next_change(naive)


@pytest.mark.parametrize("cal", [ALWAYS_OPEN_CALENDAR, make("Europe/Berlin", "09:00-17:00")])
def test_negative_work_is_rejected(cal):
    with pytest.raises(ValueError, match="negative"):
        cal.add(datetime(2026, 12, 18, tzinfo=UTC), -H)


def test_calendar_that_never_opens_fails_clearly():
    mondays = [date(2026, 1, 5) + timedelta(weeks=n) for n in range(5 * 53)]
    cal = make("Europe/Berlin", "09:00-17:00", ["mon"], mondays)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="no working time within"):
        cal.add(start, H)
    with pytest.raises(ValueError, match="no working time within"):
        cal.next_opening(start)
    assert not cal.is_working(datetime(2026, 1, 5, 10, tzinfo=UTC))
    assert cal.between(start, start + timedelta(days=30)) == timedelta(0)


# -- properties -------------------------------------------------------------------

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute DST
    "Asia/Kolkata",  # +05:30, no DST
    "Pacific/Chatham",  # +12:45/+13:45
    "America/Santiago",  # switches at midnight
    "America/Havana",  # switches at midnight
    "Europe/London",
]
EARLIEST = datetime(2025, 1, 1, tzinfo=UTC)
LATEST = datetime(2028, 1, 1, tzinfo=UTC)


def _switches(name: str) -> list[datetime]:
    """Instants around which ``name`` changes its UTC offset, to aim starts at them."""
    zone = ZoneInfo(name)
    found, previous = [], EARLIEST.astimezone(zone).utcoffset()
    day = EARLIEST
    while day < LATEST:
        offset = day.astimezone(zone).utcoffset()
        if offset != previous:
            found.append(day)
            previous = offset
        day += timedelta(hours=6)
    return found


SWITCHES = {name: _switches(name) for name in ZONES}


@st.composite
def instants(draw, zone: str) -> datetime:
    if SWITCHES[zone] and draw(st.booleans()):
        base = draw(st.sampled_from(SWITCHES[zone])) - timedelta(days=3)
        seconds = draw(st.integers(0, 6 * 86400))
    else:
        base = EARLIEST
        seconds = draw(st.integers(0, int((LATEST - EARLIEST).total_seconds())))
    micros = draw(st.sampled_from([0, 0, 0, 1, 999_999]))
    return base + timedelta(seconds=seconds, microseconds=micros)


# Wall times where DST switches happen somewhere in ZONES, and the edges of a day.
INTERESTING = [0, 30, 60, 90, 120, 135, 150, 165, 180, 210, 225, 240, 1380, 1410, 1439]


def _minutes(low: int, high: int) -> st.SearchStrategy[int]:
    interesting = [m for m in INTERESTING if low <= m <= high]
    choices = [st.integers(low, high), st.integers(low, min(low + 300, high))]
    if interesting:
        choices.append(st.sampled_from(interesting))
    return st.one_of(*choices)


@st.composite
def calendars(draw, zones: list[str] = ZONES, every_day: bool = False) -> BusinessCalendar:
    zone = draw(st.sampled_from(zones))
    weekdays = set(WEEKDAYS) if every_day else draw(st.sets(st.sampled_from(WEEKDAYS), min_size=1))
    opens = draw(_minutes(0, 23 * 60 + 58))
    closes = draw(_minutes(opens + 1, 23 * 60 + 59))
    hours = f"{opens // 60:02d}:{opens % 60:02d}-{closes // 60:02d}:{closes % 60:02d}"
    holiday_base = draw(st.sampled_from([s.date() for s in SWITCHES[zone]] + [date(2026, 6, 1)]))
    holidays = draw(
        st.lists(st.integers(-10, 30).map(lambda n: holiday_base + timedelta(days=n)), max_size=8)
    )
    ordered = [day for day in WEEKDAYS if day in weekdays]
    return make(zone, hours, ordered, sorted(set(holidays)))


def capacity(cal: BusinessCalendar) -> timedelta:
    """Roughly one week's working time, to keep budgets to a few months of calendar."""
    daily = datetime.combine(date.min, cal.closes) - datetime.combine(date.min, cal.opens)
    return daily * len(cal.weekdays)


@st.composite
def budgets(draw, cal: BusinessCalendar) -> timedelta:
    weeks = draw(st.sampled_from([0, 0, 1, 4, 12]))
    within = draw(st.integers(0, int(capacity(cal).total_seconds())))
    micros = draw(st.sampled_from([0, 0, 1]))
    return capacity(cal) * weeks + timedelta(seconds=within, microseconds=micros)


PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ambiguous(cal: BusinessCalendar, instant: datetime) -> bool:
    wall = instant.astimezone(cal.zone)
    return wall.replace(fold=1 - wall.fold).utcoffset() != wall.utcoffset()


def inside_opening_hours(cal: BusinessCalendar, instant: datetime) -> bool:
    """Judged on the wall clock alone, independently of the implementation."""
    wall = instant.astimezone(cal.zone)
    working_day = wall.weekday() in cal.weekdays and wall.date() not in cal.holidays
    return working_day and cal.opens <= wall.time().replace(tzinfo=None) < cal.closes


@PROPERTY
@given(data=st.data())
def test_add_is_monotonic(data):
    cal = data.draw(calendars())
    t1, t2 = sorted([data.draw(instants(cal.zone.key)), data.draw(instants(cal.zone.key))])
    a, b = sorted([data.draw(budgets(cal)), data.draw(budgets(cal))])
    assert cal.add(t1, a) <= cal.add(t1, b)
    assert cal.add(t1, a) <= cal.add(t2, a)


@PROPERTY
@given(data=st.data())
def test_add_is_additive_and_inverse_of_between(data):
    cal = data.draw(calendars())
    t = data.draw(instants(cal.zone.key))
    a, b = data.draw(budgets(cal)), data.draw(budgets(cal))
    first = cal.add(t, a)
    assert cal.add(t, a + b) == cal.add(first, b)
    assert cal.between(t, first) == a
    assert cal.between(t, cal.add(t, a + b)) == a + b


@PROPERTY
@given(data=st.data())
def test_additive_across_a_closing_instant(data):
    cal = data.draw(calendars())
    t = data.draw(instants(cal.zone.key))
    closing = cal.next_change(cal.next_opening(t))
    a = cal.between(t, closing)
    b = data.draw(budgets(cal))
    assert a > timedelta(0)
    assert cal.add(t, a) == closing
    assert cal.add(t, a + b) == cal.add(closing, b)
    if b > timedelta(0):
        assert cal.add(closing, b) > cal.next_opening(closing) >= closing


@PROPERTY
@given(data=st.data())
def test_deadlines_land_in_working_time(data):
    cal = data.draw(calendars())
    t = data.draw(instants(cal.zone.key))
    w = data.draw(budgets(cal))
    due = cal.add(t, w)
    assert due.tzinfo is UTC
    assert due >= t
    if w > timedelta(0):
        assert cal.is_working(due - US)
        just_before = due - US
        assert inside_opening_hours(cal, just_before) or ambiguous(cal, just_before)
    else:
        assert due == t


@PROPERTY
@given(data=st.data())
def test_is_working_matches_the_wall_clock(data):
    cal = data.draw(calendars())
    t = data.draw(instants(cal.zone.key))
    opening = cal.next_opening(t)
    change = cal.next_change(t)
    for probe in (t, opening - US, opening, change - US, change):
        if not ambiguous(cal, probe):
            assert cal.is_working(probe) == inside_opening_hours(cal, probe), probe


@PROPERTY
@given(data=st.data())
def test_every_boundary_around_a_switch_matches_the_wall_clock(data):
    zones = [name for name in ZONES if SWITCHES[name]]
    cal = data.draw(calendars(zones, every_day=data.draw(st.booleans())))
    switch = data.draw(st.sampled_from(SWITCHES[cal.zone.key]))
    t, until = switch - timedelta(days=2), switch + timedelta(days=2)
    while t < until:
        t = cal.next_change(t)
        for probe in (t - US, t):
            if not ambiguous(cal, probe):
                assert cal.is_working(probe) == inside_opening_hours(cal, probe), probe


@PROPERTY
@given(data=st.data())
def test_next_open_and_next_change(data):
    cal = data.draw(calendars())
    t = data.draw(instants(cal.zone.key))
    opening = cal.next_opening(t)
    assert opening >= t and cal.is_working(opening)
    assert cal.between(t, opening) == timedelta(0)
    assert (opening == t) == cal.is_working(t)
    change = cal.next_change(t)
    assert change > t
    assert cal.is_working(change - US) == cal.is_working(t)
    assert cal.is_working(change) != cal.is_working(t)
    assert cal.between(t, change) == (change - t if cal.is_working(t) else timedelta(0))


@PROPERTY
@given(data=st.data())
def test_between_splits(data):
    cal = data.draw(calendars())
    a, b, c = sorted(data.draw(instants(cal.zone.key)) for _ in range(3))
    c = min(c, a + timedelta(days=60))
    b = min(b, c)
    assert cal.between(a, c) == cal.between(a, b) + cal.between(b, c)
    assert timedelta(0) <= cal.between(a, c) <= c - a

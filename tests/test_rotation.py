"""On-call rotations: wall-clock handovers across DST, absolute shifts, before ``starts``.

Pure unit tests: no servers, no fixtures from conftest.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.policy import Rotation
from workflows.rotation import next_handover, on_call

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
US = timedelta(microseconds=1)


def rotation(people: list[str], every: str, starts: str, zone: str | None = None) -> Rotation:
    return Rotation.model_validate(
        {"people": people, "every": every, "starts": starts, "timezone": zone}
    )


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold).astimezone(UTC)


WEEKLY_BERLIN = rotation(
    ["alice", "bob", "carol"], "1w", "2026-03-02T09:00:00+01:00", "Europe/Berlin"
)


def test_weekly_handover_stays_at_nine_local_across_spring_forward():
    before = local(BERLIN, 2026, 3, 23, 9, 0)  # CET
    after = local(BERLIN, 2026, 3, 30, 9, 0)  # CEST
    assert before == datetime(2026, 3, 23, 8, 0, tzinfo=UTC)
    assert after == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert on_call(WEEKLY_BERLIN, before - US) == "carol"
    assert on_call(WEEKLY_BERLIN, before) == "alice"
    assert next_handover(WEEKLY_BERLIN, before - US) == before
    assert next_handover(WEEKLY_BERLIN, before) == after
    assert on_call(WEEKLY_BERLIN, local(BERLIN, 2026, 3, 29, 12, 0)) == "alice"
    assert on_call(WEEKLY_BERLIN, after - US) == "alice"
    assert on_call(WEEKLY_BERLIN, after) == "bob"
    assert next_handover(WEEKLY_BERLIN, after).tzinfo is UTC


def test_weekly_handover_stays_at_nine_local_across_fall_back():
    # 2026-10-26 is 34 weeks after the start: 34 % 3 == 1.
    monday = local(BERLIN, 2026, 10, 26, 9, 0)
    assert monday == datetime(2026, 10, 26, 8, 0, tzinfo=UTC)
    assert next_handover(WEEKLY_BERLIN, local(BERLIN, 2026, 10, 20, 12, 0)) == monday
    assert on_call(WEEKLY_BERLIN, monday) == "bob"
    assert on_call(WEEKLY_BERLIN, monday - US) == "alice"


def test_without_timezone_handovers_are_absolute():
    fixed = rotation(["alice", "bob", "carol"], "1w", "2026-03-02T09:00:00+01:00")
    assert next_handover(fixed, local(BERLIN, 2026, 3, 25, 12)) == datetime(
        2026, 3, 30, 8, 0, tzinfo=UTC
    )  # 10:00 in Berlin summer time


def test_daily_rotation_across_new_york_fall_back():
    daily = rotation(["ann", "ben"], "1d", "2026-10-20T08:00:00-04:00", "America/New_York")
    sunday = local(NEW_YORK, 2026, 11, 1, 8, 0)  # EST now
    assert sunday == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    assert next_handover(daily, local(NEW_YORK, 2026, 10, 31, 20, 0)) == sunday
    assert on_call(daily, sunday) == "ann"  # 12 days after the start
    assert on_call(daily, sunday - US) == "ben"
    assert next_handover(daily, sunday) == local(NEW_YORK, 2026, 11, 2, 8, 0)
    # The Sunday shift is 25 hours long.
    assert next_handover(daily, sunday - US) - next_handover(
        daily, local(NEW_YORK, 2026, 10, 31, 7, 0)
    ) == timedelta(hours=25)


def test_daily_handover_in_the_skipped_hour_happens_at_the_jump():
    daily = rotation(["ann", "ben"], "1d", "2026-03-01T02:30:00-05:00", "America/New_York")
    # 2026-03-08 has no 02:30 in New York: the clock jumps from 02:00 EST to 03:00 EDT.
    jump = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    assert next_handover(daily, local(NEW_YORK, 2026, 3, 7, 12, 0)) == jump
    assert on_call(daily, jump - US) == "ann"
    assert on_call(daily, jump) == "ben"
    assert next_handover(daily, jump) == local(NEW_YORK, 2026, 3, 9, 2, 30)


def test_twelve_hour_rotation_is_absolute_even_with_a_timezone():
    shifts = rotation(["x", "y", "z"], "12h", "2026-01-01T00:00:00Z", "Europe/Berlin")
    # 87 days = 174 shifts after the start, on the night Berlin springs forward.
    night = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    assert on_call(shifts, night) == "x"
    assert on_call(shifts, night - US) == "z"
    assert next_handover(shifts, night) == datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
    assert next_handover(shifts, datetime(2026, 10, 25, 1, 0, tzinfo=UTC)) == datetime(
        2026, 10, 25, 12, 0, tzinfo=UTC
    )


def test_before_starts_counts_backwards():
    daily = rotation(["a", "b", "c"], "1d", "2026-01-10T00:00:00Z")
    assert on_call(daily, datetime(2026, 1, 10, tzinfo=UTC)) == "a"
    assert on_call(daily, datetime(2026, 1, 9, 23, 59, 59, 999999, tzinfo=UTC)) == "c"
    assert on_call(daily, datetime(2026, 1, 9, 12, tzinfo=UTC)) == "c"
    assert on_call(daily, datetime(2026, 1, 8, tzinfo=UTC)) == "b"
    assert on_call(daily, datetime(2026, 1, 7, tzinfo=UTC)) == "a"
    assert on_call(daily, datetime(2025, 1, 10, tzinfo=UTC)) == "b"  # 365 days: -365 % 3 == 1
    assert next_handover(daily, datetime(2026, 1, 9, 12, tzinfo=UTC)) == datetime(
        2026, 1, 10, tzinfo=UTC
    )


def test_before_starts_in_local_time_across_dst():
    weekly = rotation(["alice", "bob"], "1w", "2026-04-06T09:00:00+02:00", "Europe/Berlin")
    # Two weeks before the start, in winter time.
    assert next_handover(weekly, local(BERLIN, 2026, 3, 20, 12)) == local(BERLIN, 2026, 3, 23, 9)
    assert on_call(weekly, local(BERLIN, 2026, 3, 23, 9)) == "alice"
    assert on_call(weekly, local(BERLIN, 2026, 3, 23, 9) - US) == "bob"


def test_one_person_and_repeated_names():
    solo = rotation(["alice"], "1d", "2026-01-01T09:00:00Z")
    at = datetime(2026, 5, 5, 12, tzinfo=UTC)
    assert on_call(solo, at) == "alice"
    assert next_handover(solo, at) == datetime(2026, 5, 6, 9, tzinfo=UTC)
    pair = rotation(["alice", "alice", "bob"], "1d", "2026-01-01T09:00:00Z")
    assert on_call(pair, datetime(2026, 1, 1, 12, tzinfo=UTC)) == "alice"
    assert next_handover(pair, datetime(2026, 1, 1, 12, tzinfo=UTC)) == datetime(
        2026, 1, 3, 9, tzinfo=UTC
    )


def test_naive_datetimes_are_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        on_call(WEEKLY_BERLIN, datetime(2026, 3, 30, 9))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_handover(WEEKLY_BERLIN, datetime(2026, 3, 30, 9))


# -- properties -------------------------------------------------------------------

ZONES = [
    None,
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "America/Santiago",
    "America/Havana",
]
EARLIEST = datetime(2025, 1, 1, tzinfo=UTC)
SPAN = 4 * 365 * 86400


@st.composite
def rotations(draw) -> Rotation:
    size = draw(st.integers(1, 5))
    people = [f"person-{i}" for i in range(size)]
    every = draw(st.sampled_from(["1d", "2d", "1w", "2w", "12h", "8h", "90m", "36h"]))
    starts = EARLIEST + timedelta(seconds=draw(st.integers(0, SPAN)))
    zone = draw(st.sampled_from(ZONES))
    offset = timedelta(minutes=draw(st.integers(-12 * 4, 14 * 4)) * 15)
    starts = starts.astimezone(timezone(offset)).isoformat()
    return rotation(people, every, starts, zone)


PROPERTY = settings(max_examples=200, deadline=None)


@PROPERTY
@given(rota=rotations(), seconds=st.integers(0, SPAN), micros=st.integers(0, 999_999))
def test_person_changes_exactly_at_the_next_handover(rota, seconds, micros):
    at = EARLIEST + timedelta(seconds=seconds, microseconds=micros)
    handover = next_handover(rota, at)
    assert handover > at
    assert handover.tzinfo is UTC
    assert on_call(rota, handover - US) == on_call(rota, at)
    if len(rota.people) > 1:
        assert on_call(rota, handover) != on_call(rota, at)
        # Distinct people take turns in list order.
        index = rota.people.index(on_call(rota, at))
        assert on_call(rota, handover) == rota.people[(index + 1) % len(rota.people)]


@PROPERTY
@given(rota=rotations(), seconds=st.integers(0, SPAN))
def test_whole_day_handovers_keep_the_local_wall_time(rota, seconds):
    every_whole_days = rota.every % timedelta(days=1) == timedelta(0)
    at = EARLIEST + timedelta(seconds=seconds)
    handover = next_handover(rota, at)
    if rota.timezone is None or not every_whole_days:
        assert (handover - rota.starts) % rota.every == timedelta(0)
        return
    zone = ZoneInfo(rota.timezone)
    wall = rota.starts.astimezone(zone).time()
    intended = datetime.combine(handover.astimezone(zone).date(), wall)
    exists = intended.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(
        tzinfo=None
    ) == intended
    if exists:
        assert handover.astimezone(zone).time() == wall
    else:  # skipped by a DST jump: the handover happens at the jump
        assert handover.astimezone(zone).time() > wall
        assert (handover - US).astimezone(zone).replace(tzinfo=None) < intended

"""Working-time calendars: "8h" on a business calendar means eight *working* hours.

Runs inside the Temporal workflow sandbox, so everything here is pure and
deterministic: no wall clock, no I/O besides reading zone files (``zone_named``).
All inputs must be timezone-aware; all outputs are UTC.

Local wall times become instants by one rule, used everywhere (calendars and
rotations): a wall time on a given local date maps to the *first instant at
which the local clock reads at least that time*. So a time repeated when the
clocks go back means its first occurrence, and a time skipped when the clocks
go forward means the instant of the jump (an opening at 02:30 on a day that
skips 02:00-03:00 happens at 03:00). A working day is therefore always one
contiguous span of real elapsed time from its opening to its closing instant.
"""

from __future__ import annotations

import functools
import zoneinfo
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterator, Protocol

from schemas.policy import ALWAYS_OPEN, WEEKDAYS, Calendar, Policy

UTC = timezone.utc
ZERO = timedelta(0)
_SECOND = timedelta(seconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A calendar with no working time this far ahead is a broken policy, not a long weekend.
HORIZON_DAYS = 3 * 366


@functools.lru_cache(maxsize=64)
def zone_named(key: str) -> zoneinfo.ZoneInfo:
    """The IANA zone ``key``, usable as tzinfo inside the Temporal workflow sandbox.

    In the sandbox (temporalio 1.35) ``ZoneInfo(key)`` returns the instance wrapped
    in a restriction proxy that ``datetime`` rejects as tzinfo ("tzinfo argument
    must be None or of a tzinfo subclass"); the ``no_cache`` constructor is not
    wrapped. Our own cache keeps it to one read of the zone file per import.
    """
    return zoneinfo.ZoneInfo.no_cache(key)


def aware_utc(value: datetime, what: str = "datetime") -> datetime:
    """Naive datetimes are ambiguous in a system that spans time zones, so refuse them."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def local_instant(zone: zoneinfo.ZoneInfo, wall: datetime) -> datetime:
    """The first UTC instant at which the clock in ``zone`` reads at least ``wall`` (naive).

    ``fold=0`` already gives the first occurrence of a repeated time; for a skipped
    time it lands past the jump, so we search back to the jump itself (tzdata
    transitions fall on whole seconds).
    """
    instant = wall.replace(tzinfo=zone).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low = (min(before, instant) - _EPOCH) // _SECOND  # clock still short of `wall`
    high = -((_EPOCH - max(before, instant)) // _SECOND)  # clock already past it
    while high - low > 1:
        middle = (low + high) // 2
        if (_EPOCH + middle * _SECOND).astimezone(zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return _EPOCH + high * _SECOND


class WorkingCalendar(Protocol):
    """When the clock of an SLA runs.

    Deadlines land in ``(open, close]``: a budget that runs out exactly at closing
    time is due at the closing instant, not at the next opening. That instant is
    still "within working time" for deadline purposes, and ``add`` from it
    continues at the next opening, so ``add`` stays additive.
    """

    name: str

    def add(self, start: datetime, work: timedelta) -> datetime: ...

    def between(self, start: datetime, end: datetime) -> timedelta: ...

    def is_working(self, at: datetime) -> bool: ...

    def next_opening(self, at: datetime) -> datetime: ...

    def next_change(self, at: datetime) -> datetime | None: ...


def _check_work(work: timedelta) -> None:
    if work < ZERO:
        raise ValueError(f"working time must not be negative, got {work}")


@dataclass(frozen=True)
class AlwaysOpenCalendar:
    """The built-in 24x7 calendar: working time is elapsed time."""

    name: str = ALWAYS_OPEN

    def add(self, start: datetime, work: timedelta) -> datetime:
        _check_work(work)
        return aware_utc(start, "start") + work

    def between(self, start: datetime, end: datetime) -> timedelta:
        return max(ZERO, aware_utc(end, "end") - aware_utc(start, "start"))

    def is_working(self, at: datetime) -> bool:
        aware_utc(at, "at")
        return True

    def next_opening(self, at: datetime) -> datetime:
        return aware_utc(at, "at")

    def next_change(self, at: datetime) -> datetime | None:
        aware_utc(at, "at")
        return None


ALWAYS_OPEN_CALENDAR = AlwaysOpenCalendar()


@dataclass(frozen=True)
class BusinessCalendar:
    """Open on ``weekdays`` from ``opens`` to ``closes`` local time, except ``holidays``.

    Each working day is converted to UTC on its own, so a day that spans a DST
    switch is as long as the real time between its opening and closing instants
    (e.g. 00:00-06:00 is 5h on a spring-forward day and 7h on a fall-back day).
    """

    name: str
    zone: zoneinfo.ZoneInfo
    weekdays: frozenset[int]
    opens: time
    closes: time
    holidays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.weekdays:
            raise ValueError(f"calendar {self.name!r} has no weekdays")
        if not self.opens < self.closes:
            raise ValueError(f"calendar {self.name!r} must open before it closes")

    # -- public API ---------------------------------------------------------

    def add(self, start: datetime, work: timedelta) -> datetime:
        """The instant ``work`` working time after ``start``.

        ``work == 0`` returns ``start`` as is (nothing to wait for), even when closed.
        For ``work > 0`` the result is in ``(open, close]`` of some working day, and
        ``add(t, a + b) == add(add(t, a), b)`` and ``between(t, add(t, w)) == w`` hold.
        A calendar with no working time for 3 years raises ValueError, not a hang.
        """
        start = aware_utc(start, "start")
        _check_work(work)
        if work == ZERO:
            return start
        remaining = work
        for opening, closing in self._spans(start):
            begin = max(opening, start)
            available = closing - begin
            if remaining <= available:
                return begin + remaining
            remaining -= available
        raise AssertionError("unreachable: _spans never ends without raising")

    def between(self, start: datetime, end: datetime) -> timedelta:
        """Working time inside ``[start, end)``, so pausing and resuming adds up exactly."""
        start = aware_utc(start, "start")
        end = aware_utc(end, "end")
        total = ZERO
        if end <= start:
            return total
        day = self._local_date(start) - timedelta(days=1)
        last = self._local_date(end) + timedelta(days=1)
        while day <= last:
            span = self._day_span(day)
            if span is not None:
                opening, closing = span
                overlap = min(closing, end) - max(opening, start)
                if overlap > ZERO:
                    total += overlap
            day += timedelta(days=1)
        return total

    def is_working(self, at: datetime) -> bool:
        """Open on ``[open, close)``: at the closing instant itself the office is closed."""
        at = aware_utc(at, "at")
        today = self._local_date(at)
        for offset in (-1, 0, 1):
            span = self._day_span(today + timedelta(days=offset))
            if span is not None and span[0] <= at < span[1]:
                return True
        return False

    def next_opening(self, at: datetime) -> datetime:
        """``at`` itself when open, else the next opening (ValueError if none for 3 years)."""
        at = aware_utc(at, "at")
        opening, _ = next(self._spans(at))
        return max(opening, at)

    def next_change(self, at: datetime) -> datetime | None:
        """The next instant strictly after ``at`` at which the calendar opens or closes.

        Never None for a business calendar (only 24x7 has no changes); a workflow
        can sleep until it to re-evaluate "are we in business hours".
        """
        at = aware_utc(at, "at")
        opening, closing = next(self._spans(at))
        return closing if opening <= at else opening

    # -- internals ----------------------------------------------------------

    def _local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.zone).date()

    def _day_span(self, day: date) -> tuple[datetime, datetime] | None:
        """The UTC span of one local date, or None when it is not a working day."""
        if day.weekday() not in self.weekdays or day in self.holidays:
            return None
        opening = local_instant(self.zone, datetime.combine(day, self.opens))
        closing = local_instant(self.zone, datetime.combine(day, self.closes))
        if closing <= opening:  # the whole span fell into a DST gap
            return None
        return opening, closing

    def _spans(self, after: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Working spans with ``close > after``, in order, touching spans merged.

        Spans of consecutive days touch only if a DST jump starts exactly at closing
        time and skips past the next opening; merging them keeps ``next_change``
        honest. Walks one local day at a time: two zone conversions per working day,
        cheap even for months of budget.
        """
        day = self._local_date(after) - timedelta(days=1)
        idle_days = 0
        while True:
            span = self._day_span(day)
            if span is None or span[1] <= after:
                idle_days += 1
                if idle_days > HORIZON_DAYS:
                    raise ValueError(
                        f"calendar {self.name!r} has no working time within {HORIZON_DAYS} "
                        f"days after {after.isoformat()} (check its weekdays and holidays)"
                    )
                day += timedelta(days=1)
                continue
            idle_days = 0
            following = self._day_span(day + timedelta(days=1))
            while following is not None and following[0] == span[1]:
                span = (span[0], following[1])
                day += timedelta(days=1)
                following = self._day_span(day + timedelta(days=1))
            yield span
            day += timedelta(days=1)


def business_calendar(name: str, spec: Calendar) -> BusinessCalendar:
    opens, closes = spec.opening
    return BusinessCalendar(
        name=name,
        zone=zone_named(spec.timezone),
        weekdays=frozenset(WEEKDAYS.index(day) for day in spec.weekdays),
        opens=opens,
        closes=closes,
        holidays=frozenset(spec.holidays),
    )


def calendar_named(policy: Policy, name: str) -> WorkingCalendar:
    """The calendar a policy calls ``name``; "24x7" is built in."""
    if name == ALWAYS_OPEN:
        return ALWAYS_OPEN_CALENDAR
    try:
        spec = policy.calendars[name]
    except KeyError:
        raise KeyError(
            f"policy {policy.name} v{policy.version} has no calendar {name!r} "
            f"(known: {', '.join(policy.calendar_names)})"
        ) from None
    return business_calendar(name, spec)

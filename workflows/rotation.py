"""Who is on call: pure rotation maths for use inside workflows.

Shift ``k`` (any integer, negative before ``starts``) begins at handover ``H(k)``
and belongs to ``people[k % len(people)]``.

- ``every`` a whole number of days and ``timezone`` set: ``H(k)`` is the local wall
  time of ``starts`` in ``timezone``, ``k * every`` later on the calendar, so a
  Monday 09:00 Europe/Berlin handover stays at 09:00 across DST. Skipped or
  repeated wall times follow ``workflows.calendar.local_instant``.
- otherwise (sub-day ``every``, or no ``timezone``): ``H(k) = starts + k * every`` in
  absolute time. Without ``timezone`` the offset of ``starts`` is deliberately
  ignored beyond fixing the instant: a pydantic ``AwareDatetime`` only keeps a fixed
  offset through a JSON round trip, so using its tzinfo as a zone would make a
  replayed workflow disagree with the original run.

The index of the shift at an instant is computed arithmetically (one division
plus at most a couple of corrections), never by walking shifts.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta

from schemas.policy import Rotation
from workflows.calendar import UTC, aware_utc, local_instant, zone_named

_DAY = timedelta(days=1)


class _Shifts:
    """Handover arithmetic for one rotation."""

    def __init__(self, rotation: Rotation):
        if rotation.every <= timedelta(0):
            raise ValueError(f"rotation every must be positive, got {rotation.every}")
        if not rotation.people:
            raise ValueError("rotation needs at least one person")
        self.rotation = rotation
        self.starts = aware_utc(rotation.starts, "rotation starts")
        self.zone: zoneinfo.ZoneInfo | None = None
        if rotation.timezone is not None and rotation.every % _DAY == timedelta(0):
            self.zone = zone_named(rotation.timezone)
            self.wall = self.starts.astimezone(self.zone).replace(tzinfo=None)

    def handover(self, k: int) -> datetime:
        if self.zone is None:
            return self.starts + k * self.rotation.every
        return local_instant(self.zone, self.wall + k * self.rotation.every)

    def index(self, at: datetime) -> int:
        """The largest ``k`` with ``H(k) <= at``."""
        if self.zone is None:
            return (at - self.starts) // self.rotation.every
        # Estimate on the wall clock; DST can put it off by one shift at most.
        k = (at.astimezone(self.zone).replace(tzinfo=None) - self.wall) // self.rotation.every
        while self.handover(k) > at:
            k -= 1
        while self.handover(k + 1) <= at:
            k += 1
        return k

    def person(self, k: int) -> str:
        people = self.rotation.people
        return people[k % len(people)]


def on_call(rotation: Rotation, at: datetime) -> str:
    """The person on call at ``at``; a shift includes its own handover instant."""
    at = aware_utc(at, "at")
    shifts = _Shifts(rotation)
    return shifts.person(shifts.index(at))


def next_handover(rotation: Rotation, at: datetime) -> datetime:
    """The first handover strictly after ``at`` that hands over to someone else.

    Consecutive shifts of the same name (a name listed twice in a row) are
    skipped. When everybody in the list is the same person the person never
    changes, so the end of the current shift is returned instead.
    """
    at = aware_utc(at, "at")
    shifts = _Shifts(rotation)
    k = shifts.index(at)
    current = shifts.person(k)
    for step in range(1, len(rotation.people) + 1):
        if shifts.person(k + step) != current:
            return shifts.handover(k + step).astimezone(UTC)
    return shifts.handover(k + 1).astimezone(UTC)

"""Durations as policy authors write them: ``90s``, ``15m``, ``4h``, ``2d`` or ISO-8601."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

_SHORT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}


def parse_duration(value: Any) -> Any:
    """Turn the short form into a timedelta; leave ISO-8601 and numbers to pydantic."""
    if isinstance(value, str):
        match = _SHORT.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
        if not value.strip().upper().startswith("P"):
            raise ValueError(
                f"invalid duration {value!r}: use 90s, 15m, 4h, 2d or ISO-8601 such as PT4H"
            )
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("duration must be positive")
    return value


def format_duration(value: timedelta) -> str:
    """The shortest short form that states ``value`` exactly (``4h``, ``90s``)."""
    total_ms = round(value.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if total_ms and total_ms % size == 0:
            return f"{total_ms // size}{unit}"
    return f"{total_ms}ms"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]

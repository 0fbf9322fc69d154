"""Times as the commands print them: UTC, and how far from now."""

from __future__ import annotations

from datetime import UTC, datetime


def relative(at: datetime, now: datetime) -> str:
    """``in 12 min`` / ``3 min ago`` / ``in 1 h 5 min`` / ``now``."""
    seconds = (at - now).total_seconds()
    size = abs(seconds)
    if size < 1:
        return "now"
    if size < 60:
        text = f"{int(size)} s"
    elif size < 3600:
        text = f"{int(size // 60)} min"
    elif size < 86400:
        hours, minutes = divmod(int(size // 60), 60)
        text = f"{hours} h" + (f" {minutes} min" if minutes else "")
    else:
        days, hours = divmod(int(size // 3600), 24)
        text = f"{days} d" + (f" {hours} h" if hours else "")
    return f"in {text}" if seconds > 0 else f"{text} ago"


def when(at: datetime | None, now: datetime) -> str:
    if at is None:
        return "—"
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({relative(at, now)})"

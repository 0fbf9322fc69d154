"""An independent computation of the escalation KPIs, straight from domain events.

It reads only the events (as the workflow emits them) and the accepted CSAT
scores; never the read model, the projection or the SQL in escalations/db/kpis.py. The tests
compare ``db.kpis.compute_kpis`` against it.

Definitions it implements (they are the README's):
- an escalation counts if ``since <= opened_at < until`` and priority/category match;
- resolved: it has a ``resolved`` event;
- resolved within SLA: resolved, with no ``sla_breached`` event at or before the
  ``resolved`` event;
- time to resolution: ``resolved.occurred_at - opened_at`` minus every pause
  (``paused`` → ``resumed``, or → ``resolved`` when resolved while paused);
  mean, and p90 by linear interpolation between closest ranks;
- CSAT average over accepted scores; response rate = responses / resolved;
- repeat: another escalation with the same fingerprint was opened within
  ``repeat_window`` before it (whatever the filters);
- level reached: the level of the highest rank it was opened at or escalated to
  (the first to reach that rank);
- frequencies ordered by count descending, then key.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from schemas.escalation import DomainEvent


@dataclass
class Facts:
    escalation_id: str
    opened_at: datetime
    priority: str
    category: str
    kind: str
    fingerprint: str
    highest_rank: int
    highest_level: str
    resolved_at: datetime | None = None
    net_resolution_seconds: float | None = None
    breaches: list[datetime] = field(default_factory=list)
    repeat: bool = False


def facts_from_events(events: list[DomainEvent], repeat_window: timedelta) -> dict[str, Facts]:
    by_escalation: dict[str, list[DomainEvent]] = defaultdict(list)
    for event in events:
        by_escalation[event.escalation_id].append(event)
    facts: dict[str, Facts] = {}
    for escalation_id, stream in by_escalation.items():
        stream.sort(key=lambda e: e.seq)
        opened = stream[0]
        assert opened.type == "opened", f"{escalation_id} does not start with 'opened'"
        view = opened.payload["view"]
        item = Facts(
            escalation_id=escalation_id,
            opened_at=datetime.fromisoformat(view["opened_at"]),
            priority=view["priority"],
            category=view["category"],
            kind=view["kind"],
            fingerprint=opened.payload["fingerprint"],
            highest_rank=opened.payload["rank"],
            highest_level=view["level"],
        )
        paused_at: datetime | None = None
        paused = timedelta(0)
        for event in stream[1:]:
            if event.type == "escalated" and event.payload["rank"] > item.highest_rank:
                item.highest_rank = event.payload["rank"]
                item.highest_level = event.payload["to_level"]
            elif event.type == "paused":
                paused_at = event.occurred_at
            elif event.type == "resumed":
                assert paused_at is not None
                paused += event.occurred_at - paused_at
                paused_at = None
            elif event.type == "sla_breached":
                item.breaches.append(event.occurred_at)
            elif event.type == "resolved":
                if paused_at is not None:
                    paused += event.occurred_at - paused_at
                    paused_at = None
                item.resolved_at = event.occurred_at
                item.net_resolution_seconds = (
                    event.occurred_at - item.opened_at - paused
                ).total_seconds()
        facts[escalation_id] = item
    by_fingerprint: dict[str, list[Facts]] = defaultdict(list)
    for item in facts.values():
        by_fingerprint[item.fingerprint].append(item)
    for item in facts.values():
        item.repeat = any(
            other.escalation_id != item.escalation_id
            and item.opened_at - repeat_window <= other.opened_at <= item.opened_at
            for other in by_fingerprint[item.fingerprint]
        )
    return facts


def percentile(values: list[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (what percentile_cont does)."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _frequency(keys: list[str]) -> list[dict[str, Any]]:
    counted = Counter(keys)
    return [{"key": key, "escalations": n}
            for key, n in sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))]


def expected_kpis(
    events: list[DomainEvent],
    csat: dict[str, int],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    priority: str | None = None,
    category: str | None = None,
    repeat_window: timedelta = timedelta(days=30),
) -> dict[str, Any]:
    """The KPI report's fields, as plain values."""
    facts = facts_from_events(events, repeat_window)
    chosen = [
        f for f in facts.values()
        if (since is None or f.opened_at >= since)
        and (until is None or f.opened_at < until)
        and (priority is None or f.priority == priority)
        and (category is None or f.category == category)
    ]
    resolved = [f for f in chosen if f.resolved_at is not None]
    within = [f for f in resolved if not any(b <= f.resolved_at for b in f.breaches)]  # type: ignore[operator]
    times = [f.net_resolution_seconds for f in resolved if f.net_resolution_seconds is not None]
    scores = [csat[f.escalation_id] for f in chosen if f.escalation_id in csat]
    return {
        "escalations": len(chosen),
        "resolved": len(resolved),
        "resolved_within_sla": len(within),
        "resolved_within_sla_share": len(within) / len(resolved) if resolved else None,
        "mean_time_to_resolution_seconds": sum(times) / len(times) if times else None,
        "p90_time_to_resolution_seconds": percentile(times, 0.9),
        "csat_average": sum(scores) / len(scores) if scores else None,
        "csat_responses": len(scores),
        "csat_response_rate": len(scores) / len(resolved) if resolved else None,
        "repeat_escalations": sum(1 for f in chosen if f.repeat),
        "by_category": _frequency([f.category for f in chosen]),
        "by_level_reached": _frequency([f.highest_level for f in chosen]),
        "by_kind": _frequency([f.kind for f in chosen]),
        "by_priority": _frequency([f.priority for f in chosen]),
    }

"""Policy files written for one benchmark run (second-scale, log channel only).

``bench`` is the default: every clock an hour away, so nothing moves unless a
scenario says so. ``ack_policy(dir, seconds)`` writes a copy whose entry level
(tier1, the entry of P2) must acknowledge within ``seconds``: a scenario that
wants a deadline at a given moment picks the copy with the right budget when it
starts the escalation (deadlines are quantised to ``ACK_STEP``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

ACK_STEP_MS = 100
LEVELS = ("tier1", "tier2", "engineering", "management")


def _document(name: str, *, ack: dict[str, str] | None = None, **priority: Any) -> dict[str, Any]:
    ack = ack or {}
    p2 = {"entry_level": "tier1", "resolve_within": "10h", "customer_update_every": "10h",
          "at_risk_at": 0.75, "calendar": "24x7", "breach_notifies": "management"}
    p2.update(priority)
    return {
        "name": name,
        "version": 1,
        "levels": [
            {"id": level, "name": level.title(), "ack_within": ack.get(level, "1h"),
             "contacts": [{"name": f"{level} on-call", "channel": "log", "target": level}]}
            for level in LEVELS
        ],
        "routes": {"bench": "tier1"},
        "priorities": {p: dict(p2) for p in ("P1", "P2", "P3", "P4")},
        "customer": {"channel": "log"},
        "postmortem_due": "1h",
        "postmortem_remind_every": "1h",
        "csat_window": "1h",
    }


def write(folder: Path, document: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{document['name']}.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def base_policy(folder: Path) -> Path:
    """The default policy of a run's worker."""
    return write(folder, _document("bench"))


def ack_policy(folder: Path, seconds: float) -> str:
    """A policy whose tier1 ``ack_within`` is ``seconds`` rounded up to ACK_STEP_MS; its name."""
    ms = max(ACK_STEP_MS, math.ceil(seconds * 1000 / ACK_STEP_MS) * ACK_STEP_MS)
    name = f"bench-ack-{ms}"
    write(folder, _document(name, ack={"tier1": f"{ms}ms"}))
    return name


def lifecycle_policy(folder: Path) -> str:
    """tier1 must answer within 1 s (one auto-escalation), then an hour everywhere."""
    return ack_policy(folder, 1.0)


def day_policy(folder: Path) -> str:
    """A P1 day at 1 s = 1 h: breach at 4 h, at-risk at 3 h, customer updates every 2 h."""
    return Path(write(folder, _document(
        "bench-day", ack={level: "10h" for level in LEVELS},
        resolve_within="4s", customer_update_every="2s",
    ))).stem

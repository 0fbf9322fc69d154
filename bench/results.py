"""Results: percentiles, one JSON file per scenario and run, and reading them back."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FORMAT = 1


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """n, p50/p95/p99 (nearest rank), max and mean of ``values`` (seconds)."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "mean": None, "min": None}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {
        "n": len(ordered),
        "min": round(ordered[0], 4),
        "p50": round(rank(0.50), 4),
        "p95": round(rank(0.95), 4),
        "p99": round(rank(0.99), 4),
        "max": round(ordered[-1], 4),
        "mean": round(sum(ordered) / len(ordered), 4),
    }


@dataclass
class Target:
    """One goal, judged on ``value`` against ``limit``.

    ``ours`` and ``bare`` are the two figures the judged value comes from (or sits beside),
    both measured in the same run, as text with their units; ``value`` is then often their ratio.
    """

    name: str
    goal: str
    value: float | None
    limit: float
    higher_is_better: bool = False
    unit: str = ""
    ours: str | None = None
    bare: str | None = None

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "goal": self.goal, "value": self.value, "limit": self.limit,
                "higher_is_better": self.higher_is_better, "unit": self.unit, "met": self.met,
                "ours": self.ours, "bare": self.bare}


def write_result(results_dir: Path, scenario: str, *, mode: str, label: str, machine: dict[str, Any],
                 config: dict[str, Any], results: dict[str, Any], targets: list[Target],
                 notes: list[str], started: datetime, seconds: float) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    day = started.astimezone(timezone.utc).strftime("%Y-%m-%d")
    suffix = "" if label == "current" else f"-{label}"
    path = results_dir / f"{day}-{scenario}{suffix}.json"
    document = {
        "format": FORMAT,
        "scenario": scenario,
        "label": label,
        "mode": mode,
        "started_at": started.isoformat(),
        "seconds": round(seconds, 1),
        "machine": machine,
        "config": config,
        "results": results,
        "targets": [t.as_dict() for t in targets],
        "notes": notes,
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def load_results(results_dir: Path = RESULTS_DIR) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest result of each (scenario, label), by ``started_at``."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*.json")):
        document = json.loads(path.read_text())
        if document.get("format") != FORMAT:
            continue
        key = (document["scenario"], document.get("label", "current"))
        if key not in latest or document["started_at"] > latest[key]["started_at"]:
            document["_file"] = path.name
            latest[key] = document
    return latest

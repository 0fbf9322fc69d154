"""Scenario 6: worker RSS per cached open escalation, the cache bounded by a setting.

The worker's ``max_cached_workflows`` (``ESCALATION_MAX_CACHED_WORKFLOWS``) bounds the
cache; RSS is read (psutil) when 2,000 and 10,000 escalations have opened (quick
mode: 20 and 40), and per-escalation = (RSS - RSS of the idle worker) / cached runs,
for ours and the bare baseline in the same run; issue #20's goals are judged on their
ratio (<= 1.3x) and on the worker's RSS at 10,000 open with the default settings (<= 1 GB).
When scenario 3 ran in the same invocation, its variant (c) openings are used;
otherwise this scenario opens its own.
"""

from __future__ import annotations

from typing import Any

from bench.results import Target
from bench.scenarios import lateness
from bench.scenarios.common import Context, Outcome, ratio
from escalations.settings import WorkerSettings

KB = 1024
MB = 1024 * 1024


async def run(ctx: Context) -> Outcome:
    samples = ctx.shared.get("memory", {}).get("c")
    marks = lateness.memory_marks(ctx)
    if samples is None:
        variant = lateness.Variant("memory", "openings only", marks[-1], 1.0, 10.0)
        mine = await lateness.ours(ctx, variant, marks)
        theirs = await lateness.bare(ctx, variant, marks)
        samples = {"ours": {"idle": mine["worker_rss_idle"], "open": mine["worker_rss"]},
                   "bare": {"idle": theirs["worker_rss_idle"], "open": theirs["worker_rss"]}}
    cache = int(ctx.stack.worker_env.get("ESCALATION_MAX_CACHED_WORKFLOWS",
                                         WorkerSettings.model_fields["max_cached_workflows"].default))
    results: dict[str, Any] = {"max_cached_workflows": cache}
    for side in ("ours", "bare"):
        idle = samples[side]["idle"]
        rows = {}
        for mark, value in samples[side]["open"].items():
            cached = min(int(mark), cache)
            rows[mark] = {"rss_mb": round(value / MB, 1), "cached": cached,
                          "kb_per_cached": round((value - idle) / cached / KB, 1)}
        results[side] = {"idle_rss_mb": round(idle / MB, 1), "open": rows}
    top = str(marks[-1])
    ours_top = results["ours"]["open"].get(top, {})
    bare_top = results["bare"]["open"].get(top, {})
    per, bare_per = ours_top.get("kb_per_cached"), bare_top.get("kb_per_cached")
    results["ours_vs_bare_per_cached"] = ratio(per, bare_per)
    # 10,000 open is only measured with --outage-size 10000; otherwise extrapolated from the slope.
    at_10k = ours_top.get("rss_mb") if top == "10000" else (
        round((samples["ours"]["idle"] + 10_000 * per * KB) / MB, 1) if per is not None else None)
    bare_at_10k = bare_top.get("rss_mb") if top == "10000" else (
        round((samples["bare"]["idle"] + 10_000 * bare_per * KB) / MB, 1) if bare_per is not None else None)
    results["ours"]["rss_mb_at_10k"] = at_10k
    results["ours"]["rss_at_10k_measured"] = top == "10000"
    results["bare"]["rss_mb_at_10k"] = bare_at_10k
    default = WorkerSettings.model_fields["max_cached_workflows"].default
    results["default_settings"] = cache == default
    how = "measured" if top == "10000" else "extrapolated from the slope"
    settings = "default settings" if cache == default else f"max_cached_workflows {cache}, NOT the default {default}"
    targets = [
        Target(f"worker RSS per cached escalation, ours / bare, at {top} open", "<= 1.3x",
               results["ours_vs_bare_per_cached"], 1.3, unit="x", ours=_kb(per), bare=_kb(bare_per)),
        Target(f"worker RSS with 10,000 open ({how}; {settings})", "<= 1 GB (1024 MB)",
               at_10k, 1024, unit="MB", ours=_mb(at_10k), bare=_mb(bare_at_10k)),
    ]
    return Outcome(config={"marks": list(marks), "max_cached_workflows": cache}, results=results, targets=targets)


def _kb(value: float | None) -> str | None:
    return None if value is None else f"{value:g} KB"


def _mb(value: float | None) -> str | None:
    return None if value is None else f"{value:g} MB"

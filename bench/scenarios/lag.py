"""Scenario 8: projection lag, from a domain event in history to its row in Postgres.

A domain event happens in the workflow task that decides it (its ``occurred_at``
is that task's time, ``workflow.now()``); ``record_events`` stores it as a local
activity inside the same task, so the row exists before the task completes and its
marker reaches history. Lag = ``recorded_at`` (the storing transaction's start) -
``occurred_at``, over every event of the lifecycle run (quiet) and of lateness
run (b) (busiest; quick mode: the last lateness run).
"""

from __future__ import annotations

from bench.results import Target
from bench.scenarios import lifecycle
from bench.scenarios.common import Context, Outcome


async def run(ctx: Context) -> Outcome:
    if not ctx.shared.get("lag"):
        await lifecycle.run(ctx)
    lag = ctx.shared["lag"]
    targets = [Target(f"projection lag p99 ({name})", "<= 250 ms",
                      round(stats["p99"] * 1000, 1) if stats.get("p99") is not None else None, 250, unit="ms")
               for name, stats in lag.items()]
    return Outcome(config={"sources": list(lag)}, results=lag, targets=targets)

"""Runs the chosen scenarios on a fresh stack, prints the table, writes one JSON per scenario."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
import zoneinfo
from pathlib import Path

from rich.console import Console

from bench.results import RESULTS_DIR, write_result
from bench.scenarios.common import Context
from bench.stack import BenchStack, machine_info, utcnow

SCENARIOS = ("start", "lifecycle", "lateness", "crash", "peer", "memory", "history", "lag", "outage")
# --quick (the smoke test's mode, about two minutes) leaves out the crash, peer and outage
# scenarios unless they are named: each needs a kill/restart cycle or a polling interval to
# wait out (outage kills and freezes the stack's PostgreSQL, about two minutes even when quick).
QUICK_SCENARIOS = ("start", "lifecycle", "lateness", "memory", "history", "lag")


class UnknownScenario(ValueError):
    pass


def chosen(names: list[str] | None, quick: bool = False) -> list[str]:
    if not names:
        return list(QUICK_SCENARIOS if quick else SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise UnknownScenario(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    return [n for n in SCENARIOS if n in names]


async def run(*, quick: bool, scenarios: list[str] | None, results_dir: Path = RESULTS_DIR,
              label: str = "current", outage_size: int | None = None,
              console: Console | None = None) -> list[Path]:
    """Run ``scenarios`` (all by default) in their fixed order; return the files written."""
    zoneinfo.reset_tzpath(to=())  # the worker's rule: calendar maths on the pinned tzdata
    console = console or Console()
    names = chosen(scenarios, quick)
    mode = "quick" if quick else "full"
    keep = os.environ.get("ESCALATIONS_BENCH_KEEP")  # a folder: keep logs and data there for a post-mortem
    stack = BenchStack(root=Path(keep) if keep else None)
    written: list[Path] = []
    console.log(f"benchmark ({mode}): {', '.join(names)}; stack in {stack.root}")
    await stack.start()
    try:
        machine = machine_info()
        machine["postgres"] = stack.postgres_version
        machine["postgres_durable"] = True
        # Which results came from the same invocation (the report says when a figure did not).
        machine["invocation_started_at"] = utcnow().isoformat()
        ctx = Context(stack=stack, quick=quick, policies=stack.root / "policies", console=console,
                      outage_size=outage_size)
        for name in names:
            module = importlib.import_module(f"bench.scenarios.{name}")
            started, clock = utcnow(), time.monotonic()
            console.rule(f"scenario {name}")
            outcome = await module.run(ctx)
            machine["load_average_end"] = list(os.getloadavg())
            path = write_result(results_dir, name, mode=mode, label=label, machine=machine, config=outcome.config,
                                results=outcome.results, targets=outcome.targets, notes=outcome.notes,
                                started=started, seconds=time.monotonic() - clock)
            written.append(path)
            from bench.table import print_result

            print_result(console, path)
    finally:
        await asyncio.to_thread(stack.stop)
    return written


def main(quick: bool, scenarios: list[str] | None, results_dir: Path | None, label: str,
         outage_size: int | None = None) -> list[Path]:
    logging.basicConfig(level=logging.WARNING)
    chosen(scenarios)  # an unknown name fails before anything starts
    return asyncio.run(run(quick=quick, scenarios=scenarios, results_dir=results_dir or RESULTS_DIR, label=label,
                           outage_size=outage_size))

"""Scenario 5: scenarios 3 and 4 on a Postgres job queue (procrastinate), same embedded Postgres.

Lateness: the same variants as scenario 3, one job per deadline (``schedule_at``),
one worker process at concurrency 30, with the default polling interval (5 s) and
with 0.1 s. Crash: the same plan as scenario 4, with procrastinate's defaults and
with its documented stalled-job recovery task. Lateness = the job's
``clock_timestamp()`` mark minus its deadline.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

from procrastinate.worker import FETCH_JOB_POLLING_INTERVAL

from bench import peer
from bench.results import Target, percentiles
from bench.scenarios import crash, lateness
from bench.scenarios.common import Context, Outcome, count, wait_until
from bench.stack import Process, Run, utcnow

PEER_LEAD = 5.0  # seconds from the first defer to the first deadline (deferring 2,000 jobs takes < 1 s)
POLLINGS = (("default", FETCH_JOB_POLLING_INTERVAL), ("0.1s", 0.1))


def spawn(run: Run, polling: float, recovery: bool = False) -> Process:
    args = ["-m", "bench.peer", "--dsn", run.database_url, "--polling", str(polling)]
    return run.spawn("peer", args + (["--recovery"] if recovery else []), run.env("unused"))


async def ready(run: Run, process: Process) -> None:
    async def up() -> bool:
        if not process.alive():
            raise RuntimeError(f"the peer worker exited: {process.tail()}")
        return await count(run, "SELECT count(*) FROM procrastinate_workers") >= 1

    if not await wait_until(up, timeout=60):
        raise RuntimeError(f"the peer worker did not register: {process.tail()}")


async def lateness_run(ctx: Context, v: lateness.Variant, polling: float) -> dict[str, Any]:
    async with ctx.stack.run(f"peer-lateness-{v.name}") as run:
        await peer.apply_schema(run.database_url)
        worker = spawn(run, polling)
        await ready(run, worker)
        begin = utcnow()
        t0 = begin + timedelta(seconds=PEER_LEAD)
        jobs = [(str(i), t0 + timedelta(seconds=v.window * i / v.n)) for i in range(v.n)]
        clock = time.monotonic()
        await peer.defer(run.database_url, jobs)
        deferred_s = time.monotonic() - clock
        wait = (jobs[-1][1] - utcnow()).total_seconds() + (60 if not ctx.quick else 30)
        done = await wait_until(lambda: crash._at_least(run, "SELECT count(*) FROM bench_peer", v.n),
                                timeout=max(wait, 30), interval=0.5)
        late = [r[0] for r in await run.pool.fetch(
            "SELECT min(extract(epoch FROM at - deadline))::float8 FROM bench_peer GROUP BY id")]
        return {"n": v.n, "moved": len(late), "all_moved": done,
                "deferred_before_first_deadline": begin + timedelta(seconds=deferred_s) <= t0,
                "defer_seconds": round(deferred_s, 1), "lateness": percentiles(late)}


async def crash_run(ctx: Context, p: crash.Plan, recovery: bool) -> dict[str, Any]:
    async with ctx.stack.run(f"peer-crash-{'recovery' if recovery else 'default'}") as run:
        await peer.apply_schema(run.database_url)
        worker = spawn(run, FETCH_JOB_POLLING_INTERVAL, recovery)
        await ready(run, worker)
        t0 = utcnow() + timedelta(seconds=p.lead)
        ids = [str(i) for i in range(p.n)]
        await peer.defer(run.database_url, [(ids[i], t0 + timedelta(seconds=p.spread * i / p.n)) for i in range(p.n)])
        before_kill, downtime = await crash._kill_and_restart(
            run, worker, t0, p, lambda: spawn(run, FETCH_JOB_POLLING_INTERVAL, recovery), None,
            "SELECT count(*) FROM bench_peer")
        settle = p.settle + (30 if recovery else 0)
        await wait_until(lambda: crash._at_least(run, "SELECT count(DISTINCT id) FROM bench_peer", p.n),
                         timeout=settle)
        if recovery:
            # Stalled jobs are retried once their worker has missed heartbeats for 30 s (the
            # default): wait that out, so repeats of jobs that had already run are counted too.
            await asyncio.sleep(45.0 if not ctx.quick else 35.0)
        rows = await run.pool.fetch(
            "SELECT id, count(*) AS moves, min(extract(epoch FROM at - deadline))::float8 AS late "
            "FROM bench_peer GROUP BY id")
        stuck = await run.pool.fetchval("SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing'")
        return {"n": p.n, "moved_before_kill": before_kill, "downtime_seconds": round(downtime, 2),
                **crash.tally({r["id"]: r["moves"] for r in rows}, ids),
                "lateness": percentiles([r["late"] for r in rows]),
                "jobs_left_doing": stuck}


async def run(ctx: Context) -> Outcome:
    results: dict[str, Any] = {"lateness": {}, "crash": {}}
    targets: list[Target] = []
    for v in lateness.variants(ctx.quick, ctx.outage_size):
        row: dict[str, Any] = {"title": v.title}
        for label, polling in POLLINGS:
            row[label] = await lateness_run(ctx, v, polling)
            ctx.say(f"peer lateness {v.name} ({label} polling): p99 {row[label]['lateness']['p99']}s")
        results["lateness"][v.name] = row
        targets.append(Target(f"peer lateness {v.name} p99 (0.1 s polling)", "reference",
                              row["0.1s"]["lateness"]["p99"], v.target_p99, unit="s"))
    p = crash.plan(ctx.quick)
    for label, recovery in (("default", False), ("recovery", True)):
        results["crash"][label] = got = await crash_run(ctx, p, recovery)
        ctx.say(f"peer crash ({label}): {got['once']} once, {got['twice_or_more']} twice+, {got['never']} never")
    targets.append(Target("peer jobs moved exactly once (recovery task)", f"{p.n} of {p.n}",
                          results["crash"]["recovery"]["once"], p.n, higher_is_better=True))
    return Outcome(
        config={"concurrency": peer.CONCURRENCY, "pollings": dict(POLLINGS), "recovery_cron": peer.RECOVERY_CRON,
                "crash_plan": p.__dict__},
        results=results, targets=targets,
        notes=["peer targets are the same goals as ours, shown for reference; the peer is not tuned down"],
    )

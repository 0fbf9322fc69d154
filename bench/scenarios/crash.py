"""Scenario 4: SIGKILL the worker while deadlines are coming due, restart it a few seconds later.

``n`` escalations (bare workflows, peer jobs) with deadlines spread over ``spread``
seconds; the worker is killed ``kill_after`` seconds after the first deadline and
restarted ``downtime`` seconds later. Counted per escalation: moved once, twice,
never (``escalated`` events from tier1; bare: second-activity rows; peer: job marks),
and lateness against the deadline: ours is paged (the ledger's ``sent_at`` of the move's
first page, as in scenario 3), with decided and recorded (projected) beside it; bare's is
its second activity's insert. Target: every one exactly once, none later
than the downtime plus 2 s.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bench import policies
from bench.results import Target, percentiles
from bench.scenarios import lateness
from bench.scenarios.common import (
    START_CONCURRENCY,
    Context,
    Outcome,
    bounded,
    count,
    queue,
    start_bare,
    wait_until,
)
from bench.stack import Process, Run, utcnow


@dataclass(frozen=True)
class Plan:
    n: int
    lead: float
    spread: float
    kill_after: float
    downtime: float
    settle: float


def plan(quick: bool) -> Plan:
    if quick:
        return Plan(n=50, lead=10.0, spread=4.0, kill_after=1.5, downtime=4.0, settle=45.0)
    return Plan(n=200, lead=20.0, spread=4.0, kill_after=1.5, downtime=5.0, settle=60.0)


def tally(moves: dict[str, int], ids: list[str]) -> dict[str, int]:
    per = Counter(moves.get(i, 0) for i in ids)
    return {"once": per.get(1, 0), "twice_or_more": sum(v for k, v in per.items() if k >= 2),
            "never": per.get(0, 0)}


async def ours(ctx: Context, p: Plan) -> dict[str, Any]:
    async with ctx.stack.run("crash-ours") as run:
        task_queue = queue()
        policy_file = policies.base_policy(ctx.policies)
        worker = run.spawn_worker(task_queue, policy_file)
        await run.wait_polling(task_queue, worker)
        t0 = utcnow() + timedelta(seconds=p.lead)
        targets = [t0 + timedelta(seconds=p.spread * i / p.n) for i in range(p.n)]

        ids = await lateness.open_paced(ctx, run, task_queue, targets)
        opened = await wait_until(lambda: _at_least(run, "SELECT count(*) FROM escalation_events WHERE type = 'opened'", p.n),
                                  timeout=p.lead + 30)
        before_kill, downtime = await _kill_and_restart(
            run, worker, t0, p, lambda: run.spawn_worker(task_queue, policy_file), task_queue,
            "SELECT count(*) FROM escalation_events WHERE type = 'escalated'")
        await wait_until(lambda: _at_least(run, "SELECT count(*) FROM escalation_events WHERE type = 'escalated'", p.n),
                         timeout=p.settle)
        await wait_until(lambda: _at_least(run, lateness.PAGED_SQL, p.n), timeout=p.settle)
        rows = await run.pool.fetch(
            """SELECT e.ticket_id, count(*) AS moves,
                      min(extract(epoch FROM coalesce(pg.paged_at, e.recorded_at) - d.due))::float8 AS late,
                      min(extract(epoch FROM e.recorded_at - d.due))::float8 AS recorded,
                      min(extract(epoch FROM coalesce((e.payload->>'decided_at')::timestamptz, e.occurred_at)
                                             - d.due))::float8 AS decided
                 FROM escalation_events e
                 JOIN escalation_events o ON o.escalation_id = e.escalation_id AND o.type = 'opened'
                CROSS JOIN LATERAL (SELECT (o.payload->'view'->'deadlines'->>'ack_due')::timestamptz AS due) d
                CROSS JOIN LATERAL (SELECT min(n.sent_at) AS paged_at FROM notifications n
                                     WHERE n.escalation_id = e.escalation_id AND n.seq = e.seq
                                       AND n.status = 'sent' AND n.audience <> 'customer') pg
                WHERE e.type = 'escalated' AND e.payload->>'from_level' = 'tier1'
                GROUP BY e.ticket_id""")
        failed = await run.client.count_workflows(f'TaskQueue = "{task_queue}" AND ExecutionStatus = "Failed"')
        repeated = await run.pool.fetchval("SELECT count(*) FROM notifications WHERE attempts > 1")
        return {
            "n": p.n, "all_opened_before_deadlines": opened, "moved_before_kill": before_kill,
            "downtime_seconds": round(downtime, 2),
            **tally({r["ticket_id"]: r["moves"] for r in rows}, ids),
            "lateness": percentiles([r["late"] for r in rows]),
            "lateness_measure": "paged (ledger sent_at of the move's first page)",
            "decided": percentiles([r["decided"] for r in rows]),
            "recorded": percentiles([r["recorded"] for r in rows]),
            "failed_workflows": failed.count,
            "deliveries_attempted_more_than_once": repeated,
        }


async def bare(ctx: Context, p: Plan) -> dict[str, Any]:
    async with ctx.stack.run("crash-bare") as run:
        task_queue = queue()
        worker = run.spawn_bare_worker(task_queue)
        await run.wait_polling(task_queue, worker)
        t0 = utcnow() + timedelta(seconds=p.lead)
        ids = [str(i) for i in range(p.n)]
        await bounded(range(p.n), lambda i: start_bare(run.client, ids[i], task_queue,
                                                       deadline=t0 + timedelta(seconds=p.spread * i / p.n)),
                      START_CONCURRENCY)
        opened = await wait_until(lambda: _at_least(run, "SELECT count(*) FROM bench_bare WHERE step = 1", p.n),
                                  timeout=p.lead + 30)
        before_kill, downtime = await _kill_and_restart(
            run, worker, t0, p, lambda: run.spawn_bare_worker(task_queue), task_queue,
            "SELECT count(*) FROM bench_bare WHERE step = 2")
        await wait_until(lambda: _at_least(run, "SELECT count(DISTINCT id) FROM bench_bare WHERE step = 2", p.n),
                         timeout=p.settle)
        rows = await run.pool.fetch(
            """SELECT id, count(*) AS moves, min(extract(epoch FROM at - deadline))::float8 AS late
                 FROM bench_bare WHERE step = 2 GROUP BY id""")
        failed = await run.client.count_workflows(f'TaskQueue = "{task_queue}" AND ExecutionStatus = "Failed"')
        return {
            "n": p.n, "all_opened_before_deadlines": opened, "moved_before_kill": before_kill,
            "downtime_seconds": round(downtime, 2),
            **tally({r["id"]: r["moves"] for r in rows}, ids),
            "lateness": percentiles([r["late"] for r in rows]),
            "failed_workflows": failed.count,
        }


async def _at_least(run: Run, sql: str, n: int) -> bool:
    return await count(run, sql) >= n


async def _kill_and_restart(run: Run, worker: Process, t0, p: Plan, respawn, task_queue: str | None,
                            moved_sql: str) -> tuple[int, float]:
    await asyncio.sleep(max(0.0, (t0 - utcnow()).total_seconds() + p.kill_after))
    worker.kill()
    clock = time.monotonic()
    before_kill = await count(run, moved_sql)
    await asyncio.sleep(max(0.0, p.downtime - (time.monotonic() - clock)))
    downtime = time.monotonic() - clock
    fresh = respawn()
    if task_queue is not None:
        await run.wait_polling(task_queue, fresh)
    return before_kill, downtime


async def run(ctx: Context) -> Outcome:
    p = plan(ctx.quick)
    mine = await ours(ctx, p)
    ctx.say(f"crash ours: {mine['once']} once, {mine['twice_or_more']} twice+, {mine['never']} never, "
            f"max late {mine['lateness']['max']}s, failed {mine['failed_workflows']}")
    theirs = await bare(ctx, p)
    ctx.say(f"crash bare: {theirs['once']} once, {theirs['twice_or_more']} twice+, {theirs['never']} never, "
            f"max late {theirs['lateness']['max']}s")
    limit = mine["downtime_seconds"] + 2.0
    return Outcome(
        config=p.__dict__,
        results={"ours": mine, "bare": theirs},
        targets=[
            Target("escalations moved exactly once", f"{p.n} of {p.n}", mine["once"], p.n, higher_is_better=True,
                   ours=str(mine["once"]), bare=str(theirs["once"])),
            Target("max lateness after SIGKILL", f"<= downtime + 2 s ({limit:.1f} s)", mine["lateness"]["max"],
                   limit, unit="s", ours=f"{mine['lateness']['max']:g} s",
                   bare=f"{theirs['lateness']['max']:g} s (downtime {theirs['downtime_seconds']:g} s)"),
        ],
        notes=[f"crash: {mine['failed_workflows']} escalation workflows failed"] if mine["failed_workflows"] else [],
    )

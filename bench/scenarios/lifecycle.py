"""Scenario 2: full escalations per second vs bare workflows per second, same concurrency.

One escalation: start -> its 1 s tier1 ack deadline passes (one auto-escalation,
watched in Postgres every 100 ms) -> ``acknowledge`` -> ``resolve``
(starts the postmortem child) -> ``complete`` on ``postmortem-<ticket>`` -> the
run completes. One bare workflow: activity -> 1 s timer -> activity. Both pay the
same 1 s wait; the rate is completed runs per wall-clock second.
Also collected here: history events per lifecycle (scenario 7) and projection lag (8).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import policies
from bench.results import percentiles
from bench.scenarios.common import (
    Context,
    Outcome,
    bench_request,
    bounded,
    queue,
    ratio,
    start_bare,
    start_escalation,
)
from bench.stack import Run
from schemas.escalation import (
    AcknowledgeCommand,
    CompletePostmortemCommand,
    EscalationState,
    ResolveCommand,
    postmortem_id_for,
)

CONCURRENCY = 25
POLL = 0.1


async def lifecycle(run: Run, task_queue: str, policy: str) -> str:
    request = bench_request(policy)
    handle = await start_escalation(run.client, request, task_queue)
    # Watch the read model, as a dashboard would: polling the `state` query instead would add
    # a workflow task's worth of worker time per poll to our side only.
    while not await run.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM escalation_events WHERE ticket_id = $1 AND type = 'escalated')",
            request.ticket_id):
        await asyncio.sleep(POLL)
    await handle.execute_update("acknowledge", AcknowledgeCommand(by="bench"), result_type=EscalationState)
    await handle.execute_update(
        "resolve", ResolveCommand(by="bench", root_cause="benchmark", mitigation="none needed",
                                  preventive_actions=["measure again"]),
        result_type=EscalationState,
    )
    postmortem = run.client.get_workflow_handle(postmortem_id_for(request.ticket_id))
    await postmortem.execute_update(
        "complete", CompletePostmortemCommand(by="bench", summary="benchmark run", root_cause="benchmark",
                                              improvements=["none"]),
    )
    await handle.result()
    return request.ticket_id


async def history_length(run: Run, workflow_id: str) -> int:
    history = await run.client.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events)


async def run(ctx: Context) -> Outcome:
    n = 8 if ctx.quick else 200
    results: dict[str, Any] = {"n": n, "concurrency": CONCURRENCY}
    async with ctx.stack.run("lifecycle-ours") as run:
        task_queue = queue()
        worker = run.spawn_worker(task_queue, policies.base_policy(ctx.policies))
        await run.wait_polling(task_queue, worker)
        policy = policies.lifecycle_policy(ctx.policies)
        clock = time.monotonic()
        tickets = await asyncio.wait_for(
            bounded(range(n), lambda _: lifecycle(run, task_queue, policy), CONCURRENCY), timeout=600)
        ours_s = time.monotonic() - clock
        results["ours_per_second"] = round(n / ours_s, 2)
        escalation_events = await history_length(run, f"escalation-{tickets[0]}")
        postmortem_events = await history_length(run, postmortem_id_for(tickets[0]))
        results["history_events"] = {"escalation": escalation_events, "postmortem": postmortem_events}
        lag = [r[0] for r in await run.pool.fetch(
            "SELECT extract(epoch FROM recorded_at - occurred_at)::float8 FROM escalation_events")]
        results["projection_lag"] = percentiles(lag)
        results["domain_events_per_lifecycle"] = round(
            await run.pool.fetchval("SELECT count(*) FROM escalation_events") / n, 1)
        ctx.shared.setdefault("lag", {})["lifecycle"] = results["projection_lag"]
        ctx.shared.setdefault("history", {})["lifecycle"] = results["history_events"]
        ctx.say(f"lifecycle: ours {results['ours_per_second']}/s, history {results['history_events']}")

    async with ctx.stack.run("lifecycle-bare") as run:
        task_queue = queue()
        worker = run.spawn_bare_worker(task_queue)
        await run.wait_polling(task_queue, worker)

        async def one(i: int) -> None:
            handle = await start_bare(run.client, str(i), task_queue, delay_seconds=1.0)
            await handle.result()

        clock = time.monotonic()
        await asyncio.wait_for(bounded(range(n), one, CONCURRENCY), timeout=600)
        results["bare_per_second"] = round(n / (time.monotonic() - clock), 2)
        results["bare_history_events"] = await history_length(run, "bare-0")
    results["ours_vs_bare"] = ratio(results["ours_per_second"], results["bare_per_second"])
    ctx.say(f"lifecycle: bare {results['bare_per_second']}/s, ratio {results['ours_vs_bare']}")
    return Outcome(
        config={"n": n, "concurrency": CONCURRENCY, "read_model_poll_seconds": POLL, "ack_within_seconds": 1.0},
        results=results,
        # Not one of issue #20's goals (a lifecycle is five commands, a bare run none): the
        # capacity goal is judged on auto-escalations alone, in scenario 3's variant (c).
        targets=[],
    )

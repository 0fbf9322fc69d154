"""Scenario 1: start throughput, raw Temporal client vs the HTTP API, at a fixed concurrency.

Both paths start the same ``EscalationWorkflow`` (default bench policy: nothing comes
due) with the worker running; the API runs as its own process (``escalations api``,
uvicorn) and is measured after the raw starts' openings have finished, so neither
pays for the other's work. The bare baseline is raw starts of the bare workflow.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from bench import policies
from bench.results import Target
from bench.scenarios.common import (
    Context,
    Outcome,
    bench_request,
    bounded,
    count,
    queue,
    ratio,
    start_bare,
    start_escalation,
    wait_until,
)
from escalations.devstack.postgres import free_port

CONCURRENCY = 20
TOKEN = "bench-token"


def api_available() -> str | None:
    """None when api.app.create_app is importable, else why not."""
    try:
        from escalations.api.app import create_app  # noqa: F401
        from escalations.settings import ApiSettings  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "n/a", reported with its reason
        return f"{type(exc).__name__}: {exc}"
    return None


async def run(ctx: Context) -> Outcome:
    n = 40 if ctx.quick else 500
    results: dict[str, Any] = {"n": n, "concurrency": CONCURRENCY}
    notes: list[str] = []
    async with ctx.stack.run("start-ours") as run:
        task_queue = queue()
        policy = policies.base_policy(ctx.policies)
        worker = run.spawn_worker(task_queue, policy)
        await run.wait_polling(task_queue, worker)

        async def opened(total: int) -> bool:
            return await count(run, "SELECT count(*) FROM escalation_events WHERE type = 'opened'") >= total

        clock = time.monotonic()
        await bounded(range(n), lambda _: start_escalation(run.client, bench_request(), task_queue), CONCURRENCY)
        raw_s = time.monotonic() - clock
        results["raw_per_second"] = round(n / raw_s, 1)
        ctx.say(f"start: raw {results['raw_per_second']}/s")
        if not await wait_until(lambda: opened(n), timeout=300, interval=0.5):
            notes.append("start: the raw starts' openings had not all finished before the API phase")

        why_not = api_available()
        if why_not is not None:
            results["api_per_second"] = None
            notes.append(f"start: API n/a ({why_not})")
        else:
            port = free_port()
            api = run.spawn("api", ["-m", "starter", "api", "--port", str(port)],
                            run.env(task_queue, policy, ESCALATION_API_TOKENS=TOKEN))
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=60,
                                         headers={"Authorization": f"Bearer {TOKEN}"},
                                         limits=httpx.Limits(max_connections=CONCURRENCY)) as http:
                async def healthy() -> bool:
                    if not api.alive():
                        raise RuntimeError(f"the API exited: {api.tail()}")
                    try:
                        return (await http.get("/healthz")).status_code == 200
                    except httpx.HTTPError:
                        return False

                if not await wait_until(healthy, timeout=60):
                    raise RuntimeError(f"the API did not become healthy: {api.tail()}")
                failures: list[int] = []

                async def post(_: int) -> None:
                    response = await http.post("/escalations", json=bench_request().as_body())
                    if response.status_code != 201:
                        failures.append(response.status_code)

                clock = time.monotonic()
                await bounded(range(n), post, CONCURRENCY)
                api_s = time.monotonic() - clock
            results["api_per_second"] = round(n / api_s, 1)
            results["api_failures"] = len(failures)
            if failures:
                notes.append(f"start: {len(failures)} API starts failed (status {sorted(set(failures))})")
            ctx.say(f"start: API {results['api_per_second']}/s")
            await wait_until(lambda: opened(2 * n), timeout=300, interval=0.5)

    async with ctx.stack.run("start-bare") as run:
        task_queue = queue()
        worker = run.spawn_bare_worker(task_queue)
        await run.wait_polling(task_queue, worker)
        clock = time.monotonic()
        await bounded(range(n), lambda i: start_bare(run.client, str(i), task_queue, delay_seconds=3600),
                      CONCURRENCY)
        results["bare_raw_per_second"] = round(n / (time.monotonic() - clock), 1)
        await asyncio.sleep(0)
    results["api_vs_raw"] = ratio(results.get("api_per_second"), results["raw_per_second"])
    results["raw_vs_bare"] = ratio(results["raw_per_second"], results["bare_raw_per_second"])
    return Outcome(
        config={"n": n, "concurrency": CONCURRENCY},
        results=results,
        targets=[Target(f"HTTP API / raw client start rate, both at concurrency {CONCURRENCY}", ">= 0.8x",
                        results["api_vs_raw"], 0.8, higher_is_better=True, unit="x",
                        ours=None if results.get("api_per_second") is None else f"API {results['api_per_second']:g}/s",
                        bare=f"raw client {results['raw_per_second']:g}/s (bare workflow, raw: "
                             f"{results['bare_raw_per_second']:g}/s)")],
        notes=notes,
    )

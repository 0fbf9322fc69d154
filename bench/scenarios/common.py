"""What the scenarios share: the run context, request builders, bounded concurrency, polling."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from temporalio.client import Client, WorkflowHandle

from bench.bare_workflow import BARE_WORKFLOW, BareInput
from bench.results import Target
from bench.stack import BenchStack, Run
from escalations.client import start_escalation as client_start
from schemas import keys
from schemas.escalation import EscalationRequest, EscalationState

T = TypeVar("T")
START_CONCURRENCY = 50


@dataclass
class Context:
    stack: BenchStack
    quick: bool
    policies: Path
    console: Console
    outage_size: int | None = None
    shared: dict[str, Any] = field(default_factory=dict)

    def say(self, message: str) -> None:
        self.console.log(message)


@dataclass
class Outcome:
    """What a scenario hands to the results writer."""

    config: dict[str, Any]
    results: dict[str, Any]
    targets: list[Target]
    notes: list[str] = field(default_factory=list)


def queue() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


def bench_request(policy: str | None = None, priority: str = "P2", ticket_id: str | None = None) -> EscalationRequest:
    return EscalationRequest.model_validate({
        "ticket_id": ticket_id or f"B-{uuid.uuid4().hex[:12]}",
        "title": "Benchmark escalation",
        "customer": {"id": "bench", "name": "Bench Corp", "segment": "enterprise"},
        "category": "bench",
        "kind": "functional",
        "priority": priority,
        "impact": {"users_affected": 10, "critical": False},
        "policy": policy,
    })


async def start_escalation(client: Client, request: EscalationRequest, task_queue: str) -> WorkflowHandle[Any, EscalationState]:
    return await client_start(client, request, task_queue=task_queue, source=None)


async def start_bare(client: Client, id: str, task_queue: str, *, deadline: datetime | None = None,
                     delay_seconds: float = 1.0) -> WorkflowHandle[Any, None]:
    return await client.start_workflow(
        BARE_WORKFLOW, BareInput(id=id, deadline=deadline, delay_seconds=delay_seconds),
        id=f"bare-{id}", task_queue=task_queue, task_timeout=keys.WORKFLOW_TASK_TIMEOUT,
    )


async def bounded(items: Iterable[T], call: Callable[[T], Awaitable[Any]], concurrency: int) -> list[Any]:
    """``call`` for every item, at most ``concurrency`` at a time, results in order."""
    limit = asyncio.Semaphore(concurrency)

    async def one(item: T) -> Any:
        async with limit:
            return await call(item)

    return await asyncio.gather(*(one(item) for item in items))


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.25) -> bool:
    """Poll ``check`` until true; False at the deadline (the caller reports it, never hides it)."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


async def count(run: Run, sql: str, *args: Any) -> int:
    return int(await run.pool.fetchval(sql, *args))


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs in (None, 0):
        return None
    return round(ours / theirs, 3)

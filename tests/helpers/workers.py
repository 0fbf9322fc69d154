"""The real worker (workflows + activities) for a block of a test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from escalations.policies import PolicySource
from escalations.settings import NotificationSettings, WorkerSettings
from tests.helpers.policies import policy_path
from worker import build_worker

WorkerFactory = Callable[..., Any]
"""The ``start_worker`` fixture: ``async with start_worker("fast") as worker: ...``."""


@asynccontextmanager
async def running_worker(
    client: Client,
    pool: asyncpg.Pool,
    task_queue: str,
    policy: str | Path = "fast",
    environ: dict[str, str] | None = None,
    replace: dict[str, Callable[..., Any]] | None = None,
    **options: Any,
) -> AsyncIterator[Worker]:
    """The real worker (workflows + activities) on ``task_queue`` until the block ends.

    ``replace`` swaps activities by name, ``options`` adds ``Worker`` options, for a test
    that needs a part to misbehave.
    """
    path = policy if isinstance(policy, Path) else policy_path(policy)
    source = PolicySource.from_setting(str(path))
    async with httpx.AsyncClient() as http:
        worker = build_worker(
            client, pool, http, policies=source, notification_settings=NotificationSettings.from_env(environ or {}),
            replace=replace, **options,
            settings=WorkerSettings.of(
                task_queue=task_queue, database_url="", policy_file=str(path),
                sticky_queue_timeout_seconds=1,
                shutdown_grace=0,  # a test's worker cancels what runs when its block ends
                strict_sandbox=True,  # keep the sandbox's determinism checks on workflow modules
            ),
        )
        async with worker:
            yield worker

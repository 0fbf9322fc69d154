"""The baseline's worker process: ``python -m bench.baseline``.

Configured like the product's worker (``WorkerSettings.from_env``: task queue,
cache size, concurrency, sticky queue timeout, pool size) and built with the same
``Worker`` arguments; only the workflow and its one activity differ.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import asyncpg
from temporalio import activity
from temporalio.worker import Worker

from bench.bare_workflow import BARE_STEP, BareStep, BareWorkflow
from escalations.db.pool import create_pool
from escalations.exiting import exit_now
from escalations.settings import WorkerSettings
from worker import connect_client, worker_options

log = logging.getLogger("escalations.bench.baseline")


class BareActivities:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    @activity.defn(name=BARE_STEP)
    async def step(self, step: BareStep) -> None:
        """One short Postgres transaction, stamped with the time it ran."""
        async with self._pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO bench_bare (id, step, deadline) VALUES ($1, $2, $3)",
                step.id, step.step, step.deadline,
            )


def build_bare_worker(client, pool: asyncpg.Pool, settings: WorkerSettings) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[BareWorkflow],
        activities=[BareActivities(pool).step],
        **worker_options(settings, ("bench.bare_workflow",)),
    )


async def main() -> None:
    settings = WorkerSettings.from_env()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = await connect_client(os.environ)
    pool = await create_pool(settings.database_url, max_size=settings.pool_size)
    try:
        async with build_bare_worker(client, pool, settings):
            log.info("bare worker polling %s", settings.task_queue)
            await stop.wait()
    finally:
        await pool.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
    exit_now(0)

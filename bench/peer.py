"""The peer: a Postgres job queue (procrastinate) doing the same job as an auto-escalation.

One job per deadline, deferred with ``schedule_at`` = the deadline. The job records
the escalation (its mark, stamped ``clock_timestamp()``) and queues the next level's
notification in one transaction, like ``record_events``. One worker process,
concurrency 30, with procrastinate's default polling (5 s) or 0.1 s. With
``--recovery`` it also runs the stalled-job recovery task from procrastinate's
documentation (a periodic task: ``get_stalled_jobs()`` then ``retry_job``), here every 5 s.

``python -m bench.peer --dsn DSN --polling SECONDS [--recovery]`` runs the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from datetime import datetime

import asyncpg
import procrastinate

QUEUE = "escalations"
TASK = "bench_escalate"
CONCURRENCY = 30
RECOVERY_CRON = "* * * * * */5"


def build_app(dsn: str, pool_holder: dict[str, asyncpg.Pool] | None = None, *, recovery: bool = False) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    holder = pool_holder if pool_holder is not None else {}

    @app.task(name=TASK, queue=QUEUE)
    async def bench_escalate(id: str, deadline: str) -> None:
        async with holder["pool"].acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO bench_peer (id, deadline) VALUES ($1, $2)",
                               id, datetime.fromisoformat(deadline))
            await conn.execute("INSERT INTO bench_peer_notifications (id, seq) VALUES ($1, 2)", id)

    if recovery:
        @app.periodic(cron=RECOVERY_CRON)
        @app.task(name="retry_stalled_jobs", queue=QUEUE, queueing_lock="retry_stalled_jobs", pass_context=True)
        async def retry_stalled_jobs(context: procrastinate.JobContext, timestamp: int) -> None:
            stalled = await app.job_manager.get_stalled_jobs()
            for job in stalled:
                await app.job_manager.retry_job(job)

    return app


async def defer(dsn: str, jobs: list[tuple[str, datetime]], concurrency: int = 10) -> None:
    """Schedule one job per (id, deadline), in batches."""
    app = build_app(dsn)
    async with app.open_async():
        task = app.tasks[TASK]
        batch = [task.configure(schedule_at=deadline).make_new_job(id=id, deadline=deadline.isoformat())
                 for id, deadline in jobs]
        for start in range(0, len(batch), 500):
            await app.job_manager.batch_defer_jobs_async(batch[start:start + 500])


async def apply_schema(dsn: str) -> None:
    app = build_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def main(dsn: str, polling: float, recovery: bool) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=20)
    holder = {"pool": pool}
    app = build_app(dsn, holder, recovery=recovery)
    try:
        async with app.open_async():
            await app.run_worker_async(queues=[QUEUE], concurrency=CONCURRENCY,
                                       fetch_job_polling_interval=polling, install_signal_handlers=True)
    finally:
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--polling", type=float, default=5.0)
    parser.add_argument("--recovery", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(args.dsn, args.polling, args.recovery))

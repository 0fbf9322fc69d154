"""The escalation worker: builds the pool and clients once, registers everything, runs.

Configuration comes from the environment, read here at start-up only:
the standard ``TEMPORAL_*`` variables and profiles (through ``temporalio.envconfig``),
``ESCALATION_TASK_QUEUE``, ``DATABASE_URL``, ``ESCALATION_POLICY_FILE`` and the
channel settings of ``activities/notifications.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import zoneinfo
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker

from activities.notifications import NotificationActivities, NotificationSettings
from activities.policy import PolicyActivities, PolicySource
from activities.store import StoreActivities
from activities.tickets import TicketActivities
from db.pool import create_pool
from schemas.keys import DEFAULT_TASK_QUEUE
from workflows.escalation import EscalationWorkflow
from workflows.postmortem import PostmortemWorkflow
from workflows.sweep import CriteriaSweepWorkflow

log = logging.getLogger("escalations.worker")


class ConfigError(RuntimeError):
    """A required setting is missing or invalid; the message names it."""


@dataclass(frozen=True)
class WorkerSettings:
    task_queue: str
    database_url: str
    policy_file: str | None
    max_cached_workflows: int = 10_000
    max_concurrent_activities: int = 200
    max_concurrent_local_activities: int = 200
    max_concurrent_workflow_tasks: int = 200
    sticky_queue_timeout: timedelta = timedelta(seconds=3)
    pool_size: int = 20

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "WorkerSettings":
        database_url = environ.get("DATABASE_URL")
        if not database_url:
            raise ConfigError("DATABASE_URL is not set (the dev stack sets it for you: `escalations dev`)")
        return cls(
            task_queue=environ.get("ESCALATION_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            database_url=database_url,
            policy_file=environ.get("ESCALATION_POLICY_FILE") or None,
            max_cached_workflows=int(environ.get("ESCALATION_MAX_CACHED_WORKFLOWS", "10000")),
        )


async def connect_client(environ: Mapping[str, str] | None = None) -> Client:
    """A Temporal client configured like the ``temporal`` CLI (env vars and profiles)."""
    config = ClientConfig.load_client_connect_config(
        override_env_vars=dict(environ) if environ is not None else None
    )
    config.setdefault("target_host", "localhost:7233")
    return await Client.connect(**config, data_converter=pydantic_data_converter)


def build_worker(
    client: Client,
    *,
    task_queue: str,
    store: StoreActivities,
    policies: PolicyActivities,
    notifications: NotificationActivities,
    tickets: TicketActivities,
    settings: WorkerSettings | None = None,
) -> Worker:
    settings = settings or WorkerSettings(task_queue=task_queue, database_url="", policy_file=None)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[EscalationWorkflow, PostmortemWorkflow, CriteriaSweepWorkflow],
        activities=[
            store.record_events,
            store.find_repeats,
            policies.load_policy,
            notifications.deliver_notifications,
            tickets.find_sweep_candidates,
            tickets.escalate_tickets,
        ],
        max_cached_workflows=settings.max_cached_workflows,
        max_concurrent_activities=settings.max_concurrent_activities,
        max_concurrent_local_activities=settings.max_concurrent_local_activities,
        max_concurrent_workflow_tasks=settings.max_concurrent_workflow_tasks,
        sticky_queue_schedule_to_start_timeout=settings.sticky_queue_timeout,
    )


async def run_worker(environ: Mapping[str, str], stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or, without one, SIGINT/SIGTERM), then shut down cleanly."""
    # Calendar maths must give the same answers on every worker and on replay: use the
    # pinned `tzdata` package's zone database, never whatever the host happens to have.
    zoneinfo.reset_tzpath(to=())
    settings = WorkerSettings.from_env(environ)
    source = PolicySource.from_setting(settings.policy_file)
    source.load(None)  # an invalid default policy fails here, at start-up, with the key named
    notification_settings = NotificationSettings.from_env(environ)
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    client = await connect_client(environ)
    async with AsyncExitStack() as stack:
        pool = await create_pool(settings.database_url, max_size=settings.pool_size)
        stack.push_async_callback(pool.close)
        http = await stack.enter_async_context(httpx.AsyncClient())
        worker = build_worker(
            client,
            task_queue=settings.task_queue,
            store=StoreActivities(pool),
            policies=PolicyActivities(pool, source),
            notifications=NotificationActivities(pool, notification_settings, http),
            tickets=TicketActivities(pool, client, task_queue=settings.task_queue),
            settings=settings,
        )
        async with worker:
            log.info("worker polling task queue %s (policy %s)", settings.task_queue, source.default_file)
            await stop.wait()
    log.info("worker stopped")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_worker(os.environ))


if __name__ == "__main__":
    main()

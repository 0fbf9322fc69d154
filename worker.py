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
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfig
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.notifications import NotificationActivities, NotificationSettings
from activities.policy import PolicyActivities, PolicySource
from activities.reconcile import ReconcileActivities
from activities.store import StoreActivities
from activities.tickets import TicketActivities
from escalations.db.pool import create_pool
from schemas.keys import DEFAULT_TASK_QUEUE
from workflows.escalation import EscalationWorkflow
from workflows.housekeeping import HousekeepingWorkflow
from workflows.postmortem import PostmortemWorkflow
from workflows.sweep import CriteriaSweepWorkflow

log = logging.getLogger("escalations.worker")
DB_ACQUIRE_TIMEOUT = 5.0
DB_COMMAND_TIMEOUT = 10.0


class ConfigError(RuntimeError):
    """A required setting is missing or invalid; the message names it."""


@dataclass(frozen=True)
class WorkerSettings:
    task_queue: str
    database_url: str
    policy_file: str | None
    max_cached_workflows: int = 10_000
    # Few workflow tasks at a time: activations share one GIL, so 200 in flight made every
    # one slow (tasks over 5 s, time-outs, cache evictions) without adding throughput; see
    # docs/benchmarks.md. Deliveries and local activities are I/O and get more room.
    max_concurrent_activities: int = 50
    max_concurrent_local_activities: int = 20
    max_concurrent_workflow_tasks: int = 5
    sticky_queue_timeout: timedelta = timedelta(seconds=3)
    pool_size: int = 20
    # False: the workflow modules are passed through the sandbox instead of being re-imported
    # for every run (measured: ~0.4 MB per cached run and ~10 ms of CPU per new run otherwise);
    # True keeps the full sandbox, which also guards those modules against non-deterministic
    # calls (use it in development and tests). ESCALATION_STRICT_SANDBOX=true.
    strict_sandbox: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "WorkerSettings":
        database_url = environ.get("DATABASE_URL")
        if not database_url:
            raise ConfigError("DATABASE_URL is not set (the dev stack sets it for you: `escalations dev`)")
        return cls(
            task_queue=environ.get("ESCALATION_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            database_url=database_url,
            policy_file=environ.get("ESCALATION_POLICY_FILE") or None,
            max_cached_workflows=_whole(environ, "ESCALATION_MAX_CACHED_WORKFLOWS", cls.max_cached_workflows),
            max_concurrent_activities=_whole(environ, "ESCALATION_MAX_CONCURRENT_ACTIVITIES",
                                             cls.max_concurrent_activities),
            max_concurrent_local_activities=_whole(environ, "ESCALATION_MAX_CONCURRENT_LOCAL_ACTIVITIES",
                                                   cls.max_concurrent_local_activities),
            max_concurrent_workflow_tasks=_whole(environ, "ESCALATION_MAX_CONCURRENT_WORKFLOW_TASKS",
                                                 cls.max_concurrent_workflow_tasks),
            sticky_queue_timeout=timedelta(seconds=_whole(environ, "ESCALATION_STICKY_QUEUE_TIMEOUT_SECONDS",
                                                          int(cls.sticky_queue_timeout.total_seconds()))),
            pool_size=_whole(environ, "ESCALATION_DB_POOL_SIZE", cls.pool_size),
            strict_sandbox=(environ.get("ESCALATION_STRICT_SANDBOX") or "").strip().lower() in ("1", "true", "yes"),
        )


def _whole(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: expected a whole number") from None
    if number < 1:
        raise ConfigError(f"{name}={value!r}: must be at least 1")
    return number


async def connect_client(environ: Mapping[str, str] | None = None) -> Client:
    """A Temporal client configured like the ``temporal`` CLI (env vars and profiles)."""
    config = ClientConfig.load_client_connect_config(
        override_env_vars=dict(environ) if environ is not None else None
    )
    config.setdefault("target_host", "localhost:7233")
    return await Client.connect(**config, data_converter=pydantic_data_converter)


def build_worker(
    client: Client,
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    *,
    policies: PolicySource,
    notification_settings: NotificationSettings,
    settings: WorkerSettings,
    replace: Mapping[str, Callable[..., Any]] | None = None,
    **options: Any,
) -> Worker:
    """The one worker assembly: every workflow, and every activity object with what it holds.

    ``replace`` swaps activities by name and ``options`` adds ``Worker`` options (tests that
    need a part to misbehave, or to run the released commit path).
    """
    store = StoreActivities(pool)
    policy_activities = PolicyActivities(pool, policies)
    notifications = NotificationActivities(pool, notification_settings, http)
    tickets = TicketActivities(pool, client, task_queue=settings.task_queue)
    reconcile = ReconcileActivities(pool, client)
    # Each activity's name is its method's name, so ``replace`` can key on ``__name__``.
    activities = [
        store.project_events,
        policy_activities.pin_policy,
        notifications.send_notifications,
        tickets.find_sweep_candidates,
        tickets.escalate_tickets,
        reconcile.reconcile_ended_runs,
        # for runs of the released commit path, until none is open
        store.record_events,
        store.find_repeats,
        policy_activities.load_policy,
        notifications.deliver_notifications,
    ]
    if replace:
        activities = [replace.get(fn.__name__, fn) for fn in activities]
    return Worker(client, task_queue=settings.task_queue, workflows=list(WORKFLOWS), activities=activities,
                  **worker_options(settings, WORKFLOW_MODULES), **options)


# The workflows this worker runs, and the modules that define them (deterministic by the house
# rules, checked by replay tests and `escalations replay`).
WORKFLOWS = (EscalationWorkflow, PostmortemWorkflow, CriteriaSweepWorkflow, HousekeepingWorkflow)
WORKFLOW_MODULES = ("workflows.escalation", "workflows.postmortem", "workflows.sweep", "workflows.housekeeping")


def build_replayer(strict_sandbox: bool = True) -> Replayer:
    """A replayer that runs this worker's workflows exactly as the worker does (same sandbox)."""
    zoneinfo.reset_tzpath(to=())  # the pinned tzdata, as run_worker uses
    settings = WorkerSettings(task_queue="replay", database_url="", policy_file=None, strict_sandbox=strict_sandbox)
    return Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        workflow_runner=worker_options(settings, WORKFLOW_MODULES)["workflow_runner"],
    )


def worker_options(settings: WorkerSettings, workflow_modules: tuple[str, ...]) -> dict[str, Any]:
    """The tuning keyword arguments of ``Worker`` (shared with the benchmark's baseline worker)."""
    restrictions = SandboxRestrictions.default
    if not settings.strict_sandbox:
        restrictions = restrictions.with_passthrough_modules(*workflow_modules)
    return {
        "workflow_runner": SandboxedWorkflowRunner(restrictions=restrictions),
        "max_cached_workflows": settings.max_cached_workflows,
        "max_concurrent_activities": settings.max_concurrent_activities,
        "max_concurrent_local_activities": settings.max_concurrent_local_activities,
        "max_concurrent_workflow_tasks": settings.max_concurrent_workflow_tasks,
        "sticky_queue_schedule_to_start_timeout": settings.sticky_queue_timeout,
    }


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
        # Bounded: a frozen PostgreSQL costs an activity attempt seconds, never a hang (the
        # projection retries; deliveries do not wait for it).
        pool = await create_pool(settings.database_url, min_size=0, max_size=settings.pool_size,
                                 acquire_timeout=DB_ACQUIRE_TIMEOUT, command_timeout=DB_COMMAND_TIMEOUT,
                                 connect_timeout=DB_ACQUIRE_TIMEOUT)
        stack.push_async_callback(pool.close)
        http = await stack.enter_async_context(httpx.AsyncClient())
        worker = build_worker(client, pool, http, policies=source, notification_settings=notification_settings,
                              settings=settings)
        async with worker:
            log.info("worker polling task queue %s (policy %s)", settings.task_queue, source.default_file)
            await stop.wait()
    log.info("worker stopped")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_worker(os.environ))


if __name__ == "__main__":
    main()

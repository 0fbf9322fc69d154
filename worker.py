"""The escalation worker: builds the pool and clients once, registers everything, runs.

Configuration (``escalations/settings.py``) is read at start-up only, by ``main``: the
standard ``TEMPORAL_*`` variables and profiles, ``WorkerSettings``, the channels'
``NotificationSettings`` and the payload keys (``CodecSettings``). The dev stack builds the
same settings and calls ``run_worker``. Its client, and so every payload it writes, uses the
one data converter (``escalations.temporal``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import zoneinfo
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import httpx
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.worker import Replayer, Worker
from temporalio.worker.workflow_sandbox import (
    SandboxedWorkflowRunner,
    SandboxRestrictions,
)

from activities.notifications import NotificationActivities
from activities.policy import PolicyActivities
from activities.reconcile import ReconcileActivities
from activities.store import StoreActivities
from activities.tickets import TicketActivities
from escalations.db.pool import create_pool
from escalations.policies import PolicySource
from escalations.settings import (
    CodecSettings,
    NotificationSettings,
    WorkerSettings,
    temporal_connect_config,
)
from escalations.temporal import connect
from workflows.escalation import EscalationWorkflow
from workflows.housekeeping import HousekeepingWorkflow
from workflows.postmortem import PostmortemWorkflow
from workflows.sweep import CriteriaSweepWorkflow

log = logging.getLogger("escalations.worker")
DB_ACQUIRE_TIMEOUT = 5.0
DB_COMMAND_TIMEOUT = 10.0


async def connect_client(environ: Mapping[str, str] | None = None) -> Client:
    """A Temporal client configured like the ``temporal`` CLI (env vars and profiles), with the
    payload keys of the same environment."""
    return await connect(temporal_connect_config(environ), CodecSettings.from_env(environ))


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


def build_replayer(data_converter: DataConverter, strict_sandbox: bool = True) -> Replayer:
    """A replayer that runs this worker's workflows exactly as the worker does (same sandbox),
    decoding with ``data_converter`` (a client's ``client.data_converter``, or
    ``escalations.temporal.data_converter(codec)``: the keys the histories were written with)."""
    zoneinfo.reset_tzpath(to=())  # the pinned tzdata, as run_worker uses
    settings = WorkerSettings.of(task_queue="replay", database_url="", strict_sandbox=strict_sandbox)
    return Replayer(
        workflows=list(WORKFLOWS),
        data_converter=data_converter,
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


async def run_worker(settings: WorkerSettings, notification_settings: NotificationSettings,
                     temporal: Mapping[str, Any], stop: asyncio.Event | None = None, *,
                     codec: CodecSettings) -> None:
    """Run until ``stop`` is set (or, without one, SIGINT/SIGTERM), then shut down cleanly.

    ``temporal``: ``Client.connect`` keyword arguments (``temporal_connect_config``);
    ``codec``: the payload keys."""
    # Calendar maths must give the same answers on every worker and on replay: use the
    # pinned `tzdata` package's zone database, never whatever the host happens to have.
    zoneinfo.reset_tzpath(to=())
    source = PolicySource.from_setting(settings.policy_file)
    source.load(None)  # an invalid default policy fails here, at start-up, with the key named
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    client = await connect(temporal, codec)
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
    """``escalations worker`` / ``python -m worker``: configured by the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_worker(WorkerSettings.from_env(), NotificationSettings.from_env(), temporal_connect_config(),
                           codec=CodecSettings.from_env()))


if __name__ == "__main__":
    main()

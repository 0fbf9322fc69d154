"""The escalation worker: builds the pool and clients once, registers everything, runs.

Configuration (``escalations/settings.py``) is read at start-up only, by ``main``: the
standard ``TEMPORAL_*`` variables and profiles, ``WorkerSettings``, the channels'
``NotificationSettings``, ``TelemetrySettings`` (logs, traces) and the payload keys
(``CodecSettings``). The dev stack builds the same settings and calls ``run_worker``. Its
client, and so every payload it writes, uses the one data converter (``escalations.temporal``).

Beside polling, the worker serves ``/metrics`` (the Temporal SDK's metrics and its own),
``/livez`` and ``/readyz`` on ``ESCALATION_METRICS_PORT``, and on SIGTERM stops polling at
once but lets running activities finish for ``ESCALATION_SHUTDOWN_GRACE`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from datetime import timedelta
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
from activities.purge import PurgeActivities
from activities.reconcile import ReconcileActivities
from activities.store import StoreActivities
from activities.tickets import TicketActivities
from escalations.db.pool import create_pool, ping
from escalations.observability.endpoint import ProbeEndpoint, probe
from escalations.observability.logs import configure_logging
from escalations.observability.metrics import WORKER_REGISTRY, exposition
from escalations.observability.sdk import SdkMetrics
from escalations.observability.tracing import Tracing
from escalations.policies import PolicySource
from escalations.settings import (
    CodecSettings,
    NotificationSettings,
    TelemetrySettings,
    WorkerSettings,
    pin_zone_database,
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
    purge = PurgeActivities(pool, settings.idempotency_ttl)
    # Each activity's name is its method's name, so ``replace`` can key on ``__name__``.
    activities = [
        store.project_events,
        policy_activities.pin_policy,
        notifications.send_notifications,
        tickets.find_sweep_candidates,
        tickets.escalate_tickets,
        reconcile.reconcile_ended_runs,
        purge.purge_idempotency_keys,
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
    pin_zone_database()  # as run_worker does
    settings = WorkerSettings.of(task_queue="replay", database_url="", strict_sandbox=strict_sandbox)
    return Replayer(
        workflows=list(WORKFLOWS),
        data_converter=data_converter,
        workflow_runner=worker_options(settings, WORKFLOW_MODULES)["workflow_runner"],
    )


def worker_options(settings: WorkerSettings, workflow_modules: tuple[str, ...]) -> dict[str, Any]:
    """The tuning keyword arguments of ``Worker`` (shared with the benchmark's baseline worker)."""
    # OpenTelemetry's context is the host's (Temporal's tracing interceptor runs in the sandbox).
    # The models' e-mail check (pydantic's EmailStr) imports email-validator on first use, from
    # inside a workflow task: the host's module, never a copy loaded in the sandbox.
    restrictions = SandboxRestrictions.default.with_passthrough_modules("opentelemetry", "email_validator", "idna")
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


class WorkerProbes:
    """What the worker's ``/metrics`` and ``/readyz`` answer."""

    def __init__(self, client: Client, pool: asyncpg.Pool, sdk: SdkMetrics, timeout: float) -> None:
        self.client, self.pool, self.sdk, self.timeout = client, pool, sdk, timeout
        self.worker: Worker | None = None
        self.stopping = False

    async def metrics(self) -> str:
        return exposition(WORKER_REGISTRY) + await self.sdk.text()

    async def readiness(self) -> dict[str, str]:
        """Temporal and PostgreSQL each answer within the timeout, and the worker polls."""
        seconds = self.timeout
        temporal, postgres = await asyncio.gather(
            probe("temporal", lambda: self.client.service_client.check_health(timeout=timedelta(seconds=seconds)),
                  seconds),
            probe("postgres", lambda: ping(self.pool, timeout=seconds), seconds),
        )
        worker = self.worker
        polling = worker is not None and worker.is_running and not worker.is_shutdown and not self.stopping
        return {"temporal": temporal, "postgres": postgres,
                "worker": "polling" if polling else ("stopping" if self.stopping else "not polling")}


async def run_worker(settings: WorkerSettings, notification_settings: NotificationSettings,
                     temporal: Mapping[str, Any], stop: asyncio.Event | None = None, *,
                     codec: CodecSettings, tracing: Tracing | None = None, on_listening: Callable[[str], None] | None = None) -> None:
    """Run until ``stop`` is set (or, without one, SIGINT/SIGTERM), then shut down cleanly.

    ``temporal``: ``Client.connect`` keyword arguments (``temporal_connect_config``);
    ``codec``: the payload keys.
    ``on_listening`` gets the URL of the metrics and health endpoint once it listens.
    Shutting down, polling stops at once and running activities get ``settings.shutdown_grace``
    seconds to finish before they are cancelled; the endpoint answers until the end
    (``/readyz`` 503 from the start of the shutdown)."""
    pin_zone_database()
    source = PolicySource.from_setting(settings.policy_file)
    source.load(None)  # an invalid default policy fails here, at start-up, with the key named
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    sdk = SdkMetrics()
    client = await connect(temporal, codec, runtime=sdk.runtime,
                           interceptors=tracing.interceptors() if tracing else [])
    async with AsyncExitStack() as stack:
        # Bounded: a frozen PostgreSQL costs an activity attempt seconds, never a hang (the
        # projection retries; deliveries do not wait for it).
        pool = await create_pool(settings.database_url, min_size=0, max_size=settings.pool_size,
                                 acquire_timeout=DB_ACQUIRE_TIMEOUT, command_timeout=DB_COMMAND_TIMEOUT,
                                 connect_timeout=DB_ACQUIRE_TIMEOUT)
        stack.push_async_callback(pool.close)
        http = await stack.enter_async_context(httpx.AsyncClient())
        if tracing is not None:
            tracing.instrument_http(http)
        probes = WorkerProbes(client, pool, sdk, settings.health_timeout)
        endpoint = await stack.enter_async_context(ProbeEndpoint(
            settings.metrics_host, settings.metrics_port, metrics=probes.metrics, readiness=probes.readiness))
        log.info("worker metrics and health on %s (/metrics, /livez, /readyz)", endpoint.url)
        if on_listening is not None:
            on_listening(endpoint.url)
        worker = build_worker(client, pool, http, policies=source, notification_settings=notification_settings,
                              settings=settings, graceful_shutdown_timeout=settings.graceful_shutdown_timeout)
        probes.worker = worker
        async with worker:
            log.info("worker polling task queue %s (policy %s)", settings.task_queue, source.default_file)
            await stop.wait()
            probes.stopping = True
            log.info("worker stopping: no new tasks; running activities get %gs to finish", settings.shutdown_grace)
    log.info("worker stopped")


def main() -> None:
    """``escalations worker`` / ``python -m worker``: configured by the environment."""
    telemetry = TelemetrySettings.from_env()
    configure_logging(telemetry)
    tracing = Tracing.from_settings(telemetry, "escalations-worker")
    try:
        asyncio.run(run_worker(WorkerSettings.from_env(), NotificationSettings.from_env(), temporal_connect_config(),
                               codec=CodecSettings.from_env(), tracing=tracing))
    finally:
        if tracing is not None:
            tracing.shutdown()


if __name__ == "__main__":
    main()

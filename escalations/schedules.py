"""The Temporal Schedules the system runs: the criteria sweep and housekeeping.

Installed by ``escalations schedule install`` and by the dev stack once its worker is up;
installing again updates a schedule in place (keeping a pause).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from temporalio.service import RPCError, RPCStatusCode

from schemas import keys
from schemas.activities import ReconcileRequest
from schemas.durations import format_duration
from schemas.policy import Policy
from schemas.ticket import SweepInput

SCHEDULE_ID = "escalation-criteria-sweep"
DEFAULT_SWEEP_EVERY = timedelta(minutes=5)
SWEEP_TIMEOUT = timedelta(minutes=10)  # shorter than activities.tickets.CLAIM_LEASE
HOUSEKEEPING_EVERY = timedelta(minutes=1)
HOUSEKEEPING_TIMEOUT = timedelta(minutes=10)


def sweep_every(policy: Policy) -> timedelta:
    return policy.criteria.sweep_every if policy.criteria is not None else DEFAULT_SWEEP_EVERY


def sweep_schedule(*, task_queue: str, policy: Policy) -> Schedule:
    """Every ``criteria.sweep_every``: one CriteriaSweepWorkflow run, never two at once."""
    every = sweep_every(policy)
    rules = policy.criteria.rules if policy.criteria else []
    details = "\n".join(
        [f"**Policy** `{policy.name}` v{policy.version} · every {format_duration(every)} · "
         f"task queue `{task_queue}`", "", "**Rules** (first match wins)"]
        + [f"- `{r.name}`: {r.when.model_dump(exclude_none=True, mode='json')} → "
           f"{r.open_as.kind} {r.open_as.priority}" for r in rules]
        + ([] if rules else ["- none: the sweep checks nothing"])
    )
    return Schedule(
        action=ScheduleActionStartWorkflow(
            keys.SWEEP_WORKFLOW,
            SweepInput(policy=policy.name),
            id=SCHEDULE_ID,  # runs get "-<scheduled time>" appended
            task_queue=task_queue,
            execution_timeout=SWEEP_TIMEOUT,
            memo={"policy": policy.name, "policy_version": policy.version},
            static_summary=f"Criteria sweep · policy {policy.name} v{policy.version}",
            static_details=details,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.SKIP,
            # After downtime run at most the latest missed sweep (the server's minimum is 10s).
            catchup_window=max(timedelta(seconds=10), min(every, timedelta(minutes=1))),
        ),
        state=ScheduleState(
            note=f"auto-escalation by the criteria of policy {policy.name} v{policy.version} "
                 f"(escalations schedule install)"
        ),
    )


async def install_schedule(client: Client, *, task_queue: str, policy: Policy) -> str:
    """Create the sweep schedule, or update it to this policy and interval (keeps a pause)."""
    await _install(client, SCHEDULE_ID, sweep_schedule(task_queue=task_queue, policy=policy),
                   memo={"policy": policy.name, "policy_version": policy.version})
    return SCHEDULE_ID




@dataclass(frozen=True)
class InstalledSweep:
    """The sweep schedule as Temporal holds it (what runs, not what a policy file says)."""

    every: timedelta | None
    paused: bool
    policy: str | None
    policy_version: int | None


async def installed_sweep(client: Client, schedule_id: str = SCHEDULE_ID) -> InstalledSweep | None:
    """Describe the installed sweep schedule; None when none is installed."""
    try:
        description = await client.get_schedule_handle(schedule_id).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    intervals = description.schedule.spec.intervals
    memo = await description.memo()
    version = memo.get("policy_version")
    return InstalledSweep(
        every=intervals[0].every if intervals else None,
        paused=description.schedule.state.paused,
        policy=str(memo["policy"]) if memo.get("policy") else None,
        policy_version=version if isinstance(version, int) else None,
    )


def housekeeping_schedule(*, task_queue: str) -> Schedule:
    """Every minute: record escalation runs that ended without closing, purge expired API
    Idempotency-Keys (never two at once)."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            keys.HOUSEKEEPING_WORKFLOW,
            ReconcileRequest(),
            id=keys.HOUSEKEEPING_SCHEDULE,
            task_queue=task_queue,
            execution_timeout=HOUSEKEEPING_TIMEOUT,
            static_summary="Housekeeping · runs that ended without closing · expired Idempotency-Keys",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=HOUSEKEEPING_EVERY)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(minutes=1)),
        state=ScheduleState(note="failed and terminated escalation runs into the read model, expired API "
                                 "Idempotency-Keys purged (escalations schedule install)"),
    )


async def install_housekeeping(client: Client, *, task_queue: str) -> str:
    await _install(client, keys.HOUSEKEEPING_SCHEDULE, housekeeping_schedule(task_queue=task_queue))
    return keys.HOUSEKEEPING_SCHEDULE


async def _install(client: Client, schedule_id: str, schedule: Schedule, **options: object) -> None:
    try:
        await client.create_schedule(schedule_id, schedule, **options)
    except ScheduleAlreadyRunningError:

        def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule.state.paused = current.description.schedule.state.paused
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(update)

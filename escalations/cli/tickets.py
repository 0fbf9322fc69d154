"""``escalations tickets import`` and ``escalations schedule install|trigger``: the sweep's inputs.

``install_schedule`` is also what the dev stack calls once the worker is up.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
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

from escalations.connect import DEFAULT_DATA_DIR, StackNotFound, read_stack, require_database, resolve, temporal_client
from schemas import keys
from schemas.durations import format_duration
from schemas.policy import Policy, PolicyError, describe_errors
from schemas.ticket import SweepInput, Ticket

SCHEDULE_ID = "escalation-criteria-sweep"
DEFAULT_SWEEP_EVERY = timedelta(minutes=5)
SWEEP_TIMEOUT = timedelta(minutes=10)  # shorter than activities.tickets.CLAIM_LEASE

DataDir = Annotated[Path, typer.Option(help="Find the stack in DIR/stack.json (after the environment)")]

tickets_app = typer.Typer(help="Tickets for the criteria sweep.", no_args_is_help=True)
schedule_app = typer.Typer(help="The criteria sweep's Temporal Schedule.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(tickets_app, name="tickets")
    app.add_typer(schedule_app, name="schedule")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


# -- the schedule -------------------------------------------------------------


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
    schedule = sweep_schedule(task_queue=task_queue, policy=policy)
    try:
        await client.create_schedule(
            SCHEDULE_ID, schedule, memo={"policy": policy.name, "policy_version": policy.version}
        )
    except ScheduleAlreadyRunningError:

        def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule.state.paused = current.description.schedule.state.paused
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(SCHEDULE_ID).update(update)
    return SCHEDULE_ID


def _policy_file(option: Path | None, data_dir: Path) -> str | None:
    if option is not None:
        return str(option)
    if os.environ.get("ESCALATION_POLICY_FILE"):
        return os.environ["ESCALATION_POLICY_FILE"]
    stack = read_stack(data_dir)
    return stack.policy_file if stack else None


@schedule_app.command("install")
def install(
    policy: Annotated[Path | None, typer.Option(
        help="Policy YAML (default: ESCALATION_POLICY_FILE, the dev stack's, or the packaged default)")] = None,
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Create or update the schedule `escalation-criteria-sweep` (every criteria.sweep_every)."""
    from activities.policy import PolicySource

    try:
        loaded = PolicySource.from_setting(_policy_file(policy, data_dir)).load(None)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    connection = resolve(data_dir)

    async def run() -> str:
        client = await temporal_client(connection)
        return await install_schedule(client, task_queue=connection.task_queue, policy=loaded)

    schedule_id = asyncio.run(run())
    rules = len(loaded.criteria.rules) if loaded.criteria else 0
    typer.echo(
        f"schedule {schedule_id}: CriteriaSweepWorkflow every {format_duration(sweep_every(loaded))} "
        f"on task queue {connection.task_queue} · policy {loaded.name} v{loaded.version} ({rules} rules)"
    )


@schedule_app.command("trigger")
def trigger(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Run one sweep now (the schedule's overlap policy still applies)."""
    connection = resolve(data_dir)

    async def run() -> None:
        client = await temporal_client(connection)
        await client.get_schedule_handle(SCHEDULE_ID).trigger(overlap=ScheduleOverlapPolicy.SKIP)

    asyncio.run(run())
    typer.echo(f"triggered {SCHEDULE_ID}")


# -- importing tickets --------------------------------------------------------


def parse_lines(lines: list[str]) -> tuple[list[tuple[int, Ticket]], list[str]]:
    """Validate every line (blank lines skipped): the tickets, and ``line N: ...`` errors."""
    tickets: list[tuple[int, Ticket]] = []
    errors: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(document, dict):
            errors.append(f"line {number}: a ticket must be a JSON object")
            continue
        try:
            tickets.append((number, Ticket.model_validate(document)))
        except ValidationError as exc:
            errors.extend(f"line {number}: {problem}" for problem in describe_errors(exc))
    return tickets, errors


@tickets_app.command("import")
def import_tickets(
    file: Annotated[Path, typer.Argument(help="JSON Lines: one ticket (POST /tickets body) per line")],
    data_dir: DataDir = DEFAULT_DATA_DIR,
) -> None:
    """Upsert tickets from FILE.jsonl. Every line is validated first: any invalid line, nothing imported."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror}") from None
    tickets, errors = parse_lines(lines)
    if errors:
        for error in errors:
            typer.echo(error, err=True)
        invalid = len({e.split(":", 1)[0] for e in errors})
        raise _fail(f"{invalid} invalid line(s) in {file}: nothing imported")
    try:
        url = require_database(resolve(data_dir))
    except StackNotFound as exc:
        raise _fail(str(exc)) from None

    async def run():
        from activities.tickets import upsert_tickets
        from escalations.db.pool import create_pool

        pool = await create_pool(url, max_size=2)
        try:
            return await upsert_tickets(pool, (t for _, t in tickets), source="import")
        finally:
            await pool.close()

    results = asyncio.run(run())
    for (number, _), result in zip(tickets, results):
        if result.note:
            typer.echo(f"line {number}: {result.ticket_id} {result.outcome}: {result.note}")
    counts = Counter(r.outcome for r in results)
    typer.echo(
        f"{len(results)} ticket(s) from {file}: " + ", ".join(
            f"{counts.get(k, 0)} {k}" for k in ("inserted", "updated", "unchanged", "stale"))
    )

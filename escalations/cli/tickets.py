"""``escalations tickets import`` and ``escalations schedule install|trigger``: the sweep's inputs."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from escalations.cli.failing import DataDirOption, fail, guarded
from escalations.cli.failing import data_dir as choose_data_dir

if TYPE_CHECKING:
    from schemas.ticket import Ticket

DataDir = DataDirOption

tickets_app = typer.Typer(help="Tickets for the criteria sweep.", no_args_is_help=True)
schedule_app = typer.Typer(help="The criteria sweep's Temporal Schedule.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    schedule_app.command("install")(guarded(install))
    schedule_app.command("trigger")(guarded(trigger))
    tickets_app.command("import")(guarded(import_tickets))
    app.add_typer(tickets_app, name="tickets")
    app.add_typer(schedule_app, name="schedule")


def _policy_file(option: Path | None, data_dir: Path) -> str | None:
    from escalations.connect import read_stack

    if option is not None:
        return str(option)
    if os.environ.get("ESCALATION_POLICY_FILE"):
        return os.environ["ESCALATION_POLICY_FILE"]
    stack = read_stack(data_dir)
    return stack.policy_file if stack else None


def install(
    policy: Annotated[Path | None, typer.Option(
        help="Policy YAML (default: ESCALATION_POLICY_FILE, the dev stack's, or the packaged default)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create or update the schedules: `escalation-criteria-sweep` (every criteria.sweep_every) and
    `escalations-housekeeping` (every minute: runs that ended without closing)."""
    from escalations.connect import resolve, temporal_client
    from escalations.policies import PolicySource
    from escalations.schedules import (
        HOUSEKEEPING_EVERY,
        install_housekeeping,
        install_schedule,
        sweep_every,
    )
    from schemas.durations import format_duration
    from schemas.policy import PolicyError

    folder = choose_data_dir(data_dir)
    try:
        loaded = PolicySource.from_setting(_policy_file(policy, folder)).load(None)
    except PolicyError as exc:
        fail(str(exc))
    connection = resolve(folder)

    async def run() -> tuple[str, str]:
        client = await temporal_client(connection)
        sweep = await install_schedule(client, task_queue=connection.task_queue, policy=loaded)
        return sweep, await install_housekeeping(client, task_queue=connection.task_queue)

    schedule_id, housekeeping_id = asyncio.run(run())
    rules = len(loaded.criteria.rules) if loaded.criteria else 0
    typer.echo(
        f"schedule {schedule_id}: CriteriaSweepWorkflow every {format_duration(sweep_every(loaded))} "
        f"on task queue {connection.task_queue} · policy {loaded.name} v{loaded.version} ({rules} rules)"
    )
    typer.echo(f"schedule {housekeeping_id}: HousekeepingWorkflow every {format_duration(HOUSEKEEPING_EVERY)} "
               f"on task queue {connection.task_queue}")


def trigger(data_dir: DataDir = None) -> None:
    """Run one sweep now (the schedule's overlap policy still applies)."""
    from temporalio.client import ScheduleOverlapPolicy

    from escalations.connect import resolve, temporal_client
    from escalations.schedules import SCHEDULE_ID

    connection = resolve(choose_data_dir(data_dir))

    async def run() -> None:
        client = await temporal_client(connection)
        await client.get_schedule_handle(SCHEDULE_ID).trigger(overlap=ScheduleOverlapPolicy.SKIP)

    asyncio.run(run())
    typer.echo(f"triggered {SCHEDULE_ID}")


# -- importing tickets --------------------------------------------------------


def parse_lines(lines: list[str]) -> tuple[list[tuple[int, Ticket]], list[str]]:
    """Validate every line (blank lines skipped): the tickets, and ``line N: ...`` errors."""
    from pydantic import ValidationError

    from schemas.policy import describe_errors
    from schemas.ticket import Ticket

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


def import_tickets(
    file: Annotated[Path, typer.Argument(help="JSON Lines: one ticket (POST /tickets body) per line")],
    data_dir: DataDir = None,
) -> None:
    """Upsert tickets from FILE.jsonl. Every line is validated first: any invalid line, nothing imported."""
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    tickets, errors = parse_lines(lines)
    if errors:
        for error in errors:
            typer.echo(error, err=True)
        invalid = len({e.split(":", 1)[0] for e in errors})
        fail(f"{invalid} invalid line(s) in {file}: nothing imported")
    from escalations.connect import StackNotFound, require_database, resolve

    try:
        url = require_database(resolve(choose_data_dir(data_dir)))
    except StackNotFound as exc:
        fail(str(exc))

    async def run():
        from escalations.db.pool import create_pool
        from escalations.db.tickets import upsert_tickets

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

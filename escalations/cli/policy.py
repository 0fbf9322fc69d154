"""``escalations policy check FILE``: validate a policy and show its chain, targets per contract and routing."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from schemas.durations import format_duration
from schemas.policy import Policy, PolicyError, describe_ack_chain, describe_targets, load_policy_file

policy_app = typer.Typer(help="Escalation policies.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")


def _chain(policy: Policy) -> Table:
    table = Table(title=f"Escalation chain · {policy.name} v{policy.version}")
    for column in ("#", "level", "name", "ack within", "contacts"):
        table.add_column(column)
    for index, level in enumerate(policy.levels, start=1):
        contacts = ", ".join(f"{c.name} ({c.channel}:{c.target})" for c in level.contacts)
        table.add_row(str(index), level.id, level.name or level.id, format_duration(level.ack_within), contacts)
    for dep_id, dep in policy.departments.items():
        contacts = ", ".join(f"{c.name} ({c.channel}:{c.target})" for c in dep.contacts)
        table.add_row("dept", dep_id, dep.name or dep_id, format_duration(dep.ack_within),
                      f"{contacts} → escalates to {dep.escalates_to}")
    return table


def _targets(policy: Policy, contract: str | None = None) -> Table:
    """The effective targets per priority: the policy's own, or under ``contract`` (its changes starred)."""
    if contract is None:
        title = "SLA targets" + (" · customers under no contract" if policy.contracts else "")
    else:
        found = policy.contract(contract)
        title = (f"SLA targets · contract {found.key}" + (f" ({found.name})" if found.name else "")
                 + f" · match: {found.match.describe()} · * the contract's own")
    table = Table(title=title)
    for column in ("priority", "entry level", "resolve within", "customer update every",
                   "at risk at", "calendar", "breach notifies", "ack within, entry level up"):
        table.add_column(column)
    own = {row[0]: row for row in describe_targets(policy)}
    for row in describe_targets(policy, contract):
        cells = [value if value == own[row[0]][i] else f"{value} *" for i, value in enumerate(row)]
        chain = [
            step if step == base else f"{step} *"
            for step, base in zip(describe_ack_chain(policy, row[0], contract).split(" → "),
                                  describe_ack_chain(policy, row[0]).split(" → "), strict=True)
        ]
        override = policy.contract(contract).priorities.get(row[0]) if contract is not None else None
        departments = [f"{dep} {format_duration(within)} *" for dep, within in (override.ack_within.items()
                       if override else ()) if dep in policy.departments]
        table.add_row(*cells, policy.priorities[row[0]].breach_notifies,
                      " → ".join(chain) + "".join(f"; {d}" for d in departments))
    return table


@policy_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="Policy YAML file")],
    at: Annotated[
        datetime | None,
        typer.Option(help="Show who would be paged at this time (ISO-8601; default: now)"),
    ] = None,
) -> None:
    """Validate a policy; print its chain, targets (per contract) and routing. Exit 1 naming the offending key."""
    console = Console()
    try:
        policy = load_policy_file(file)
    except PolicyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    console.print(f"[green]valid[/green]: {file} · policy {policy.name} version {policy.version}")
    console.print(_chain(policy))
    console.print(_targets(policy))
    for contract in policy.contracts:
        console.print(_targets(policy, contract.key))
    from escalations.cli.routing_table import routing_tables

    moment = at or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    for table in routing_tables(policy, moment):
        console.print(table)

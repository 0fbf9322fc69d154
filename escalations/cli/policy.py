"""``escalations policy check [FILE]``: validate a policy and show its chain, targets per contract and routing.

Without FILE it checks the policy in effect: the running dev stack's (``policy_file`` of its
stack.json), else ``ESCALATION_POLICY_FILE``, else the packaged default, and says which.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from escalations.cli.failing import DataDirOption, guarded

if TYPE_CHECKING:
    from rich.table import Table

    from schemas.policy import Policy

policy_app = typer.Typer(help="Escalation policies.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    policy_app.command("check")(guarded(check))
    app.add_typer(policy_app, name="policy")


def _chain(policy: Policy) -> Table:
    from rich.table import Table

    from schemas.durations import format_duration

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
    from rich.table import Table

    from schemas.durations import format_duration
    from schemas.policy import describe_ack_chain, describe_targets

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


def _policy_in_effect(data_dir: Path | None) -> tuple[Path, str]:
    """The policy file the stack uses, and why that one: the running dev stack's, else
    ESCALATION_POLICY_FILE, else the packaged default."""
    import os

    from escalations.cli.failing import data_dir as choose_data_dir
    from escalations.connect import read_stack, stack_file, stack_running
    from escalations.policies import packaged_policy

    folder = choose_data_dir(data_dir)
    stack = read_stack(folder) if stack_running(folder) else None
    if stack is not None and stack.policy_file:
        return Path(stack.policy_file), f"the running stack's policy ({stack_file(folder)})"
    if os.environ.get("ESCALATION_POLICY_FILE"):
        return Path(os.environ["ESCALATION_POLICY_FILE"]), "ESCALATION_POLICY_FILE"
    return packaged_policy("default"), f"the packaged default policy (no stack runs in {folder})"


def check(
    file: Annotated[Path | None, typer.Argument(
        help="Policy YAML file (default: the running stack's policy, else ESCALATION_POLICY_FILE, else the "
             "packaged default)", show_default=False)] = None,
    at: Annotated[
        datetime | None,
        typer.Option(help="Show who would be paged at this time (ISO-8601; default: now)"),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Validate a policy; print its chain, targets (per contract) and routing. Exit 1 naming the offending key."""
    from rich.console import Console

    from schemas.policy import PolicyError, load_policy_file

    console = Console()
    if file is None:
        file, which = _policy_in_effect(data_dir)
        console.print(f"checking {which}: {file}", markup=False, highlight=False, soft_wrap=True)
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

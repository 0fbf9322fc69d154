"""``escalations erase-customer ID``: remove one customer's data, in Temporal and in PostgreSQL.

Temporal: every escalation run with ``CustomerId = ID`` (continued-as-new runs included) and
its postmortem child's runs are deleted (``DeleteWorkflowExecution``: history, visibility,
search attributes). PostgreSQL: ``escalations.db.erasure`` (read model, events, ledger,
CSAT, Jira links, tickets, stored API replies), in one transaction, first, so a rerun after a
Temporal error still finds what is left. A customer with a running escalation is refused
(resolve or terminate it first); without ``--yes`` nothing is deleted and the plan is printed.

What it does not touch (docs/security.md): the criteria sweep's own runs, whose histories list
the tickets they checked (encrypted; gone with retention), and copies outside this system
(notifications already delivered to Slack, e-mail, Jira). Exit codes: 0 done (or planned),
1 refused or failed, 2 usage error.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Annotated

import typer

from escalations.cli.failing import DataDirOption, fail, guarded, one_line
from escalations.cli.failing import data_dir as choose_data_dir

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowExecution

USAGE_ERROR = 2
CONNECT_TIMEOUT = 15.0


def register(app: typer.Typer) -> None:
    app.command("erase-customer")(guarded(erase_customer_command))


class Refused(Exception):
    """The customer still has a running escalation; the message names them."""


async def customer_runs(client: Client, customer_id: str, more_tickets: list[str]) -> list[WorkflowExecution]:
    """Every run of the customer's escalations and of their postmortems, in Temporal."""
    from schemas import keys
    from schemas.escalation import postmortem_id_for

    runs = [run async for run in client.list_workflows(
        f"WorkflowType = '{keys.ESCALATION_WORKFLOW}' AND {keys.CUSTOMER.name} = '{customer_id}'")]
    tickets = {run.id.removeprefix("escalation-") for run in runs} | set(more_tickets)
    for ticket_id in sorted(tickets):
        runs += [run async for run in client.list_workflows(f"WorkflowId = '{postmortem_id_for(ticket_id)}'")]
    return runs


async def erase(client: Client, database_url: str, customer_id: str, *, dry_run: bool) -> tuple[list[str], dict[str, int]]:
    """Delete (or plan to delete) the customer's runs and rows; the runs' ids and the rows per table."""
    from temporalio.api.common.v1 import WorkflowExecution as ExecutionRef
    from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    from escalations.db.erasure import erase_customer
    from escalations.db.pool import create_pool

    pool = await create_pool(database_url, min_size=0, max_size=2)
    try:
        planned = await erase_customer(pool, customer_id, dry_run=True)
        runs = await customer_runs(client, customer_id, planned.ticket_ids)
        running = sorted({run.id for run in runs if run.status == WorkflowExecutionStatus.RUNNING})
        if running:
            raise Refused(f"{customer_id} has running escalations: {', '.join(running)}; resolve or terminate "
                          "them first (a running run would write its data again)")
        if dry_run:
            return [f"{run.id} (run {run.run_id})" for run in runs], planned.rows
        erased = await erase_customer(pool, customer_id)
    finally:
        await pool.close()
    for run in runs:
        try:
            await client.workflow_service.delete_workflow_execution(DeleteWorkflowExecutionRequest(
                namespace=client.namespace, workflow_execution=ExecutionRef(workflow_id=run.id, run_id=run.run_id)))
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:  # deleted meanwhile (retention, an earlier try)
                raise
    return [f"{run.id} (run {run.run_id})" for run in runs], erased.rows


def erase_customer_command(
    customer_id: Annotated[str, typer.Argument(metavar="CUSTOMER_ID", help="The customer's id (as in CustomerId)")],
    yes: Annotated[bool, typer.Option("--yes", help="Delete; without it, only print what would go")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Delete one customer's escalations from Temporal and PostgreSQL (refused while one runs)."""
    from temporalio.service import RPCError

    from escalations import connect
    from escalations.client import SLUG_PATTERN

    if not re.fullmatch(SLUG_PATTERN, customer_id):
        fail(f"customer id must match {SLUG_PATTERN} (it is quoted into a visibility query), got {customer_id!r}; "
             "for other ids follow docs/security.md by hand", USAGE_ERROR)
    try:
        connection = connect.resolve(choose_data_dir(data_dir))
        database_url = connect.require_database(connection)
    except (ValueError, OSError, RuntimeError) as err:
        fail(err, USAGE_ERROR)

    async def main() -> tuple[list[str], dict[str, int]]:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                client = await connect.temporal_client(connection)
        except (RuntimeError, OSError, TimeoutError) as err:
            fail(f"cannot connect to Temporal at {connection.temporal.get('target_host')}: {one_line(err)}")
        return await erase(client, database_url, customer_id, dry_run=not yes)

    try:
        runs, rows = asyncio.run(main())
    except Refused as err:
        fail(err)
    except RPCError as err:
        fail(f"Temporal error: {err.message}")
    verb = "deleted" if yes else "would delete"
    typer.echo(f"{verb} {len(runs)} Temporal runs" + (": " + ", ".join(runs) if runs else ""))
    typer.echo(f"{verb} PostgreSQL rows: " + ", ".join(f"{table} {count}" for table, count in rows.items()))
    if not yes:
        typer.echo("nothing deleted; run again with --yes")

"""Operator commands on escalations: ``start``, ``ack``, ``escalate``, ``note``, ``pause``,
``resume``, ``resolve``, ``postmortem``, ``status``, ``list``.

They talk to Temporal directly with the same models as the API (through
``escalations/client.py``), find the stack from the environment or the data dir's
``stack.json`` (``escalations.connect.choose_data_dir``), and exit 1 with a one-line message
when something is wrong. ``status`` and ``list`` print JSON with ``--json`` (docs/cli.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from escalations.cli.failing import DataDirOption, fail, guarded, one_line
from escalations.cli.failing import data_dir as choose_data_dir
from escalations.cli.times import relative, when  # noqa: F401 - relative: part of this module's API (tests)

# Only what `escalations --help` needs is imported here; each command imports the Temporal
# client, pydantic models, asyncpg and rich when it runs (start-up: docs/cli.md).
if TYPE_CHECKING:
    from pydantic import ValidationError
    from rich.panel import Panel
    from temporalio.client import Client

    from escalations.connect import Connection
    from schemas.escalation import EscalationRequest, EscalationState

T = TypeVar("T")
COMMAND_TIMEOUT = 60.0
CONNECT_TIMEOUT = 15.0

DataDir = DataDirOption
TicketArg = Annotated[str, typer.Argument(metavar="ID", help="The ticket id, e.g. SF-1042")]
By = Annotated[str, typer.Option("--by", help="Who does it")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (the schema: docs/cli.md#json-output)")]


def register(app: typer.Typer) -> None:
    for name, command in (("start", start), ("ack", ack), ("escalate", escalate), ("note", note),
                          ("pause", pause), ("resume", resume), ("resolve", resolve),
                          ("postmortem", postmortem), ("status", status), ("list", list_escalations)):
        app.command(name)(guarded(command))


# -- plumbing ----------------------------------------------------------------------


class CliError(Exception):
    """A one-line reason to stop."""


def _invalid(err: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors()[:3]]
    return "invalid input: " + "; ".join(parts)


def _command(factory: Callable[[], T]) -> T:
    """Build a command model from options; a validation error is a one-line failure."""
    from pydantic import ValidationError

    try:
        return factory()
    except ValidationError as err:
        fail(_invalid(err))


def _run(data_dir: Path | None, action: Callable[[Connection, Client], Awaitable[None]]) -> None:
    from temporalio.service import RPCError

    from escalations import client as ec
    from escalations import connect
    from escalations.connect import StackNotFound

    try:
        connection = connect.resolve(choose_data_dir(data_dir))
        asyncio.run(_with_client(connection, action))
    except ec.EscalationError as err:
        fail(err.message)
    except (CliError, StackNotFound) as err:
        fail(str(err))
    except RPCError as err:
        fail(f"Temporal error: {err.message}")


async def _with_client(connection: Connection, action: Callable[[Connection, Client], Awaitable[None]]) -> None:
    from escalations.connect import temporal_client

    target = connection.temporal.get("target_host")
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            client = await temporal_client(connection)
    except (RuntimeError, OSError, TimeoutError) as err:
        reason = "connection refused" if "refused" in str(err).lower() else one_line(err) or "timed out"
        raise CliError(f"cannot connect to Temporal at {target}: {reason}{connection.no_stack_hint()}") from None
    try:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            await action(connection, client)
    except TimeoutError:
        raise CliError(f"no answer from Temporal within {COMMAND_TIMEOUT:g}s "
                       f"(is a worker polling task queue {connection.task_queue}?)") from None


def _console() -> Any:
    from rich.console import Console

    # No markup: names, reasons and notes are printed as they are, brackets included.
    return Console(highlight=False, markup=False)


def _print_state(state: EscalationState, verb: str) -> None:
    owner = state.owner or "—"
    _console().print(f"{state.ticket_id}: {verb} · status {state.status} · level "
                     f"{state.level_name} ({state.level}) · owner {owner}")


def _update(data_dir: Path | None, verb: str, call: Callable[[Client], Awaitable[EscalationState]]) -> None:
    async def action(connection: Connection, client: Client) -> None:
        _print_state(await call(client), verb)

    _run(data_dir, action)


# -- start -------------------------------------------------------------------------


def _read_request(file: Path) -> EscalationRequest:
    from pydantic import ValidationError

    from schemas.escalation import EscalationRequest, server_set_fields

    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except OSError as err:
        fail(f"cannot read {file}: {err.strerror or err}")
    try:
        request = EscalationRequest.model_validate(json.loads(text))
    except json.JSONDecodeError as err:
        fail(f"{file} is not JSON: {err.msg} (line {err.lineno})")
    except ValidationError as err:
        fail(f"{file}: {_invalid(err)}")
    refused = server_set_fields(request)
    if refused:
        fail(f"{file}: invalid input: {', '.join(refused)}: set by escalations itself (who opened it: cli, "
             "as you), never by the request; leave it out")
    return request


def _check_routing(data_dir: Path, request: EscalationRequest) -> None:
    """With a known policy file (env or stack.json), refuse a request the worker could not route."""
    from escalations import client as ec
    from escalations.connect import read_stack
    from escalations.policies import PolicySource
    from schemas.policy import PolicyError

    stack = read_stack(data_dir)
    policy_file = os.environ.get("ESCALATION_POLICY_FILE") or (stack.policy_file if stack else None)
    if not policy_file:
        return
    try:
        ec.check_request(PolicySource.from_setting(policy_file), request)
    except PolicyError as err:  # the configured default policy itself is broken
        fail(str(err))
    except ec.InvalidRequest as err:
        fail(err.message)


def start(
    file: Annotated[Path, typer.Argument(metavar="FILE.json", help="The escalation request (JSON; - for stdin)")],
    data_dir: DataDir = None,
) -> None:
    """Open an escalation from a JSON request (the body of POST /escalations)."""
    from escalations import client as ec
    from escalations.cli.principal import cli_principal

    request = _read_request(file)
    folder = choose_data_dir(data_dir)
    _check_routing(folder, request)

    async def action(connection: Connection, client: Client) -> None:
        handle = await ec.start_escalation(client, request, task_queue=connection.task_queue, source="cli",
                                           via=cli_principal())
        run_id = handle.first_execution_run_id or handle.result_run_id
        console = _console()
        console.print(f"started {handle.id} (run {run_id}) on task queue {connection.task_queue}")
        link = ec.ui_link(connection.ui_url, connection.namespace, handle.id, run_id)
        if link:
            console.print(f"Temporal UI: {link}", soft_wrap=True)

    _run(folder, action)


# -- commands ----------------------------------------------------------------------


def ack(
    ticket_id: TicketArg,
    by: By,
    level: Annotated[str | None, typer.Option(help="Acknowledge as this (consulted) level")] = None,
    data_dir: DataDir = None,
) -> None:
    """Acknowledge the escalation (stops the acknowledgement clock)."""
    from escalations import client as ec
    from escalations.cli.principal import cli_principal
    from schemas.escalation import AcknowledgeCommand

    command = _command(lambda: AcknowledgeCommand(by=by, level=level))
    _update(data_dir, "acknowledged", lambda client: ec.acknowledge(client, ticket_id, command, via=cli_principal()))


def escalate(
    ticket_id: TicketArg,
    by: By,
    reason: Annotated[str, typer.Option(help="Why")],
    to_level: Annotated[str | None, typer.Option(help="Target level (default: the next one)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Escalate to the next level, or to --to-level."""
    from escalations import client as ec
    from escalations.cli.principal import cli_principal
    from schemas.escalation import EscalateCommand

    command = _command(lambda: EscalateCommand(by=by, reason=reason, to_level=to_level))
    _update(data_dir, "escalated", lambda client: ec.escalate(client, ticket_id, command, via=cli_principal()))


def note(
    ticket_id: TicketArg,
    author: Annotated[str, typer.Option(help="Who writes it")],
    text: Annotated[str, typer.Option(help="The note")],
    customer_visible: Annotated[bool, typer.Option("--customer-visible", help="Send it to the customer")] = False,
    data_dir: DataDir = None,
) -> None:
    """Add a note; --customer-visible sends it to the customer (restarts the update cadence)."""
    from escalations import client as ec
    from escalations.cli.principal import cli_principal
    from schemas.escalation import AddNoteCommand

    command = _command(lambda: AddNoteCommand(author=author, text=text, customer_visible=customer_visible))
    _update(data_dir, "note added", lambda client: ec.add_note(client, ticket_id, command, via=cli_principal()))


def pause(
    ticket_id: TicketArg,
    by: By,
    reason: Annotated[str, typer.Option(help="Why (e.g. waiting on the customer)")],
    data_dir: DataDir = None,
) -> None:
    """Pause the resolution and customer-update clocks."""
    from escalations import client as ec
    from escalations.cli.principal import cli_principal
    from schemas.escalation import PauseCommand

    command = _command(lambda: PauseCommand(by=by, reason=reason))
    _update(data_dir, "paused", lambda client: ec.pause(client, ticket_id, command, via=cli_principal()))


def resume(ticket_id: TicketArg, by: By, data_dir: DataDir = None) -> None:
    """Resume paused clocks."""
    from escalations import client as ec
    from escalations.cli.principal import cli_principal
    from schemas.escalation import ResumeCommand

    command = _command(lambda: ResumeCommand(by=by))
    _update(data_dir, "resumed", lambda client: ec.resume(client, ticket_id, command, via=cli_principal()))


def resolve(
    ticket_id: TicketArg,
    by: By,
    root_cause: Annotated[str, typer.Option(help="Root cause")],
    mitigation: Annotated[str, typer.Option(help="What fixed it")],
    preventive_action: Annotated[list[str] | None, typer.Option(help="A preventive action (repeatable)")] = None,
    data_dir: DataDir = None,
) -> None:
    """Resolve: tells the customer, requests CSAT and opens the postmortem task."""
    from escalations import client as ec
    from escalations.cli.principal import cli_principal
    from schemas.escalation import ResolveCommand

    command = _command(lambda: ResolveCommand(by=by, root_cause=root_cause, mitigation=mitigation,
                                              preventive_actions=list(preventive_action or [])))
    _update(data_dir, "resolved", lambda client: ec.resolve(client, ticket_id, command, via=cli_principal()))


def postmortem(
    ticket_id: TicketArg,
    by: By,
    summary: Annotated[str, typer.Option(help="What happened")],
    root_cause: Annotated[str, typer.Option(help="Root cause")],
    improvement: Annotated[list[str] | None, typer.Option(help="An improvement (repeatable; at least one)")] = None,
    kb_url: Annotated[str | None, typer.Option(help="Knowledge-base article URL")] = None,
    data_dir: DataDir = None,
) -> None:
    """Complete the postmortem task; the escalation then closes."""
    from escalations import client as ec
    from escalations.cli.principal import cli_principal
    from schemas.escalation import CompletePostmortemCommand

    command = _command(lambda: CompletePostmortemCommand(
        by=by, summary=summary, root_cause=root_cause, improvements=list(improvement or []),
        kb_article_url=kb_url))
    _update(data_dir, "postmortem completed",
            lambda client: ec.complete_postmortem(client, ticket_id, command, via=cli_principal()))


# -- status ------------------------------------------------------------------------


def _via(principal: str | None) -> str:
    """`` (via api:ops-bot)``: the calling principal beside a self-declared name."""
    return f" (via {principal})" if principal else ""


def render_state(state: EscalationState, now: datetime) -> Panel:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    owner = state.owner or "—"
    if state.owner_contact:
        owner += f" ({state.owner_contact.channel}: {state.owner_contact.target})"
    rows: list[tuple[str, str]] = [
        ("status", state.status),
        ("priority", f"{state.priority} · {state.kind} · category {state.category}"),
        ("customer", f"{state.customer.name} ({state.customer.id})"),
        ("level", f"{state.level_name} ({state.level})"),
        ("owner", owner),
        ("acknowledged", f"{state.acknowledged_by}{_via(state.acknowledged_via)} at {when(state.acknowledged_at, now)}"
         if state.acknowledged_at else "no"),
        ("ack due", when(state.deadlines.ack_due, now)),
        ("resolve due", when(state.deadlines.resolve_due, now)),
        ("next customer update", when(state.deadlines.next_customer_update_due, now)),
        ("at risk at", when(state.deadlines.at_risk_at, now)),
        ("SLA at risk", "yes" if state.sla_at_risk else "no"),
        ("SLA breached", f"YES at {when(state.breached_at, now)}" if state.sla_breached else "no"),
        ("opened", when(state.opened_at, now)),
    ]
    if state.paused_since:
        rows.append(("paused since", when(state.paused_since, now)))
    if state.resolved_at:
        rows.append(("resolved", when(state.resolved_at, now)))
    if state.resolution:
        rows.append(("resolved by", f"{state.resolution.by}{_via(state.resolution.via)}"))
        rows.append(("root cause", state.resolution.root_cause))
    if state.postmortem:
        pm = state.postmortem
        done = (f"completed by {pm.completed_by}{_via(pm.completed_via)} at {when(pm.completed_at, now)}"
                if pm.completed_at else "open")
        rows.append(("postmortem", f"{done} · owner {pm.owner} · due {when(pm.due, now)}"))
    if state.closed_at:
        rows.append(("closed", when(state.closed_at, now)))
    rows.append(("notifications", f"{state.notifications_sent} sent"
                 + (f", {state.notifications_failed} failed" if state.notifications_failed else "")))
    rows.append(("policy", f"{state.policy.name} v{state.policy.version}"))
    rows.append(("contract", state.contract or "none (the policy's own targets)"))
    rows.append(("opened by", state.trigger.source
                 + (f" · {state.trigger.criterion}" if state.trigger.criterion else "")
                 + _via(state.trigger.via)))
    for key, value in rows:
        facts.add_row(key, value)
    path = Table(title="Escalation path", title_justify="left", expand=False)
    for column in ("at", "from", "to", "how", "reason"):
        path.add_column(column)
    for entry in state.path:
        how = "auto" if entry.auto else f"by {entry.by or '?'}{_via(entry.via)}"
        path.add_row(f"{entry.at.astimezone(UTC):%H:%M:%S}", entry.from_level or "—",
                     entry.to_level, how, entry.reason)
    parts: list[Any] = [facts]
    parts.append(path if state.path else Text("Escalation path: none (still at the entry level)"))
    title = f"{state.ticket_id} · {state.title}"
    style = "red" if state.sla_breached else ("yellow" if state.sla_at_risk else "green")
    return Panel(Group(*parts), title=title, border_style=style, expand=False)


async def _state_of(connection: Connection, client: Client, ticket_id: str) -> EscalationState:
    """The ticket's latest escalation (escalations.client.get_state), with the read model when known."""
    from escalations import client as ec

    if not connection.database_url:
        return await ec.get_state(client, ticket_id, opening_timeout=3.0)
    import asyncpg

    from escalations.db.pool import create_pool
    from escalations.db.readmodel import latest_escalation

    try:
        pool = await create_pool(connection.database_url, min_size=1, max_size=1)
    except (OSError, asyncpg.PostgresError) as err:
        raise CliError(f"cannot connect to Postgres: {one_line(err)}") from None

    async def recorded(ticket: str) -> EscalationState | None:
        async with pool.acquire() as conn:
            return await latest_escalation(conn, ticket)

    try:
        return await ec.get_state(client, ticket_id, recorded=recorded, opening_timeout=3.0)
    finally:
        await pool.close()


def status(ticket_id: TicketArg, as_json: AsJson = False, data_dir: DataDir = None) -> None:
    """The escalation's state: status, level, owner, deadlines, breaches, path."""

    async def action(connection: Connection, client: Client) -> None:
        state = await _state_of(connection, client, ticket_id)
        if as_json:
            typer.echo(state.model_dump_json(indent=2))
        else:
            _console().print(render_state(state, datetime.now(UTC)))

    _run(data_dir, action)


# -- list --------------------------------------------------------------------------


def list_escalations(
    status: Annotated[str | None, typer.Option(
        help="open (not yet acknowledged), acknowledged, paused, resolved, closed, failed, terminated; "
             "or active: every one not ended (open, acknowledged, paused, resolved)")] = None,
    priority: Annotated[str | None, typer.Option(help="P1–P4")] = None,
    level: Annotated[str | None, typer.Option(help="Current level id")] = None,
    customer_id: Annotated[str | None, typer.Option(help="Customer id")] = None,
    category: Annotated[str | None, typer.Option(help="Category")] = None,
    kind: Annotated[str | None, typer.Option(help="functional, hierarchical or priority")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many")] = 100,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Escalations from Temporal visibility, newest first (ended ones included unless --status narrows).

    The ticket id is always shown whole; columns that do not fit the terminal are left out
    (named under the table; --json has every field).
    """
    from escalations import client as ec
    from escalations.cli import listing

    filters = _command(lambda: listing.Filters(status=status, priority=priority, kind=kind))

    async def action(connection: Connection, client: Client) -> None:
        # One more than asked: whether there are more is worth saying, never a guessed total.
        items = await ec.list_escalations(
            client, status=filters.status, priority=filters.priority, level=level, customer_id=customer_id,
            category=category, kind=filters.kind, limit=limit + 1)
        more = len(items) > limit
        items = items[:limit]
        if as_json:
            typer.echo(listing.as_json(items, more=more))
            return
        console = _console()
        if not items:
            console.print("no escalation matches")
            return
        console.print(listing.table(items, now=datetime.now(UTC), more=more, console=console))

    _run(data_dir, action)

"""``escalations keys generate`` and ``keys usage``: payload encryption keys (docs/security.md).

``generate`` prints a new ``id:base64`` entry to put in front of ``ESCALATION_ENCRYPTION_KEYS``.
``usage`` answers "may this old key go?": it reads the histories of the executions matching
a visibility query (default: all of them, closed ones included, as long as retention keeps
them) and the schedules' stored actions, counts the payloads each key encrypts (metadata only:
nothing is decrypted, no key is needed) and prints, per key, how many runs — and how many
of them still running — hold payloads under it. A key may be dropped once no running run and
no schedule uses it and the last closed run holding it is past the namespace's retention.

Exit codes: 0 done, 2 usage or connection error.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from escalations.cli.failing import DataDirOption, fail, guarded, one_line
from escalations.cli.failing import data_dir as choose_data_dir

if TYPE_CHECKING:
    from temporalio.client import Client

USAGE_ERROR = 2
CONNECT_TIMEOUT = 15.0

def register(app: typer.Typer) -> None:
    keys_app = typer.Typer(help="Payload encryption keys (docs/security.md).", no_args_is_help=True)
    keys_app.command("generate")(guarded(generate))
    keys_app.command("usage")(guarded(usage_command))
    app.add_typer(keys_app, name="keys")


def generate(
    prefix: Annotated[str, typer.Option(help="Start of the key id (then the date and 4 hex digits)")] = "k",
) -> None:
    """Print a new key entry, ``id:base64`` (32 random bytes), for ESCALATION_ENCRYPTION_KEYS."""
    from escalations.codec import new_key_entry

    typer.echo(new_key_entry(prefix))


@dataclass
class KeyUse:
    runs: int = 0
    running: int = 0
    schedules: list[str] = field(default_factory=list)
    payloads: int = 0


@dataclass
class Usage:
    runs_read: int = 0
    gone: int = 0  # listed, but deleted (retention) before its history was read
    keys: dict[str, KeyUse] = field(default_factory=dict)
    retention: timedelta | None = None

    def use(self, key_id: str) -> KeyUse:
        return self.keys.setdefault(key_id, KeyUse())


async def key_usage(client: Client, query: str | None, limit: int | None) -> Usage:
    """Which keys the histories matching ``query`` and the schedules' actions are encrypted with."""
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError, RPCStatusCode

    from escalations.codec import key_ids_in

    usage = Usage()
    async for execution in client.list_workflows(query or "", limit=limit):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        try:
            history = await handle.fetch_history()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            usage.gone += 1
            continue
        usage.runs_read += 1
        counts: Counter[str] = Counter()
        for event in history.events:
            counts.update(key_ids_in(event))
        for key_id, number in counts.items():
            use = usage.use(key_id)
            use.runs += 1
            use.payloads += number
            if execution.status == WorkflowExecutionStatus.RUNNING:
                use.running += 1
    async for listed in await client.list_schedules():
        description = await client.get_schedule_handle(listed.id).describe()
        for key_id in key_ids_in(description.raw_description):
            usage.use(key_id).schedules.append(listed.id)
    namespace = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace=client.namespace))
    if namespace.config.HasField("workflow_execution_retention_ttl"):
        usage.retention = namespace.config.workflow_execution_retention_ttl.ToTimedelta()
    return usage


def _label(key_id: str) -> str:
    from escalations.codec import PLAIN

    return "not encrypted" if key_id == PLAIN else f"key {key_id}"


def usage_command(
    query: Annotated[str | None, typer.Option(
        "--query", "-q", metavar="QUERY", help="Visibility query of the executions to read (default: all)")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Read at most this many histories")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Per key id, how many runs (running ones too) and schedules hold payloads encrypted with it."""
    from temporalio.service import RPCError

    from escalations import connect
    from schemas.durations import format_duration

    try:
        connection = connect.resolve(choose_data_dir(data_dir))
    except (ValueError, OSError, RuntimeError) as err:
        fail(err, USAGE_ERROR)

    async def main() -> Usage:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                client = await connect.temporal_client(connection)
        except (RuntimeError, OSError, TimeoutError) as err:
            fail(f"cannot connect to Temporal at {connection.temporal.get('target_host')}: {one_line(err)}",
                 USAGE_ERROR)
        return await key_usage(client, query, limit)

    try:
        found = asyncio.run(main())
    except RPCError as err:
        fail(f"Temporal error: {err.message}", USAGE_ERROR)
    configured = [key.id for key in connection.codec.keys]
    if as_json:
        typer.echo(json.dumps({
            "runs_read": found.runs_read, "gone": found.gone, "configured": configured,
            "retention_seconds": found.retention.total_seconds() if found.retention else None,
            "keys": {key_id or "plain": {"runs": use.runs, "running": use.running, "payloads": use.payloads,
                                         "schedules": use.schedules}
                     for key_id, use in sorted(found.keys.items())},
        }, indent=2))
        return
    typer.echo(f"read {found.runs_read} run histories" + (f" ({found.gone} deleted meanwhile)" if found.gone else "")
               + f"; configured keys, newest first: {', '.join(configured) or 'none'}")
    for key_id, use in sorted(found.keys.items()):
        schedules = f"; schedules: {', '.join(use.schedules)}" if use.schedules else ""
        typer.echo(f"{_label(key_id)}: {use.runs} runs ({use.running} running){schedules}")
    for key_id in configured:
        if key_id not in found.keys:
            typer.echo(f"key {key_id}: no run or schedule read uses it")
    if found.retention is not None:
        typer.echo(f"namespace retention: {format_duration(found.retention)}; a key no running run or schedule "
                   "uses may go once the last closed run holding it is older than that")

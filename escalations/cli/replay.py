"""``escalations replay`` and ``repair``: replay histories against the installed code; repair stuck runs.

The check an operator runs before deploying a new worker version: it lists the
executions matching a visibility query (by default every open escalation, postmortem
and sweep plus those closed in the last day), downloads their histories one at a time
and replays each with the worker's own workflows and sandbox (``worker.build_replayer``).
A history the installed code cannot replay (a nondeterminism error, a failing task) is a
failure: it is printed with its workflow id, run id and reason, and the command exits 1.

It only reads from Temporal: it never touches PostgreSQL and never starts a worker.
Exit codes: 0 every history replayed, 1 at least one failed, 2 usage or connection error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import zoneinfo
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from escalations.cli.failing import DataDirOption, fail, guarded, one_line
from escalations.cli.failing import data_dir as choose_data_dir

# The Temporal client and the workflow names (schemas.keys loads temporalio) are imported by
# the functions that use them: `escalations --help` needs neither.
if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowExecution, WorkflowHistory

    from escalations.connect import Connection

CONNECT_TIMEOUT = 15.0
USAGE_ERROR = 2  # also click's code for a bad option
REASON_WIDTH = 300  # a failure's reason on the text output is cut here (JSON has it whole)


def workflow_types() -> tuple[str, ...]:
    from schemas.keys import (
        ESCALATION_WORKFLOW,
        HOUSEKEEPING_WORKFLOW,
        POSTMORTEM_WORKFLOW,
        SWEEP_WORKFLOW,
    )

    return (ESCALATION_WORKFLOW, POSTMORTEM_WORKFLOW, SWEEP_WORKFLOW, HOUSEKEEPING_WORKFLOW)


def stuck_query() -> str:
    from schemas.keys import ESCALATION_WORKFLOW

    return f"WorkflowType = '{ESCALATION_WORKFLOW}' AND ExecutionStatus = 'Running'"


def register(app: typer.Typer) -> None:
    app.command("replay")(guarded(replay))
    app.command("repair")(guarded(repair_command))


def default_query(now: datetime) -> str:
    """Every open escalation, postmortem and sweep, and those closed in the day before ``now``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    since = (now - timedelta(days=1)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    types = ",".join(f"'{name}'" for name in workflow_types())
    return f"WorkflowType IN ({types}) AND (ExecutionStatus = 'Running' OR CloseTime > '{since}')"


# -- the replay --------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    workflow_id: str
    run_id: str
    reason: str


@dataclass
class Summary:
    replayed: int = 0
    failed: list[Failure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # listed, but gone before its history was read

    def as_json(self) -> dict[str, object]:
        return {"replayed": self.replayed, "failed": [asdict(failure) for failure in self.failed]}


class ReplayError(Exception):
    """A one-line reason the replay could not run (exit 2)."""




# Core reports a failed activation as the Rust debug form of a Failure; its message is the reason.
_CORE_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')


def reason_of(error: BaseException) -> str:
    """One line: the core's message (``[TMPRL1100] Nondeterminism error: ...``) when there is one."""
    text = one_line(error)
    found = _CORE_MESSAGE.search(text)
    if found:
        text = one_line(found.group(1).replace('\\"', '"'))
    if "nondetermin" in text.lower():
        return text
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def quiet_core_logs() -> None:
    """Core logs a WARN line (on stdout) for every task it fails; a failed replay is reported
    here instead. Forward only its errors to Python logging (stderr). In a fresh process only:
    a runtime that already exists (an embedding program's) is left as it is."""
    from temporalio.runtime import (
        LogForwardingConfig,
        LoggingConfig,
        Runtime,
        TelemetryConfig,
        TelemetryFilter,
    )

    logging_config = LoggingConfig(
        filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("escalations.replay.core")),
    )
    try:
        Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=logging_config)))
    except RuntimeError:
        pass


async def _next(listing: AsyncIterator[WorkflowExecution]) -> WorkflowExecution | None:
    try:
        return await anext(listing)
    except StopAsyncIteration:
        return None


async def replay_matching(
    client: Client,
    query: str,
    *,
    limit: int | None = None,
    on_failure: Callable[[Failure], None] = lambda failure: None,
    on_skip: Callable[[str], None] = lambda message: None,
) -> Summary:
    """Replay every execution matching ``query``, one history in memory at a time."""
    from temporalio.service import RPCError, RPCStatusCode

    summary = Summary()
    try:
        listing = aiter(client.list_workflows(query, limit=limit))
        first = await _next(listing)  # a bad query fails here, before the sandbox is built
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise ReplayError(f"invalid query {query!r}: {one_line(err.message)}") from None
        raise
    if first is None:
        return summary

    # The worker's own calendar data (see worker.run_worker): replay must compute what it computed.
    zoneinfo.reset_tzpath(to=())
    from worker import (
        build_replayer,  # imports every workflow module: only when there is work
    )

    replayer = build_replayer(client.data_converter)
    run_ids: dict[int, str] = {}  # the history being replayed -> the run id visibility listed

    async def histories() -> AsyncIterator[WorkflowHistory]:
        # What ``client.list_workflows(query).map_histories()`` does, plus the run id of each
        # history and tolerance of a run deleted (retention) between listing and download.
        execution: WorkflowExecution | None = first
        while execution is not None:
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            try:
                history = await handle.fetch_history()
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                summary.skipped.append(execution.id)
                on_skip(f"skipped {execution.id} (run {execution.run_id}): its history is gone "
                        f"({one_line(err.message)})")
            else:
                run_ids[id(history)] = execution.run_id
                yield history
            execution = await _next(listing)

    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            summary.replayed += 1
            run_id = run_ids.pop(id(result.history), "") or _run_id(result.history)
            if result.replay_failure is not None:
                failure = Failure(result.history.workflow_id, run_id, reason_of(result.replay_failure))
                summary.failed.append(failure)
                on_failure(failure)
    return summary


def _run_id(history: WorkflowHistory) -> str:
    try:
        return history.run_id
    except RuntimeError:
        return "?"


# -- the command -------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    fail(message, USAGE_ERROR)


async def _connect(connection: Connection) -> Client:
    from escalations.connect import temporal_client

    target = connection.temporal.get("target_host")
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            return await temporal_client(connection)
    except (RuntimeError, OSError, TimeoutError) as err:
        reason = "connection refused" if "refused" in str(err).lower() else one_line(err) or "timed out"
        raise ReplayError(f"cannot connect to Temporal at {target}: {reason}") from None


def _print_failure(failure: Failure) -> None:
    reason = failure.reason
    if len(reason) > REASON_WIDTH:
        reason = reason[: REASON_WIDTH - 1] + "…"
    typer.echo(f"FAILED {failure.workflow_id} (run {failure.run_id}): {reason}")


def replay(
    query: Annotated[str | None, typer.Option(
        "--query", "-q", metavar="QUERY",
        help="Visibility query of the executions to replay (replaces the default: every open "
             "escalation, postmortem and sweep, and those closed in the last day)")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay at most this many histories")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary: replayed, failed")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Replay recorded histories against the installed workflow code (run it before deploying).

    Exit 0: every history replayed; 1: some failed (each is named); 2: usage or connection error.
    """
    from temporalio.service import RPCError

    from escalations import connect

    query = query if query is not None else default_query(datetime.now(timezone.utc))
    if not query.strip():
        _fail("--query is empty")
    try:
        connection = connect.resolve(choose_data_dir(data_dir))
    except (ValueError, OSError, RuntimeError) as err:  # a bad stack.json or profile; StackNotFound
        _fail(f"cannot read the stack's settings: {err}")

    def skipped(message: str) -> None:
        typer.echo(f"warning: {message}", err=True)

    async def main() -> Summary:
        quiet_core_logs()
        client = await _connect(connection)
        return await replay_matching(client, query, limit=limit, on_skip=skipped,
                                     on_failure=(lambda f: None) if as_json else _print_failure)

    try:
        summary = asyncio.run(main())
    except ReplayError as err:
        _fail(str(err))
    except RPCError as err:
        _fail(f"Temporal error: {err.message}")
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None

    if as_json:
        typer.echo(json.dumps(summary.as_json(), indent=2))
    else:
        if summary.replayed == 0 and not summary.skipped:
            typer.echo(f"warning: no execution matches {query!r}", err=True)
        typer.echo(f"replayed {summary.replayed} histories: {len(summary.failed)} failed")
    raise typer.Exit(1 if summary.failed else 0)


def repair_command(
    query: Annotated[str | None, typer.Option(
        "--query", "-q", metavar="QUERY", show_default=False,
        help="Visibility query of the runs to check (default: every running escalation)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only name the stuck runs and their reset points")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Repair escalation runs that no longer replay: reset each to its last good task, then upgrade it.

    Needs the database (DATABASE_URL or the dev stack's) and a worker running the installed code.
    Exit 0: nothing stuck or everything repaired; 1: a run could not be repaired; 2: usage error.
    """
    from temporalio.service import RPCError

    from escalations import connect
    from escalations.db.pool import create_pool
    from escalations.repair import NotRepairable, repair, reset_point

    query = stuck_query() if query is None else query
    try:
        connection = connect.resolve(choose_data_dir(data_dir))
        database_url = connect.require_database(connection)
    except (ValueError, OSError, RuntimeError) as err:
        _fail(str(err))

    async def main() -> int:
        quiet_core_logs()
        client = await _connect(connection)
        zoneinfo.reset_tzpath(to=())
        from worker import build_replayer

        replayer = build_replayer(client.data_converter)
        summary = await replay_matching(client, query, on_failure=lambda f: None)
        if not summary.failed:
            typer.echo(f"checked {summary.replayed} runs: none is stuck")
            return 0
        unrepaired = 0
        pool = await create_pool(database_url, max_size=2)
        try:
            for failure in summary.failed:
                handle = client.get_workflow_handle(failure.workflow_id, run_id=failure.run_id)
                try:
                    if dry_run:
                        point = await reset_point(replayer, await handle.fetch_history())
                        typer.echo(f"STUCK {failure.workflow_id} (run {failure.run_id}): would reset to workflow task "
                                   f"{point.completed_event_id}; {failure.reason[:REASON_WIDTH]}")
                        continue
                    done = await repair(client, pool, replayer, failure.workflow_id, failure.run_id)
                except NotRepairable as err:
                    unrepaired += 1
                    typer.echo(f"NOT REPAIRED {failure.workflow_id} (run {failure.run_id}): {err}")
                    continue
                if done is not None:
                    typer.echo(f"REPAIRED {done.workflow_id}: reset run {done.old_run_id} to workflow task "
                               f"{done.reset_point.completed_event_id} (new run {done.new_run_id}); events "
                               f"{done.withdrawn or 'none'} decided again; "
                               + ("moved to the current commit path" if done.upgraded else "left on its path (resolved)"))
        finally:
            await pool.close()
        return 1 if unrepaired else 0

    try:
        code = asyncio.run(main())
    except ReplayError as err:
        _fail(str(err))
    except RPCError as err:
        _fail(f"Temporal error: {err.message}")
    raise typer.Exit(code)

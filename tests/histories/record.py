"""Record workflow histories for the replay tests: ``python -m tests.histories.record``.

Runs a few scenarios on a fresh dev server and embedded Postgres with the real worker and
writes each run's history as JSON beside this file. Payloads are encrypted with the suite's
key (``tests/helpers/codec.py``), as production's are; the replay tests decrypt with it. Re-record only to add scenarios: the
point of the checked-in files is that today's code must still replay yesterday's runs.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from escalations.db.tickets import upsert_tickets
from escalations.db.migrate import migrate
from escalations.db.pool import create_pool
from escalations.temporal import data_converter
from schemas import keys
from schemas.escalation import (
    AcknowledgeCommand,
    AddNoteCommand,
    ApplyPolicyCommand,
    CompletePostmortemCommand,
    EscalateCommand,
    EscalationState,
    PauseCommand,
    ResolveCommand,
    ResumeCommand,
    postmortem_id_for,
)
from schemas.ticket import SweepInput, Ticket
from escalations.devstack.postgres import EmbeddedPostgres
from escalations.devstack.temporal import temporal_binary
from tests.helpers.codec import TEST_CODEC
from tests.helpers.escalations import start_escalation
from tests.helpers.policies import level_ack, write_policy
from tests.helpers.receivers import HttpRecorder, Reply
from tests.helpers.requests import blog_request
from tests.helpers.workers import running_worker

HERE = Path(__file__).resolve().parent
PREFIX = ""


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("scenario did not reach its state in time")
        await asyncio.sleep(0.1)


async def state(handle: WorkflowHandle) -> EscalationState:
    return await handle.query("state", result_type=EscalationState)


async def save(client: Client, workflow_id: str, name: str, run_id: str | None = None) -> None:
    """Write the history as ``NAME.json``, or ``PREFIX-NAME.json`` with ``--prefix PREFIX``
    (a new commit path's recordings sit beside the released one's, which must keep replaying)."""
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    name = f"{PREFIX}-{name}" if PREFIX else name
    if (HERE / f"{name}.json").exists():
        raise SystemExit(f"{name}.json exists: checked-in histories are never re-recorded")
    (HERE / f"{name}.json").write_text(history.to_json())
    print(f"recorded {name}.json ({len(history.events)} events)")


async def blog_lifecycle(client: Client, queue: str) -> None:
    """Open → auto-escalation → ack → note → pause/resume → resolve → postmortem → closed."""
    handle = await start_escalation(client, blog_request("REPLAY-BLOG"), queue)
    await until(lambda: _level_is(handle, "engineering"))
    await handle.execute_update("acknowledge", AcknowledgeCommand(by="dana"), result_type=EscalationState)
    await handle.execute_update("add_note", AddNoteCommand(author="dana", text="Found it", customer_visible=True),
                                result_type=EscalationState)
    await handle.execute_update("pause", PauseCommand(by="dana", reason="waiting on logs"), result_type=EscalationState)
    await handle.execute_update("resume", ResumeCommand(by="dana"), result_type=EscalationState)
    await handle.execute_update(
        "resolve", ResolveCommand(by="dana", root_cause="Salesforce schema change", mitigation="hotfix",
                                  preventive_actions=["monitor schema changes"]),
        result_type=EscalationState,
    )
    child = client.get_workflow_handle(postmortem_id_for("REPLAY-BLOG"))
    await until(lambda: _reminded(handle))
    await child.execute_update("complete", CompletePostmortemCommand(
        by="dana", summary="sync broke", root_cause="schema change", improvements=["alerts"]))
    await handle.result()
    await save(client, handle.id, "escalation-blog-lifecycle")
    await save(client, child.id, "postmortem-blog-lifecycle")


async def _level_is(handle: WorkflowHandle, level: str) -> bool:
    try:
        return (await state(handle)).level == level
    except Exception:  # noqa: BLE001 - still opening; polled again until the deadline
        return False


async def _reminded(handle: WorkflowHandle) -> bool:
    postmortem = (await state(handle)).postmortem
    return postmortem is not None and postmortem.reminders_sent >= 1


async def breach_and_climb(client: Client, queue: str) -> None:
    """Unacknowledged: climbs to the last level, re-pages, breaches; at-risk and cadence on the way."""
    handle = await start_escalation(client, blog_request("REPLAY-CLIMB", kind="hierarchical"), queue)
    await until(lambda: _breached_with_reminder(handle))
    await handle.terminate("recorded")
    await save(client, handle.id, "escalation-breach-and-climb")


async def _breached_with_reminder(handle: WorkflowHandle) -> bool:
    try:
        current = await state(handle)
    except Exception:  # noqa: BLE001 - still opening
        return False
    return current.sla_breached and current.counts.ack_reminders >= 1 and current.counts.customer_updates >= 1


async def continue_as_new(client: Client, queue: str) -> None:
    """A run that continues as new: its first run ends with the continue-as-new command."""
    handle = await start_escalation(client, blog_request("REPLAY-CAN", priority="P2", kind="functional",
                                                         category="billing"), queue)
    first_run = (await handle.describe()).run_id
    await until(lambda: _continued(handle))
    await handle.terminate("recorded")
    await save(client, handle.id, "escalation-continue-as-new", run_id=first_run)


async def _continued(handle: WorkflowHandle) -> bool:
    try:
        return (await state(handle)).counts.continued_as_new >= 1
    except Exception:  # noqa: BLE001 - between runs
        return False


async def sweep(client: Client, queue: str, pool: asyncpg.Pool) -> None:
    """One criteria sweep over two tickets, one of which matches."""
    opened = datetime.now(timezone.utc) - timedelta(hours=1)
    await upsert_tickets(pool, [
        Ticket.model_validate({
            "id": ticket_id, "customer": {"id": "acme", "name": "Acme Corp", "segment": "enterprise"},
            "subject": "Export failing", "category": "technical", "priority": "P3", "status": "open",
            "users_affected": users, "interactions": 1, "opened_at": opened, "updated_at": opened,
        })
        for ticket_id, users in (("REPLAY-T1", 40), ("REPLAY-T2", 1))
    ], source="import")
    await client.execute_workflow(keys.SWEEP_WORKFLOW, SweepInput(policy="replay"), id="replay-sweep", task_queue=queue)
    await save(client, "replay-sweep", "sweep")
    await client.get_workflow_handle("escalation-REPLAY-T1").terminate("recorded")


async def commands(client: Client, queue: str, policy_file: Path, newer: str) -> None:
    """Hierarchical (consulted), consulted ack, manual escalation, notes, pause with auto-resume,
    acknowledge, a newer policy applied, resolve, postmortem, closed."""
    handle = await start_escalation(client, blog_request("REPLAY-CMDS", kind="hierarchical", priority="P2"), queue)
    opened = await _opened(handle)
    consulted = opened.consulted[0].level
    await handle.execute_update("acknowledge", AcknowledgeCommand(by="mia", level=consulted), result_type=EscalationState)
    await handle.execute_update("escalate", EscalateCommand(by="sam", reason="needs a developer", to_level="engineering"),
                                result_type=EscalationState)
    await handle.execute_update("add_note", AddNoteCommand(author="sam", text="internal only"), result_type=EscalationState)
    await handle.execute_update("pause", PauseCommand(by="sam", reason="waiting on the customer"),
                                result_type=EscalationState)
    await until(lambda: _resumed(handle))
    await handle.execute_update("acknowledge", AcknowledgeCommand(by="dana"), result_type=EscalationState)
    policy_file.write_text(newer)  # an operator publishes version 2, then moves this run onto it
    await handle.execute_update("apply_policy", ApplyPolicyCommand(by="ops", version=2), result_type=EscalationState)
    await handle.execute_update(
        "resolve", ResolveCommand(by="dana", root_cause="cache", mitigation="flush", preventive_actions=[]),
        result_type=EscalationState,
    )
    child = client.get_workflow_handle(postmortem_id_for("REPLAY-CMDS"))
    await child.execute_update("complete", CompletePostmortemCommand(
        by="dana", summary="cache", root_cause="cache", improvements=["ttl"]))
    await handle.result()
    await save(client, handle.id, "escalation-commands")


async def _opened(handle: WorkflowHandle) -> EscalationState:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            return await state(handle)
        except Exception:  # noqa: BLE001 - still opening
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _resumed(handle: WorkflowHandle) -> bool:
    current = await state(handle)
    return current.counts.pauses >= 1 and current.paused_since is None


async def failing_channels(client: Client, queue: str) -> None:
    """A webhook that refuses (notification_failed) and a Jira issue (jira_linked), then terminated."""
    handle = await start_escalation(client, blog_request("REPLAY-FAIL"), queue)
    await until(lambda: _failed_and_linked(handle))
    await handle.terminate("recorded")
    await save(client, handle.id, "escalation-failing-channels")


async def _failed_and_linked(handle: WorkflowHandle) -> bool:
    try:
        current = await state(handle)
    except Exception:  # noqa: BLE001 - still opening
        return False
    return current.notifications_failed >= 1 and current.jira_key is not None


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="record-histories-"))
    server = EmbeddedPostgres(work / "pg", durable=False)
    dsn = server.start()
    try:
        await migrate(dsn)
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(temporal_binary()), search_attributes=keys.SEARCH_ATTRIBUTES,
            data_converter=data_converter(TEST_CODEC),
        )
        pool = await create_pool(dsn)
        policy = write_policy(
            work, levels=level_ack("fast", tier2="2s", engineering="2s", management="2s"),
            name="replay", continue_as_new_after_events=60,
            priorities={"P1": {"resolve_within": "8s", "customer_update_every": "3s"},
                        "P2": {"customer_update_every": "300ms"}},
            postmortem_remind_every="1s",
            criteria={"sweep_every": "1m", "rules": [
                {"name": "many-users", "when": {"users_affected_at_least": 10},
                 "open_as": {"kind": "priority", "priority": "P2"}}]},
        )
        queue = f"record-{uuid.uuid4()}"
        global PREFIX
        arguments = sys.argv[1:]
        if arguments[:1] == ["--prefix"]:
            PREFIX, arguments = arguments[1], arguments[2:]
        only = set(arguments)
        try:
            if not only or "basic" in only:
                async with running_worker(env.client, pool, queue, policy):
                    await blog_lifecycle(env.client, queue)
                    await breach_and_climb(env.client, queue)
                    await continue_as_new(env.client, queue)
                    await sweep(env.client, queue, pool)
            if not only or "commands" in only:
                folder = work / "cmds"
                folder.mkdir()
                acks = {"tier1": "30s", "tier2": "30s", "engineering": "30s", "management": "30s"}
                newer = write_policy(folder, levels=level_ack("fast", **acks), name="replay-cmds", version=2,
                                     priorities={"P2": {"max_pause": "1s"}}).read_text()
                cmd_policy = write_policy(folder, levels=level_ack("fast", **{k: "20s" for k in acks}),
                                          name="replay-cmds", priorities={"P2": {"max_pause": "1s"}})
                async with running_worker(env.client, pool, queue + "-cmds", cmd_policy):
                    await commands(env.client, queue + "-cmds", cmd_policy, newer)
            if not only or "failing" in only:
                async with HttpRecorder() as receiver:
                    receiver.script("/tier2", *[Reply(404)] * 5)
                    levels = level_ack("fast", tier2="30s")
                    for level in levels:
                        if level["id"] == "tier2":
                            level["contacts"] = [
                                {"name": "tier2 hook", "channel": "webhook", "target": f"{receiver.url}/tier2"},
                                {"name": "tier2 jira", "channel": "jira", "target": "ESC"},
                            ]
                    (work / "fail").mkdir()
                    fail_policy = write_policy(work / "fail", levels=levels, name="replay-fail")
                    environ = {"ESCALATION_WEBHOOK_SECRET": "s" * 32, "ESCALATION_JIRA_BASE_URL": receiver.url,
                               "ESCALATION_JIRA_EMAIL": "bot@example.com", "ESCALATION_JIRA_API_TOKEN": "t"}
                    async with running_worker(env.client, pool, queue + "-fail", fail_policy, environ):
                        await failing_channels(env.client, queue + "-fail")
        finally:
            await pool.close()
            await env.shutdown()
    finally:
        server.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())

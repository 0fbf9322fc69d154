"""``escalations replay`` against the live dev server: recorded runs replay on the installed
code (exit 0), a run the installed code cannot replay is caught (exit 1, named), errors exit 2.

The command runs as a subprocess (``python -m starter replay``) with only TEMPORAL_ADDRESS
(and the suite's payload keys) and an empty data dir: it must need nothing else (no database,
no worker).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from escalations import client as ec
from escalations.cli.replay import default_query
from schemas.escalation import (
    AcknowledgeCommand,
    CompletePostmortemCommand,
    EscalationRequest,
    ResolveCommand,
    postmortem_id_for,
)
from schemas.keys import ESCALATION_WORKFLOW
from tests.helpers.codec import TEST_ENV
from tests.helpers.escalations import start_escalation
from tests.helpers.paths import ROOT
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request


# -- a workflow that is not the installed EscalationWorkflow, under its name ---------------


@activity.defn(name="replay_test_step")
async def replay_test_step(ticket_id: str) -> str:
    return ticket_id


@workflow.defn(name=ESCALATION_WORKFLOW, sandboxed=False)
class ImpostorEscalationWorkflow:
    """Records a history the real EscalationWorkflow cannot have produced: a timer first."""

    @workflow.run
    async def run(self, request: dict) -> str:
        await workflow.sleep(timedelta(milliseconds=100))
        return await workflow.execute_activity(
            replay_test_step, request["ticket_id"], start_to_close_timeout=timedelta(seconds=10))


async def record_impostor(client: Client, queue: str) -> tuple[str, str]:
    """One completed run of the impostor on ``queue``: (workflow id, run id)."""
    request = blog_request()
    async with Worker(client, task_queue=queue, workflows=[ImpostorEscalationWorkflow],
                      activities=[replay_test_step]):
        handle = await client.start_workflow(
            ESCALATION_WORKFLOW, request, id=f"impostor-{request.ticket_id}", task_queue=queue)
        assert await asyncio.wait_for(handle.result(), timeout=15) == request.ticket_id
    return handle.id, handle.result_run_id or ""


# -- running the command -------------------------------------------------------------------


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


async def run_replay(tmp_path: Path, *args: str, address: str, namespace: str = "default") -> Run:
    """``python -m starter replay ARGS`` with only the Temporal address (no database, no stack)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TEMPORAL_", "ESCALATION_")) and k != "DATABASE_URL"}
    env.update({"TEMPORAL_ADDRESS": address, "TEMPORAL_NAMESPACE": namespace, "COLUMNS": "200", **TEST_ENV})
    empty = tmp_path / "no-stack"
    empty.mkdir(exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter", "replay", *args, "--data-dir", str(empty),
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def address(client: Client) -> str:
    return client.service_client.config.target_host


def on_queue(*queues: str) -> str:
    return " OR ".join(f"TaskQueue = '{queue}'" for queue in queues)


async def listed(client: Client, query: str) -> dict[str, WorkflowExecutionStatus | None]:
    return {execution.id: execution.status async for execution in client.list_workflows(query)}


async def close_one_terminate_one(client: Client, task_queue: str) -> tuple[EscalationRequest, EscalationRequest]:
    """Two escalations on the real worker: one acknowledged, resolved and closed (with its
    postmortem), one terminated while open."""
    closing, terminated = blog_request(), blog_request()
    handle = await start_escalation(client, closing, task_queue)
    other = await start_escalation(client, terminated, task_queue)
    await ec.acknowledge(client, closing.ticket_id, AcknowledgeCommand(by="dana"))
    await ec.resolve(client, closing.ticket_id, ResolveCommand(
        by="dana", root_cause="Salesforce API schema change", mitigation="Field mapping hotfix"))
    await ec.complete_postmortem(client, closing.ticket_id, CompletePostmortemCommand(
        by="dana", summary="Sync broke after a schema change", root_cause="Salesforce API schema change",
        improvements=["Alert on third-party API changes"]))
    assert (await asyncio.wait_for(handle.result(), timeout=20)).status == "closed"
    await other.terminate(reason="replay test")
    return closing, terminated


# -- tests -----------------------------------------------------------------------------------


async def test_recorded_escalations_replay(client, task_queue, start_worker, tmp_path):
    still_open = blog_request()
    async with start_worker():
        closing, terminated = await close_one_terminate_one(client, task_queue)
        open_handle = await start_escalation(client, still_open, task_queue)
        await ec.acknowledge(client, still_open.ticket_id, AcknowledgeCommand(by="sam"))
    try:  # the open one's history stops where the worker stopped: replay takes it as far as it goes
        query = on_queue(task_queue)
        expected = {closing.workflow_id: WorkflowExecutionStatus.COMPLETED,
                    postmortem_id_for(closing.ticket_id): WorkflowExecutionStatus.COMPLETED,
                    terminated.workflow_id: WorkflowExecutionStatus.TERMINATED,
                    still_open.workflow_id: WorkflowExecutionStatus.RUNNING}

        async def visible() -> None:
            assert await listed(client, query) == expected

        await eventually(visible, timeout=10)

        run = await run_replay(tmp_path, "--query", query, address=address(client))
        assert run.code == 0, run
        assert run.stdout == "replayed 4 histories: 0 failed\n", run
        assert run.stderr == "", run

        limited = await run_replay(tmp_path, "--query", query, "--limit", "1", address=address(client))
        assert limited.code == 0, limited
        assert limited.stdout == "replayed 1 histories: 0 failed\n", limited
    finally:
        await open_handle.terminate(reason="replay test done")


async def test_a_history_the_code_cannot_replay_fails_the_check(client, tmp_path):
    queue = f"impostor-{uuid.uuid4()}"
    workflow_id, run_id = await record_impostor(client, queue)

    async def visible() -> None:
        assert await listed(client, on_queue(queue)) == {workflow_id: WorkflowExecutionStatus.COMPLETED}

    await eventually(visible, timeout=10)

    run = await run_replay(tmp_path, "--query", on_queue(queue), address=address(client))
    assert run.code == 1, run
    lines = run.stdout.strip().splitlines()
    assert lines[-1] == "replayed 1 histories: 1 failed", run
    assert len(lines) == 2, run  # the failure and the summary: nothing else on stdout
    assert lines[0].startswith(f"FAILED {workflow_id} (run {run_id}): "), run
    assert "Nondeterminism error" in lines[0] and "TimerStarted" in lines[0], run
    assert run.stderr == "", run


async def test_json_summary(client, task_queue, start_worker, tmp_path):
    queue = f"impostor-{uuid.uuid4()}"
    workflow_id, run_id = await record_impostor(client, queue)
    request = blog_request()
    async with start_worker():
        handle = await start_escalation(client, request, task_queue)
        await ec.acknowledge(client, request.ticket_id, AcknowledgeCommand(by="dana"))
    await handle.terminate(reason="replay test")
    query = on_queue(task_queue, queue)

    async def visible() -> None:
        assert await listed(client, query) == {workflow_id: WorkflowExecutionStatus.COMPLETED,
                                               request.workflow_id: WorkflowExecutionStatus.TERMINATED}

    await eventually(visible, timeout=10)

    run = await run_replay(tmp_path, "--query", query, "--json", address=address(client))
    assert run.code == 1, run
    summary = json.loads(run.stdout)
    assert set(summary) == {"replayed", "failed"}
    assert summary["replayed"] == 2
    [failure] = summary["failed"]
    assert set(failure) == {"workflow_id", "run_id", "reason"}
    assert (failure["workflow_id"], failure["run_id"]) == (workflow_id, run_id)
    assert "nondetermin" in failure["reason"].lower() and "\n" not in failure["reason"]


async def test_usage_and_connection_errors_exit_2(client, tmp_path):
    bad = await run_replay(tmp_path, "--query", "TaskQueue = ", address=address(client))
    assert bad.code == 2, bad
    assert bad.stdout == "" and bad.stderr.startswith("error: invalid query"), bad
    assert len(bad.stderr.strip().splitlines()) == 1, bad

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = await run_replay(tmp_path, "--query", "TaskQueue = 'x'", address=f"127.0.0.1:{port}")
    assert down.code == 2, down
    assert down.stderr.strip() == f"error: cannot connect to Temporal at 127.0.0.1:{port}: connection refused", down

    usage = await run_replay(tmp_path, "--limit", "0", address=address(client))
    assert usage.code == 2, usage

    empty = await run_replay(tmp_path, "--query", f"TaskQueue = 'nobody-{uuid.uuid4()}'", address=address(client))
    assert empty.code == 0, empty
    assert empty.stdout.strip() == "replayed 0 histories: 0 failed", empty


async def test_default_query(client):
    now = datetime(2026, 5, 2, 11, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert default_query(now) == (
        "WorkflowType IN ('EscalationWorkflow','PostmortemWorkflow','CriteriaSweepWorkflow','HousekeepingWorkflow') "
        "AND (ExecutionStatus = 'Running' OR CloseTime > '2026-05-01T09:30:15Z')")
    with pytest.raises(ValueError):
        default_query(datetime(2026, 5, 2, 11, 30))
    # The server accepts it as it is built at run time.
    await client.count_workflows(default_query(datetime.now(timezone.utc)))

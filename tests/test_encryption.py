"""Payload encryption end to end, read the way someone with Temporal access but no key reads it.

- A run's history, dumped by the real ``temporal`` CLI (``workflow show --output json``),
  holds no customer name, e-mail, handoff text or note: only ids and enums (search
  attributes, ids, types) are plaintext. With ``--codec-endpoint <api>/codec`` and the API's
  token the same command shows them again. A run started without keys is the control: there
  the same check finds the name, so the check can see plaintext.
- Key rotation: a run started on key A goes on after the worker restarts with ``B,A`` (its
  timers fire, commands apply), its history holds both keys and replays with ``B,A``; ``B``
  alone names the missing key; ``escalations keys usage`` counts both.
- The demo (``escalations demo`` against a stack.json carrying keys, as the dev stack writes
  it) leaves no personal data in any history it wrote.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from escalations.codec import PLAIN, PayloadDecryptionError, key_ids_in, new_key_entry
from escalations.connect import StackInfo, write_stack
from escalations.settings import CodecSettings
from escalations.temporal import connect, data_converter
from schemas.escalation import AcknowledgeCommand, AddNoteCommand, EscalationState
from tests.helpers.api import TOKEN, api_settings, running_api
from tests.helpers.codec import codec_of, history_dump, readable
from tests.helpers.escalations import current_state, start_escalation
from tests.helpers.paths import ROOT
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request
from tests.helpers.workers import running_worker
from worker import build_replayer

NOTE = "Called Jane Doe back on +1 555 0100, jane.doe@acme.example"
HANDOFF = {
    "ticket_history": "Head of Operations: data stopped syncing yesterday; board meeting tomorrow.",
    "error_logs": "SyncError: INVALID_FIELD AccountRegion__c for user jane.doe@acme.example",
    "integration_id": "sf-prod-7",
    "steps_to_reproduce": "Run a manual sync from Settings > Integrations > Salesforce",
}
PERSONAL = ("Acme Corp", "ops@acme.example", "jane.doe@acme.example", "Head of Operations",
            "AccountRegion__c", "Run a manual sync", "Jane Doe", "Salesforce sync failing")


def address_of(client: Client) -> str:
    return client.service_client.config.target_host


def leaked(text: str, secrets: tuple[str, ...] = PERSONAL) -> list[str]:
    return [secret for secret in secrets if secret in text]


async def test_a_history_holds_no_personal_data_and_reads_through_the_codec_endpoint(
    client: Client, start_worker, database_url: str, task_queue: str
) -> None:
    request = blog_request(handoff=HANDOFF)
    async with start_worker("fast"):
        handle = await start_escalation(client, request, task_queue)
        await eventually(lambda: current_state(handle))
        noted = await handle.execute_update(
            "add_note", AddNoteCommand(author="Dana (Tier 2)", text=NOTE, customer_visible=True),
            result_type=EscalationState)
        assert noted.counts.notes == 1

    raw = readable(await history_dump(address_of(client), request.workflow_id))
    assert leaked(raw) == [], "plaintext personal data in the history"
    # What stays plaintext: search attributes (ids and enums), names of things.
    for visible in ('"acme"', '"P1"', '"integration"', "EscalationWorkflow", "add_note", "binary/encrypted"):
        assert visible in raw, visible

    async with running_api(api_settings(client, database_url, task_queue)) as url:
        codec = ["--codec-endpoint", f"{url}/codec", "--codec-auth", f"Bearer {TOKEN}"]
        decoded = readable(await history_dump(address_of(client), request.workflow_id, *codec))
    assert leaked(decoded) == list(PERSONAL), "the codec endpoint did not decode everything"
    await handle.terminate(reason="test done")


async def test_the_check_sees_plaintext_in_a_run_started_without_keys(client: Client, task_queue: str) -> None:
    plain = await connect({"target_host": address_of(client)}, CodecSettings.of())
    request = blog_request(handoff=HANDOFF)
    handle = await start_escalation(plain, request, task_queue)  # no worker: the start event is enough
    try:
        raw = readable(await history_dump(address_of(client), request.workflow_id))
        assert "Acme Corp" in raw and "jane.doe@acme.example" in raw
        assert "binary/encrypted" not in raw
    finally:
        await handle.terminate(reason="test done")


KEY_A = new_key_entry("rot-a")
KEY_B = new_key_entry("rot-b")


def key_id(entry: str) -> str:
    return entry.split(":", 1)[0]


async def test_key_rotation_keeps_old_runs_running_and_readable(
    client: Client, pg_pool: asyncpg.Pool, task_queue: str, tmp_path: Path
) -> None:
    request = blog_request(handoff=HANDOFF)
    on_a = await connect({"target_host": address_of(client)}, codec_of(KEY_A))
    async with running_worker(on_a, pg_pool, task_queue, "fast"):
        handle = await start_escalation(on_a, request, task_queue)
        opened = await eventually(lambda: current_state(handle))
        assert opened.level == "tier2"

    # Rotated: the new key first, the old one kept. The worker restarts with both.
    rotated = await connect({"target_host": address_of(client)}, codec_of(f"{KEY_B},{KEY_A}"))
    handle = rotated.get_workflow_handle(request.workflow_id, result_type=EscalationState)
    async with running_worker(rotated, pg_pool, task_queue, "fast"):

        async def escalated() -> EscalationState:  # tier2's 2 s ack deadline, decided by the new worker
            state = await current_state(handle)
            assert state.level == "engineering", state.level
            return state

        await eventually(escalated, timeout=30)
        acked = await handle.execute_update("acknowledge", AcknowledgeCommand(by="Alex Chen"),
                                            result_type=EscalationState)
        assert acked.status == "acknowledged" and acked.escalation_id == opened.escalation_id

    history = await handle.fetch_history()
    used: Counter[str] = Counter()
    for event in history.events:
        used.update(key_ids_in(event))
    assert used[key_id(KEY_A)] > 0 and used[key_id(KEY_B)] > 0, used
    assert PLAIN not in used, f"plaintext payloads: {used}"
    await build_replayer(rotated.data_converter).replay_workflow(history)  # decodes and replays

    started = next(e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED)
    payloads = list(started.workflow_execution_started_event_attributes.input.payloads)
    with pytest.raises(PayloadDecryptionError, match=f"'{key_id(KEY_A)}', which is not configured"):
        await data_converter(codec_of(KEY_B)).decode(payloads)

    # `escalations keys usage` tells which keys the run still needs.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TEMPORAL_", "ESCALATION_"))}
    env.update({"TEMPORAL_ADDRESS": address_of(client), "ESCALATION_ENCRYPTION_KEYS": f"{KEY_B},{KEY_A}"})
    usage = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "starter", "keys", "usage", "--json", "--data-dir", str(tmp_path),
                         "--query", f"WorkflowId = '{request.workflow_id}'"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert usage.returncode == 0, usage.stderr
    report = json.loads(usage.stdout)
    assert report["configured"] == [key_id(KEY_B), key_id(KEY_A)]
    assert report["runs_read"] == 1
    for key in (KEY_A, KEY_B):
        assert report["keys"][key_id(key)]["runs"] == 1 and report["keys"][key_id(key)]["running"] == 1
    assert "plain" not in report["keys"]
    await handle.terminate(reason="test done")


async def test_the_demo_leaves_no_personal_data_in_temporal(
    temporal_env: WorkflowEnvironment, database_url: str, tmp_path: Path
) -> None:
    """``escalations demo`` finds the stack (and its key) in stack.json, as after ``escalations dev``."""
    address = address_of(temporal_env.client)
    stack_key = new_key_entry("dev")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    write_stack(data_dir, StackInfo(temporal_address=address, database_url=database_url, encryption_keys=stack_key))
    ticket = f"SF-1042-enc-{uuid.uuid4().hex[:6]}"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TEMPORAL_", "ESCALATION_")) and key != "DATABASE_URL"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter", "demo", "--data-dir", str(data_dir), "--ticket", ticket, "--pace", "0",
        cwd=tmp_path, env={**env, "COLUMNS": "400"}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 240)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        raise AssertionError(f"the demo did not finish within 240 s:\n{output.decode()}") from None
    assert process.returncode == 0, output.decode()

    reader = await connect({"target_host": address}, codec_of(stack_key))
    described = await reader.get_workflow_handle(f"escalation-{ticket}").describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED
    queue = described.task_queue
    assert await described.static_summary() == "P1 · Acme Corp · Salesforce sync failing since yesterday"
    # Every run the demo started: its escalation, postmortem, sweep and the sweep's escalation.
    runs = [w async for w in reader.list_workflows(f"TaskQueue = '{queue}'")]
    assert len(runs) >= 4, [w.id for w in runs]
    personal = ("Acme Corp", "ops@acme.example", "Head of Operations", "Sam Rivera", "Alex Chen",
                "AccountRegion__c", "Globex Corporation", "finance team", "Unannounced Salesforce API")
    for run in runs:
        raw = readable(await history_dump(address, run.id, run_id=run.run_id))
        assert leaked(raw, personal) == [], f"{run.id}: plaintext personal data"
        assert "binary/encrypted" in raw, run.id
    # The demo used the stack's key: the suite's own client (another key) cannot read the run.
    described = await temporal_env.client.get_workflow_handle(f"escalation-{ticket}").describe()
    with pytest.raises(PayloadDecryptionError, match=key_id(stack_key)):
        await described.static_summary()

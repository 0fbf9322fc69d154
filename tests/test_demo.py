"""``escalations demo`` end to end, and the fake Jira it brings along.

The demo runs as a user would run it: a separate process (``python -m starter demo``)
started in an empty working directory, finding Temporal and Postgres through the
environment, with its own worker, its own task queue and its built-in Jira receiver.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from escalations.db.tickets import upsert_tickets
from escalations.db.pool import create_pool
from schemas import keys
from schemas.escalation import EscalationState, postmortem_id_for
from schemas.ticket import SweepResult, Ticket
from escalations.cli.fake_jira import FakeJira
from escalations.devstack.postgres import free_port
from starter import app

UI_URL = "http://ui.example.test:8233"


async def run_demo(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, str, float]:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter", "demo", *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        raise AssertionError(f"the demo did not finish within {timeout:.0f}s:\n{output.decode()}") from None
    return process.returncode or 0, output.decode(), time.monotonic() - started


@asynccontextmanager
async def running_api(env: dict[str, str]) -> AsyncIterator[str]:
    """``escalations api`` as production runs it (a process, configured by ``env``); its URL."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "starter", "api", "--port", str(port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if (await http.get(f"{url}/livez")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.returncode is None, (await process.stdout.read()).decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "escalations api did not listen within 30 s"
                await asyncio.sleep(0.1)
        yield url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_demo_replays_the_blog_example_until_closed(
    temporal_env: WorkflowEnvironment, database_url: str, tmp_path: Path
) -> None:
    client = temporal_env.client
    ticket = f"SF-1042-test-{uuid.uuid4().hex[:6]}"
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("TEMPORAL_", "ESCALATION_")) and key != "DATABASE_URL"
    }
    env.update({
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "DATABASE_URL": database_url,
        "ESCALATION_UI_URL": UI_URL,
        "COLUMNS": "400",
    })
    # Someone else's ticket that meets the demo policy's many-users rule: the demo's sweep
    # must leave it alone (it would land on the demo's temporary task queue).
    bystander = f"OTHER-{uuid.uuid4().hex[:6]}"
    await _store_ticket(database_url, bystander)
    # The API the pages' action links point at, sharing the action-link key with the demo.
    action_key = secrets.token_hex(32)
    api_env = {**env, "ESCALATION_API_TOKENS": secrets.token_urlsafe(16), "ESCALATION_ACTION_KEY": action_key}
    # An empty working directory and a data dir without stack.json: everything comes from
    # the environment and the installed package.
    async with running_api(api_env) as api_url:
        code, output, elapsed = await run_demo(
            ["--data-dir", str(tmp_path / "no-stack"), "--ticket", ticket, "--pace", "0"],
            {**env, "ESCALATION_ACTION_KEY": action_key, "ESCALATION_PUBLIC_URL": api_url}, tmp_path, timeout=240,
        )
    print(output)
    print(f"demo took {elapsed:.1f}s")
    assert code == 0, output

    # The narration: the time scale, each blog step, the auto-escalation, Jira, the link.
    assert "1 s = 1 min" in output
    for number, step in enumerate(
        ("Initial contact", "First response & logging", "Escalation to Tier 2 / Engineering",
         "Customer communication", "Root cause identified", "Resolution & follow-up",
         "Postmortem & improvement", "Auto-escalation with no human action"), start=1,
    ):
        assert f"Step {number}/8 · {step}" in output, step
    assert "tier2 → engineering (auto: true)" in output
    assert "Ticket moved to Jira: ESC-1" in output
    assert "every 2 hours until resolved" in output
    # Step 4: Alex Chen acknowledges from the link in his Slack page (GET, then POST), as himself.
    assert "Alex Chen (Engineering) gets the page in Slack (#eng-oncall, caught by the demo's receiver)" in output
    assert f"the page asks “Acknowledge {ticket}?”" in output
    assert "He confirms: “Acknowledged by Alex Chen (Engineering) at " in output
    assert "owns it now (via link:slack)" in output
    assert "monitor added for schema changes" in output.lower()
    assert f"{UI_URL}/namespaces/default/workflows/escalation-{ticket}" in output
    assert f"Escalation {ticket} is closed" in output

    # The run itself: closed, with the Jira key, the automatic move and the postmortem.
    handle = client.get_workflow_handle(f"escalation-{ticket}", result_type=EscalationState)
    described = await handle.describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED
    assert described.task_queue.startswith("demo-")
    assert await described.static_summary() == "P1 · Acme Corp · Salesforce sync failing since yesterday"
    assert "sf-prod-7" in (await described.static_details() or "")
    attributes = described.typed_search_attributes
    assert attributes.get(keys.STATUS) == "closed"
    assert attributes.get(keys.LEVEL) == "engineering"
    assert attributes.get(keys.PRIORITY) == "P1"
    assert attributes.get(keys.CUSTOMER) == "acme"
    assert attributes.get(keys.BREACHED) is False
    state = await handle.result()
    assert state.status == "closed"
    assert state.jira_key == "ESC-1"
    assert state.trigger.source == "cli"
    assert state.policy.name == "demo"
    assert [(p.from_level, p.to_level, p.auto) for p in state.path if p.from_level != p.to_level] == [
        ("tier2", "engineering", True)
    ]
    assert (state.acknowledged_by, state.acknowledged_via) == ("Alex Chen (Engineering)", "link:slack")
    assert state.resolution is not None and "schema" in state.resolution.root_cause
    assert state.resolution.preventive_actions == ["Monitor added for schema changes in the Salesforce API"]
    assert state.postmortem is not None and state.postmortem.completed_at is not None
    assert "Better change alerts on third-party APIs" in state.postmortem.improvements
    assert "Update monitoring rules" in state.postmortem.improvements
    assert state.postmortem.kb_article_url and state.postmortem.kb_article_url.startswith("https://")
    assert state.notifications_failed == 0 and state.notifications_sent > 0

    # What it wrote: the event log up to `closed`, the Jira link, no failed delivery.
    conn = await asyncpg.connect(database_url)
    try:
        types = [r["type"] for r in await conn.fetch(
            "SELECT type FROM escalation_events WHERE escalation_id = $1 ORDER BY seq", state.escalation_id)]
        issue = await conn.fetchval("SELECT issue_key FROM jira_issues WHERE escalation_id = $1",
                                    state.escalation_id)
        failed = await conn.fetchval(
            "SELECT count(*) FROM notifications WHERE escalation_id = $1 AND status <> 'sent'",
            state.escalation_id)
    finally:
        await conn.close()
    assert types[0] == "opened" and types[-2:] == ["postmortem_completed", "closed"]
    for expected in ("escalated", "jira_linked", "acknowledged", "note_added", "resolved", "postmortem_started"):
        assert expected in types, expected
    assert issue == "ESC-1"
    assert failed == 0

    # `escalations status` shows who acknowledged and through which channel.
    status = await asyncio.to_thread(
        CliRunner().invoke, app, ["status", ticket, "--data-dir", str(tmp_path / "no-stack")],
        env={"TEMPORAL_ADDRESS": client.service_client.config.target_host, "DATABASE_URL": database_url,
             "COLUMNS": "300"})
    assert status.exit_code == 0, status.output
    assert "Alex Chen (Engineering) (via link:slack)" in status.stdout, status.stdout

    await _check_the_sweep_step(client, database_url, output, task_queue=described.task_queue, bystander=bystander)


async def _store_ticket(database_url: str, ticket_id: str) -> None:
    now = datetime.now(UTC)
    pool = await create_pool(database_url, max_size=1)
    try:
        await upsert_tickets(pool, [Ticket.model_validate({
            "id": ticket_id, "customer": {"id": "initech", "name": "Initech"}, "subject": "Login broken",
            "status": "open", "opened_at": now - timedelta(hours=1), "updated_at": now, "users_affected": 99,
        })], source="api")
    finally:
        await pool.close()


async def _check_the_sweep_step(client, database_url: str, output: str, *, task_queue: str, bystander: str) -> None:
    """Step 8: a stored ticket, one sweep restricted to it, the escalation it opened, closed again."""
    suffix = task_queue.removeprefix("demo-")
    ticket_id, sweep_id = f"T-{suffix}", f"demo-sweep-{suffix}"
    detail = "many-users: users_affected=40 ≥ 10"
    assert f"Globex Corporation files {ticket_id}: Dashboard export failing for the whole finance team" in output
    assert "many-users: users_affected_at_least 10 → priority P1" in output
    assert f"One CriteriaSweepWorkflow run ({sweep_id}, only {ticket_id}): " \
           "checked 1 · matched 1 · started 1 · skipped 0" in output
    assert f"{UI_URL}/namespaces/default/workflows/{sweep_id}" in output
    assert f"The sweep opened P1 escalation escalation-{ticket_id} on its own: trigger source sweep · " \
           f"criterion many-users · “{detail}”" in output
    assert re.search(rf"escalation escalation-{re.escape(ticket_id)} is closed", output), output
    assert f"nothing left on task queue {task_queue}" in output
    assert re.search(rf"auto-escalated\W+{re.escape(ticket_id)} \(Globex Corporation\) by the criteria sweep "
                     rf"{re.escape(sweep_id)}: {re.escape(detail)} → P1 escalation-{re.escape(ticket_id)}, closed",
                     output), output

    sweep = client.get_workflow_handle(sweep_id, result_type=SweepResult)
    described = await sweep.describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED and described.task_queue == task_queue
    assert await described.static_summary() == f"Demo criteria sweep · policy demo v3 · only {ticket_id}"
    result = await sweep.result()
    assert (result.checked, result.matched, result.started, result.skipped) == (1, 1, 1, 0), result
    assert [(s.ticket_id, s.rule, s.detail) for s in result.started_tickets] == [(ticket_id, "many-users", detail)]

    swept = client.get_workflow_handle(f"escalation-{ticket_id}", result_type=EscalationState)
    state = await swept.result()
    assert (state.status, state.priority, state.kind, state.customer.id) == ("closed", "P1", "priority", "globex")
    assert (state.trigger.source, state.trigger.criterion, state.trigger.detail) == ("sweep", "many-users", detail)
    assert state.acknowledged_by and state.resolution is not None
    assert state.postmortem is not None and state.postmortem.completed_at is not None
    assert state.notifications_failed == 0
    # Nothing is left running on the demo's temporary task queue.
    for workflow_id in (sweep_id, f"escalation-{ticket_id}", postmortem_id_for(ticket_id)):
        described = await client.get_workflow_handle(workflow_id).describe()
        assert described.status == WorkflowExecutionStatus.COMPLETED, workflow_id
        assert described.task_queue == task_queue, workflow_id

    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchrow("SELECT status, priority, users_affected, source FROM tickets WHERE id = $1",
                                     ticket_id)
        links = await conn.fetch("SELECT run_id, rule, detail, sweep_id FROM ticket_escalations WHERE ticket_id = $1",
                                 ticket_id)
        others = await conn.fetchval("SELECT count(*) FROM ticket_escalations WHERE ticket_id <> $1", ticket_id)
        types = [r["type"] for r in await conn.fetch(
            "SELECT type FROM escalation_events WHERE escalation_id = $1 ORDER BY seq", state.escalation_id)]
    finally:
        await conn.close()
    assert dict(stored) == {"status": "open", "priority": "P3", "users_affected": 40, "source": "demo"}
    assert [(r["run_id"], r["rule"], r["detail"]) for r in links] == [(state.escalation_id, "many-users", detail)]
    assert links[0]["sweep_id"].startswith(f"{sweep_id}/")
    assert others == 0  # the sweep was restricted to the demo's ticket
    assert bystander not in output
    with pytest.raises(RPCError) as missing:
        await client.get_workflow_handle(f"escalation-{bystander}").describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND
    assert types[0] == "opened" and types[-1] == "closed"
    assert "acknowledged" in types and "resolved" in types and "postmortem_completed" in types


def test_demo_without_a_stack_says_how_to_get_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["demo", "--data-dir", str(tmp_path)], env={"DATABASE_URL": None, "TEMPORAL_ADDRESS": None},
    )
    assert result.exit_code == 1
    assert "escalations dev" in result.output


async def test_fake_jira_answers_like_jira_cloud() -> None:
    async with FakeJira(email="bot@example.test", api_token="s3cret") as jira, httpx.AsyncClient() as http:
        issue_url = f"{jira.url}/rest/api/3/issue"
        fields = {"project": {"key": "ESC"}, "summary": "[P1] Salesforce sync", "labels": ["P1"],
                  "issuetype": {"name": "Task"}}
        denied = await http.post(issue_url, json={"fields": fields})
        assert denied.status_code == 401

        auth = ("bot@example.test", "s3cret")
        headers = {"Idempotency-Key": "k-1"}
        first = await http.post(issue_url, json={"fields": fields}, auth=auth, headers=headers)
        again = await http.post(issue_url, json={"fields": fields}, auth=auth, headers=headers)
        second = await http.post(issue_url, json={"fields": fields}, auth=auth)
        assert first.status_code == 201 and first.json()["key"] == "ESC-1"
        assert again.json() == first.json()
        assert second.json()["key"] == "ESC-2"

        invalid = await http.post(issue_url, json={"fields": {"summary": "no project"}}, auth=auth)
        assert invalid.status_code == 400 and "project" in invalid.json()["errors"]

        body = {"type": "doc", "version": 1, "content": []}
        comment = await http.post(f"{issue_url}/ESC-1/comment", json={"body": body}, auth=auth)
        assert comment.status_code == 201 and comment.json()["id"]
        missing = await http.post(f"{issue_url}/ESC-9/comment", json={"body": body}, auth=auth)
        assert missing.status_code == 404

        read = await http.get(f"{issue_url}/ESC-1", headers={
            "Authorization": "Basic " + base64.b64encode(b"bot@example.test:s3cret").decode()})
        assert read.status_code == 200
        assert read.json()["fields"]["summary"] == "[P1] Salesforce sync"
        assert read.json()["fields"]["comment"]["total"] == 1
        assert jira.issues["ESC-1"].labels == ["P1"]


async def test_the_demo_names_the_installed_sweep_interval(client, task_queue) -> None:
    """The demo tells how often the stack's sweep runs from the schedule Temporal holds, not
    from its own policy file (a stack on the default policy sweeps every 5 minutes)."""
    from escalations.cli.demo import sweep_sentence
    from escalations.policies import PolicySource
    from escalations.schedules import SCHEDULE_ID, installed_sweep, sweep_schedule

    schedule_id = f"test-sweep-{uuid.uuid4().hex[:8]}"
    assert await installed_sweep(client, schedule_id) is None
    assert sweep_sentence(None).startswith(f"No schedule runs it on this Temporal (`escalations schedule install` "
                                           f"or `escalations dev` installs {SCHEDULE_ID})")
    policy = PolicySource.from_setting(None).load(None)
    handle = await client.create_schedule(schedule_id, sweep_schedule(task_queue=task_queue, policy=policy),
                                          memo={"policy": policy.name, "policy_version": policy.version})
    try:
        installed = await installed_sweep(client, schedule_id)
        assert installed is not None and installed.every == timedelta(minutes=5) and not installed.paused
        assert sweep_sentence(installed) == (
            f"On this stack the schedule {SCHEDULE_ID} runs it every 5m with policy {policy.name} "
            f"v{policy.version}; the demo runs one sweep now, restricted to its own ticket.")
        await handle.pause()
        assert "(paused now)" in sweep_sentence(await installed_sweep(client, schedule_id))
    finally:
        await handle.delete()

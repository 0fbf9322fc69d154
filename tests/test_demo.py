"""``escalations demo`` end to end, and the fake Jira it brings along.

The demo runs as a user would run it: a separate process (``python -m starter demo``)
started in an empty working directory, finding Temporal and Postgres through the
environment, with its own worker, its own task queue and its built-in Jira receiver.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from schemas import keys
from schemas.escalation import EscalationState
from stack.fake_jira import FakeJira
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
    # An empty working directory and a data dir without stack.json: everything comes from
    # the environment and the installed package.
    code, output, elapsed = await run_demo(
        ["--data-dir", str(tmp_path / "no-stack"), "--ticket", ticket, "--pace", "0"],
        env, tmp_path, timeout=240,
    )
    print(output)
    print(f"demo took {elapsed:.1f}s")
    assert code == 0, output

    # The narration: the time scale, each blog step, the auto-escalation, Jira, the link.
    assert "1 s = 1 min" in output
    for step in ("Initial contact", "First response & logging", "Escalation to Tier 2 / Engineering",
                 "Customer communication", "Root cause identified", "Resolution & follow-up",
                 "Postmortem & improvement"):
        assert step in output, step
    assert "tier2 → engineering (auto: true)" in output
    assert "Ticket moved to Jira: ESC-1" in output
    assert "every 2 hours until resolved" in output
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
    assert state.acknowledged_by and "Engineering" in state.acknowledged_by
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

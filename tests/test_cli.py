"""Operator commands (``escalations start/ack/.../status/list``) against the live dev server,
the real worker and a real Postgres. Commands run in a thread (each does ``asyncio.run``)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from escalations.cli.escalations import relative
from escalations.cli.principal import cli_principal
from tests.helpers.codec import TEST_ENV
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_path
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request


@pytest.fixture
def cli_env(client, task_queue, database_url) -> dict[str, str | None]:
    return {
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": client.namespace,
        "ESCALATION_TASK_QUEUE": task_queue,
        "DATABASE_URL": database_url,
        "ESCALATION_POLICY_FILE": str(policy_path("fast")),
        "ESCALATION_UI_URL": "http://ui.example:8233",
        "COLUMNS": "200",
        **TEST_ENV,
    }


@pytest.fixture
def cli(cli_env, tmp_path):
    from starter import app

    runner = CliRunner()

    async def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
        merged = {**cli_env, **(env or {})}
        return await asyncio.to_thread(runner.invoke, app, [*args, "--data-dir", str(tmp_path)], env=merged)

    return run


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.stderr}\n{result.exception!r}"
    return result.stdout


def one_line_error(result: Result) -> str:
    """Exit 1 with exactly one line on stderr and no traceback."""
    assert result.exit_code == 1, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def request_file(tmp_path: Path, **overrides: Any) -> tuple[str, Path]:
    request = blog_request(**overrides)
    path = tmp_path / f"{request.ticket_id}.json"
    path.write_text(json.dumps(request.as_body()), encoding="utf-8")
    return request.ticket_id, path


async def test_an_escalation_from_start_to_closed(cli, start_worker, tmp_path):
    customer = f"cli-{uuid.uuid4().hex[:6]}"
    ticket, file = request_file(tmp_path, customer={"id": customer, "name": "CLI Corp"})
    async with start_worker("fast"):
        out = ok(await cli("start", str(file)))
        assert f"started escalation-{ticket} (run " in out
        assert f"Temporal UI: http://ui.example:8233/namespaces/default/workflows/escalation-{ticket}/" in out

        async def shown() -> str:
            return ok(await cli("status", ticket))

        panel = await eventually(shown, timeout=15)
        assert f"{ticket} · Salesforce sync failing" in panel
        assert "Tier 2 Support (tier2)" in panel or "Engineering (engineering)" in panel
        assert "ack due" in panel and " UTC (in " in panel and "SLA breached" in panel

        assert "acknowledged" in ok(await cli("ack", ticket, "--by", "dana"))
        out = ok(await cli("note", ticket, "--author", "dana", "--text", "Fix on its way", "--customer-visible"))
        assert "note added" in out
        out = ok(await cli("escalate", ticket, "--by", "dana", "--reason", "needs management [VIP]",
                           "--to-level", "management"))
        assert "level Management (management)" in out
        assert "paused" in ok(await cli("pause", ticket, "--by", "dana", "--reason", "waiting on customer"))
        assert "resumed" in ok(await cli("resume", ticket, "--by", "dana"))
        out = ok(await cli("resolve", ticket, "--by", "dana", "--root-cause", "schema change",
                           "--mitigation", "mapped the field", "--preventive-action", "monitor schemas",
                           "--preventive-action", "contract tests"))
        assert "status resolved" in out
        out = ok(await cli("postmortem", ticket, "--by", "dana", "--summary", "sync broke",
                           "--root-cause", "schema change", "--improvement", "alerting",
                           "--improvement", "runbook", "--kb-url", "https://kb.example.com/sf"))
        assert "postmortem completed" in out and "status closed" in out

        closed = ok(await cli("status", ticket))  # from the read model
        assert "closed" in closed and "completed by dana" in closed and "needs management [VIP]" in closed
        # Beside each self-declared name, the principal that ran the command: the OS user.
        via = f"(via {cli_principal()})"
        words = " ".join(closed.split())
        for shown in (f"resolved by dana {via}", f"completed by dana {via}", f"opened by cli {via}",
                      f"│ by dana {via} │ needs management [VIP]"):
            assert shown in words, shown
        without_db = ok(await cli("status", ticket, env={"DATABASE_URL": None}))  # the run's result
        assert "closed" in without_db

        async def listed() -> str:
            table = ok(await cli("list", "--customer-id", customer))
            assert ticket in table and "closed" in table
            return table

        await eventually(listed, timeout=15)
        assert ticket not in ok(await cli("list", "--customer-id", customer, "--status", "open"))


async def test_errors_are_one_line(cli, start_worker, tmp_path):
    unknown = f"NOPE-{uuid.uuid4().hex[:6]}"
    assert one_line_error(await cli("ack", unknown, "--by", "x")) == f"error: no escalation for ticket {unknown}"
    assert one_line_error(await cli("status", unknown)) == f"error: no escalation for ticket {unknown}"
    ticket, file = request_file(tmp_path)
    async with start_worker("fast"):
        ok(await cli("start", str(file)))
        line = one_line_error(await cli("start", str(file)))
        assert line == f"error: ticket {ticket} already has an open escalation (escalation-{ticket})"
        ok(await cli("ack", ticket, "--by", "dana"))
        line = one_line_error(await cli("ack", ticket, "--by", "sam"))
        assert line.startswith(f"error: cannot acknowledge: escalation {ticket} is acknowledged")
        assert "not paused" in one_line_error(await cli("resume", ticket, "--by", "sam"))
        assert "no postmortem is open" in one_line_error(await cli(
            "postmortem", ticket, "--by", "x", "--summary", "s", "--root-cause", "r", "--improvement", "i"))
    assert "by: String should have at least 1 character" in one_line_error(await cli("ack", ticket, "--by", ""))
    assert "improvements" in one_line_error(await cli(
        "postmortem", ticket, "--by", "x", "--summary", "s", "--root-cause", "r"))
    assert "status: Input should be" in one_line_error(await cli("list", "--status", "gone"))
    assert "customer_id must match" in one_line_error(await cli("list", "--customer-id", "x' OR 'a'='a"))
    # What opened an escalation is for escalations to say, never the request file.
    forged = blog_request().as_body() | {"trigger": {"source": "sweep", "criterion": "many-users"}}
    file = tmp_path / "forged.json"
    file.write_text(json.dumps(forged), encoding="utf-8")
    line = one_line_error(await cli("start", str(file)))
    assert "trigger: set by escalations itself" in line
    traversal = tmp_path / "traversal.json"
    traversal.write_text(json.dumps(blog_request().as_body() | {"policy": "../../../../etc/hostname"}),
                         encoding="utf-8")
    assert "policy: String should match pattern" in one_line_error(await cli("start", str(traversal)))

    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert "is not JSON" in one_line_error(await cli("start", str(bad)))
    bad.write_text(json.dumps({"ticket_id": "X-1", "priority": "P9"}), encoding="utf-8")
    assert "invalid input: title: Field required" in one_line_error(await cli("start", str(bad)))
    assert "cannot read" in one_line_error(await cli("start", str(tmp_path / "missing.json")))
    _, unroutable = request_file(tmp_path, kind="functional", category="crm-sync")
    assert "'crm-sync' has no route" in one_line_error(await cli("start", str(unroutable)))

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    line = one_line_error(await cli("ack", ticket, "--by", "x", env={"TEMPORAL_ADDRESS": f"127.0.0.1:{port}"}))
    assert line == f"error: cannot connect to Temporal at 127.0.0.1:{port}: connection refused"


async def test_a_real_process_exits_1_with_one_line(cli_env):
    unknown = f"NOPE-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, **{k: v for k, v in cli_env.items() if v is not None}}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from starter import main; main()", "ack", unknown, "--by", "dana",
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    assert err.decode().strip().splitlines() == [f"error: no escalation for ticket {unknown}"]
    assert out == b""


def test_relative_times():
    now = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
    assert relative(now + timedelta(minutes=12, seconds=5), now) == "in 12 min"
    assert relative(now - timedelta(minutes=3), now) == "3 min ago"
    assert relative(now + timedelta(seconds=42), now) == "in 42 s"
    assert relative(now + timedelta(hours=2, minutes=5), now) == "in 2 h 5 min"
    assert relative(now - timedelta(days=2, hours=3), now) == "2 d 3 h ago"
    assert relative(now, now) == "now"

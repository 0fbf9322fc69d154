"""The API served by uvicorn on a free port: ``serve()``, ``escalations api``, the README's curl
walk-through (docs/walkthrough.sh, run verbatim) and a bounded schemathesis run."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from escalations.api.server import ApiStartupError, serve
from escalations.settings import ConfigError
from tests.helpers.api import TOKEN, api_settings, running_api
from tests.helpers.codec import TEST_ENV
from tests.helpers.escalations import start_escalation
from tests.helpers.paths import ROOT
from tests.helpers.requests import blog_request
from tests.helpers.servers import binary

WALKTHROUGH = ROOT / "docs" / "walkthrough.sh"
README = ROOT / "README.md"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_serve_runs_until_stop_is_set(client, database_url, task_queue):
    settings = api_settings(client, database_url, task_queue)
    async with running_api(settings) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            health = await http.get("/healthz")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            denied = await http.get("/escalations")
            assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
            listed = await http.get("/escalations", headers={"Authorization": f"Bearer {TOKEN}"})
            assert listed.status_code == 200
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=url) as http:
            await http.get("/healthz")


async def test_serve_fails_clearly(client, database_url, task_queue):
    settings = api_settings(client, database_url, task_queue)
    with pytest.raises(ConfigError, match="ESCALATION_API_TOKENS"):
        await serve(settings.with_overrides(tokens=()), asyncio.Event())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ApiStartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            await serve(settings.with_overrides(port=port), asyncio.Event())
    # Temporal down at start is not a start-up failure: the API answers 503 until it is back
    # (tests/test_api_faults.py).


def test_escalations_api_refuses_to_run_open():
    from starter import app

    result = CliRunner().invoke(app, ["api"], env={"ESCALATION_API_TOKENS": "", "DATABASE_URL": "postgresql://x/y"})
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: ESCALATION_API_TOKENS is empty: the API refuses to start without bearer tokens "
        "(set one or more, comma-separated, or ESCALATION_API_TOKENS_FILE)"
    ]


async def test_escalations_api_command_serves_and_stops_on_sigterm(client, database_url, task_queue):
    port = free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "ESCALATION_API_TOKENS": TOKEN,
        "DATABASE_URL": database_url,
        "ESCALATION_TASK_QUEUE": task_queue,
        **TEST_ENV,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from starter import main; main()", "api", "--port", str(port),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                try:
                    health = await http.get("/healthz")
                    break
                except httpx.TransportError:
                    assert process.returncode is None, (await process.stdout.read()).decode()
                    assert asyncio.get_running_loop().time() < deadline, "escalations api did not listen"
                    await asyncio.sleep(0.1)
            assert health.status_code == 200, health.text
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=20)
        assert process.returncode == 0, output.decode()
        assert f"API listening on http://127.0.0.1:{port}" in output.decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def run_walkthrough(url: str, ticket: str) -> tuple[int, str, str]:
    env = {**os.environ, "API": url, "TOKEN": TOKEN, "TICKET": ticket,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = await asyncio.create_subprocess_exec(
        "bash", str(WALKTHROUGH), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_curl_walkthrough_runs_verbatim(client, database_url, task_queue, start_worker):
    if binary("curl") is None:
        pytest.skip("curl is not installed")
    ticket = f"SF-{uuid.uuid4().hex[:8]}"
    async with start_worker("fast"), running_api(api_settings(client, database_url, task_queue)) as url:
        code, out, err = await run_walkthrough(url, ticket)
    assert code == 0, f"walkthrough failed ({code}):\n{out}\n{err}"
    steps = re.findall(r"^(\w+): HTTP (\d+)$", out, re.MULTILINE)
    assert steps == [("start", "201"), ("acknowledge", "200"), ("note", "200"), ("resolve", "200"),
                     ("postmortem", "200"), ("csat", "200"), ("state", "200")], out
    assert f"workflow escalation-{ticket}, run " in out
    assert "  status resolved" in out and out.rstrip().splitlines()[-1].startswith("  status closed")


async def run_walkthrough_as(url: str, token: str, ticket: str | None) -> tuple[int, str, str]:
    env = {**os.environ, "API": url, "TOKEN": token,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("TICKET", None)
    if ticket is not None:
        env["TICKET"] = ticket
    process = await asyncio.create_subprocess_exec(
        "bash", str(WALKTHROUGH), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_walkthrough_stops_at_a_failed_step_and_shows_its_problem(client, database_url, task_queue):
    """The quickstart's escalation is open and the walk-through is run on the same ticket: the
    start is a 409, and the script says so, shows the problem document and stops (exit 1)."""
    if binary("curl") is None:
        pytest.skip("curl is not installed")
    assert 'TICKET="${TICKET:-SF-API-$(date -u +%Y%m%d-%H%M%S)}"' in WALKTHROUGH.read_text(), \
        "the walk-through's own ticket id (never the quickstart's SF-1042) by default"
    ticket = f"SF-{uuid.uuid4().hex[:8]}"
    await start_escalation(client, blog_request(ticket), task_queue)  # the quickstart's, still open
    async with running_api(api_settings(client, database_url, task_queue)) as url:
        code, out, err = await run_walkthrough_as(url, TOKEN, ticket)
        assert (code, out) == (1, "start: HTTP 409\n"), f"{code}\n{out}\n{err}"
        said, document = err.strip().split("\n", 1)
        assert said == "start failed: POST /escalations answered HTTP 409:"
        problem = json.loads(document)
        assert problem["status"] == 409 and ticket in problem["detail"]

        code, out, err = await run_walkthrough_as(url, "not-a-token", None)
        assert (code, out) == (1, "start: HTTP 401\n"), f"{code}\n{out}\n{err}"
        assert json.loads(err.strip().split("\n", 1)[1])["status"] == 401
    code, out, err = await run_walkthrough_as(url, TOKEN, ticket)  # the API has stopped
    assert (code, out) == (1, ""), f"{code}\n{out}\n{err}"
    assert err.strip().splitlines()[-1] == f"start failed: no answer from {url}"


def test_api_docs_embed_the_walkthrough_verbatim():
    """docs/api.md shows the walk-through; the block must be docs/walkthrough.sh, byte for byte."""
    api_docs = ROOT / "docs" / "api.md"
    if not api_docs.exists():
        print("docs/api.md does not exist yet: nothing to compare")
        pytest.skip("docs/api.md does not exist yet")
    text = api_docs.read_text(encoding="utf-8")
    blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    marker = "# Walk-through of the blog's Salesforce-sync escalation over the HTTP API"
    embedded = [block for block in blocks if marker in block]
    assert embedded, "docs/api.md has no ```bash block holding the walk-through (docs/walkthrough.sh)"
    assert embedded[0] == WALKTHROUGH.read_text(encoding="utf-8")


async def test_schemathesis_finds_no_server_errors_and_conforming_responses(
    client, database_url, task_queue, start_worker, tmp_path
):
    schemathesis = binary("schemathesis")
    if schemathesis is None:
        pytest.skip("schemathesis is not installed")
    async with start_worker("fast"), running_api(api_settings(client, database_url, task_queue)) as url:
        process = await asyncio.create_subprocess_exec(
            str(schemathesis), "run", f"{url}/openapi.json",
            "--header", f"Authorization: Bearer {TOKEN}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                        "response_schema_conformance",
            "--include-path-regex", "^/(escalations|escalation-runs|kpis|healthz)",
            "--phases", "examples,fuzzing",  # the coverage phase alone takes ~40 s
            "--max-examples", "5",
            "--seed", "20261127",
            "--workers", "1",
            "--request-timeout", "30",
            "--generation-database", "none",
            "--no-color",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    text = output.decode()
    assert process.returncode == 0, text
    tested = re.search(r"Tested:\s+(\d+)", text)
    assert tested and int(tested.group(1)) >= 14, text  # every /escalations, /escalation-runs, /kpis, /healthz operation

"""`escalations dev` end to end: ready → stack.json → SIGTERM stops everything → restart resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from schemas.escalation import AcknowledgeCommand, EscalationState
from escalations.devstack.postgres import fallback_cluster_dir, free_port
from tests.conftest import ROOT, blog_request, current_state, eventually, start_escalation

STACK_KEYS = {"temporal_address", "ui_url", "api_url", "database_url", "api_token", "webhook_secret"}


def start_dev(data_dir: Path, ports: dict[str, int], log: Path,
              environ: dict[str, str] | None = None) -> subprocess.Popen:
    """``escalations dev`` as a subprocess, in a clean environment plus ``environ``."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TEMPORAL_", "ESCALATION_")) and key != "DATABASE_URL"}
    env.update(environ or {})
    return subprocess.Popen(
        [sys.executable, "-m", "starter", "dev", "--data-dir", str(data_dir),
         "--policy", str(ROOT / "escalations" / "policies" / "demo.yaml"),
         "--temporal-port", str(ports["temporal"]), "--ui-port", str(ports["ui"]), "--api-port", str(ports["api"])],
        cwd=data_dir.parent, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


def wait_for_stack(data_dir: Path, process: subprocess.Popen, log: Path, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"escalations dev exited early:\n{log.read_text()[-3000:]}"
        stack = data_dir / "stack.json"
        if stack.exists():
            return json.loads(stack.read_text())
        time.sleep(0.2)
    raise AssertionError(f"no stack.json after {timeout}s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(60)


def children_alive(data_dir: Path) -> list[str]:
    # Run as root with tmp_path out of the Postgres user's reach, the cluster is the fallback one.
    places = (str(data_dir), str(fallback_cluster_dir(data_dir)))
    result = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines()
            if any(place in line for place in places) and ("temporal" in line or "postgres" in line)]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "data"
    yield data_dir
    shutil.rmtree(fallback_cluster_dir(data_dir), ignore_errors=True)


async def test_dev_stack_runs_stops_and_resumes(tmp_path, data_dir):
    ports = {"temporal": free_port(), "ui": free_port(), "api": free_port()}
    log = tmp_path / "dev.log"
    dev = start_dev(data_dir, ports, log)
    try:
        stack = wait_for_stack(data_dir, dev, log)
        assert STACK_KEYS <= set(stack)
        assert stack["temporal_address"].endswith(f":{ports['temporal']}")
        assert stack["ui_url"].endswith(f":{ports['ui']}") and stack["api_url"].endswith(f":{ports['api']}")
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{stack['api_url']}/healthz")).status_code == 200
            assert (await http.get(stack["ui_url"])).status_code == 200
            listed = await http.get(f"{stack['api_url']}/escalations",
                                    headers={"Authorization": f"Bearer {stack['api_token']}"})
            assert listed.status_code == 200
        client = await Client.connect(stack["temporal_address"], data_converter=pydantic_data_converter)
        schedules = [s.id async for s in await client.list_schedules()]
        assert "escalation-criteria-sweep" in schedules
        handle = await start_escalation(client, blog_request("DEV-1"), "escalations")
        opened = await eventually(lambda: current_state(handle), timeout=20)
        assert opened.policy.name == "demo"
    finally:
        assert stop(dev) == 0, log.read_text()[-3000:]
    assert not (data_dir / "stack.json").exists()
    assert children_alive(data_dir) == [], "the dev stack left processes behind"

    # Same data dir: the running escalation is still there and answers.
    dev = start_dev(data_dir, ports, log)
    try:
        stack = wait_for_stack(data_dir, dev, log)
        client = await Client.connect(stack["temporal_address"], data_converter=pydantic_data_converter)
        handle = client.get_workflow_handle("escalation-DEV-1")
        resumed = await eventually(lambda: current_state(handle), timeout=20)
        assert resumed.escalation_id == opened.escalation_id
        acked = await handle.execute_update("acknowledge", AcknowledgeCommand(by="dana"),
                                            result_type=EscalationState)
        assert acked.status == "acknowledged"
    finally:
        assert stop(dev) == 0, log.read_text()[-3000:]

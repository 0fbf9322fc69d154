"""`escalations dev` end to end: ready → stack.json → SIGTERM stops everything → restart resumes.

Encryption is on: stack.json carries the generated key, Temporal holds ciphertext, a command
reading stack.json and the UI (through the API's codec endpoint) read the run as before, and
the restarted stack keeps the key."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from escalations.devstack.postgres import fallback_cluster_dir
from escalations.temporal import connect
from schemas.escalation import AcknowledgeCommand, EscalationState
from tests.helpers.codec import codec_of, history_dump, readable
from tests.helpers.devstack import children_alive, free_ports, start_dev, state_home, stop, wait_for_stack
from tests.helpers.escalations import current_state, start_escalation
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request

STACK_KEYS = {"temporal_address", "ui_url", "api_url", "database_url", "api_token", "api_read_token",
              "webhook_secret", "slack_signing_secret", "action_key", "public_url", "encryption_keys"}


async def assert_private(data_dir: Path, stack: dict, log: Path) -> None:
    """Nothing secret on the terminal; files only their owner reads; PostgreSQL wants the password."""
    kept = json.loads((data_dir / "secrets.json").read_text())
    output = await eventually(lambda: _printed_summary(log), timeout=10)
    for secret in (stack["api_token"], stack["webhook_secret"], stack["database_url"], kept["postgres_password"],
                   stack["slack_signing_secret"], stack["action_key"]):
        assert secret not in output
    assert str(data_dir / "stack.json") in output
    for name in ("stack.json", "secrets.json", "temporal.db", "temporal.log"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE(data_dir.stat().st_mode) in (0o700, 0o710)  # 710: the Postgres user's group, as root
    url = urlsplit(stack["database_url"])
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(f"postgresql://postgres@{url.hostname}:{url.port}/postgres", timeout=10)


async def _printed_summary(log: Path) -> str:
    output = log.read_text()
    assert "escalations dev stack is ready" in output and "Ctrl-C" in output
    return output


async def commands_find_the_running_stack(data_dir: Path, tmp_path: Path) -> None:
    """`make run ARGS="--data-dir X"`, then commands from anywhere, with no flag and no variable:
    they use X (remembered by `escalations dev`) and say so."""
    remembered = json.loads((state_home(data_dir) / "escalations" / "last-stack.json").read_text())
    assert remembered["data_dir"] == str(data_dir.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TEMPORAL_", "ESCALATION_")) and key != "DATABASE_URL"}
    env["XDG_STATE_HOME"] = str(state_home(data_dir))
    note = (f"note: using the stack in {data_dir.resolve()} (the last one `escalations dev` started; "
            "--data-dir DIR or ESCALATION_DATA_DIR chooses another)")
    out: dict[str, str] = {}
    for args in (["list", "--json"], ["status", "DEV-1", "--json"], ["policy", "check"]):
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "starter", *args], cwd=elsewhere,
                                       env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        assert done.stderr.strip() == note, args
        out[args[0]] = done.stdout
    assert "DEV-1" in {item["ticket_id"] for item in json.loads(out["list"])["items"]}
    assert json.loads(out["status"])["ticket_id"] == "DEV-1"
    assert f"checking the running stack's policy ({data_dir.resolve() / 'stack.json'})" in out["policy"]
    assert "policy demo" in out["policy"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "data"
    yield data_dir
    shutil.rmtree(fallback_cluster_dir(data_dir), ignore_errors=True)


async def test_dev_stack_runs_stops_and_resumes(tmp_path, data_dir):
    ports = free_ports()
    log = tmp_path / "dev.log"
    dev = start_dev(data_dir, ports, log)
    try:
        stack = wait_for_stack(data_dir, dev, log)
        assert STACK_KEYS <= set(stack)
        await assert_private(data_dir, stack, log)
        assert stack["temporal_address"].endswith(f":{ports['temporal']}")
        assert stack["ui_url"].endswith(f":{ports['ui']}") and stack["api_url"].endswith(f":{ports['api']}")
        assert stack["public_url"] == stack["api_url"]  # action links point at the stack's own API
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{stack['api_url']}/healthz")).status_code == 200
            assert (await http.get(stack["ui_url"])).status_code == 200
            listed = await http.get(f"{stack['api_url']}/escalations",
                                    headers={"Authorization": f"Bearer {stack['api_token']}"})
            assert listed.status_code == 200
            # The read token reads, and only reads.
            reader = {"Authorization": f"Bearer {stack['api_read_token']}"}
            assert (await http.get(f"{stack['api_url']}/escalations", headers=reader)).status_code == 200
            refused = await http.post(f"{stack['api_url']}/escalations", json={}, headers=reader)
            assert refused.status_code == 403 and refused.json()["missing_scope"] == "start"
        assert "on, keys dev" in log.read_text()  # the summary names the key, never shows it
        assert stack["encryption_keys"] not in log.read_text()
        client = await connect({"target_host": stack["temporal_address"]}, codec_of(stack["encryption_keys"]))
        schedules = [s.id async for s in await client.list_schedules()]
        assert "escalation-criteria-sweep" in schedules
        handle = await start_escalation(client, blog_request("DEV-1"), "escalations")
        opened = await eventually(lambda: current_state(handle), timeout=20)
        assert opened.policy.name == "demo"
        await _check_encryption(stack, data_dir)
        await commands_find_the_running_stack(data_dir, tmp_path)
    finally:
        assert stop(dev) == 0, log.read_text()[-3000:]
    assert not (data_dir / "stack.json").exists()
    assert children_alive(data_dir) == [], "the dev stack left processes behind"

    # Same data dir: the running escalation is still there and answers.
    dev = start_dev(data_dir, ports, log)
    try:
        stack = wait_for_stack(data_dir, dev, log)
        # The same key: the secrets file keeps it across restarts.
        client = await connect({"target_host": stack["temporal_address"]}, codec_of(stack["encryption_keys"]))
        handle = client.get_workflow_handle("escalation-DEV-1")
        resumed = await eventually(lambda: current_state(handle), timeout=20)
        assert resumed.escalation_id == opened.escalation_id
        acked = await handle.execute_update("acknowledge", AcknowledgeCommand(by="dana"),
                                            result_type=EscalationState)
        assert acked.status == "acknowledged"
    finally:
        assert stop(dev) == 0, log.read_text()[-3000:]


async def _check_encryption(stack: dict, data_dir: Path) -> None:
    """Ciphertext in Temporal; plaintext again through stack.json (CLI), the codec endpoint
    (``temporal`` CLI with the API's token) and the UI (its settings name the endpoint, and a
    call from its origin needs no token)."""
    address, api = stack["temporal_address"], stack["api_url"]
    assert "Acme Corp" not in readable(await history_dump(address, "escalation-DEV-1"))
    decoded = await history_dump(address, "escalation-DEV-1", "--codec-endpoint", f"{api}/codec",
                                 "--codec-auth", f"Bearer {stack['api_token']}")
    assert "Acme Corp" in readable(decoded)

    from starter import app

    result = await asyncio.to_thread(CliRunner().invoke, app, ["status", "DEV-1", "--data-dir", str(data_dir)],
                                     env={"TEMPORAL_ADDRESS": None, "ESCALATION_ENCRYPTION_KEYS": None,
                                          "ESCALATION_ENCRYPTION_KEYS_FILE": None, "DATABASE_URL": None,
                                          "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Acme Corp (acme)" in result.output

    async with httpx.AsyncClient() as http:
        settings = (await http.get(f"{stack['ui_url']}/api/v1/settings")).json()
        assert settings["Codec"]["Endpoint"] == f"{api}/codec", settings.get("Codec")
        raw = json.loads(await history_dump(address, "escalation-DEV-1"))
        summary = raw["events"][0]["userMetadata"]["summary"]
        from_ui = await http.post(f"{api}/codec/decode", json={"payloads": [summary]},
                                  headers={"Origin": stack["ui_url"], "X-Namespace": "default"})
        assert from_ui.status_code == 200, from_ui.text
        assert from_ui.headers["access-control-allow-origin"] == stack["ui_url"]
        assert "Acme Corp" in readable(json.dumps(from_ui.json()))

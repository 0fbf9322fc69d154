"""Which stack a command talks to: ``--data-dir``, ``ESCALATION_DATA_DIR``, a running ``.data``,
the data dir ``escalations dev`` last started in (while it runs), else ``.data``; messages that
name the flag and the variable; ``policy check`` without a file; one line for every expected
error (tests/test_dev_stack.py runs ``escalations dev`` itself and a command finding it)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from escalations.connect import (
    DEFAULT_DATA_DIR,
    REMEMBERED_FILE,
    StackInfo,
    choose_data_dir,
    remember_data_dir,
    resolve,
    write_stack,
)
from escalations.settings import CliSettings
from tests.helpers.policies import policy_path

POINTER = "--data-dir DIR or ESCALATION_DATA_DIR"


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def stack_in(folder: Path, *, temporal: str = "127.0.0.1:1", database_url: str = "postgresql://x@127.0.0.1:1/x",
             pid: int | None = None, **values: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_stack(folder, StackInfo(temporal_address=temporal, database_url=database_url,
                                  pid=os.getpid() if pid is None else pid, **values))
    return folder


@pytest.fixture
def elsewhere(tmp_path, monkeypatch) -> Path:
    """An empty working directory (no .data) and a private state dir; no stack variables."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def invoke(*args: str, env: dict[str, str | None] | None = None, state: Path | None = None) -> Result:
    from starter import app

    base: dict[str, str | None] = {"TEMPORAL_ADDRESS": None, "DATABASE_URL": None, "ESCALATION_TASK_QUEUE": None,
                                   "ESCALATION_DATA_DIR": None, "ESCALATION_POLICY_FILE": None,
                                   "XDG_STATE_HOME": str(state) if state else None, "COLUMNS": "120"}
    return CliRunner().invoke(app, list(args), env={**base, **(env or {})})


def one_error_line(result: Result, code: int = 1) -> str:
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- the order -------------------------------------------------------------------------


def test_the_data_dir_is_the_flag_the_variable_a_running_dot_data_then_the_remembered_one(elsewhere, tmp_path):
    state = tmp_path / "state"
    settings = CliSettings.of(state_home=state)
    nothing = choose_data_dir(None, settings)
    assert (nothing.path, nothing.source, nothing.note) == (DEFAULT_DATA_DIR, "default", None)
    # Nothing says where Temporal is: the error says how to say it.
    assert POINTER in resolve(nothing.path, environ={}).no_stack_hint()
    assert resolve(nothing.path, environ={"TEMPORAL_ADDRESS": "127.0.0.1:1"}).no_stack_hint() == ""
    remembered = stack_in(tmp_path / "other")
    remember_data_dir(settings.state_dir, remembered, os.getpid())
    assert settings.state_dir == state / "escalations"
    assert json.loads((state / "escalations" / REMEMBERED_FILE).read_text())["data_dir"] == str(remembered.resolve())
    chosen = choose_data_dir(None, settings)
    assert (chosen.path, chosen.source) == (remembered.resolve(), "remembered")
    assert f"using the stack in {remembered.resolve()}" in chosen.note and POINTER in chosen.note
    # The variable and the flag win; neither is announced (the user named it).
    from_env = choose_data_dir(None, CliSettings.of(state_home=state, data_dir=tmp_path / "env"))
    assert (from_env.path, from_env.source, from_env.note) == (tmp_path / "env", "environment", None)
    assert choose_data_dir(Path("flag"), settings).path == Path("flag")
    # A stack running in the working directory's .data is the default, remembered or not.
    stack_in(elsewhere / ".data")
    assert choose_data_dir(None, settings).source == "default"
    # A stack that is no longer running is not remembered.
    (elsewhere / ".data" / "stack.json").unlink()
    stack_in(remembered, pid=dead_pid())
    assert choose_data_dir(None, settings).source == "default"


async def test_commands_find_the_stack_by_variable_and_by_memory(elsewhere, tmp_path, client, database_url):
    address = client.service_client.config.target_host
    folder = stack_in(tmp_path / "stack", temporal=address, database_url=database_url)
    by_variable = await asyncio.to_thread(invoke, "list", "--json", env={"ESCALATION_DATA_DIR": str(folder)})
    assert by_variable.exit_code == 0, by_variable.output
    assert json.loads(by_variable.stdout)["more"] in (True, False) and by_variable.stderr == ""

    state = tmp_path / "state"
    remember_data_dir(state / "escalations", folder, os.getpid())
    remembered = await asyncio.to_thread(invoke, "kpis", "--json", state=state)
    assert remembered.exit_code == 0, remembered.output
    assert remembered.stderr.strip() == (f"note: using the stack in {folder.resolve()} (the last one "
                                         f"`escalations dev` started; {POINTER} chooses another)")
    assert json.loads(remembered.stdout)["escalations"] == 0

    stack_in(folder, temporal=address, database_url=database_url, pid=dead_pid())  # that stack stopped
    line = one_error_line(await asyncio.to_thread(invoke, "kpis", state=state))
    assert line == (f"error: no database: set DATABASE_URL, or run `escalations dev` and point to its data dir "
                    f"with {POINTER} (no stack.json in .data)")


def test_without_a_stack_every_message_names_the_flag_and_the_variable(elsewhere, tmp_path):
    state = tmp_path / "state"
    for args in (("demo",), ("kpis",), ("csat", "X-1", "--score", "5"), ("migrate",), ("rebuild-read-model",)):
        line = one_error_line(invoke(*args, state=state))
        assert POINTER in line and "escalations dev" in line, (args, line)
    # Temporal at its built-in default address, refused (nothing listens on this one).
    line = one_error_line(invoke("status", "SF-1042", env={"TEMPORAL_ADDRESS": "127.0.0.1:1"}, state=state))
    assert line == "error: cannot connect to Temporal at 127.0.0.1:1: connection refused"
    (tmp_path / "empty").mkdir()
    line = one_error_line(invoke("replay", "--data-dir", str(tmp_path / "empty"), env={
        "TEMPORAL_ADDRESS": "127.0.0.1:1"}, state=state), code=2)  # replay's code for "could not run"
    assert "cannot connect to Temporal at 127.0.0.1:1" in line


def test_expected_errors_are_one_line_everywhere(elsewhere, tmp_path):
    state = tmp_path / "state"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "stack.json").write_text("{not json", encoding="utf-8")
    for args in (("status", "X-1"), ("list",), ("kpis",), ("schedule", "trigger"), ("webhook-secret", "https://x")):
        line = one_error_line(invoke(*args, "--data-dir", str(broken), state=state))
        assert f"cannot use {broken / 'stack.json'}: not JSON" in line, (args, line)
    refused = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    tickets = tmp_path / "tickets.jsonl"
    tickets.write_text(json.dumps({
        "id": "T-1", "customer": {"id": "acme", "name": "Acme"}, "subject": "s", "status": "open",
        "opened_at": "2026-11-27T09:00:00Z", "updated_at": "2026-11-27T10:00:00Z"}) + "\n", encoding="utf-8")
    for args in (("migrate",), ("tickets", "import", str(tickets)), ("schedule", "trigger"),
                 ("schedule", "install"), ("kpis",)):
        line = one_error_line(invoke(*args, env=refused, state=state))
        assert "refused" in line.lower() or "connect" in line.lower(), (args, line)
    # The worker sets up the process's logging: in a process of its own, not the test's.
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("TEMPORAL_", "ESCALATION_")) and key != "DATABASE_URL"}
    for extra, expected in ((refused, "cannot connect to Temporal: connection refused"), ({}, "DATABASE_URL")):
        done = subprocess.run([sys.executable, "-m", "starter", "worker"], cwd=elsewhere, env={**clean, **extra},
                              capture_output=True, text=True, timeout=60)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert expected in lines[0]


# -- policy check without a file -------------------------------------------------------


def test_policy_check_without_a_file_checks_the_policy_in_effect(elsewhere, tmp_path):
    state = tmp_path / "state"
    packaged = invoke("policy", "check", state=state)
    assert packaged.exit_code == 0, packaged.output
    assert "checking the packaged default policy (no stack runs in .data): " in packaged.stdout
    assert "valid: " in packaged.stdout and "policy default" in packaged.stdout

    by_variable = invoke("policy", "check", env={"ESCALATION_POLICY_FILE": str(policy_path("fast"))}, state=state)
    assert by_variable.exit_code == 0 and f"checking ESCALATION_POLICY_FILE: {policy_path('fast')}" in by_variable.stdout

    folder = stack_in(tmp_path / "stack", policy_file=str(policy_path("fast")))
    running = invoke("policy", "check", "--data-dir", str(folder), state=state)
    assert running.exit_code == 0, running.output
    assert f"checking the running stack's policy ({folder / 'stack.json'}): {policy_path('fast')}" in running.stdout

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("name: x\nversion: 1\nlevels: []\nbogus: 1\n", encoding="utf-8")
    stack_in(folder, policy_file=str(invalid))
    refused = invoke("policy", "check", "--data-dir", str(folder), state=state)
    assert refused.exit_code == 1 and "bogus: unknown key" in refused.stderr and "Traceback" not in refused.output
    stack_in(folder, policy_file=str(invalid), pid=dead_pid())  # not running: the packaged default again
    assert "checking the packaged default policy" in invoke("policy", "check", "--data-dir", str(folder),
                                                            state=state).stdout

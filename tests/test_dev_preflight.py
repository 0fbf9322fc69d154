"""``escalations dev`` checks its data dir, every port and the policy before it starts anything:
a problem is one line naming what to change, exit 1 within seconds, and nothing left running."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from escalations.devstack.postgres import free_port
from escalations.devstack.preflight import PreflightError, check_ports, port_in_use, wanted_ports
from tests.helpers.devstack import children_alive

# Importing the dev stack (API, worker) takes a second or two on a loaded machine; starting
# PostgreSQL and Temporal would take far longer, so this bound tells the two apart.
WITHIN_SECONDS = 30


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def run_dev(data_dir: Path, *args: str, environ: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TEMPORAL_", "ESCALATION_")) and key != "DATABASE_URL"}
    env.update({"XDG_STATE_HOME": str(data_dir.parent / "state"), **(environ or {})})
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "starter", "dev", "--data-dir", str(data_dir),
         "--temporal-port", str(free_port()), "--ui-port", str(free_port()), *args],
        cwd=data_dir.parent, env=env, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def stopped_at_once(code: int, out: str, err: str, elapsed: float, data_dir: Path) -> str:
    """Exit 1 within seconds with one line on stderr, nothing on stdout, nothing started."""
    assert code == 1, f"exit {code}\n{out}\n{err}"
    assert elapsed < WITHIN_SECONDS, f"took {elapsed:.1f}s: something was started first"
    assert out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: escalations dev: "), err
    assert children_alive(data_dir) == [], "escalations dev left processes behind"
    # Only the lock's folder: no database cluster, no Temporal database, no secrets, no stack.json.
    assert {path.name for path in data_dir.iterdir()} <= {"run"}, sorted(p.name for p in data_dir.iterdir())
    return lines[0]


def test_a_busy_api_port_is_one_line_before_anything_starts(tmp_path: Path, busy_port: int) -> None:
    data_dir = tmp_path / "data"
    code, out, err, elapsed = run_dev(data_dir, "--api-port", str(busy_port))
    print(f"escalations dev refused the busy port in {elapsed:.1f}s")
    line = stopped_at_once(code, out, err, elapsed, data_dir)
    assert line == (f"error: escalations dev: port {busy_port} on 127.0.0.1 (the HTTP API) is already in use; "
                    "pick another with --api-port or stop what is running there")


def test_a_busy_metrics_port_names_its_variable(tmp_path: Path, busy_port: int) -> None:
    data_dir = tmp_path / "data"
    code, out, err, elapsed = run_dev(data_dir, "--api-port", str(free_port()),
                                      environ={"ESCALATION_METRICS_PORT": str(busy_port)})
    line = stopped_at_once(code, out, err, elapsed, data_dir)
    assert f"port {busy_port} on 127.0.0.1 (the worker's metrics)" in line and "ESCALATION_METRICS_PORT" in line


def test_an_invalid_policy_is_its_message_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    policy = tmp_path / "policy.yaml"
    policy.write_text("name: x\nversion: 1\nlevels: []\nbogus: 1\n", encoding="utf-8")
    code, out, err, elapsed = run_dev(data_dir, "--api-port", str(free_port()), "--policy", str(policy))
    line = stopped_at_once(code, out, err, elapsed, data_dir)
    assert line.startswith(f"error: escalations dev: invalid policy {policy}: ")
    assert "bogus: unknown key" in line and "levels:" in line


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.write_text("not a folder", encoding="utf-8")
    code, out, err, elapsed = run_dev(data_dir, "--api-port", str(free_port()))
    assert code == 1 and out == "" and elapsed < WITHIN_SECONDS, err
    assert err.strip().splitlines() == [
        f"error: escalations dev: the data dir {data_dir} is a file, not a folder; pick another with --data-dir "
        "or ESCALATION_DATA_DIR"]


def test_ports_are_checked_distinct_and_free(busy_port: int) -> None:
    assert port_in_use(busy_port, "127.0.0.1")
    free = free_port()
    assert not port_in_use(free, "127.0.0.1")
    ports = wanted_ports(temporal_port=free, ui_port=free, api_port=free_port(), environ={})
    with pytest.raises(PreflightError, match=f"port {free} is asked for both Temporal and Temporal UI; "
                                             "change --ui-port"):
        check_ports(ports, "127.0.0.1")
    # 0 means "any free port": nothing to check.
    assert [p for p, _, _ in wanted_ports(temporal_port=free, ui_port=None, api_port=free_port(),
                                          environ={"ESCALATION_METRICS_PORT": "0"})] != []
    assert all(how != "ESCALATION_METRICS_PORT (0: any free port)" for _, _, how in wanted_ports(
        temporal_port=free, ui_port=None, api_port=free_port(), environ={"ESCALATION_METRICS_PORT": "0"}))

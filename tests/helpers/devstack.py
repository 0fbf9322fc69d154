"""``escalations dev`` as a subprocess: start it, wait for its stack.json, stop it, find what it left."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx

from escalations.devstack.postgres import fallback_cluster_dir
from tests.helpers.paths import ROOT
from tests.helpers.polling import eventually

T = TypeVar("T")

DOWN: tuple[type[BaseException], ...] = (AssertionError, httpx.HTTPError, OSError, asyncpg.PostgresError)
"""What a check against a server that is (re)starting raises: "not yet"."""


def start_dev(data_dir: Path, ports: dict[str, int], log: Path,
              environ: dict[str, str] | None = None) -> subprocess.Popen:
    """``escalations dev`` as a subprocess, in a clean environment plus ``environ``; it remembers
    its data dir under ``state_home(data_dir)``, never the user's own state dir."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TEMPORAL_", "ESCALATION_")) and key != "DATABASE_URL"}
    env["XDG_STATE_HOME"] = str(state_home(data_dir))
    env.update(environ or {})
    return subprocess.Popen(
        [sys.executable, "-m", "starter", "dev", "--data-dir", str(data_dir),
         "--policy", str(ROOT / "escalations" / "policies" / "demo.yaml"),
         "--temporal-port", str(ports["temporal"]), "--ui-port", str(ports["ui"]), "--api-port", str(ports["api"])],
        cwd=data_dir.parent, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


def state_home(data_dir: Path) -> Path:
    """The ``XDG_STATE_HOME`` of a dev stack started by ``start_dev`` (beside its data dir)."""
    return data_dir.parent / "xdg-state"


def wait_for_stack(data_dir: Path, process: subprocess.Popen, log: Path, timeout: float = 90) -> dict:
    """The stack.json in ``data_dir``, polled until ``timeout`` while ``process`` runs."""
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


def free_ports() -> dict[str, int]:
    """Three ports for a dev stack, below the kernel's ephemeral range.

    A port the kernel hands out for ``bind(0)`` comes from the range it also gives outgoing
    connections, so by the time ``escalations dev`` binds it another test's client socket may hold
    it ("Address already in use" in a full run). Ports below that range are taken only by listeners.
    """
    ports: list[int] = []
    while len(ports) < 3:
        port = random.randrange(20_000, 32_000)
        if port not in ports and _listenable(port):
            ports.append(port)
    return dict(zip(("temporal", "ui", "api"), ports, strict=True))


def _listenable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for_own_stack(data_dir: Path, process: subprocess.Popen, log: Path, timeout: float = 60) -> dict:
    """The stack.json written by ``process`` (a stale one of a killed stack does not count)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"escalations dev exited early:\n{log.read_text()[-3000:]}"
        try:
            stack = json.loads((data_dir / "stack.json").read_text())
        except (FileNotFoundError, ValueError):
            stack = None
        if stack and stack.get("pid") == process.pid:
            return stack
        time.sleep(0.2)
    raise AssertionError(f"no stack.json from pid {process.pid} after {timeout}s:\n{log.read_text()[-3000:]}")


async def within(check: Callable[[], Awaitable[T]], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns, a server's connection errors meaning "not yet";
    fail at the deadline saying ``what``."""
    return await eventually(check, timeout=timeout, interval=0.2, retry_on=DOWN, what=what)

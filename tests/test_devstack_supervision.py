"""`escalations dev` supervises what it started, cleans up after a killed stack, and never
stops a PostgreSQL it did not start (issue #14, item 8).

Real processes throughout: ``escalations dev`` runs as a subprocess on free ports and a tmp
data dir (``tests/helpers/devstack.py``); servers are killed with SIGKILL. Every wait polls
with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from escalations.devstack.postgres import EmbeddedPostgres, fallback_cluster_dir
from escalations.devstack.processes import (
    Child, ProcessRecord, RunDir, SupervisionError, Supervisor, is_running, record_of, stop_orphan,
)
from tests.helpers.devstack import children_alive, free_ports, start_dev, stop, wait_for_own_stack, within
from tests.helpers.paths import ROOT

EXAMPLE = json.loads((ROOT / "examples" / "sf-1042.json").read_text())


# -- helpers ----------------------------------------------------------------


def record(data_dir: Path, name: str) -> ProcessRecord:
    found = RunDir(data_dir).read(name)
    assert found is not None, f"no record of {name} in {data_dir / 'run'}"
    return found


def body(ticket_id: str) -> dict[str, Any]:
    return {**EXAMPLE, "ticket_id": ticket_id}


def take_port(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen(1)
    return sock


def failed_start(data_dir: Path, log: Path, environ: dict[str, str] | None = None) -> str:
    """Run ``escalations dev`` with its API port taken: it must fail with one line, no traceback."""
    ports = free_ports()
    with take_port(ports["api"]):
        dev = start_dev(data_dir, ports, log, environ)
        try:
            code = dev.wait(90)
        finally:
            if dev.poll() is None:
                dev.kill()
    output = log.read_text()
    assert code == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: escalations dev:")]
    assert len(errors) == 1 and str(ports["api"]) in errors[0], output[-3000:]
    return output


def failed_late_start(data_dir: Path, log: Path) -> str:
    """Run ``escalations dev`` so that it fails after PostgreSQL and Temporal are up: the worker's
    metrics address cannot be bound (TEST-NET-1 is on no interface here). Ports are checked
    before anything starts, so a busy port no longer gets that far."""
    dev = start_dev(data_dir, free_ports(), log, {"ESCALATION_METRICS_HOST": "192.0.2.1"})
    try:
        code = dev.wait(120)
    finally:
        if dev.poll() is None:
            dev.kill()
    output = log.read_text()
    assert code == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: escalations dev:")]
    assert len(errors) == 1 and "192.0.2.1" in errors[0], output[-3000:]
    return output


async def answers(url: str) -> None:
    connection = await asyncpg.connect(url, timeout=5)
    try:
        assert await connection.fetchval("SELECT 1") == 1
    finally:
        await connection.close()


class Api:
    def __init__(self, stack: dict) -> None:
        self.url = stack["api_url"]
        self.headers = {"Authorization": f"Bearer {stack['api_token']}"}

    async def healthy(self) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"{self.url}/healthz")
        assert response.status_code == 200, response.text

    async def start(self, ticket_id: str, key: str | None = None) -> httpx.Response:
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.post(f"{self.url}/escalations", json=body(ticket_id), headers=headers)

    async def state(self, ticket_id: str) -> dict:
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.get(f"{self.url}/escalations/{ticket_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen, Path, dict]]:
    """One `escalations dev` shared by the tests that kill its servers; stopped cleanly at the end."""
    root = tmp_path_factory.mktemp("supervised")
    data_dir, log = root / "data", root / "dev.log"
    dev = start_dev(data_dir, free_ports(), log)
    try:
        yield dev, data_dir, wait_for_own_stack(data_dir, dev, log)
        assert dev.poll() is None, f"the stack died:\n{log.read_text()[-3000:]}"
    finally:
        code = stop(dev)
        try:
            assert code == 0, log.read_text()[-3000:]
            assert children_alive(data_dir) == [], "the dev stack left processes behind"
            assert not (data_dir / "run" / "temporal.json").exists()
            assert not (data_dir / "run" / "postgres.json").exists()
        finally:
            subprocess.run(["rm", "-rf", str(fallback_cluster_dir(data_dir))], check=False)


@pytest.fixture
def cluster_cleanup() -> Iterator[list[Path]]:
    data_dirs: list[Path] = []
    yield data_dirs
    for data_dir in data_dirs:
        subprocess.run(["rm", "-rf", str(fallback_cluster_dir(data_dir))], check=False)


# -- the stack restarts what it started ---------------------------------------


async def test_killed_postgres_is_restarted_with_its_data(running_stack):
    dev, data_dir, stack = running_stack
    api = Api(stack)
    started = await api.start("SUP-PG-1", key="sup-pg-1")
    assert started.status_code == 201, started.text
    before = record(data_dir, "postgres")
    assert before.is_alive()

    os.kill(before.pid, signal.SIGKILL)

    async def restarted() -> ProcessRecord:
        after = record(data_dir, "postgres")
        assert after.pid != before.pid and after.is_alive()
        return after

    after = await within(restarted, 15, "postgres restarted")
    assert after.argv == before.argv and after.port == before.port  # same cluster, same port
    await within(api.healthy, 15, "the API reaches Postgres again")
    # The API's pool reads what was written before the kill: the start replays.
    replay = await api.start("SUP-PG-1", key="sup-pg-1")
    assert replay.status_code == 201 and replay.headers.get("Idempotent-Replayed") == "true", replay.text
    assert replay.json()["run_id"] == started.json()["run_id"]
    # The worker's pool reconnects too: a new escalation's events reach Postgres.
    assert (await api.start("SUP-PG-2")).status_code == 201

    async def events_recorded() -> None:
        connection = await asyncpg.connect(stack["database_url"], timeout=5)
        try:
            count = await connection.fetchval(
                "SELECT count(*) FROM escalation_events WHERE ticket_id = ANY($1::text[])", ["SUP-PG-1", "SUP-PG-2"])
        finally:
            await connection.close()
        assert count and count >= 2

    await within(events_recorded, 30, "the worker records events after the restart")
    assert dev.poll() is None
    log = (data_dir.parent / "dev.log").read_text()
    assert f"postgres (pid {before.pid}) exited with code -9 (SIGKILL); restarting" in log


async def test_killed_temporal_is_restarted_and_keeps_workflows(running_stack):
    dev, data_dir, stack = running_stack
    api = Api(stack)
    assert (await api.start("SUP-T-1")).status_code == 201
    opened = await within(lambda: api.state("SUP-T-1"), 30, "the escalation answers")
    before = record(data_dir, "temporal")
    assert before.is_alive()

    os.kill(before.pid, signal.SIGKILL)

    async def restarted() -> ProcessRecord:
        after = record(data_dir, "temporal")
        assert after.pid != before.pid and after.is_alive()
        return after

    after = await within(restarted, 15, "temporal restarted")
    assert after.argv == before.argv  # same SQLite file, same ports
    await within(api.healthy, 20, "the API reaches Temporal again")
    # The workflow started before the kill is still there, and the worker answers its query.
    resumed = await within(lambda: api.state("SUP-T-1"), 40, "the escalation answers after the restart")
    assert resumed["escalation_id"] == opened["escalation_id"]
    assert dev.poll() is None
    log = (data_dir.parent / "dev.log").read_text()
    assert f"temporal (pid {before.pid}) exited with code -9 (SIGKILL); restarting" in log


async def test_second_stack_on_the_same_data_dir_is_refused(running_stack, tmp_path):
    dev, data_dir, stack = running_stack
    records = {name: record(data_dir, name) for name in ("temporal", "postgres")}
    log = tmp_path / "second.log"
    second = start_dev(data_dir, free_ports(), log)
    code = second.wait(60)
    output = log.read_text()
    assert code == 1 and f"another escalations dev (pid {dev.pid}) is running" in output, output[-3000:]
    assert "Traceback" not in output
    assert all(r.is_alive() for r in records.values())  # nothing of the running stack was touched
    assert json.loads((data_dir / "stack.json").read_text())["pid"] == dev.pid
    await Api(stack).healthy()


# -- a killed stack is cleaned up by the next one -----------------------------


async def test_next_stack_cleans_up_after_a_killed_one(tmp_path, cluster_cleanup):
    data_dir, log = tmp_path / "data", tmp_path / "dev.log"
    cluster_cleanup.append(data_dir)
    ports = free_ports()
    dev = start_dev(data_dir, ports, log)
    first = wait_for_own_stack(data_dir, dev, log)
    orphans = {name: record(data_dir, name) for name in ("temporal", "postgres")}
    dev.send_signal(signal.SIGKILL)
    dev.wait(10)
    assert all(r.is_alive() for r in orphans.values()), "SIGKILL of the stack should leave its servers"
    assert (data_dir / "stack.json").exists()

    dev = start_dev(data_dir, ports, log)
    try:
        stack = wait_for_own_stack(data_dir, dev, log)
        assert not any(r.is_alive() for r in orphans.values())
        assert stack["database_url"] == first["database_url"]  # its Postgres port is kept
        for name in ("temporal", "postgres"):
            assert record(data_dir, name).pid != orphans[name].pid
        await within(Api(stack).healthy, 15, "the new stack is healthy")
    finally:
        assert stop(dev) == 0, log.read_text()[-3000:]
    output = log.read_text()
    assert "Traceback" not in output, output[-3000:]
    assert "left running by a previous escalations dev" in output
    assert children_alive(data_dir) == [], "the dev stack left processes behind"


# -- never stop a PostgreSQL the stack did not start ----------------------------


async def test_postgres_from_database_url_is_never_stopped(tmp_path, cluster_cleanup):
    external = EmbeddedPostgres(tmp_path / "external", durable=False, database="external")
    cluster_cleanup.append(tmp_path / "external")
    url = await asyncio.to_thread(external.start)
    try:
        postmaster = external.running_postmaster()
        assert postmaster is not None
        data_dir, log = tmp_path / "data", tmp_path / "dev.log"
        dev = start_dev(data_dir, free_ports(), log, {"DATABASE_URL": url})
        try:
            stack = wait_for_own_stack(data_dir, dev, log)
            assert stack["database_url"] == url
            assert not (data_dir / "run" / "postgres.json").exists()
            await Api(stack).healthy()
        finally:
            assert stop(dev) == 0, log.read_text()[-3000:]
        await answers(url)
        assert children_alive(data_dir) == []

        failed_start(data_dir, tmp_path / "failed.log", {"DATABASE_URL": url})
        await answers(url)
        assert external.running_postmaster() == postmaster  # the very same server, never restarted
        assert children_alive(data_dir) == []
    finally:
        await asyncio.to_thread(external.destroy)


async def test_cluster_run_by_someone_else_survives_a_failed_start(tmp_path, cluster_cleanup):
    data_dir = tmp_path / "data"
    cluster_cleanup.append(data_dir)
    # The stack's own cluster location, but started outside any stack (pg_ctl, no record).
    theirs = EmbeddedPostgres(data_dir, durable=False)
    await asyncio.to_thread(theirs.start)
    try:
        postmaster = theirs.running_postmaster()
        assert postmaster is not None
        output = failed_late_start(data_dir, tmp_path / "failed.log")
        assert "was not started by escalations dev" in output
        assert theirs.running_postmaster() == postmaster
        await answers(theirs.dsn)
        assert [line for line in children_alive(data_dir) if "temporal" in line] == []
    finally:
        await asyncio.to_thread(theirs.destroy)


# -- the pieces: records and the supervisor, on small real processes -------------


def test_a_record_matches_only_the_very_process(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        mine = record_of("sleeper", sleeper)
        assert mine.is_alive()
        other_argv = ProcessRecord("sleeper", sleeper.pid, mine.start_ticks, ["sleep", "31"])
        other_start = ProcessRecord("sleeper", sleeper.pid, mine.start_ticks + 1, mine.argv)
        assert not other_argv.is_alive() and not other_start.is_alive()
        stop_orphan(other_argv, [(signal.SIGTERM, 1.0)])  # not provably ours: left alone
        assert sleeper.poll() is None
        run_dir = RunDir(tmp_path)
        run_dir.write(mine)
        assert run_dir.read("sleeper") == mine
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not mine.is_alive() and not is_running(sleeper.pid)


async def test_supervisor_restarts_a_dead_child_and_stops_it(tmp_path, caplog):
    run_dir = RunDir(tmp_path)

    async def ready(process: subprocess.Popen) -> None:
        assert process.poll() is None

    supervisor = Supervisor(Child("sleeper", spawn=lambda: subprocess.Popen(["sleep", "60"]), ready=ready),
                            run_dir, backoff=0.05)
    supervisor.start()
    await supervisor.wait_ready()
    first = supervisor.process
    assert first is not None and record(tmp_path, "sleeper").pid == first.pid
    with caplog.at_level(logging.WARNING, logger="escalations.dev"):
        first.kill()

        async def restarted() -> subprocess.Popen:
            current = supervisor.process
            assert current is not None and current is not first and current.poll() is None
            assert record(tmp_path, "sleeper").pid == current.pid
            return current

        second = await within(restarted, 10, "the child restarted")
    assert any("exited with code -9 (SIGKILL)" in r.message and r.levelno == logging.WARNING
               for r in caplog.records)
    await supervisor.stop()
    assert second.poll() is not None and not (tmp_path / "run" / "sleeper.json").exists()


async def test_supervisor_gives_up_after_repeated_fast_failures(caplog):
    async def ready(process: subprocess.Popen) -> None:
        return None

    supervisor = Supervisor(
        Child("failing", spawn=lambda: subprocess.Popen(["sh", "-c", "exit 3"]), ready=ready),
        max_restarts=5, window=60, backoff=0.01, max_backoff=0.05,
    )
    with caplog.at_level(logging.WARNING, logger="escalations.dev"):
        supervisor.start()
        with pytest.raises(SupervisionError, match=r"failing exited with code 3 after 5 restarts within 60 s"):
            await asyncio.wait_for(supervisor.task, 20)
    restarts = [r for r in caplog.records if "exited with code 3; restarting" in r.message]
    assert len(restarts) == 5 and all(r.levelno == logging.WARNING for r in restarts)
    await supervisor.stop()

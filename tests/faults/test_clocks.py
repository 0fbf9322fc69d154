"""The clock promise under real faults: every due deadline acted on exactly once, on time.

Each test runs escalations on a seconds-scale policy against this module's own Temporal
dev server and PostgreSQL (tests/faults/conftest.py), then freezes or kills a real
process while deadlines come due. Afterwards ``verify`` checks, for every run:

* it is still running, and no deadline is overdue (each one that came due was acted on);
* no deadline was acted on twice (one event per clock and deadline);
* events are gap-free in PostgreSQL, the read model equals a rebuild, every ledger row
  is sent and every key reached the receiver;
* its history replays with the installed code;

and reports how late each deadline was decided (event ``decided_at`` minus its deadline)
and paged (first arrival at the receiver minus the deadline).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.worker import (
    Interceptor,
    StartActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from escalations.db.eventstore import rebuild
from escalations.db.pool import create_pool
from escalations.repair import released_path, replays
from escalations.temporal import connect
from schemas import keys
from schemas.escalation import EscalationState
from tests.helpers.codec import TEST_CODEC, TEST_ENV
from tests.helpers.escalations import start_escalation
from tests.helpers.paths import ROOT
from tests.helpers.policies import level_ack, write_policy
from tests.helpers.polling import eventually
from tests.helpers.processes import OwnPostgres, OwnTemporal
from tests.helpers.receivers import HttpRecorder, Reply
from tests.helpers.requests import blog_request
from tests.helpers.workers import running_worker
from worker import build_replayer

SECRET = "fault-suite-webhook-secret-32-characters"
TIMER_DRIVEN = {"escalated", "ack_reminder", "customer_updated", "sla_at_risk", "sla_breached", "hold_released",
                "resumed", "owner_changed"}


def fault_policy(folder: Path, receiver: str, **priority: str) -> Path:
    levels = level_ack("fast", tier2="3s", engineering="3s", management="4s")
    for level in levels:
        level["contacts"] = [{"name": f"{level['id']} pager", "channel": "webhook",
                              "target": f"{receiver}/{level['id']}"}]
    folder.mkdir(parents=True, exist_ok=True)
    # A name of its own: each scene's receiver URL makes another document of "version 1".
    return write_policy(folder, name=f"faults-{uuid.uuid4().hex[:8]}", levels=levels,
                        priorities={"P1": {"resolve_within": "60s", "customer_update_every": "5s", **priority}},
                        customer={"channel": "webhook", "target": f"{receiver}/customer"})


@dataclass
class Report:
    decided: list[float] = field(default_factory=list)
    paged: list[float] = field(default_factory=list)
    resent: int = 0

    def line(self, name: str) -> str:
        def stats(values: list[float]) -> str:
            if not values:
                return "none"
            ordered = sorted(values)
            p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            return f"n={len(values)} p99={p99:.3f}s max={ordered[-1]:.3f}s"
        return f"{name}: decided {stats(self.decided)}; paged {stats(self.paged)}; resent on the wire {self.resent}"


async def caught_up(pool: asyncpg.Pool, handle: WorkflowHandle, timeout: float = 30.0) -> EscalationState:
    async def check() -> EscalationState:
        state = await handle.query("state", result_type=EscalationState)
        stored = await pool.fetchval("SELECT max(seq) FROM escalation_events WHERE escalation_id = $1",
                                     state.escalation_id)
        assert stored == state.last_seq, f"{handle.id}: PostgreSQL has #{stored}, history #{state.last_seq}"
        pending = await pool.fetch("SELECT idempotency_key, status, attempts, last_error FROM notifications "
                                   "WHERE escalation_id = $1 AND status <> 'sent'", state.escalation_id)
        if pending:
            described = await handle.describe()
            details = [(a.activity_type, a.attempt, a.last_failure.message if a.last_failure else None)
                       for a in described.raw_description.pending_activities]
            raise AssertionError(f"{handle.id}: ledger rows not sent yet: {[dict(r) for r in pending]}; "
                                 f"pending activities {details}")
        return state

    return await eventually(check, timeout=timeout, interval=0.2)


async def acted_after(pool: asyncpg.Pool, handles: list[WorkflowHandle], since: datetime, *, deadlines: int = 1,
                      timeout: float = 30.0) -> None:
    """Wait until every run has acted on ``deadlines`` deadlines (distinct times) that came due
    after ``since``: time went by on the server's clock and the runs kept up, no fixed wait."""

    async def check() -> None:
        for handle in handles:
            state = await handle.query("state", result_type=EscalationState)
            acted = await pool.fetchval(
                "SELECT count(DISTINCT occurred_at) FROM escalation_events WHERE escalation_id = $1"
                " AND type = ANY($2) AND occurred_at > $3", state.escalation_id, sorted(TIMER_DRIVEN), since)
            assert acted >= deadlines, f"{handle.id}: {acted} of {deadlines} deadline(s) after {since} acted on"

    await eventually(check, timeout=timeout, interval=0.2)


async def verify(client: Client, pool: asyncpg.Pool, handles: list[WorkflowHandle], receiver: HttpRecorder,
                 *, tolerance: float = 2.0) -> Report:
    report = Report()
    replayer = build_replayer(client.data_converter)
    for handle in handles:
        state = await caught_up(pool, handle)
        description = await handle.describe()
        assert description.status == WorkflowExecutionStatus.RUNNING, f"{handle.id} is {description.status}"

        async def nothing_overdue() -> None:
            live = await handle.query("state", result_type=EscalationState)
            now = datetime.now(UTC)
            for name in ("ack_due", "next_customer_update_due"):
                due = getattr(live.deadlines, name)
                assert due is None or due > now - timedelta(seconds=tolerance), f"{handle.id}: {name} {due} overdue"

        await eventually(nothing_overdue, timeout=10)
        state = await caught_up(pool, handle)
        rows = await pool.fetch("SELECT seq, type, occurred_at, payload FROM escalation_events "
                                "WHERE escalation_id = $1 ORDER BY seq", state.escalation_id)
        assert [r["seq"] for r in rows] == list(range(1, state.last_seq + 1)), f"{handle.id}: gap in events"
        acted = [(r["type"], r["occurred_at"], r["payload"].get("to_level"), r["payload"].get("number"))
                 for r in rows if r["type"] in TIMER_DRIVEN and (r["type"] != "escalated" or r["payload"]["auto"])]
        assert len(acted) == len(set(acted)), f"{handle.id}: a deadline was acted on twice: {acted}"
        for row in rows:
            if "decided_at" in row["payload"]:
                report.decided.append(
                    (datetime.fromisoformat(row["payload"]["decided_at"]) - row["occurred_at"]).total_seconds())
        # The ledger first: a row sent in it was on the wire before, so it is in the receiver's list.
        sent = await pool.fetch("SELECT idempotency_key, seq FROM notifications WHERE escalation_id = $1 "
                                "AND status = 'sent'", state.escalation_id)
        arrivals: dict[str, list[datetime]] = {}
        for request in receiver.requests:
            arrivals.setdefault(request.headers["Idempotency-Key"], []).append(request.received_at)
        occurred = {r["seq"]: r["occurred_at"] for r in rows}
        for row in [r for r in sent if r["seq"] <= len(rows)]:
            times = arrivals.get(row["idempotency_key"])
            if not times:
                ledger = dict(await pool.fetchrow("SELECT * FROM notifications WHERE idempotency_key = $1",
                                                  row["idempotency_key"]))
                superseded = [tuple(r) for r in await pool.fetch("SELECT seq, type, run_id, decided_in, superseded_by "
                                                                 "FROM superseded_events ORDER BY seq")]
                raise AssertionError(f"{row['idempotency_key']} is sent in the ledger but never reached the "
                                     f"receiver: {ledger}; superseded {superseded}; received {sorted(arrivals)}")
            report.resent += len(times) - 1
            if rows[row["seq"] - 1]["type"] in TIMER_DRIVEN:
                report.paged.append((min(times) - occurred[row["seq"]]).total_seconds())
        history = await handle.fetch_history()
        assert await replays(replayer, history) is None, f"{handle.id} does not replay"
    assert await read_model_equals_rebuild(pool)
    return report


async def read_model_equals_rebuild(pool: asyncpg.Pool) -> bool:
    """Compared in one snapshot (the runs go on projecting meanwhile), the rebuild rolled back."""
    async with pool.acquire() as conn:
        transaction = conn.transaction(isolation="repeatable_read")
        await transaction.start()
        try:
            live = [dict(r) for r in await conn.fetch("SELECT * FROM escalations ORDER BY escalation_id")]
            await rebuild(conn)
            rebuilt = [dict(r) for r in await conn.fetch("SELECT * FROM escalations ORDER BY escalation_id")]
        finally:
            await transaction.rollback()
    assert rebuilt == live
    return True


@asynccontextmanager
async def scene(temporal: OwnTemporal, postgres: OwnPostgres, folder: Path, **priority: str) -> AsyncIterator[Any]:
    """A receiver, a client, a pool and a fresh task queue on this module's servers."""
    client = await connect({"target_host": temporal.address}, TEST_CODEC)
    pool = await create_pool(postgres.dsn, min_size=0, max_size=5, acquire_timeout=5, command_timeout=10,
                             connect_timeout=5)
    async with HttpRecorder() as receiver:
        try:
            yield _Scene(client, pool, receiver, f"faults-{uuid.uuid4()}",
                         fault_policy(folder, receiver.url, **priority))
        finally:
            try:
                async with asyncio.timeout(5):
                    await pool.close()
            except (TimeoutError, OSError, asyncpg.PostgresError):
                pool.terminate()


@dataclass
class _Scene:
    client: Client
    pool: asyncpg.Pool
    receiver: HttpRecorder
    queue: str
    policy: Path

    def worker(self, **options: Any):
        return running_worker(self.client, self.pool, self.queue, self.policy,
                              {"ESCALATION_WEBHOOK_SECRET": SECRET}, **options)

    async def open(self, count: int) -> list[WorkflowHandle]:
        handles = [await start_escalation(self.client, blog_request(kind="hierarchical"), self.queue)
                   for _ in range(count)]
        for handle in handles:
            await caught_up(self.pool, handle)
        return handles


# -- PostgreSQL -------------------------------------------------------------------------------------


async def test_postgres_frozen_while_deadlines_come_due(temporal, postgres, tmp_path):
    async with scene(temporal, postgres, tmp_path) as s, s.worker():
        handles = await s.open(6)
        postgres.freeze()
        await asyncio.sleep(8)  # the outage: ack (3 s, 6 s) and cadence (5 s) deadlines come due in it
        thawed = time.monotonic()
        postgres.thaw()
        for handle in handles:
            await caught_up(s.pool, handle)
        catch_up = time.monotonic() - thawed
        report = await verify(s.client, s.pool, handles, s.receiver)
    print(report.line("PostgreSQL frozen 8 s") + f"; caught up {catch_up:.1f}s after")
    assert max(report.decided) < 2.0 and max(report.paged) < 3.0
    assert catch_up < 15


async def test_postgres_killed_and_restarted(temporal, postgres, tmp_path):
    async with scene(temporal, postgres, tmp_path) as s, s.worker():
        handles = await s.open(6)
        postgres.kill()
        await asyncio.sleep(8)  # the outage (its length is the point): deadlines come due in it
        restarted = time.monotonic()
        postgres.restart()
        for handle in handles:
            await caught_up(s.pool, handle)
        catch_up = time.monotonic() - restarted
        report = await verify(s.client, s.pool, handles, s.receiver)
    print(report.line("PostgreSQL killed 8 s") + f"; caught up {catch_up:.1f}s after")
    assert max(report.decided) < 2.0 and max(report.paged) < 3.0
    assert catch_up < 15


# -- Temporal ---------------------------------------------------------------------------------------


async def test_temporal_killed_and_restarted(temporal, postgres, tmp_path):
    async with scene(temporal, postgres, tmp_path) as s, s.worker():
        handles = await s.open(4)
        temporal.kill()
        down = 4.0
        await asyncio.sleep(down)  # the outage (its length is the point)
        await temporal.start()
        # Deadlines that come due after the restart are acted on too (two of them, as 7 s give).
        await acted_after(s.pool, handles, datetime.now(UTC), deadlines=2)
        report = await verify(s.client, s.pool, handles, s.receiver)
    print(report.line(f"Temporal killed {down:g} s"))
    assert max(report.decided) < down + 5


# -- the worker -------------------------------------------------------------------------------------


def spawn_worker(s: _Scene, temporal: OwnTemporal, postgres: OwnPostgres, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TEMPORAL_ADDRESS": temporal.address, "DATABASE_URL": postgres.dsn,
           "ESCALATION_TASK_QUEUE": s.queue, "ESCALATION_POLICY_FILE": str(s.policy),
           "ESCALATION_WEBHOOK_SECRET": SECRET, "ESCALATION_STICKY_QUEUE_TIMEOUT_SECONDS": "1",
           "ESCALATION_METRICS_PORT": "0", **TEST_ENV}  # not the default port: other workers may run on this host
    return subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)


async def test_worker_killed_mid_delivery_resends_within_seconds(temporal, postgres, tmp_path):
    async with scene(temporal, postgres, tmp_path) as s:
        # tier2's pager answers slowly: the worker dies while those pages are on the wire.
        s.receiver.script("/tier2", *[Reply(delay=2.5)] * 3)
        log = tmp_path / "worker.log"
        process = spawn_worker(s, temporal, postgres, log)
        try:
            handles = [await start_escalation(s.client, blog_request(kind="hierarchical"), s.queue) for _ in range(3)]
            await s.receiver.wait_for(3, path="/tier2", timeout=20)
            os.killpg(process.pid, signal.SIGKILL)
            killed = datetime.now(UTC)
            process.wait(10)
            await asyncio.sleep(2)  # the outage: no worker for 2 s; the new one must resend what was in flight
            process = spawn_worker(s, temporal, postgres, log)
            await s.receiver.wait_for(6, path="/tier2", timeout=30)
            resent = s.receiver.to("/tier2")[3:]
            assert {r.headers["Idempotency-Key"] for r in resent} == {
                r.headers["Idempotency-Key"] for r in s.receiver.to("/tier2")[:3]}, "a resend under a new key"
            assert max((r.received_at - killed).total_seconds() for r in resent) < 15
            report = await verify(s.client, s.pool, handles, s.receiver)
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    print(report.line("worker killed mid-delivery"))


class _FailThrice(Interceptor):
    """The first three workflow tasks that schedule a delivery fail (an exception in the task)."""

    left = 3

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        return _FailingInbound


class _FailingInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_FailingOutbound(outbound))


class _FailingOutbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput):
        if input.activity == keys.SEND_NOTIFICATIONS and _FailThrice.left > 0:
            _FailThrice.left -= 1
            raise RuntimeError("injected: this workflow task fails")
        return super().start_activity(input)


async def test_a_workflow_task_that_fails_three_times_decides_once(temporal, postgres, tmp_path):
    _FailThrice.left = 3
    async with scene(temporal, postgres, tmp_path) as s, s.worker(interceptors=[_FailThrice()]):
        handle = await start_escalation(s.client, blog_request(kind="hierarchical"), s.queue)
        opened = await caught_up(s.pool, handle, timeout=60)
        assert _FailThrice.left == 0
        await acted_after(s.pool, [handle], opened.opened_at)  # the first ack deadline, after the failures
        report = await verify(s.client, s.pool, [handle], s.receiver)
        history = await handle.fetch_history()
        failures = sum(1 for e in history.events if e.HasField("workflow_task_failed_event_attributes"))
        assert failures >= 1
    print(report.line("workflow task failed 3 times"))


# -- a run stuck on the released commit path, repaired ------------------------------------------------


def as_released(input: Any) -> bool:
    """Patch activation: run new escalations as the released code did (no history-first commit)."""
    return input.patch_id != keys.HISTORY_FIRST


async def test_a_run_stuck_after_an_outage_is_repaired_with_nothing_lost_or_doubled(temporal, postgres, tmp_path):
    async with scene(temporal, postgres, tmp_path, customer_update_every="4s") as s:
        async with s.worker(patch_activation_callback=as_released):
            handle = await start_escalation(s.client, blog_request(kind="hierarchical"), s.queue)
            opened = await caught_up(s.pool, handle)
            # Frozen across the ack deadline (3 s) and the cadence (4 s): the local activity that
            # stores the first decision outlives its workflow task. The freeze starts at a fixed
            # point before those deadlines and lasts 6 s: the timing of the fault is the point.
            await asyncio.sleep(max(0.0, (opened.opened_at + timedelta(seconds=2.5) - datetime.now(UTC)).total_seconds()))
            postgres.freeze()
            await asyncio.sleep(6)
            postgres.thaw()
            await caught_up(s.pool, handle)
        # A new worker has no cached run: it replays, and the replay no longer matches.
        replayer = build_replayer(s.client.data_converter)

        async def stuck() -> str:
            reason = await replays(replayer, await handle.fetch_history())
            assert reason is not None
            return reason

        async with s.worker(patch_activation_callback=as_released):
            reason = await eventually(stuck, timeout=30)
        assert "Nondeterminism" in reason
        # This run's pages only: the module's PostgreSQL also holds the earlier tests' runs.
        sent_before = {r["idempotency_key"] for r in await s.pool.fetch(
            "SELECT idempotency_key FROM notifications WHERE status = 'sent' AND escalation_id = $1",
            opened.escalation_id)}
        assert sent_before, "no page was sent before the repair"
        async with s.worker():
            # The documented command, as an operator runs it.
            env = {**os.environ, "TEMPORAL_ADDRESS": temporal.address, "DATABASE_URL": postgres.dsn, **TEST_ENV}
            done = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "starter", "repair", "--query",
                                                             f"WorkflowId = '{handle.id}'"],
                                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
            assert f"REPAIRED {handle.id}" in done.stdout and "moved to the current commit path" in done.stdout
            current = s.client.get_workflow_handle(handle.id)

            async def on_the_current_path() -> None:
                # Continued as new by ``upgrade``, or (reset to its very first task) current from the start.
                assert not released_path(await current.fetch_history())

            await eventually(on_the_current_path, timeout=30)
            await acted_after(s.pool, [current], datetime.now(UTC))  # more deadlines, now on the current path
            report = await verify(s.client, s.pool, [current], s.receiver, tolerance=3.0)
    wire = {}
    for request in s.receiver.requests:
        wire.setdefault(request.headers["Idempotency-Key"], 0)
        wire[request.headers["Idempotency-Key"]] += 1
    assert all(wire[key] == 1 for key in sent_before), "a page sent before the repair went out again"
    print(report.line("stuck run repaired") + "; " + done.stdout.strip().splitlines()[-1])

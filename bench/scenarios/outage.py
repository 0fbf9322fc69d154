"""Scenario 9: PostgreSQL down for a minute while deadlines come due (issue #14).

``n`` hierarchical P1 escalations are opened at an even pace over ``open_window``
seconds, on a seconds-scale policy whose every page is a signed webhook to a receiver
of the benchmark's own; ``gap`` seconds after the last start the stack's PostgreSQL
is SIGKILLed (variant ``kill``: then restarted on the same port and data, durable:
fsync and synchronous commit on) or SIGSTOPped (variant ``freeze``: then SIGCONTed)
for ``outage`` seconds. The policy's clocks (ack deadlines of tier2 and engineering,
ack reminders at management, customer-update cadence, SLA at-risk and breach) put
each escalation's next deadlines inside the outage, and more after it.

Measured per deadline that came due (its event's ``occurred_at`` is the deadline):

* decided lateness = the event's ``payload.decided_at`` (the time of the workflow
  task that acted) minus ``occurred_at``; events of types escalated (auto),
  ack_reminder, customer_updated (auto), sla_at_risk and sla_breached;
* paged lateness = first arrival at the receiver of each page the event caused (by
  its ``Idempotency-Key``) minus the deadline;
* catch-up = from PostgreSQL accepting connections again until every run's
  ``escalations.last_seq`` equals its live ``state`` query's ``last_seq``;
* lost = a deadline the policy says came due that no event acted on, a gap in a run's
  events, a ledger row never sent or never seen by the receiver, a page seen with no
  ledger row; doubled = the same deadline acted on twice, or a ledger key with more
  than one row; pages received more than once under one key are reported apart
  (allowed: at least once on the wire);
* failed/stuck = runs not RUNNING, not caught up, or whose history does not replay.

The expected deadlines are computed from each run's opening time and the policy
(every clock restarts from the deadline it acted on), so a deadline nobody acted on
shows even when nothing else does. Where the time goes is read from the histories:
timer fire delay, workflow task schedule-to-start, ``send_notifications``
schedule-to-start and run time, ``project_events`` attempts; and the activity task
queue's backlog is sampled every second.

Variants, each on a fresh Temporal server, database, worker and receiver: ``kill``,
``freeze`` and ``none`` (the control: the same load, PostgreSQL left alone).
``ESCALATIONS_BENCH_OUTAGE_VARIANTS=kill`` (comma-separated) runs only those. The
stack's PostgreSQL is shared with the other scenarios: it is running again whatever
happens. The source digest of the product code is recorded per variant, because the
checkout the worker imports may change under a long run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import asyncpg
import psutil
import yaml
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from activities.channels.webhook import verify as verify_signature
from bench.results import Target, percentiles
from bench.scenarios.common import Context, Outcome, bounded, queue, start_escalation
from bench.stack import BenchStack, Run, utcnow
from escalations.db.eventstore import rebuild
from escalations.db.pool import create_pool
from escalations.repair import replays
from escalations.settings import derive_webhook_secret
from schemas.escalation import EscalationRequest, EscalationState
from worker import build_replayer

SECRET = "bench-outage-webhook-secret-32-characters"
LEVELS = ("tier1", "tier2", "engineering", "management")
TIMER_DRIVEN = ("escalated", "ack_reminder", "customer_updated", "sla_at_risk", "sla_breached")
AT_RISK = 0.75
# A deadline is checked once this long has passed since it came due (decided and paged by then,
# or reported as never acted on).
MARGIN = 10.0
QUERY_CONCURRENCY = 10
CATCH_UP_QUERIES = 5

GOAL_DECIDED_P99 = 1.0
GOAL_PAGED_P99 = 2.0
GOAL_CATCH_UP = 10.0


@dataclass(frozen=True)
class Plan:
    n: int
    outage: float
    open_window: float
    gap: float
    after_recovery: float  # deadlines due this long after recovery are measured too (during catch-up)
    catch_up_timeout: float
    # The policy's clocks (seconds). Escalations open from open_window + gap to gap seconds before
    # the outage; each clock is set so every escalation's first deadlines fall inside it. Two
    # deadlines of one escalation are either equal or at least MIN_SPACING apart (see below).
    tier2: float
    engineering: float
    management: float
    cadence: float
    resolve: float
    # "none" is the control: the same load, PostgreSQL left alone.
    variants: tuple[str, ...] = ("kill", "freeze", "none")


# Temporal floors a new timer's fire time at "now + history.timerProcessorMaxTimeShift" (1 s by
# default), so a deadline less than about a second after the one before it (its timer is armed
# when that one fires) is decided up to a second late, with or without an outage. Deadlines of
# hour-scale policies are equal or minutes apart; the scaled-down clocks here keep that shape.
MIN_SPACING = 1.2


def plan(quick: bool) -> Plan:
    if quick:
        return Plan(n=20, outage=10.0, open_window=4.0, gap=1.0, after_recovery=5.0, catch_up_timeout=60.0,
                    tier2=6.5, engineering=4.0, management=3.5, cadence=8.75, resolve=14.0)
    return Plan(n=200, outage=60.0, open_window=20.0, gap=2.0, after_recovery=15.0, catch_up_timeout=180.0,
                tier2=27.0, engineering=19.0, management=26.0, cadence=31.0, resolve=68.0)


@dataclass(frozen=True)
class Durations:
    """The policy's clocks, in milliseconds (exactly as written to the policy file)."""

    tier2_ms: int
    engineering_ms: int
    management_ms: int
    cadence_ms: int
    resolve_ms: int

    @classmethod
    def of(cls, p: Plan) -> Durations:
        ms = lambda seconds: round(seconds * 1000)
        return cls(tier2_ms=ms(p.tier2), engineering_ms=ms(p.engineering), management_ms=ms(p.management),
                   cadence_ms=ms(p.cadence), resolve_ms=ms(p.resolve))

    def min_spacing(self, horizon: float) -> float:
        """The smallest gap between two different deadlines of one escalation in its first ``horizon`` seconds."""
        start = datetime(2000, 1, 1, tzinfo=UTC)
        times = sorted({at for _, at in self.expected(start, start + timedelta(seconds=horizon))})
        return min((b - a).total_seconds() for a, b in itertools.pairwise(times))

    def expected(self, opened: datetime, until: datetime) -> list[tuple[str, datetime]]:
        """Every deadline of an escalation opened at ``opened`` that is due by ``until``."""
        td = lambda ms: timedelta(milliseconds=ms)
        due: list[tuple[str, datetime]] = []
        at = opened + td(self.tier2_ms)
        due.append(("escalated", at))  # tier2 -> engineering
        at += td(self.engineering_ms)
        due.append(("escalated", at))  # engineering -> management
        while True:
            at += td(self.management_ms)
            if at > until:
                break
            due.append(("ack_reminder", at))
        at = opened
        while True:
            at += td(self.cadence_ms)
            if at > until:
                break
            due.append(("customer_updated", at))
        due.append(("sla_at_risk", opened + td(self.resolve_ms) * AT_RISK))
        due.append(("sla_breached", opened + td(self.resolve_ms)))
        return sorted((d for d in due if d[1] <= until), key=lambda d: d[1])


def write_policy(folder: Path, receiver: str, d: Durations) -> Path:
    """A P1 policy whose every contact (levels and customer) is a webhook to ``receiver``."""
    ack = {"tier1": "1h", "tier2": f"{d.tier2_ms}ms", "engineering": f"{d.engineering_ms}ms",
           "management": f"{d.management_ms}ms"}
    targets = {"entry_level": "tier2", "resolve_within": f"{d.resolve_ms}ms",
               "customer_update_every": f"{d.cadence_ms}ms", "at_risk_at": AT_RISK, "calendar": "24x7",
               "breach_notifies": "management"}
    name = f"bench-outage-{uuid.uuid4().hex[:8]}"  # each receiver URL is another document of v1
    document = {
        "name": name,
        "version": 1,
        "levels": [{"id": level, "name": level.title(), "ack_within": ack[level],
                    "contacts": [{"name": f"{level} pager", "channel": "webhook",
                                  "target": f"{receiver}/{level}"}]} for level in LEVELS],
        "routes": {"bench": "tier1"},
        "priorities": {p: dict(targets) for p in ("P1", "P2", "P3", "P4")},
        "customer": {"channel": "webhook", "target": f"{receiver}/customer"},
        "postmortem_due": "1h",
        "postmortem_remind_every": "1h",
        "csat_window": "1h",
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def outage_request() -> EscalationRequest:
    return EscalationRequest.model_validate({
        "ticket_id": f"O-{uuid.uuid4().hex[:12]}",
        "title": "Benchmark escalation (PostgreSQL outage)",
        "customer": {"id": f"bench-{uuid.uuid4().hex[:6]}", "name": "Bench Corp", "segment": "enterprise"},
        "category": "bench",
        "kind": "hierarchical",
        "priority": "P1",
        "impact": {"users_affected": 10, "critical": True},
    })


# -- the receiver -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    key: str
    path: str
    at: datetime
    signed: bool


class Receiver:
    """Webhook endpoint on 127.0.0.1 in threads of its own: records every arrival, answers 200."""

    def __init__(self, secret: str) -> None:
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint

            def do_POST(self) -> None:
                at = datetime.now(UTC)  # on arrival, before the body is read
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                key = self.headers.get("Idempotency-Key") or ""
                # Each destination signs with its own key, derived from the master secret.
                key_for_url = derive_webhook_secret(secret, receiver.url + self.path,
                                                    customer=self.path.startswith("/customer"))
                signed = verify_signature(key_for_url, dict(self.headers.items()), body)
                with receiver._lock:
                    receiver.arrivals.append(Arrival(key, self.path, at, signed))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.send_header("X-Request-Id", f"bench-{len(receiver.arrivals)}")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a sender that gave up (its worker stopped): its arrival is already recorded

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="outage-receiver", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)


# -- PostgreSQL faults ----------------------------------------------------------------------------


class Fault:
    """SIGKILL (then restart, same port and data) or SIGSTOP (then SIGCONT) the stack's PostgreSQL."""

    def __init__(self, stack: BenchStack, variant: str) -> None:
        self.stack = stack
        self.variant = variant
        self._stopped: list[int] = []

    def _postmaster(self) -> psutil.Process:
        pid = int((self.stack.postgres.cluster / "postmaster.pid").read_text().splitlines()[0])
        return psutil.Process(pid)

    def begin(self) -> None:
        if self.variant == "none":
            return
        main = self._postmaster()
        if self.variant == "freeze":
            main.send_signal(signal.SIGSTOP)  # first, so it forks no new backend
            self._stopped = [main.pid] + [c.pid for c in main.children(recursive=True)]
            for pid in self._stopped[1:]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            return
        everyone = [main, *main.children(recursive=True)]
        for process in everyone:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not all(_gone(p) for p in everyone):
            if time.monotonic() > deadline:
                raise RuntimeError("PostgreSQL did not die")
            time.sleep(0.05)
        # Its lock file names a dead process: stale, as after a crash.
        (self.stack.postgres.cluster / "postmaster.pid").unlink(missing_ok=True)

    def end(self) -> None:
        """Back; returns when PostgreSQL accepts connections again (crash recovery included)."""
        if self.variant == "none":
            return
        if self.variant == "freeze":
            for pid in self._stopped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            self._stopped = []
            return
        self.stack.postgres.start()  # pg_ctl start -w on the same port: durable, WAL replayed

    def recover(self) -> None:
        """Whatever happened, leave PostgreSQL running (the other scenarios share it)."""
        if self._stopped:
            self.end()
        elif self.variant == "kill" and self.stack.postgres.running_postmaster() is None:
            self.stack.postgres.start()


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- one variant --------------------------------------------------------------------------------


@dataclass
class Tracked:
    handle: WorkflowHandle[Any, EscalationState]
    escalation_id: str
    started: datetime
    caught_up_at: float | None = None
    last_query: float = 0.0
    queried_seq: int | None = None


def _cpu(pid: int) -> float:
    if pid <= 0:
        return 0.0
    with contextlib.suppress(psutil.Error):
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system + t.children_user + t.children_system
    return 0.0


async def _live(t: Tracked) -> EscalationState | None:
    try:
        return await t.handle.query("state", result_type=EscalationState)
    except Exception:  # noqa: BLE001 -- a run that cannot answer is reported as not caught up
        return None


async def _wait_caught_up(pool: asyncpg.Pool, runs: list[Tracked], d: Durations, since: float,
                          timeout: float) -> float | None:
    """Seconds from ``since`` until every run's read model equals its live state (None: timed out).

    A run counts as caught up from the first poll at which PostgreSQL showed the ``last_seq`` that
    a live ``state`` query sent after that poll then returned (the live value only grows and the
    read model is never ahead of it, so the two were equal at that poll): the queries' own latency
    is not counted. A run is queried only once PostgreSQL holds as many events as the policy says
    it should have decided by now (or its read model has not moved for 10 s): queries take
    workflow-task slots of the worker that is catching up, so the benchmark asks little.
    """
    limit = asyncio.Semaphore(CATCH_UP_QUERIES)
    seen: dict[str, tuple[int, float]] = {}  # escalation id -> (last_seq in PostgreSQL, first polled)
    in_flight: dict[str, asyncio.Task[None]] = {}
    for t in runs:
        t.caught_up_at = None

    async def confirm(t: Tracked) -> None:
        async with limit:
            t.last_query = time.monotonic()
            live = await _live(t)
        if live is None:
            return
        t.queried_seq = live.last_seq
        value, first = seen.get(t.escalation_id, (None, None))
        if value == live.last_seq and first is not None and first <= t.last_query:
            t.caught_up_at = first

    deadline = since + timeout
    try:
        while True:
            polled = time.monotonic()
            rows = await pool.fetch("SELECT escalation_id, last_seq FROM escalations")
            stored = {r["escalation_id"]: r["last_seq"] for r in rows}
            now = utcnow()
            for t in runs:
                key = t.escalation_id
                if t.caught_up_at is not None or key in in_flight:
                    continue
                got = stored.get(key, 0)
                if key not in seen or seen[key][0] != got:
                    seen[key] = (got, polled)
                due = 1 + len(d.expected(t.started, now - timedelta(seconds=0.5)))
                stale = polled - seen[key][1] >= 10.0 and polled - t.last_query >= 10.0
                if got >= due or stale:
                    task = asyncio.create_task(confirm(t))
                    in_flight[key] = task
                    task.add_done_callback(lambda _, k=key: in_flight.pop(k, None))
            if all(t.caught_up_at is not None for t in runs):
                return max(t.caught_up_at for t in runs if t.caught_up_at is not None) - since
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(max(0.0, 0.25 - (time.monotonic() - polled)))
    finally:
        for task in list(in_flight.values()):
            task.cancel()


async def _sample_activity_queue(run: Run, task_queue: str, since: float, out: list[dict[str, float]]) -> None:
    """Every second: the activity task queue's backlog (tasks no worker slot has taken yet)."""
    request = DescribeTaskQueueRequest(namespace="default", task_queue=TaskQueue(name=task_queue),
                                       task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY, report_stats=True)
    while True:
        clock = time.monotonic()
        with contextlib.suppress(Exception):
            stats = (await run.client.workflow_service.describe_task_queue(request)).stats
            out.append({"t": round(clock - since, 1), "backlog": stats.approximate_backlog_count,
                        "age": round(stats.approximate_backlog_age.ToTimedelta().total_seconds(), 2)})
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - clock)))


def _backlog(samples: list[dict[str, float]], start: float, end: float) -> dict[str, Any]:
    inside = [x for x in samples if start <= x["t"] < end]
    return {"samples": len(inside), "max_count": max((x["backlog"] for x in inside), default=None),
            "max_age_seconds": max((x["age"] for x in inside), default=None)}


async def one(ctx: Context, p: Plan, variant: str) -> dict[str, Any]:
    d = Durations.of(p)
    fault = Fault(ctx.stack, variant)
    # The benchmark's own pools would log every failed reconnect while PostgreSQL is down.
    quiet = logging.getLogger("asyncpg.pool")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        with Receiver(SECRET) as receiver:
            async with ctx.stack.run(f"outage-{variant}") as run:
                try:
                    return await _measure(ctx, p, d, run, fault, receiver, variant)
                finally:
                    await asyncio.to_thread(fault.recover)
    finally:
        quiet.setLevel(level)


async def _measure(ctx: Context, p: Plan, d: Durations, run: Run, fault: Fault, receiver: Receiver,
                   variant: str) -> dict[str, Any]:
    task_queue = queue()
    policy_file = write_policy(ctx.policies, receiver.url, d)
    code = code_state()  # what the worker about to start imports (the checkout may be shared)
    worker = run.spawn("worker", ["-m", "worker"],
                       run.env(task_queue, policy_file, ESCALATION_WEBHOOK_SECRET=SECRET))
    await run.wait_polling(task_queue, worker)

    # Openings, evenly paced (a start never waits for the previous escalation to open).
    begin = time.monotonic() + 1.0
    runs: list[Tracked] = []
    late_starts = 0
    for i in range(p.n):
        wait = begin + p.open_window * i / max(1, p.n - 1) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.25:
            late_starts += 1
        handle = await start_escalation(run.client, outage_request(), task_queue)
        runs.append(Tracked(handle=run.client.get_workflow_handle(handle.id, result_type=EscalationState),
                            escalation_id=handle.first_execution_run_id or "", started=utcnow()))
    # The opening time is the start request's own (the server's): read it back exactly.
    described = await bounded(runs, lambda t: t.handle.describe(), QUERY_CONCURRENCY)
    for t, description in zip(runs, described):
        t.started = description.start_time
    await asyncio.sleep(max(0.0, begin + p.open_window + p.gap - time.monotonic()))
    opened_in_pg = await run.pool.fetchval("SELECT count(*) FROM escalation_events WHERE type = 'opened'")
    pages_before = len(receiver.snapshot())

    # The outage.
    cpu_worker, cpu_temporal = _cpu(worker.pid), _cpu(run.server.process.pid if run.server.process else 0)
    load_before = os.getloadavg()[0]
    fault_at = utcnow()
    fault_clock = time.monotonic()
    samples: list[dict[str, float]] = []
    sampler = asyncio.create_task(_sample_activity_queue(run, task_queue, fault_clock, samples))
    await asyncio.to_thread(fault.begin)
    done = {"kill": "PostgreSQL killed", "freeze": "PostgreSQL frozen", "none": "control: no fault"}[variant]
    ctx.say(f"outage {variant}: {done} at {fault_at:%H:%M:%S.%f}; "
            f"{opened_in_pg}/{p.n} openings projected before it, {pages_before} pages received")
    await asyncio.sleep(max(0.0, fault_clock + p.outage - time.monotonic()))
    restart_clock = time.monotonic()
    await asyncio.to_thread(fault.end)
    recovered_clock = time.monotonic()
    recovered_at = utcnow()
    outage_cpu = {"worker_cpu_seconds": round(_cpu(worker.pid) - cpu_worker, 1),
                  "temporal_cpu_seconds": round(_cpu(run.server.process.pid if run.server.process else 0)
                                                - cpu_temporal, 1),
                  "load_average_1m_before": round(load_before, 2),
                  "load_average_1m_after": round(os.getloadavg()[0], 2)}
    ctx.say(f"outage {variant}: PostgreSQL back after {recovered_clock - fault_clock:.1f}s "
            f"(restart took {recovered_clock - restart_clock:.1f}s)" if variant != "none"
            else f"outage {variant}: {p.outage:g}s of load without a fault")

    pool = await create_pool(run.database_url, min_size=1, max_size=5)
    try:
        catch_up = await _wait_caught_up(pool, runs, d, recovered_clock, p.catch_up_timeout)
        ctx.say(f"outage {variant}: read model caught up "
                + (f"{catch_up:.1f}s after recovery" if catch_up is not None
                   else f"NOT within {p.catch_up_timeout:.0f}s"))
        # Deadlines are checked up to ``after_recovery`` seconds after recovery, once MARGIN has
        # passed since the last of them.
        horizon = recovered_at + timedelta(seconds=p.after_recovery)
        await asyncio.sleep(max(0.0, (horizon - utcnow()).total_seconds() + MARGIN))
        sampler.cancel()
        outage_s = recovered_clock - fault_clock
        queue_stats = {"during_outage": _backlog(samples, 0.0, outage_s),
                       "after_recovery": _backlog(samples, outage_s, outage_s + p.after_recovery),
                       "samples": samples}
        verdict = await _verify(run, pool, runs, d, receiver, fault_at, recovered_at, horizon)
    finally:
        sampler.cancel()
        await pool.close()
    return {
        "variant": variant,
        "n": p.n,
        "code": code,
        "outage_seconds": round(recovered_clock - fault_clock, 2),
        "restart_seconds": round(recovered_clock - restart_clock, 2),
        "late_starts": late_starts,
        "opened_in_pg_before_outage": opened_in_pg,
        "pages_before_outage": pages_before,
        "catch_up_seconds": None if catch_up is None else round(catch_up, 2),
        "caught_up": catch_up is not None,
        "during_outage": outage_cpu,
        "activity_backlog": queue_stats,
        "fault_at": fault_at.isoformat(),
        "recovered_at": recovered_at.isoformat(),
        **verdict,
    }


async def _verify(run: Run, pool: asyncpg.Pool, runs: list[Tracked], d: Durations, receiver: Receiver,
                  fault_at: datetime, recovered_at: datetime, horizon: datetime) -> dict[str, Any]:
    """Lateness, lost, doubled, failed/stuck and where the time went, for deadlines due by ``horizon``."""
    states = await bounded(runs, _live, QUERY_CONCURRENCY)
    live_seq = {t.escalation_id: (s.last_seq if s else None) for t, s in zip(runs, states)}

    async def projected() -> bool:
        rows = await pool.fetch("SELECT escalation_id, last_seq FROM escalations")
        stored = {r["escalation_id"]: r["last_seq"] for r in rows}
        return all(v is not None and stored.get(k, 0) >= v for k, v in live_seq.items())

    final_projected = False
    for _ in range(120):
        if await projected():
            final_projected = True
            break
        await asyncio.sleep(0.5)

    ids = [t.escalation_id for t in runs]
    events = await pool.fetch(
        """SELECT escalation_id, seq, type, occurred_at, payload->>'decided_at' AS decided_at,
                  payload->>'auto' AS auto
             FROM escalation_events WHERE escalation_id = ANY($1) ORDER BY escalation_id, seq""", ids)
    ledger = await pool.fetch(
        """SELECT n.idempotency_key, n.escalation_id, n.seq, n.status, n.sent_at, e.type, e.occurred_at
             FROM notifications n
             JOIN escalation_events e ON e.escalation_id = n.escalation_id AND e.seq = n.seq
            WHERE n.escalation_id = ANY($1)""", ids)
    multi_rows = await pool.fetchval(
        "SELECT count(*) FROM (SELECT idempotency_key FROM notifications GROUP BY 1 HAVING count(*) > 1) k")
    arrivals = receiver.snapshot()

    # Events: gap-free, every expected deadline acted on once, nothing acted on that was not due.
    by_run: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for e in events:
        by_run[e["escalation_id"]].append(e)
    gaps = sum(1 for t in runs if [e["seq"] for e in by_run[t.escalation_id]]
               != list(range(1, len(by_run[t.escalation_id]) + 1)))
    missing_events = sum(max(0, (live_seq[i] or 0) - len(by_run[i])) for i in ids)
    never_acted: list[str] = []
    acted_twice = 0
    unexpected = 0
    decided: dict[str, list[float]] = {"outage": [], "after": []}
    no_decided_at = 0
    for t in runs:
        acted = [e for e in by_run[t.escalation_id]
                 if e["type"] in TIMER_DRIVEN and (e["type"] not in ("escalated", "customer_updated")
                                                   or e["auto"] == "true")]
        seen = Counter((e["type"], e["occurred_at"]) for e in acted)
        acted_twice += sum(c - 1 for c in seen.values() if c > 1)
        expected = d.expected(t.started, horizon)
        for kind, at in expected:
            if not any(k == kind and abs((o - at).total_seconds()) < 0.002 for k, o in seen):
                never_acted.append(f"{t.handle.id} {kind} due {at.isoformat()}")
        for kind, occurred in seen:
            if not any(k == kind and abs((occurred - at).total_seconds()) < 0.002 for k, at in expected) \
                    and occurred <= horizon:
                unexpected += 1
        for e in acted:
            if e["occurred_at"] < fault_at or e["occurred_at"] > horizon:
                continue
            if e["decided_at"] is None:
                no_decided_at += 1  # decided in a task that started exactly at the deadline
                late = 0.0
            else:
                late = (datetime.fromisoformat(e["decided_at"]) - e["occurred_at"]).total_seconds()
            decided["outage" if e["occurred_at"] < recovered_at else "after"].append(late)

    # Pages: every ledger row sent and seen by the receiver; every key seen has a row.
    first: dict[str, datetime] = {}
    per_key: Counter[str] = Counter()
    unsigned = 0
    for a in arrivals:
        per_key[a.key] += 1
        unsigned += not a.signed
        if a.key not in first or a.at < first[a.key]:
            first[a.key] = a.at
    rows_by_key = {r["idempotency_key"]: r for r in ledger}
    paged: dict[str, list[float]] = {"outage": [], "after": []}
    not_sent = never_received = 0
    sent_to_arrival: list[float] = []
    for r in ledger:
        if r["occurred_at"] > horizon:
            continue
        if r["status"] != "sent":
            not_sent += 1
        if r["idempotency_key"] not in first:
            never_received += 1
            continue
        if r["sent_at"] is not None:
            sent_to_arrival.append((r["sent_at"] - first[r["idempotency_key"]]).total_seconds())
        if r["type"] in TIMER_DRIVEN and r["occurred_at"] >= fault_at:
            late = (first[r["idempotency_key"]] - r["occurred_at"]).total_seconds()
            paged["outage" if r["occurred_at"] < recovered_at else "after"].append(late)
    no_row = sum(1 for key, at in first.items() if key not in rows_by_key and at <= horizon)
    resent = sum(c - 1 for c in per_key.values() if c > 1)

    # Runs: running, replaying; where the time went, from their histories.
    replayer = build_replayer(run.client.data_converter)
    descriptions = await bounded(runs, lambda t: t.handle.describe(), QUERY_CONCURRENCY)
    not_running = [t.handle.id for t, dsc in zip(runs, descriptions)
                   if dsc.status != WorkflowExecutionStatus.RUNNING]
    histories = await bounded(runs, lambda t: t.handle.fetch_history(), QUERY_CONCURRENCY)
    not_replaying: list[str] = []
    for t, history in zip(runs, histories):
        reason = await replays(replayer, history)
        if reason is not None:
            not_replaying.append(f"{t.handle.id}: {reason[:200]}")
    not_caught_up = [t.handle.id for t in runs if t.caught_up_at is None]
    stuck = sorted(set(not_running) | {r.split(":")[0] for r in not_replaying} | set(not_caught_up))
    timing = _where_time_went(histories, fault_at, recovered_at, horizon)
    equal = await _read_model_equals_rebuild(pool)

    lost = len(never_acted) + missing_events + gaps + not_sent + never_received + no_row
    return {
        "deadlines_outage": len(decided["outage"]),
        "deadlines_after": len(decided["after"]),
        "decided": percentiles(decided["outage"]),
        "decided_after_recovery": percentiles(decided["after"]),
        "paged": percentiles(paged["outage"]),
        "paged_after_recovery": percentiles(paged["after"]),
        "events_without_decided_at": no_decided_at,
        "lost": lost,
        "lost_detail": {"deadlines_never_acted_on": len(never_acted), "events_missing_in_pg": missing_events,
                        "runs_with_gaps": gaps, "ledger_rows_not_sent": not_sent,
                        "ledger_rows_never_received": never_received, "pages_without_ledger_row": no_row,
                        "examples": never_acted[:5]},
        "doubled": acted_twice + multi_rows,
        "doubled_detail": {"deadlines_acted_twice": acted_twice, "ledger_keys_with_several_rows": multi_rows,
                           "events_at_no_expected_deadline": unexpected},
        "resent_on_the_wire": resent,
        "pages_received": len(arrivals),
        "distinct_keys_received": len(per_key),
        "unsigned_pages": unsigned,
        "ledger_sent_at_minus_first_arrival": percentiles(sent_to_arrival),
        "failed_or_stuck": len(stuck),
        "stuck_detail": {"not_running": not_running, "not_replaying": not_replaying[:5],
                         "not_caught_up": not_caught_up[:10], "final_projection_caught_up": final_projected},
        "read_model_equals_rebuild": equal,
        "checked_deadlines_until": horizon.isoformat(),
        "where_time_went": timing,
    }


def _at(event: Any) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


def _where_time_went(histories: list[Any], start: datetime, recovered: datetime, end: datetime) -> dict[str, Any]:
    """Timer fire delay, workflow task queueing and run time, delivery and projection activities.

    Each measure is split by when it happened: during the outage, or in the window after recovery.
    """
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"outage": [], "after": []})
    late_timers: list[dict[str, Any]] = []
    send_attempts: list[int] = []

    def add(measure: str, at: datetime, value: float) -> None:
        if start <= at < recovered:
            values[measure]["outage"].append(value)
        elif recovered <= at <= end:
            values[measure]["after"].append(value)

    for history in histories:
        events = list(history.events)
        by_id = {e.event_id: e for e in events}
        pending_fired: list[datetime] = []
        for e in events:
            kind = e.event_type
            if kind == EventType.EVENT_TYPE_TIMER_FIRED:
                started = by_id[e.timer_fired_event_attributes.started_event_id]
                armed_in = by_id[started.timer_started_event_attributes.workflow_task_completed_event_id]
                task_started = by_id[armed_in.workflow_task_completed_event_attributes.started_event_id]
                timeout = started.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
                intended = _at(task_started) + timeout
                late = (_at(e) - intended).total_seconds()
                add("timer_fire_delay", intended, late)
                if start <= intended <= end:
                    pending_fired.append(_at(e))
                    if late > 0.5:
                        late_timers.append({
                            "workflow_id": history.workflow_id, "timer_event": started.event_id,
                            "intended_after_start": round((intended - start).total_seconds(), 3),
                            "late": round(late, 3), "armed_seconds_ahead": timeout.total_seconds(),
                        })
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
                scheduled = by_id[e.workflow_task_started_event_attributes.scheduled_event_id]
                add("workflow_task_schedule_to_start", _at(scheduled), (_at(e) - _at(scheduled)).total_seconds())
                for fired in pending_fired:
                    add("timer_fired_to_task_started", fired, (_at(e) - fired).total_seconds())
                pending_fired = []
            elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                started = by_id[e.workflow_task_completed_event_attributes.started_event_id]
                add("workflow_task_start_to_complete", _at(started), (_at(e) - _at(started)).total_seconds())
            elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                attrs = e.activity_task_completed_event_attributes
                scheduled = by_id[attrs.scheduled_event_id]
                began = by_id[attrs.started_event_id]
                name = scheduled.activity_task_scheduled_event_attributes.activity_type.name
                attempt = began.activity_task_started_event_attributes.attempt
                if name == "send_notifications":
                    add("send_schedule_to_start", _at(scheduled), (_at(began) - _at(scheduled)).total_seconds())
                    add("send_start_to_close", _at(began), (_at(e) - _at(began)).total_seconds())
                    if start <= _at(scheduled) <= end:
                        send_attempts.append(attempt)
                elif name == "project_events":
                    add("project_attempts", _at(e), float(attempt))
                    if _at(scheduled) < recovered <= _at(e):
                        # A step that waited out the outage: when it finally got through.
                        values["project_done_after_recovery"]["after"].append((_at(e) - recovered).total_seconds())
    result: dict[str, Any] = {measure: {phase: percentiles(v) for phase, v in phases.items()}
                              for measure, phases in sorted(values.items())}
    result["send_attempts_max"] = max(send_attempts, default=None)
    result["timers_fired_over_half_a_second_late"] = len(late_timers)
    result["late_timer_examples"] = sorted(late_timers, key=lambda t: t["intended_after_start"])[:40]
    return result


async def _read_model_equals_rebuild(pool: asyncpg.Pool) -> bool:
    """The read model equals a rebuild from the events, compared in one snapshot, rolled back."""
    async with pool.acquire() as conn:
        transaction = conn.transaction(isolation="repeatable_read")
        await transaction.start()
        try:
            live = [dict(r) for r in await conn.fetch("SELECT * FROM escalations ORDER BY escalation_id")]
            await rebuild(conn)
            rebuilt = [dict(r) for r in await conn.fetch("SELECT * FROM escalations ORDER BY escalation_id")]
        finally:
            await transaction.rollback()
    return rebuilt == live


# -- the scenario -------------------------------------------------------------------------------


PRODUCT = ("workflows", "activities", "schemas", "escalations", "worker.py")


def code_state() -> dict[str, Any]:
    """The commit and a digest of the product's source as measured (the checkout may be shared)."""
    import hashlib
    import subprocess

    from bench.stack import ROOT

    digest = hashlib.sha256()
    for entry in PRODUCT:
        path = ROOT / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)

    head = git("rev-parse", "HEAD").stdout.strip() or None
    changed = git("diff", "--name-only", "HEAD", "--", *PRODUCT).stdout.split()
    return {"head": head, "source_sha256": digest.hexdigest()[:16], "uncommitted_product_files": changed}



def variants(ctx: Context) -> tuple[str, ...]:
    chosen = os.environ.get("ESCALATIONS_BENCH_OUTAGE_VARIANTS")  # e.g. "kill" to measure one only
    p = plan(ctx.quick)
    if chosen:
        return tuple(v for v in ("kill", "freeze", "none") if v in chosen.split(","))
    return p.variants


TITLES = {"kill": "SIGKILL + restart", "freeze": "SIGSTOP + SIGCONT", "none": "no fault (control)"}


async def run(ctx: Context) -> Outcome:
    p = plan(ctx.quick)
    d = Durations.of(p)
    code = code_state()
    spacing = d.min_spacing(p.open_window + p.gap + p.outage + 70)
    results: dict[str, Any] = {}
    targets: list[Target] = []
    notes: list[str] = []
    if spacing < MIN_SPACING:
        notes.append(f"outage: two deadlines of one escalation only {spacing:g} s apart; the later one may be "
                     "decided up to a second late whatever PostgreSQL does")
    for variant in variants(ctx):
        r = await one(ctx, p, variant)
        results[variant] = r
        ctx.say(f"outage {variant}: decided p99 {r['decided']['p99']}s, paged p99 {r['paged']['p99']}s, "
                f"caught up {r['catch_up_seconds']}s, lost {r['lost']}, doubled {r['doubled']}, "
                f"resent {r['resent_on_the_wire']}, failed/stuck {r['failed_or_stuck']}")
        title = TITLES[variant]
        if variant != "none":  # the control has no goals: it shows what the load alone costs
            targets += [
                Target(f"{title}: decided p99", f"<= {GOAL_DECIDED_P99:g} s late", r["decided"]["p99"],
                       GOAL_DECIDED_P99, unit="s"),
                Target(f"{title}: paged p99", f"<= {GOAL_PAGED_P99:g} s late", r["paged"]["p99"], GOAL_PAGED_P99,
                       unit="s"),
                Target(f"{title}: read model caught up", f"<= {GOAL_CATCH_UP:g} s after recovery",
                       r["catch_up_seconds"], GOAL_CATCH_UP, unit="s"),
                Target(f"{title}: lost", "0", r["lost"], 0),
                Target(f"{title}: doubled", "0", r["doubled"], 0),
                Target(f"{title}: runs failed or stuck", "0", r["failed_or_stuck"], 0),
            ]
        if r["late_starts"]:
            notes.append(f"outage {variant}: {r['late_starts']} of {p.n} starts were more than 0.25 s behind "
                         "their pace")
        if r["opened_in_pg_before_outage"] < p.n:
            notes.append(f"outage {variant}: only {r['opened_in_pg_before_outage']} of {p.n} openings were in "
                         "PostgreSQL when the outage began")
        if not r["read_model_equals_rebuild"]:
            notes.append(f"outage {variant}: the read model differs from a rebuild from the events")
        if r["unsigned_pages"]:
            notes.append(f"outage {variant}: {r['unsigned_pages']} pages arrived with a bad signature")
        if r["lost_detail"]["examples"]:
            notes.append(f"outage {variant}: never acted on, e.g. {r['lost_detail']['examples'][0]}")
    return Outcome(config={**asdict(p), "variants": list(results), "policy_ms": asdict(d),
                           "at_risk_at": AT_RISK, "margin_seconds": MARGIN,
                           "min_deadline_spacing_seconds": round(spacing, 3),
                           "code_at_start": code, "code_at_end": code_state()},
                   results=results, targets=targets, notes=notes)

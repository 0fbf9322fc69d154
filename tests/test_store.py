"""The released commit path's store activity: idempotent appends, loud conflicts, superseded decisions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from schemas.activities import EventBatch
from schemas.escalation import DomainEvent, EscalationState
from schemas.notifications import NotificationIntent, notification_key
from tests.helpers.requests import blog_request

T0 = datetime(2026, 11, 27, 9, 0, tzinfo=timezone.utc)


def opened_view(escalation_id: str, at: datetime) -> dict:
    request = blog_request("STORE-1")
    return EscalationState(
        escalation_id=escalation_id, ticket_id=request.ticket_id, workflow_id=request.workflow_id,
        title=request.title, customer=request.customer, category=request.category, kind=request.kind,
        status="open", priority=request.priority, level="tier2", level_name="Tier 2 Support", owner="Dana",
        route="tier2", deadlines={"ack_due": at + timedelta(minutes=15)}, trigger=request.trigger,
        policy={"name": "default", "version": 1}, opened_at=at, updated_at=at, last_seq=1,
    ).model_dump(mode="json")


def batch(at: datetime, decided_in: int, run_id: str = "run-1", recipient: str = "Dana") -> EventBatch:
    event = DomainEvent(escalation_id="esc-1", ticket_id="STORE-1", seq=1, type="opened", occurred_at=at,
                        payload={"view": opened_view("esc-1", at), "fingerprint": "acme|integration|sf", "rank": 1})
    intent = NotificationIntent(
        key=notification_key("esc-1", 1, recipient, "log"), escalation_id="esc-1", ticket_id="STORE-1", seq=1,
        audience="owner", recipient=recipient, channel="log", target="tier2", template="escalation_opened",
        context={"escalation": {"ticket_id": "STORE-1"}},
    )
    return EventBatch(escalation_id="esc-1", ticket_id="STORE-1", events=[event], intents=[intent],
                      run_id=run_id, decided_in=decided_in)


async def test_retry_is_a_no_op(pg_pool):
    store = ActivityEnvironment()
    activities = StoreActivities(pg_pool)
    assert await store.run(activities.record_events, batch(T0, 3)) == 1
    assert await store.run(activities.record_events, batch(T0, 3)) == 0
    assert await pg_pool.fetchval("SELECT count(*) FROM escalation_events") == 1
    assert await pg_pool.fetchval("SELECT count(*) FROM notifications") == 1


async def test_a_later_workflow_task_supersedes_a_decision_that_never_completed(pg_pool):
    activities = StoreActivities(pg_pool)
    env = ActivityEnvironment()
    await env.run(activities.record_events, batch(T0, 3, recipient="Dana"))
    # The worker died before the task completed; the retried task decides again, later.
    later = T0 + timedelta(seconds=11)
    assert await env.run(activities.record_events, batch(later, 6, recipient="Sam")) == 1
    stored = await pg_pool.fetchrow("SELECT occurred_at, decided_in FROM escalation_events WHERE seq = 1")
    assert (stored["occurred_at"], stored["decided_in"]) == (later, 6)
    withdrawn = await pg_pool.fetchrow("SELECT occurred_at, decided_in, superseded_by FROM superseded_events")
    assert (withdrawn["occurred_at"], withdrawn["decided_in"], withdrawn["superseded_by"]) == (T0, 3, 6)
    assert [r["recipient"] for r in await pg_pool.fetch("SELECT recipient FROM notifications")] == ["Sam"]
    assert await pg_pool.fetchval("SELECT opened_at FROM escalations WHERE escalation_id = 'esc-1'") == later


async def test_every_attempt_of_one_workflow_task_supersedes_the_last(pg_pool):
    """Attempts 2, 3, ... of one task see the same history length; none of them fails the run."""
    activities = StoreActivities(pg_pool)
    env = ActivityEnvironment()
    await env.run(activities.record_events, batch(T0, 3, recipient="Dana"))
    for attempt, recipient in enumerate(["Sam", "Kim", "Lee"], start=1):
        at = T0 + timedelta(seconds=attempt)
        assert await env.run(activities.record_events, batch(at, 6, recipient=recipient)) == 1
        assert await pg_pool.fetchval("SELECT occurred_at FROM escalation_events WHERE seq = 1") == at
    assert [r["recipient"] for r in await pg_pool.fetch("SELECT recipient FROM notifications")] == ["Lee"]
    assert await pg_pool.fetchval("SELECT count(*) FROM superseded_events") == 2


@pytest.mark.parametrize(("run_id", "decided_in"), [("run-1", 2), ("run-2", 9)])
async def test_any_other_conflict_fails_loudly(pg_pool, run_id, decided_in):
    activities = StoreActivities(pg_pool)
    env = ActivityEnvironment()
    await env.run(activities.record_events, batch(T0, 3))
    with pytest.raises(ApplicationError) as conflict:
        await env.run(activities.record_events, batch(T0 + timedelta(seconds=1), decided_in, run_id=run_id))
    assert conflict.value.type == "EventConflict" and conflict.value.non_retryable
    assert await pg_pool.fetchval("SELECT occurred_at FROM escalation_events") == T0


async def test_a_decision_whose_notifications_went_out_is_never_replaced(pg_pool):
    activities = StoreActivities(pg_pool)
    env = ActivityEnvironment()
    await env.run(activities.record_events, batch(T0, 3))
    await pg_pool.execute("UPDATE notifications SET status = 'sent', attempts = 1")
    with pytest.raises(ApplicationError, match="already attempted"):
        await env.run(activities.record_events, batch(T0 + timedelta(seconds=1), 6))
    assert await pg_pool.fetchval("SELECT count(*) FROM superseded_events") == 0

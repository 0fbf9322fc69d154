"""``latest_escalation``: the read model answering in the live state's shape."""

from __future__ import annotations

from datetime import timedelta

import httpx
from temporalio.testing import ActivityEnvironment

from activities.notifications import NotificationActivities
from escalations.settings import NotificationSettings
from escalations.policies import packaged_policy
from activities.store import StoreActivities
from escalations.db.readmodel import latest_escalation
from schemas.activities import RepeatQuery
from schemas.escalation import EscalationRequest, EscalationState
from schemas.notifications import DeliveryBatch
from tests.helpers.escalations import current_state, start_escalation
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request
from tests.helpers.simulation import BASE, Sim, pin_policies
from workflows.routing import fingerprint

NOT_IN_READ_MODEL = {"resolve_remaining": True, "deadlines": {"at_risk_at", "auto_resume_at"}}


def request(ticket_id: str, **changes) -> EscalationRequest:  # type: ignore[no-untyped-def]
    return blog_request(ticket_id, kind="hierarchical", **changes)


async def play(pg_pool, sim: Sim) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Store the sim's events and deliver its notifications with the real activities."""
    env = ActivityEnvironment()
    store = StoreActivities(pg_pool)
    sent = failed = 0
    async with httpx.AsyncClient() as http:
        notifications = NotificationActivities(pg_pool, NotificationSettings.from_env({}), http)
        for batch in sim.batches[sim.stored:]:
            await env.run(store.record_events, batch)
            outcome = await env.run(notifications.deliver_notifications, DeliveryBatch(
                escalation_id=batch.escalation_id, ticket_id=batch.ticket_id, intents=batch.intents))
            sent += len(outcome.sent) + len(outcome.already_sent)
            failed += len(outcome.failed)
    sim.stored = len(sim.batches)
    return sent, failed


async def test_unknown_ticket(pg_pool):
    async with pg_pool.acquire() as conn:
        assert await latest_escalation(conn, "NOPE-404") is None


async def test_closed_then_escalated_again(pg_pool):
    policy = (await pin_policies(pg_pool))["default"]
    env, store = ActivityEnvironment(), StoreActivities(pg_pool)

    first = Sim(policy, request("SF-77"), "run-first", notify=True)
    t = BASE
    first.open(t, await env.run(store.find_repeats, RepeatQuery(
        escalation_id="run-first", fingerprint=fingerprint(first.request), opened_at=t,
        window=policy.repeat_window)))
    t += first.ack_budget
    first.ack_timeout(t)  # tier2 -> engineering
    first.acknowledge(t + timedelta(minutes=4), "dana")
    first.pause(t + timedelta(minutes=10), "dana")
    first.resume(t + timedelta(hours=2), "dana")
    first.at_risk(t + timedelta(hours=4))
    first.breach(t + timedelta(hours=5))
    first.resolve(t + timedelta(hours=6), "dana")
    first.postmortem_reminder(t + timedelta(days=1, hours=6), 1)
    first.close(t + timedelta(days=1, hours=8), "dana")
    sent, failed = await play(pg_pool, first)
    assert sent == len(first.events) and failed == 0

    async with pg_pool.acquire() as conn:
        closed = await latest_escalation(conn, "SF-77")
    assert closed is not None
    # Everything the run's final state says, the read model says too.
    expected = first.v.model_copy(update={"notifications_sent": sent})
    assert closed == expected
    assert closed.status == "closed" and closed.level == "engineering"
    assert closed.deadlines.ack_due is None and closed.deadlines.resolve_due is None
    assert [(p.from_level, p.to_level) for p in closed.path] == [("tier2", "engineering")]
    assert closed.paused_total == timedelta(hours=1, minutes=50)
    assert closed.sla_breached and closed.breached_at == t + timedelta(hours=5)
    assert closed.consulted[0].level == "management"
    assert closed.postmortem is not None and closed.postmortem.completed_by == "dana"
    assert closed.postmortem.reminders_sent == 1
    assert closed.resolution is not None and closed.resolution.at == t + timedelta(hours=6)
    assert closed.counts.auto_escalations == 1 and closed.counts.events == len(first.events)
    assert closed.policy.name == "default" and closed.owner_contact is not None

    # The same ticket comes back: its latest escalation is the new, open one, whose
    # webhook notifications fail for good (no signing secret configured).
    later = BASE + timedelta(days=3)
    second = Sim(policy, request("SF-77"), "run-second", notify=True, channel="webhook",
                 target="http://127.0.0.1:9/hooks/escalations")
    second.open(later, await env.run(store.find_repeats, RepeatQuery(
        escalation_id="run-second", fingerprint=fingerprint(second.request), opened_at=later,
        window=policy.repeat_window)))
    second.acknowledge(later + timedelta(minutes=3), "sam")
    sent, failed = await play(pg_pool, second)
    assert (sent, failed) == (0, 2)
    async with pg_pool.acquire() as conn:
        reopened = await latest_escalation(conn, "SF-77")
    assert reopened == second.v.model_copy(update={"notifications_failed": 2})
    assert reopened.escalation_id == "run-second" and reopened.status == "acknowledged"
    assert reopened.repeat_of == "run-first" and reopened.repeat_count == 1
    assert reopened.deadlines.resolve_due == later + policy.priorities["P1"].resolve_within
    assert reopened.deadlines.ack_due is None and reopened.notifications_sent == 0


async def test_open_escalation_matches_the_live_state(client, task_queue, start_worker, pg_pool):
    """While a run is open the read model trails it by nothing but derived fields."""
    async with start_worker(packaged_policy("default")):
        handle = await start_escalation(client, blog_request(), task_queue)

        async def delivered() -> tuple[EscalationState, EscalationState]:
            live = await current_state(handle)
            async with pg_pool.acquire() as conn:
                stored = await latest_escalation(conn, live.ticket_id)
            assert stored is not None and live.notifications_sent >= 2
            assert stored.notifications_sent == live.notifications_sent
            return live, stored

        live, stored = await eventually(delivered, timeout=20)
    assert stored.status == "open" and stored.level == "tier2"
    assert stored.paged_levels == ["tier2", "engineering"]
    assert stored.model_dump(exclude=NOT_IN_READ_MODEL) == live.model_dump(exclude=NOT_IN_READ_MODEL)
    assert stored.deadlines.ack_due is not None and stored.deadlines.resolve_due is not None
    assert stored.resolve_remaining is None and live.resolve_remaining is not None

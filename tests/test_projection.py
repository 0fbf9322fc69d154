"""The projection activity: history's events, ledger rows and delivery results, written in order.

``ActivityEnvironment`` runs the activity against a real PostgreSQL; the workflow side
(what goes into a step, in which order) is covered by the server tests and the fault suite.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from escalations.db.eventstore import rebuild
from schemas.activities import LedgerUpdate, ProjectionBatch
from schemas.escalation import DomainEvent
from schemas.policy import load_policy_file
from workflows import events
from workflows import transitions as tr
from tests.helpers.policies import policy_path
from tests.helpers.requests import blog_request

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def opening(escalation_id: str, ticket_id: str, at: datetime) -> tuple[tr.RunState, events.Assembled]:
    decision = tr.open_escalation(blog_request(ticket_id), load_policy_file(policy_path("fast")),
                                  escalation_id=escalation_id, workflow_id=f"escalation-{ticket_id}", at=at)
    return decision.state, events.assemble(decision.state, decision.changes, at, handoff=None, impact={})


def step(escalation_id: str, ticket_id: str, assembled: events.Assembled, ledger=()) -> ProjectionBatch:
    return ProjectionBatch(escalation_id=escalation_id, ticket_id=ticket_id, run_id="run-1",
                           events=assembled.events, intents=assembled.intents, ledger=list(ledger))


async def read_model(pool) -> list[dict]:
    rows = await pool.fetch("SELECT * FROM escalations ORDER BY escalation_id")
    return [{k: v for k, v in dict(r).items()} for r in rows]


async def test_a_step_stores_events_folds_them_and_queues_their_ledger_rows(pg_pool):
    env, store = ActivityEnvironment(), StoreActivities(pg_pool)
    state, assembled = opening("esc-1", "P-1", T0)
    result = await env.run(store.project_events, step("esc-1", "P-1", assembled))
    assert (result.stored, result.already, result.repeat_count) == (1, 0, 0)
    assert await pg_pool.fetchval("SELECT level FROM escalations WHERE escalation_id = 'esc-1'") == "tier2"
    keys = {r["idempotency_key"] for r in await pg_pool.fetch("SELECT idempotency_key FROM notifications")}
    assert keys == {i.key for i in assembled.intents}
    # The same step again (a retried activity) changes nothing.
    again = await env.run(store.project_events, step("esc-1", "P-1", assembled))
    assert (again.stored, again.already) == (0, 1)


async def test_delivery_results_only_move_forward(pg_pool):
    env, store = ActivityEnvironment(), StoreActivities(pg_pool)
    _, assembled = opening("esc-1", "P-1", T0)
    key = assembled.intents[0].key
    sent = LedgerUpdate(key=key, status="sent", attempts=2, provider_response_id="r-1", at=T0 + timedelta(seconds=1))
    late_retry = LedgerUpdate(key=key, status="pending", attempts=1, last_error="500", at=T0)
    await env.run(store.project_events, step("esc-1", "P-1", assembled, [sent, late_retry]))
    row = await pg_pool.fetchrow("SELECT status, attempts, provider_response_id, sent_at, last_error "
                                 "FROM notifications WHERE idempotency_key = $1", key)
    assert dict(row) == {"status": "sent", "attempts": 2, "provider_response_id": "r-1",
                         "sent_at": T0 + timedelta(seconds=1), "last_error": None}


async def test_a_lone_delivery_result_is_a_step_of_its_own(pg_pool):
    # The step after most pages: one ledger update, no events, no intents (one statement, no BEGIN).
    env, store = ActivityEnvironment(), StoreActivities(pg_pool)
    _, assembled = opening("esc-1", "P-1", T0)
    await env.run(store.project_events, step("esc-1", "P-1", assembled))
    key = assembled.intents[0].key
    sent = LedgerUpdate(key=key, status="sent", attempts=1, provider_response_id="r-1", at=T0 + timedelta(seconds=1))
    for _ in range(2):  # the same step again (a retried activity) changes nothing
        result = await env.run(store.project_events, step("esc-1", "P-1", events.Assembled([], []), [sent]))
        assert (result.stored, result.already) == (0, 0)
        row = await pg_pool.fetchrow("SELECT status, attempts, provider_response_id, sent_at, last_error "
                                     "FROM notifications WHERE idempotency_key = $1", key)
        assert dict(row) == {"status": "sent", "attempts": 1, "provider_response_id": "r-1",
                             "sent_at": T0 + timedelta(seconds=1), "last_error": None}
    assert await pg_pool.fetchval("SELECT count(*) FROM escalation_events") == 1


async def test_a_conflicting_event_or_an_unknown_delivery_is_a_bug_and_never_retried(pg_pool):
    env, store = ActivityEnvironment(), StoreActivities(pg_pool)
    _, assembled = opening("esc-1", "P-1", T0)
    await env.run(store.project_events, step("esc-1", "P-1", assembled))
    other = assembled.events[0].model_copy(update={"occurred_at": T0 + timedelta(seconds=1)})
    with pytest.raises(ApplicationError) as conflict:
        await env.run(store.project_events, step("esc-1", "P-1", events.Assembled([other], [])))
    assert conflict.value.type == "EventConflict" and conflict.value.non_retryable
    unknown = LedgerUpdate(key="esc-1:9:x:log", status="sent", attempts=1, at=T0)
    with pytest.raises(ApplicationError, match="ledger does not hold"):
        await env.run(store.project_events, step("esc-1", "P-1", events.Assembled([], []), [unknown]))


async def test_repeats_do_not_depend_on_the_order_escalations_are_projected_in(pg_pool):
    """After an outage, a later escalation may reach PostgreSQL before an earlier one."""
    env, store = ActivityEnvironment(), StoreActivities(pg_pool)
    _, first = opening("esc-a", "P-1", T0)
    _, second = opening("esc-b", "P-2", T0 + timedelta(hours=1))  # same customer and issue
    _, third = opening("esc-c", "P-3", T0 + timedelta(hours=2))
    result = await env.run(store.project_events, step("esc-c", "P-3", third))
    assert result.repeat_count == 0
    await env.run(store.project_events, step("esc-a", "P-1", first))
    # An opening between two projected ones changes its own row and the later one's.
    result = await env.run(store.project_events, step("esc-b", "P-2", second))
    assert (result.repeat_of, result.repeat_count) == ("esc-a", 1)
    rows = {r["escalation_id"]: (r["repeat_of"], r["repeat_count"])
            for r in await pg_pool.fetch("SELECT escalation_id, repeat_of, repeat_count FROM escalations")}
    assert rows == {"esc-a": (None, 0), "esc-b": ("esc-a", 1), "esc-c": ("esc-b", 2)}
    live = await read_model(pg_pool)
    async with pg_pool.acquire() as conn:
        assert await rebuild(conn) == 3
    assert await read_model(pg_pool) == live


async def test_steps_in_seq_order_fold_like_a_rebuild(pg_pool):
    env, store = ActivityEnvironment(), StoreActivities(pg_pool)
    state, assembled = opening("esc-1", "P-1", T0)
    await env.run(store.project_events, step("esc-1", "P-1", assembled))
    at = T0 + timedelta(seconds=2)
    decision = tr.deadlines(state, at, tr.due_by(state, at))
    later = events.assemble(decision.state, decision.changes, at, handoff=None, impact={},
                            decided_at=at + timedelta(milliseconds=30))
    await env.run(store.project_events, step("esc-1", "P-1", later))
    row = await pg_pool.fetchrow("SELECT level, last_seq, highest_level FROM escalations")
    assert dict(row) == {"level": "engineering", "last_seq": 2, "highest_level": "engineering"}
    stored: list[DomainEvent] = [DomainEvent.model_validate(dict(r)) for r in await pg_pool.fetch(
        "SELECT escalation_id, ticket_id, seq, type, occurred_at, payload FROM escalation_events ORDER BY seq")]
    assert stored[1].payload["decided_at"] == (at + timedelta(milliseconds=30)).isoformat()
    live = await read_model(pg_pool)
    async with pg_pool.acquire() as conn:
        await rebuild(conn)
    assert await read_model(pg_pool) == live

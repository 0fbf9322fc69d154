"""Notifications beside the clocks: a failing channel never holds a deadline; ack stops pages."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from schemas.escalation import AcknowledgeCommand, EscalationState
from tests.conftest import blog_request, current_state, eventually, level_ack, start_escalation, write_policy
from tests.receivers import HttpRecorder, Reply

SECRET = {"ESCALATION_WEBHOOK_SECRET": "test-secret"}


def webhook_levels(url: str, **ack_within: str) -> list[dict]:
    levels = level_ack("fast", **ack_within)
    for level in levels:
        level["contacts"] = [{"name": f"{level['id']} hook", "channel": "webhook",
                              "target": f"{url}/{level['id']}"}]
    return levels


async def test_a_failing_channel_does_not_delay_auto_escalation(client, task_queue, start_worker, pg_pool, tmp_path):
    async with HttpRecorder() as receiver:
        receiver.script("/tier2", *[Reply(500)] * 50)  # down for the whole test
        policy = write_policy(tmp_path, levels=webhook_levels(receiver.url, tier2="2s", engineering="60s"))
        async with start_worker(policy, environ=SECRET):
            handle = await start_escalation(client, blog_request(kind="hierarchical"), task_queue)
            opened = await eventually(lambda: current_state(handle))

            async def moved() -> EscalationState:
                state = await current_state(handle)
                assert state.level == "engineering"
                return state

            state = await eventually(moved, timeout=15)
            moved_at = state.path[0].at
            assert moved_at - opened.deadlines.ack_due < timedelta(seconds=1), "the failing channel held the clock"
            await receiver.wait_for(1, path="/engineering")
            # tier2's page is still being retried with backoff, under one idempotency key.
            tier2 = receiver.to("/tier2")
            assert len(tier2) >= 2 and len({r.headers["Idempotency-Key"] for r in tier2}) == 1
            row = await pg_pool.fetchrow(
                "SELECT status, attempts, last_error FROM notifications WHERE escalation_id = $1 AND recipient = 'tier2 hook'",
                state.escalation_id,
            )
            assert row["status"] in ("pending", "sending") and row["attempts"] >= 2 and "500" in row["last_error"]


async def test_no_page_after_acknowledge(client, task_queue, start_worker, pg_pool, tmp_path):
    async with HttpRecorder() as receiver:
        levels = webhook_levels(receiver.url, management="1s")
        policy = write_policy(tmp_path, levels=levels, priorities={"P1": {"entry_level": "management"}})
        async with start_worker(policy, environ=SECRET):
            handle = await start_escalation(client, blog_request(kind="hierarchical"), task_queue)
            # At the last level it re-pages every ack_within (1 s).
            await receiver.wait_for(3, path="/management", timeout=10)
            acked = await handle.execute_update("acknowledge", AcknowledgeCommand(by="dana"),
                                                result_type=EscalationState)
            assert acked.deadlines.ack_due is None

            async def settled() -> int:
                # A page that came due before the ack may still land; then nothing more.
                state = await current_state(handle)
                sent = await pg_pool.fetchval(
                    "SELECT count(*) FROM notifications WHERE escalation_id = $1 AND recipient = 'management hook'"
                    " AND status = 'sent'", state.escalation_id)
                assert sent == len(receiver.to("/management"))
                return sent

            before = await eventually(settled, timeout=10)
            await asyncio.sleep(3)  # three re-page intervals
            assert len(receiver.to("/management")) == before
            reminders_after_ack = await pg_pool.fetchval(
                "SELECT count(*) FROM escalation_events WHERE escalation_id = $1 AND type = 'ack_reminder'"
                " AND occurred_at > $2", acked.escalation_id, acked.updated_at)
            assert reminders_after_ack == 0

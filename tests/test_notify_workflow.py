"""Notifications beside the clocks: a failing channel never holds a deadline; ack stops pages."""

from __future__ import annotations

from datetime import timedelta

from schemas.escalation import AcknowledgeCommand, EscalationState
from tests.helpers.escalations import current_state, start_escalation
from tests.helpers.policies import level_ack, write_policy
from tests.helpers.polling import eventually
from tests.helpers.receivers import HttpRecorder, Reply
from tests.helpers.requests import blog_request

SECRET = {"ESCALATION_WEBHOOK_SECRET": "test-secret-of-at-least-32-characters"}


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


def pages(receiver: HttpRecorder, path: str) -> list[dict]:
    return [request.json() for request in receiver.to(path)]


async def test_no_page_after_acknowledge(client, task_queue, start_worker, pg_pool, tmp_path):
    async with HttpRecorder() as receiver:
        levels = webhook_levels(receiver.url, management="1s")
        # Customer updates every 2 s: a clock of its own whose pages (customer_update_due, to the
        # same hook) show that time went by after the acknowledgement, without a fixed wait.
        policy = write_policy(tmp_path, levels=levels,
                              priorities={"P1": {"entry_level": "management", "customer_update_every": "2s"}})
        async with start_worker(policy, environ=SECRET):
            handle = await start_escalation(client, blog_request(kind="hierarchical"), task_queue)

            async def repaging() -> None:
                # At the last level it re-pages every ack_within (1 s).
                reminders = [p for p in pages(receiver, "/management") if p["template"] == "ack_reminder"]
                assert len(reminders) >= 2

            await eventually(repaging, timeout=10)
            acked = await handle.execute_update("acknowledge", AcknowledgeCommand(by="dana"),
                                                result_type=EscalationState)
            assert acked.deadlines.ack_due is None and acked.acknowledged_at is not None

            async def settled() -> int:
                # A page that came due before the ack may still land; then nothing more.
                state = await current_state(handle)
                sent = await pg_pool.fetchval(
                    "SELECT count(*) FROM notifications WHERE escalation_id = $1 AND recipient = 'management hook'"
                    " AND status = 'sent'", state.escalation_id)
                assert sent == len(receiver.to("/management"))
                return sent

            await eventually(settled, timeout=10)
            before = [p for p in pages(receiver, "/management") if p["template"] != "customer_update_due"]
            # Three re-page intervals after the ack have gone by once a customer update due after
            # them has been paged: the run acts on its deadlines in order, one clock after another.
            quiet_until = acked.acknowledged_at + timedelta(seconds=3)

            async def paged_later_update() -> None:
                later = await pg_pool.fetchval(
                    "SELECT min(seq) FROM escalation_events WHERE escalation_id = $1 AND type = 'customer_updated'"
                    " AND occurred_at >= $2", acked.escalation_id, quiet_until)
                assert later is not None, "no customer update after three re-page intervals yet"
                assert later in {p["seq"] for p in pages(receiver, "/management")}, "its page has not landed yet"

            await eventually(paged_later_update, timeout=20)
            after = [p for p in pages(receiver, "/management") if p["template"] != "customer_update_due"]
            assert after == before, "paged after the acknowledgement"
            assert {p["template"] for p in pages(receiver, "/management") if p["seq"] > acked.last_seq} == {
                "customer_update_due"}
            reminders_after_ack = await pg_pool.fetchval(
                "SELECT count(*) FROM escalation_events WHERE escalation_id = $1 AND type = 'ack_reminder'"
                " AND occurred_at > $2", acked.escalation_id, acked.updated_at)
            assert reminders_after_ack == 0


async def test_a_page_refused_for_good_is_counted_and_shown_to_operators(client, task_queue, start_worker, tmp_path):
    async with HttpRecorder() as receiver:
        receiver.script("/tier2", Reply(404))
        policy = write_policy(tmp_path, levels=webhook_levels(receiver.url, tier2="60s"))
        async with start_worker(policy, environ=SECRET):
            handle = await start_escalation(client, blog_request(kind="hierarchical"), task_queue)

            async def failed() -> EscalationState:
                state = await current_state(handle)
                assert state.notifications_failed == 1
                return state

            state = await eventually(failed, timeout=15)
            assert "webhook to tier2 hook" in state.last_notification_error and "404" in state.last_notification_error
            metadata = await handle.query("__temporal_workflow_metadata")
            assert "**Failed notifications** 1 · last: webhook to tier2 hook" in metadata.current_details

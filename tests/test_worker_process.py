"""``escalations worker`` as production runs it (a subprocess configured by the environment):
SIGTERM lets a delivery in flight finish, JSON log lines carry the ids, and its metrics port
answers /livez, /readyz and /metrics (issue #16)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
from temporalio.api.enums.v1 import EventType

from schemas.escalation import PostmortemReport
from tests.helpers.codec import TEST_ENV
from tests.helpers.escalations import start_escalation
from tests.helpers.paths import ROOT
from tests.helpers.policies import level_ack, write_policy
from tests.helpers.polling import eventually
from tests.helpers.receivers import HttpRecorder, Reply
from tests.helpers.requests import blog_request

SEND_DELAY = 4.0  # the receiver holds the page this long: SIGTERM arrives while it is in flight


def worker_environment(client, task_queue: str, database_url: str, policy: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TEMPORAL_", "ESCALATION_", "OTEL_")) and key != "DATABASE_URL"}
    env.update({
        "TEMPORAL_ADDRESS": client.service_client.config.target_host, "TEMPORAL_NAMESPACE": client.namespace,
        "DATABASE_URL": database_url, "ESCALATION_TASK_QUEUE": task_queue, "ESCALATION_POLICY_FILE": str(policy),
        "ESCALATION_WEBHOOK_SECRET": "test-secret-of-at-least-32-characters", "ESCALATION_METRICS_PORT": "0",
        **TEST_ENV, **extra,
    })
    return env


def lines_of(log: Path) -> list[dict]:
    found = []
    for line in log.read_text().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue  # the dev server's or Rust's own output, not ours
    return found


async def test_sigterm_drains_the_delivery_in_flight_and_logs_carry_the_ids(client, task_queue, database_url, tmp_path):
    async with HttpRecorder() as receiver:
        receiver.script("/tier2", Reply(delay=SEND_DELAY))
        levels = level_ack("fast", tier2="60s")
        for level in levels:
            level["contacts"] = [{"name": f"{level['id']} hook", "channel": "webhook",
                                  "target": f"{receiver.url}/{level['id']}"}]
        policy = write_policy(tmp_path, levels=levels)
        log = tmp_path / "worker.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "starter", "worker"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
            env=worker_environment(client, task_queue, database_url, policy, ESCALATION_SHUTDOWN_GRACE="20",
                                   ESCALATION_LOG_FORMAT="json"))
        try:
            async def listening() -> str:
                assert process.poll() is None, log.read_text()[-3000:]
                for line in lines_of(log):
                    found = re.search(r"on (http://\S+) \(/metrics", line["message"])
                    if found:
                        return found.group(1)
                raise AssertionError("the worker has not said where its metrics are yet")

            probes = await eventually(listening, timeout=30)
            async with httpx.AsyncClient(base_url=probes, timeout=5) as http:
                async def polling() -> None:
                    ready = await http.get("/readyz")
                    assert ready.status_code == 200, ready.text
                    assert ready.json() == {"status": "ok", "temporal": "ok", "postgres": "ok", "worker": "polling"}

                await eventually(polling, timeout=20)
                request = blog_request(kind="hierarchical")  # pages tier2 only
                handle = await start_escalation(client, request, task_queue)
                await receiver.wait_for(1, path="/tier2", timeout=30)
                await handle.signal("postmortem_report", PostmortemReport(kind="reminder", at=datetime.now(UTC)))
                metrics_text = (await http.get("/metrics")).text
                process.send_signal(signal.SIGTERM)

                async def draining() -> None:
                    ready = await http.get("/readyz")
                    assert ready.status_code == 503 and ready.json()["worker"] == "stopping", ready.text
                    assert (await http.get("/livez")).status_code == 200

                await eventually(draining, timeout=SEND_DELAY - 1, interval=0.05)
            code = await asyncio.to_thread(process.wait, 40)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        assert code == 0, log.read_text()[-3000:]

    # The page was answered and its activity completed: not cancelled, timed out or sent twice.
    assert len(receiver.to("/tier2")) == 1
    history = await handle.fetch_history()
    sends = {e.event_id for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
             and e.activity_task_scheduled_event_attributes.activity_type.name == "send_notifications"}
    ends = [e for e in history.events if e.event_type in (
        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
        EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT, EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED)]
    tier2_send = min(sends)
    outcome = [e.event_type for e in ends if _scheduled_of(e) == tier2_send]
    assert outcome == [EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED], outcome

    lines = lines_of(log)
    sent = next(line for line in lines if "sent via webhook to tier2 hook" in line["message"])
    assert sent["workflow_id"] == handle.id and sent["ticket_id"] == request.ticket_id
    assert sent["run_id"] == handle.result_run_id and sent["activity"] == "send_notifications"
    assert sent["logger"] == "activities.notifications" and sent["level"] == "INFO"
    ignored = next(line for line in lines if line["message"].startswith("ignoring postmortem report"))
    assert ignored["workflow_id"] == handle.id and ignored["run_id"] == handle.result_run_id
    assert ignored["ticket_id"] == request.ticket_id and "activity" not in ignored
    assert "{'attempt'" not in ignored["message"], "the workflow info is in fields, not in the message"
    assert any(line["message"].startswith("worker stopping") for line in lines)

    # The SDK's metrics and the project's on one endpoint.
    for name in ("temporal_workflow_task_schedule_to_start_latency_count", "temporal_num_pollers",
                 'escalation_events_total{namespace="default"', "escalation_projection_lag_seconds",
                 "process_resident_memory_bytes"):
        assert name in metrics_text, name


def _scheduled_of(event) -> int:
    for field in ("activity_task_completed_event_attributes", "activity_task_failed_event_attributes",
                  "activity_task_timed_out_event_attributes", "activity_task_canceled_event_attributes"):
        if event.HasField(field):
            return getattr(event, field).scheduled_event_id
    return 0

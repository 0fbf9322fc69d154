"""A worker SIGKILLed while escalations wait on timers loses nothing and doubles nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from tests.helpers.codec import TEST_ENV
from tests.helpers.escalations import fired_timers, start_escalation
from tests.helpers.paths import ROOT
from tests.helpers.policies import policy_path
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request


def spawn_worker(
    temporal_env: WorkflowEnvironment, database_url: str, task_queue: str, log: Path, policy: Path
) -> subprocess.Popen:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": "default",
        "DATABASE_URL": database_url,
        "ESCALATION_TASK_QUEUE": task_queue,
        "ESCALATION_POLICY_FILE": str(policy),
        "ESCALATION_METRICS_PORT": "0",  # not the default port: other workers may run on this host
        "ESCALATION_SHUTDOWN_GRACE": "5",  # the clean-up SIGTERM waits 20 s at most
        **TEST_ENV,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "worker"], cwd=ROOT, env=env,
        stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


async def test_sigkilled_worker_loses_and_doubles_nothing(temporal_env, task_queue, database_url, pg_pool, tmp_path):
    client = temporal_env.client
    log = tmp_path / "worker.log"
    # tier2 answers within 5 s: time enough to kill the worker before any deadline.
    policy = tmp_path / "fast.yaml"
    text = policy_path("fast").read_text()
    policy.write_text(text.replace("id: tier2\n    name: Tier 2 Support\n    ack_within: 2s",
                                   "id: tier2\n    name: Tier 2 Support\n    ack_within: 5s"))
    assert policy.read_text() != text
    worker = spawn_worker(temporal_env, database_url, task_queue, log, policy)
    try:
        handles = [
            await start_escalation(client, blog_request(kind="hierarchical"), task_queue) for _ in range(8)
        ]

        async def all_opened() -> None:
            opened = await pg_pool.fetchval(
                "SELECT count(*) FROM escalation_events WHERE type = 'opened' AND ticket_id = ANY($1)",
                [h.id.removeprefix("escalation-") for h in handles],
            )
            assert opened == len(handles), (opened, log.read_text()[-2000:])

        await eventually(all_opened, timeout=30)
        # Every one now waits on its 5 s tier2 ack timer. Kill the worker mid-wait.
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)

        async def deadlines_passed() -> None:
            # The server fires each run's tier2 ack timer on time with no worker to act on it.
            for handle in handles:
                fired = await fired_timers(handle)
                assert any(summary.startswith("ack deadline tier2") for summary in fired), (handle.id, fired)

        await eventually(deadlines_passed, timeout=30, interval=0.5)
        due_passed = await pg_pool.fetchval(
            "SELECT count(*) FROM escalation_events WHERE type = 'escalated' AND ticket_id = ANY($1)",
            [h.id.removeprefix("escalation-") for h in handles],
        )
        assert due_passed == 0, "nothing can move while no worker runs"
        worker = spawn_worker(temporal_env, database_url, task_queue, log, policy)

        async def climbed_to_management() -> list:
            rows = await pg_pool.fetch(
                """SELECT ticket_id, array_agg(payload->>'from_level' || '>' || (payload->>'to_level') ORDER BY seq) AS moves
                     FROM escalation_events WHERE type = 'escalated' AND ticket_id = ANY($1)
                    GROUP BY ticket_id""",
                [h.id.removeprefix("escalation-") for h in handles],
            )
            assert len(rows) == len(handles)
            for row in rows:
                assert row["moves"][:2] == ["tier2>engineering", "engineering>management"], row
            return rows

        rows = await eventually(climbed_to_management, timeout=40)
        for row in rows:
            assert len(row["moves"]) == 2, f"an auto-escalation happened twice: {row}"
        gaps = await pg_pool.fetchval(
            """SELECT count(*) FROM (
                 SELECT escalation_id, max(seq) - count(*) AS gap FROM escalation_events GROUP BY escalation_id
               ) g WHERE gap <> 0"""
        )
        assert gaps == 0
        # One delivery row per (event, recipient, channel): the ledger's primary key holds it.
        per_event = await pg_pool.fetchval(
            """SELECT max(n) FROM (SELECT count(*) AS n FROM notifications
                                   GROUP BY escalation_id, seq, recipient, channel) d"""
        )
        assert per_event == 1
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(20)

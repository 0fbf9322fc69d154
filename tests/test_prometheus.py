"""A real Prometheus scrapes a dev stack (issue #16): ``escalations dev`` writes its scrape
targets to stack.json (``metrics_urls``); after an escalation auto-escalates, PromQL finds the
deadline lateness of the ``ack`` clock, the Temporal SDK's workflow-task metrics and the
project's metrics, API and worker both up.

Prometheus is Debian's ``prometheus`` package (``.ci/run`` installs it); the dev stack runs
as a subprocess on the seconds-scale demo policy (Tier 2 acknowledges within 15 s).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from escalations.devstack.postgres import fallback_cluster_dir, free_port
from tests.helpers.devstack import free_ports, start_dev, stop, wait_for_stack, within
from tests.helpers.requests import blog_request
from tests.helpers.servers import server_fault

JOBS = {"api": "escalations-api", "worker": "escalations-worker"}


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data_dir = tmp_path / "data"
    yield data_dir
    shutil.rmtree(fallback_cluster_dir(data_dir), ignore_errors=True)


def start_prometheus(folder: Path, metrics_urls: dict[str, str]) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if binary is None:
        server_fault("Prometheus is not installed (Debian: apt-get install prometheus; .ci/run does it)")
    scrape = []
    for role, url in metrics_urls.items():
        parts = urlsplit(url)
        scrape.append({"job_name": JOBS[role], "metrics_path": parts.path,
                       "static_configs": [{"targets": [parts.netloc]}]})
    config = folder / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                      "scrape_configs": scrape}))
    port = free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=(folder / "prometheus.log").open("wb"), stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{port}"


async def query(http: httpx.AsyncClient, promql: str) -> list[tuple[dict[str, str], float]]:
    answer = (await http.get("/api/v1/query", params={"query": promql})).json()
    assert answer["status"] == "success", answer
    return [(item["metric"], float(item["value"][1])) for item in answer["data"]["result"]]


async def positive(http: httpx.AsyncClient, promql: str) -> float:
    found = await query(http, promql)
    assert found and found[0][1] > 0, (promql, found)
    return found[0][1]


async def test_prometheus_scrapes_the_dev_stack(tmp_path, data_dir):
    log = tmp_path / "dev.log"
    dev = start_dev(data_dir, free_ports(), log)
    prometheus = None
    try:
        stack = wait_for_stack(data_dir, dev, log)
        urls = stack["metrics_urls"]
        assert set(urls) == {"api", "worker"} and all(url.endswith("/metrics") for url in urls.values())
        async with httpx.AsyncClient(timeout=10) as http:
            for url in urls.values():
                base = url.removesuffix("/metrics")
                assert (await http.get(f"{base}/livez")).status_code == 200
                assert (await http.get(f"{base}/readyz")).status_code == 200
            request = blog_request(kind="hierarchical")  # P1 at Tier 2, which acknowledges within 15 s
            started = await http.post(f"{stack['api_url']}/escalations", json=request.as_body(),
                                      headers={"Authorization": f"Bearer {stack['api_token']}"})
            assert started.status_code == 201, started.text
        prometheus, prometheus_url = start_prometheus(tmp_path, urls)
        async with httpx.AsyncClient(base_url=prometheus_url, timeout=10) as http:
            async def scraping() -> None:
                up = {metric["job"]: value for metric, value in await query(http, 'up{job=~"escalations-.*"}')}
                assert up == {"escalations-api": 1.0, "escalations-worker": 1.0}, up

            await within(scraping, 30, "Prometheus scraping the API and the worker")
            # Tier 2 does not acknowledge: the ack clock's decision escalates the run, late by this much.
            lateness = 'sum(escalation_deadline_lateness_seconds_count{clock="ack"})'
            await within(lambda: positive(http, lateness), 60, "the ack clock's lateness in Prometheus")
            late = await positive(http, 'max(escalation_deadline_lateness_seconds_sum{clock="ack"}) '
                                        '/ max(escalation_deadline_lateness_seconds_count{clock="ack"}) + 1')
            assert late - 1 < 5.0, f"auto-escalation ran {late - 1:.2f}s after its deadline"
            sdk = ('sum(temporal_workflow_task_schedule_to_start_latency_count{job="escalations-worker"})',
                   'sum(temporal_activity_execution_latency_count{job="escalations-worker",'
                   'activity_type="send_notifications"})',
                   'sum(temporal_request{job="escalations-api",operation="StartWorkflowExecution"})')
            for promql in sdk:
                await within(lambda promql=promql: positive(http, promql), 20, promql)
            ours = ('escalation_events_total{type="escalated",workflow_type="EscalationWorkflow"}',
                    'escalation_events_total{type="opened"}',
                    'sum(escalation_notifications_total{outcome="sent"})',
                    'escalations_open{priority="P1"}',
                    'escalation_api_requests_total{method="POST",route="/escalations",status="201"}',
                    'escalation_read_model_up')
            for promql in ours:
                await within(lambda promql=promql: positive(http, promql), 20, promql)
            [(_, lag)] = await query(http, 'escalation_projection_lag_seconds{job="escalations-worker"}')
            assert 0 <= lag < 30
    finally:
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(20)
        assert stop(dev) == 0, log.read_text()[-3000:]

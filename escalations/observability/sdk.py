"""The Temporal SDK's own metrics, served beside the project's on one endpoint.

The SDK (its Rust core) exports Prometheus metrics from an HTTP server of its own
(``temporalio.runtime.PrometheusConfig``): workflow-task and activity latencies, pollers,
slots, sticky cache, requests, and what workflows record through
``workflow.metric_meter()``. It listens on a loopback port picked here; the process's
``/metrics`` (worker: ``escalations.observability.endpoint``; API: its route) fetches that
text and appends it to prometheus_client's, so one scrape target has both. Durations are
seconds (``durations_as_seconds``), names as the SDK documents them
(``temporal_workflow_task_schedule_to_start_latency``...), counters without ``_total``
except where the name has it.

The runtime also forwards the SDK core's own log lines to the ``temporalio.core`` logger,
so they come out in the process's log format.
"""

from __future__ import annotations

import logging
import socket

import httpx
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from schemas.keys import LATENESS_METRIC

log = logging.getLogger("escalations.metrics")
SCRAPE_TIMEOUT = 2.0
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def _loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SdkMetrics:
    """A Temporal runtime whose metrics are readable as Prometheus text (``await text()``).

    Give ``runtime`` to ``Client.connect``: every client (and worker) on it reports here.
    """

    def __init__(self) -> None:
        self.address = f"127.0.0.1:{_loopback_port()}"
        self.runtime = Runtime(telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=self.address, durations_as_seconds=True,
                histogram_bucket_overrides={LATENESS_METRIC: list(LATENESS_BUCKETS)},
            ),
            logging=LoggingConfig(filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                                  forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core"))),
        ))

    async def text(self) -> str:
        """The SDK's metrics; empty (and one warning) when its exporter does not answer, so the
        project's own metrics are still served."""
        try:
            async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT) as http:
                response = await http.get(f"http://{self.address}/metrics")
                response.raise_for_status()
        except httpx.HTTPError as err:
            log.warning("the Temporal SDK's metrics exporter on %s did not answer (%s: %s); serving the "
                        "project's metrics without them", self.address, type(err).__name__, err)
            return ""
        return response.text

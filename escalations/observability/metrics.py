"""The project's Prometheus metrics (prometheus_client), one registry per process role.

The worker's registry holds what its activities measure; the API's holds request metrics
and the read-model gauges. Two registries, not the default one, because the dev stack runs
both roles in one process and each endpoint must export only its own (Prometheus would add
them up twice otherwise). What the workflow measures (deadline lateness, events) goes
through the Temporal SDK's meter instead (``schemas.keys.LATENESS_METRIC``), served by
``escalations.observability.sdk`` beside these.

Names are the contract's (DESIGN.md, "Metrics"); docs/operations.md lists them all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

# `*_created` series double every counter's output and no dashboard of ours reads them.
disable_created_metrics()

WORKER_REGISTRY = CollectorRegistry()
API_REGISTRY = CollectorRegistry()
for _registry in (WORKER_REGISTRY, API_REGISTRY):
    ProcessCollector(registry=_registry)
    PlatformCollector(registry=_registry)
    GCCollector(registry=_registry)

NOTIFICATIONS = Counter(
    "escalation_notifications", "Delivery attempts of notifications by channel and outcome "
    "(sent, retry: a retryable failure, failed: permanent, already_sent: skipped, the ledger or a "
    "heartbeat shows it sent)", ["channel", "outcome"], registry=WORKER_REGISTRY)

API_REQUESTS = Counter(
    "escalation_api_requests", "HTTP requests answered by the API, by route template and status",
    ["method", "route", "status"], registry=API_REGISTRY)
API_DURATION = Histogram(
    "escalation_api_request_duration_seconds", "Time to answer an HTTP request, by route template",
    ["method", "route"], registry=API_REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
OPEN = Gauge("escalations_open", "Escalations open, acknowledged or paused (read model), by priority and level",
             ["priority", "level"], registry=API_REGISTRY)
BREACHED = Gauge("escalations_breached", "Unresolved escalations whose resolution SLA is breached (read model)",
                 ["priority"], registry=API_REGISTRY)
READ_MODEL_UP = Gauge("escalation_read_model_up",
                      "1 when the last scrape read the read-model gauges from PostgreSQL, 0 when it could not",
                      registry=API_REGISTRY)
PRIORITIES = ("P1", "P2", "P3", "P4")


def set_read_model(rows: Iterable[Mapping[str, object]]) -> None:
    """The gauges from ``(priority, level, open, breached)`` rows: exactly what the read model holds now."""
    OPEN.clear()
    BREACHED.clear()
    for priority in PRIORITIES:  # present at 0, so `escalations_breached > 0` alerts have a series to watch
        BREACHED.labels(priority=priority).set(0)
    breached: dict[str, float] = {}
    for row in rows:
        priority, level = str(row["priority"]), str(row["level"])
        OPEN.labels(priority=priority, level=level).set(float(row["open"]))  # type: ignore[arg-type]
        breached[priority] = breached.get(priority, 0.0) + float(row["breached"])  # type: ignore[arg-type]
    for priority, count in breached.items():
        BREACHED.labels(priority=priority).set(count)
    READ_MODEL_UP.set(1)


def read_model_unavailable() -> None:
    """No numbers rather than stale ones: the gauges go away and ``escalation_read_model_up`` says why."""
    OPEN.clear()
    BREACHED.clear()
    READ_MODEL_UP.set(0)


class ProjectionLag:
    """``escalation_projection_lag_seconds``: how far PostgreSQL is behind this worker's runs.

    The age of the oldest decision (event, or delivery result) that a projection step on
    this worker has been given and not yet written; 0 when every step it ran succeeded. It
    grows during an outage of PostgreSQL (steps keep failing and being retried) and falls
    to 0 when the projection has caught up. A run whose step is retried by another worker
    is forgotten here after ``forget_after`` seconds without an attempt (the projection's
    retries are at most 5 s apart), so the gauge never sticks at a lag that is not real.
    Several workers: take the max.
    """

    name = "escalation_projection_lag_seconds"

    def __init__(self, forget_after: float = 60.0) -> None:
        self.forget_after = forget_after
        self._pending: dict[str, tuple[float, float]] = {}  # escalation id -> (oldest, last attempt)
        self._lock = threading.Lock()  # collect() runs in the scraping thread or task

    def attempt(self, escalation_id: str, decided: Iterable[datetime]) -> None:
        times = [moment.timestamp() for moment in decided]
        if not times:
            return
        with self._lock:
            oldest, _ = self._pending.get(escalation_id, (min(times), 0.0))
            self._pending[escalation_id] = (min(oldest, *times), time.monotonic())

    def written(self, escalation_id: str) -> None:
        with self._lock:
            self._pending.pop(escalation_id, None)

    def seconds(self) -> float:
        now, recent = time.time(), time.monotonic() - self.forget_after
        with self._lock:
            for key in [key for key, (_, last) in self._pending.items() if last < recent]:
                del self._pending[key]
            oldest = min((first for first, _ in self._pending.values()), default=None)
        return max(0.0, now - oldest) if oldest is not None else 0.0

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self._help())

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(self.name, self._help(), value=self.seconds())

    @staticmethod
    def _help() -> str:
        return ("Age of the oldest decision this worker has given the projection and PostgreSQL does not "
                "hold yet (0: caught up)")


PROJECTION_LAG = ProjectionLag()
WORKER_REGISTRY.register(PROJECTION_LAG)  # type: ignore[arg-type]


def exposition(registry: CollectorRegistry) -> str:
    """The registry in Prometheus' text format (0.0.4, which the SDK's exporter writes too)."""
    return generate_latest(registry).decode("utf-8")

"""Request ids, access log, JSON log lines and the API's /metrics, in-process against the real
dev server and PostgreSQL (issue #16: observable in production)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from temporalio.client import Client

from escalations.api.app import create_app
from escalations.observability import metrics
from escalations.observability.logs import log_handler, ticket_of
from escalations.settings import TelemetrySettings
from tests.helpers.api import TOKEN, api_settings
from tests.helpers.polling import eventually
from tests.helpers.requests import blog_request


@pytest_asyncio.fixture
async def api(client: Client, database_url: str, task_queue: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_settings(client, database_url, task_queue))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=30,
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            yield http


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the root logger writes in the JSON format, as the processes configure it."""
    stream = io.StringIO()
    handler = log_handler(TelemetrySettings.of(log_format="json"), stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def parsed(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_a_request_id_is_accepted_or_made_and_echoed_everywhere(api, json_lines):
    given = await api.get("/escalations/NOPE-1", headers={"X-Request-ID": "req-42.a"})
    assert given.status_code == 404
    assert given.headers["x-request-id"] == "req-42.a"
    assert given.json()["request_id"] == "req-42.a"  # the problem document names it too

    made = await api.post("/escalations", json={"ticket_id": "x"}, headers={"X-Request-ID": "no spaces <allowed>"})
    assert made.status_code == 422
    generated = made.headers["x-request-id"]
    assert generated != "no spaces <allowed>" and len(generated) == 32
    assert made.json()["request_id"] == generated

    unauthenticated = await api.get("/escalations", headers={"Authorization": ""})
    assert unauthenticated.status_code == 401 and unauthenticated.json()["request_id"] == \
        unauthenticated.headers["x-request-id"]
    assert (await api.get("/livez")).headers["x-request-id"]

    access = [line for line in parsed(json_lines) if line["logger"] == "escalations.api.access"]
    first = next(line for line in access if line.get("request_id") == "req-42.a")
    assert first["level"] == "INFO" and first["status"] == 404 and first["method"] == "GET"
    assert first["route"] == "/escalations/{ticket_id}" and first["ticket_id"] == "NOPE-1"
    assert first["path"] == "/escalations/NOPE-1" and first["duration_ms"] >= 0
    assert first["timestamp"].endswith("+00:00")
    assert any(line.get("request_id") == generated and line["status"] == 422 for line in access)


async def test_request_metrics_by_route_template_and_read_model_gauges(api, client, task_queue, start_worker):
    request = blog_request()
    before = _sample("escalation_api_requests_total", method="GET", route="/escalations/{ticket_id}", status="404")
    for _ in range(2):
        await api.get(f"/escalations/{blog_request().ticket_id}")
    assert _sample("escalation_api_requests_total", method="GET", route="/escalations/{ticket_id}",
                   status="404") == before + 2
    async with start_worker("fast"):
        assert (await api.post("/escalations", json=request.as_body())).status_code == 201

        async def projected() -> str:
            text = (await api.get("/metrics", headers={"Authorization": ""})).text
            # this test's database holds one open P1 (at tier2, or a level above by now)
            opened = [line for line in text.splitlines() if line.startswith("escalations_open{")]
            assert len(opened) == 1 and 'priority="P1"' in opened[0] and opened[0].endswith(" 1.0"), opened
            return text

        text = await eventually(projected, timeout=20)
    assert "escalation_read_model_up 1.0" in text
    assert 'escalations_breached{priority="P4"} 0.0' in text
    assert 'escalation_api_request_duration_seconds_bucket{le="0.005",method="POST",route="/escalations"}' in text
    assert "/escalations/SF-" not in text, "a raw path became a label"


async def test_metrics_say_when_the_read_model_cannot_be_read(client, database_url, task_queue):
    app = create_app(api_settings(client, database_url, task_queue))
    async with app.router.lifespan_context(app):
        await app.state.pool.close()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
            response = await http.get("/metrics")
    assert response.status_code == 200
    assert "escalation_read_model_up 0.0" in response.text
    assert "escalations_open{" not in response.text


def test_json_lines_flatten_temporal_context():
    stream = io.StringIO()
    logger = logging.getLogger("tests.observability.flatten")
    logger.addHandler(log_handler(TelemetrySettings.of(log_format="json"), stream))
    logger.propagate = False
    try:
        # what workflow.logger and activity.logger put in `extra`
        logger.warning("from a workflow", extra={"temporal_workflow": {
            "workflow_id": "escalation-SF-7", "run_id": "r-1", "workflow_type": "EscalationWorkflow"}})
        logger.warning("from an activity", extra={"temporal_activity": {
            "workflow_id": "postmortem-SF-8", "workflow_run_id": "r-2", "activity_type": "send_notifications"}})
        logger.warning("elsewhere")
    finally:
        logger.propagate = True
    workflow_line, activity_line, plain = parsed(stream)
    assert {k: workflow_line[k] for k in ("workflow_id", "run_id", "ticket_id")} == {
        "workflow_id": "escalation-SF-7", "run_id": "r-1", "ticket_id": "SF-7"}
    assert "temporal_workflow" not in workflow_line and workflow_line["message"] == "from a workflow"
    assert {k: activity_line[k] for k in ("workflow_id", "run_id", "activity", "ticket_id")} == {
        "workflow_id": "postmortem-SF-8", "run_id": "r-2", "activity": "send_notifications", "ticket_id": "SF-8"}
    assert not {"workflow_id", "run_id", "activity", "ticket_id", "request_id"} & set(plain)
    assert ticket_of("escalations-sweep") is None


def _sample(name: str, **labels: str) -> float:
    return metrics.API_REGISTRY.get_sample_value(name, labels) or 0.0


def test_tracing_stays_off_without_an_endpoint_or_without_the_extra(monkeypatch, caplog):
    from escalations.observability.tracing import Tracing

    assert Tracing.from_settings(TelemetrySettings.of(), "escalations-test") is None
    # The `otel` extra missing: a None entry makes its import fail, as if not installed.
    monkeypatch.setitem(__import__("sys").modules, "opentelemetry.instrumentation.asyncpg", None)
    with caplog.at_level(logging.WARNING, logger="escalations.tracing"):
        off = Tracing.from_settings(TelemetrySettings.of(otel_endpoint="http://collector:4317"), "escalations-test")
    assert off is None
    assert "pip install 'escalations[otel]'" in caplog.text


def test_the_default_handler_follows_stderr_when_it_is_swapped_and_closed(monkeypatch):
    handler = log_handler(TelemetrySettings.of())
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    handler.emit(logging.makeLogRecord({"msg": "one", "levelno": logging.INFO, "levelname": "INFO"}))
    first.close()  # as an in-process command's runner does once it has finished
    monkeypatch.setattr("sys.stderr", second)
    handler.emit(logging.makeLogRecord({"msg": "two", "levelno": logging.INFO, "levelname": "INFO"}))
    assert second.getvalue().rstrip().endswith("two")

"""One trace per escalation (issue #16): the API request, ``StartWorkflow``, the workflow, its
activities, their PostgreSQL statements and the outgoing webhook share one trace id, and the
webhook request carries it (``traceparent``). Spans go to an in-memory exporter; the API, the
worker and the receiver run in-process against the real dev server and PostgreSQL."""

from __future__ import annotations

import httpx
import pytest

from escalations.api.app import create_app
from escalations.policies import PolicySource
from escalations.settings import NotificationSettings, WorkerSettings
from escalations.temporal import connect
from tests.helpers.api import TOKEN, api_settings
from tests.helpers.codec import TEST_CODEC
from tests.helpers.policies import level_ack, write_policy
from tests.helpers.polling import eventually
from tests.helpers.receivers import HttpRecorder
from tests.helpers.requests import blog_request
from worker import build_worker

try:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from escalations.observability.tracing import Tracing
except ImportError as missing:  # the `otel` extra is not installed
    pytest.skip(f"tracing needs the otel extra ({missing.name} is missing): pip install -e '.[otel]'",
                allow_module_level=True)


async def test_one_trace_from_post_escalations_to_the_delivery(client, database_url, task_queue, pg_pool, tmp_path):
    exporter = InMemorySpanExporter()
    tracing = Tracing.to_exporter(exporter, "escalations-test")
    try:
        async with HttpRecorder() as receiver:
            levels = level_ack("fast", tier2="60s")
            for level in levels:
                level["contacts"] = [{"name": f"{level['id']} hook", "channel": "webhook",
                                      "target": f"{receiver.url}/{level['id']}"}]
            policy = write_policy(tmp_path, levels=levels)
            traced = await connect({"target_host": client.service_client.config.target_host,
                                    "namespace": client.namespace}, TEST_CODEC, interceptors=tracing.interceptors())
            settings = api_settings(client, database_url, task_queue, policy_file=str(policy))
            app = create_app(settings, tracing=tracing)
            async with httpx.AsyncClient() as outgoing, app.router.lifespan_context(app):
                tracing.instrument_http(outgoing)
                worker = build_worker(
                    traced, pg_pool, outgoing, policies=PolicySource.from_setting(str(policy)),
                    notification_settings=NotificationSettings.of(webhook_secret="test-secret-of-at-least-32-characters"),
                    settings=WorkerSettings.of(task_queue=task_queue, database_url="", policy_file=str(policy),
                                               strict_sandbox=True, shutdown_grace=0))
                transport = httpx.ASGITransport(app=app)
                async with worker, httpx.AsyncClient(transport=transport, base_url="http://api.test",
                                                     headers={"Authorization": f"Bearer {TOKEN}"}) as api:
                    request = blog_request(kind="hierarchical")
                    started = await api.post("/escalations", json=request.as_body())
                    assert started.status_code == 201, started.text
                    [page] = await receiver.wait_for(1, path="/tier2", timeout=20)

                    def names() -> set[str]:
                        return {span.name for span in exporter.get_finished_spans()}

                    async def delivered_and_projected() -> None:
                        assert {"RunActivity:send_notifications", "RunActivity:project_events"} <= names(), names()

                    await eventually(delivered_and_projected, timeout=20)
    finally:
        tracing.shutdown()

    spans = exporter.get_finished_spans()
    [root] = [s for s in spans if s.name == "POST /escalations"]
    trace_id = root.context.trace_id
    in_trace = [s for s in spans if s.context.trace_id == trace_id]
    named = {s.name for s in in_trace}
    assert {"StartWorkflow:EscalationWorkflow", "RunWorkflow:EscalationWorkflow", "StartActivity:send_notifications",
            "RunActivity:send_notifications", "StartActivity:project_events", "RunActivity:project_events"} <= named, named
    webhook = [s for s in in_trace if s.kind.name == "CLIENT" and str(s.attributes.get(
        "url.full", s.attributes.get("http.url", ""))).startswith(f"{receiver.url}/tier2")]
    assert webhook, sorted(named)
    statements = [s for s in in_trace if s.attributes.get("db.system") == "postgresql"
                  or s.attributes.get("db.system.name") == "postgresql"]
    assert statements, sorted(named)
    by_id = {s.context.span_id: s for s in in_trace}

    def ancestors(span) -> list[str]:
        found = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            found.append(span.name)
        return found

    assert "RunActivity:send_notifications" in ancestors(webhook[0])
    assert any("RunActivity:project_events" in ancestors(s) for s in statements)
    assert f"{trace_id:032x}" in page.headers["traceparent"]  # the receiver can join the trace

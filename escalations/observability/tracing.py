"""OpenTelemetry traces, when asked for and installed: ``Tracing.from_settings``.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set and the ``otel`` extra installed
(``pip install 'escalations[otel]'``), one trace follows an escalation: the API's request
span (FastAPI), ``StartWorkflow`` (Temporal's ``TracingInterceptor`` on the API's client),
the workflow and every activity it schedules (the same interceptor on the worker's client
carries the context in Temporal headers, so a timer that fires hours later still belongs to
the trace), and inside the activities their PostgreSQL statements (asyncpg) and outgoing
HTTP calls (the worker's httpx client: webhooks, Slack, Teams, Jira). Without the variable
nothing is imported or changed; with it but without the extra, one warning says so and
nothing else changes.

The exporter, sampler, headers and service name follow the standard ``OTEL_*`` variables
(read by the OpenTelemetry SDK itself); the service name defaults to the process's role.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from escalations.settings import TelemetrySettings

if TYPE_CHECKING:
    import httpx
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("escalations.tracing")
INSTALL_HINT = "pip install 'escalations[otel]'"


class Tracing:
    """One tracer provider and the instrumentation that reports to it."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        # asyncpg is instrumented process-wide (its Connection methods are wrapped).
        self._asyncpg = AsyncPGInstrumentor()
        self._asyncpg.instrument(tracer_provider=provider)

    @classmethod
    def from_settings(cls, settings: TelemetrySettings, service: str) -> Tracing | None:
        """Tracing to the OTLP endpoint of ``settings``, made the process's global provider; None
        when no endpoint is set or the ``otel`` extra is missing (then a warning says so)."""
        if not settings.otel_endpoint:
            return None
        try:
            import opentelemetry.instrumentation.asyncpg  # noqa: F401 - the whole extra, checked up front
            import opentelemetry.instrumentation.fastapi  # noqa: F401
            import opentelemetry.instrumentation.httpx  # noqa: F401
            from opentelemetry import trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError as err:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed (%s); traces stay "
                        "off: %s", err.name, INSTALL_HINT)
            return None
        exporter = _otlp_exporter(settings.otel_protocol)
        if exporter is None:
            return None
        # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, which win over ours.
        provider = TracerProvider(resource=Resource.create({"service.name": service}).merge(Resource.create()))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        log.info("tracing to %s (%s) as %s", settings.otel_endpoint, settings.otel_protocol,
                 provider.resource.attributes.get("service.name"))
        return cls(provider)

    @classmethod
    def to_exporter(cls, exporter: SpanExporter, service: str) -> Tracing:
        """Spans handed to ``exporter`` as each ends, not made global (tests: an in-memory exporter)."""
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return cls(provider)

    def interceptors(self) -> list[Any]:
        """For ``Client.connect(interceptors=...)``: workers built on that client use them too."""
        from temporalio.contrib.opentelemetry import TracingInterceptor

        return [TracingInterceptor(self.provider.get_tracer("escalations"))]

    def instrument_http(self, client: httpx.AsyncClient) -> None:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def instrument_app(self, app: Any) -> None:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # The probes and /metrics would be most of the spans and tell nothing.
        FastAPIInstrumentor.instrument_app(app, tracer_provider=self.provider,
                                           excluded_urls="/livez,/readyz,/healthz,/metrics")

    def shutdown(self) -> None:
        """Send what is buffered and stop instrumenting asyncpg."""
        self._asyncpg.uninstrument()
        self.provider.shutdown()


def _otlp_exporter(protocol: str) -> SpanExporter | None:
    try:
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
    except ImportError as err:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter for %s is not installed (%s); traces "
                    "stay off: %s", protocol, err.name, INSTALL_HINT)
        return None
    return OTLPSpanExporter()

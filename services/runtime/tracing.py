"""OpenTelemetry spans per request, with the trace context carried in NATS headers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind

_configured = False


def configure_tracing(service: str, instance: str) -> None:
    """Install a tracer provider; spans are exported by OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT is set."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"esper-{service}", "service.instance.id": instance})
    )
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True


def tracer() -> trace.Tracer:
    return trace.get_tracer("esper")


def outgoing_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers for an outgoing message carrying the current trace context."""
    carrier = dict(headers or {})
    inject(carrier)
    return carrier


@contextmanager
def server_span(name: str, headers: dict[str, str] | None) -> Iterator[Span]:
    """A SERVER span parented on the trace context found in the request headers."""
    parent = extract(headers or {})
    token = otel_context.attach(parent)
    try:
        with tracer().start_as_current_span(name, kind=SpanKind.SERVER) as span:
            yield span
    finally:
        otel_context.detach(token)


@contextmanager
def client_span(name: str) -> Iterator[Span]:
    with tracer().start_as_current_span(name, kind=SpanKind.CLIENT) as span:
        yield span

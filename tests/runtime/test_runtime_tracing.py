"""Trace context crosses the bus in NATS headers: the server span is a child of the client span."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.runtime import tracing


def test_server_span_continues_the_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("esper.v1.kasmina.step") as client:
        headers = tracing.outgoing_headers({"Nats-Msg-Id": "x"})
    assert headers["Nats-Msg-Id"] == "x" and "traceparent" in headers
    trace.set_tracer_provider(provider)
    with tracing.server_span("esper.v1.tamiyo.decide", headers) as server:
        pass
    assert server.get_span_context().trace_id == client.get_span_context().trace_id
    assert server.parent is not None and server.parent.span_id == client.get_span_context().span_id


def test_a_request_without_context_starts_a_new_trace() -> None:
    with tracing.server_span("esper.v1.tamiyo.decide", None) as span:
        assert span is not None

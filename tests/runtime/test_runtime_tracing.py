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


def test_without_a_tracer_provider_no_span_is_made_and_no_context_is_sent() -> None:
    """Tracing is off until a provider is installed (configure_tracing does so only with an OTLP endpoint)."""
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        from opentelemetry import trace
        from services.runtime import tracing
        tracing.configure_tracing("tamiyo", "t1")
        assert tracing.tracer() is None
        parent = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
        with tracing.server_span("esper.v1.tamiyo.decide", parent) as span:
            assert not span.is_recording() and not span.get_span_context().is_valid
        with tracing.client_span("esper.v1.kasmina.step") as span:
            assert not span.is_recording()
        assert tracing.outgoing_headers({"Nats-Msg-Id": "x"}) == {"Nats-Msg-Id": "x"}
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"

"""Prometheus metrics shared by every service's endpoints (served on the admin port's /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ServiceMetrics:
    """A per-process registry with request, error and readiness metrics."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.service = service
        self.requests = Counter(
            "esper_requests_total",
            "Requests handled, by endpoint and outcome.",
            ["service", "endpoint", "outcome"],
            registry=self.registry,
        )
        self.bad_requests = Counter(
            "esper_bad_requests_total",
            "Requests answered with an ErrorReply, by endpoint and error code.",
            ["service", "endpoint", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "esper_request_seconds",
            "Endpoint handling time.",
            ["service", "endpoint"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.decode_failures = Counter(
            "esper_decode_failures_total",
            "Bus messages that could not be decoded, by consumer.",
            ["service", "consumer"],
            registry=self.registry,
        )
        self.events = Counter(
            "esper_events_total",
            "Domain events, by kind.",
            ["service", "kind"],
            registry=self.registry,
        )
        self.connected = Gauge("esper_bus_connected", "1 while connected to NATS.", ["service"], registry=self.registry)
        self.reconnects = Counter(
            "esper_bus_reconnects_total", "NATS reconnections.", ["service"], registry=self.registry
        )

    def count_event(self, kind: str, amount: float = 1.0) -> None:
        self.events.labels(self.service, kind).inc(amount)

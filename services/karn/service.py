"""Karn's bus adapter: a durable consumer on TELEMETRY that keeps a readable live log."""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from leyline_schemas import LeylineDecodeError, TelemetryEvent, decode, subjects
from services.karn.live_log import render
from services.runtime.service import ServiceContext, ServiceDefinition
from services.runtime.settings import RuntimeSettings

log = logging.getLogger("esper.karn")


@dataclass(frozen=True, kw_only=True)
class KarnSettings(RuntimeSettings):
    service: str = "karn"
    consumer: str = "karn"
    live_log: bool = True


async def follow_telemetry(ctx: ServiceContext) -> None:
    """Consume every event once (durable), print its line, and count what cannot be decoded."""
    settings = ctx.settings
    assert isinstance(settings, KarnSettings)
    sub = await ctx.js.pull_subscribe(
        subjects.TELEMETRY_SUBJECTS,
        durable=settings.consumer,
        stream=subjects.TELEMETRY_STREAM,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW, ack_wait=30, max_ack_pending=10_000
        ),
    )
    while not ctx.stopping.is_set():
        try:
            batch = await sub.fetch(256, timeout=1.0)
        except (TimeoutError, NatsTimeoutError):
            continue
        for msg in batch:
            try:
                event = decode(msg.data, TelemetryEvent)
            except LeylineDecodeError as exc:
                ctx.metrics.decode_failures.labels("karn", "telemetry").inc()
                log.warning("skipped undecodable telemetry on %s: %s", msg.subject, exc)
            else:
                ctx.metrics.count_event(str(type(event.payload).__struct_config__.tag))
                line = render(event)
                if line is not None and settings.live_log:
                    print(line, file=sys.stdout, flush=True)
            with contextlib.suppress(Exception):
                await msg.ack()


def definition() -> ServiceDefinition:
    return ServiceDefinition(
        name="karn",
        description="Telemetry: durable consumer, live log, run store and operator UIs",
        background=[follow_telemetry],
    )

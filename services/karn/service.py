"""Karn's bus adapter: durable consumers on TELEMETRY and STEPS that feed the run store, and the live log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from leyline_schemas import LeylineDecodeError, TelemetryEvent, decode, subjects
from services.karn.collector import RawMessage, absorb
from services.karn.live_log import render
from services.karn.schema import StoreSchemaError
from services.karn.store import RunStore
from services.runtime.service import ServiceContext, ServiceDefinition
from services.runtime.settings import RuntimeSettings

log = logging.getLogger("esper.karn")


def default_store_path() -> Path:
    """`ESPER_STORE_PATH`, else `karn.sqlite` in the state dir (`ESPER_STATE_DIR`, default `.esper`)."""
    if os.environ.get("ESPER_STORE_PATH"):
        return Path(os.environ["ESPER_STORE_PATH"]).expanduser().resolve()
    return (Path(os.environ.get("ESPER_STATE_DIR", ".esper")) / "karn.sqlite").resolve()


@dataclass(frozen=True, kw_only=True)
class KarnSettings(RuntimeSettings):
    service: str = "karn"
    consumer: str = "karn"
    live_log: bool = True
    store_path: str = ""
    store_consumer: str = "karn-store"
    store_batch: int = 256
    ack_wait: float = 60.0

    def resolved_store_path(self) -> Path:
        return Path(self.store_path).expanduser().resolve() if self.store_path else default_store_path()


def _settings(ctx: ServiceContext) -> KarnSettings:
    settings = ctx.settings
    assert isinstance(settings, KarnSettings), "karn runs with KarnSettings"
    return settings


async def open_store(ctx: ServiceContext) -> None:
    """Open (or create, or migrate) the run store; a store Karn must refuse stops the service with the reason."""
    path = _settings(ctx).resolved_store_path()
    try:
        ctx.state["store"] = await asyncio.to_thread(RunStore.open, path)
    except StoreSchemaError as exc:
        # Better no Karn than a Karn that silently stores nothing: the streams keep every message meanwhile.
        log.error("karn: run store refused, not starting: %s", exc)
        raise
    log.info("karn: run store at %s", path)


async def close_store(ctx: ServiceContext) -> None:
    store = ctx.state.pop("store", None)
    if isinstance(store, RunStore):
        await asyncio.to_thread(store.close)


async def follow_telemetry(ctx: ServiceContext) -> None:
    """The live log: every new event once (its own durable consumer), one readable line each."""
    settings = _settings(ctx)
    if not settings.live_log:
        await ctx.stopping.wait()
        return
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
                ctx.metrics.decode_failures.labels("karn", "live_log").inc()
                log.warning("skipped undecodable telemetry on %s: %s", msg.subject, exc)
            else:
                ctx.metrics.count_event(str(type(event.payload).__struct_config__.tag))
                line = render(event)
                if line is not None:
                    print(line, file=sys.stdout, flush=True)
            with contextlib.suppress(Exception):
                await msg.ack()


async def _store_stream(ctx: ServiceContext, stream: str, subject: str) -> None:
    """Feed one stream into the store from its start; a batch is acknowledged only once it is committed."""
    settings = _settings(ctx)
    store = ctx.state["store"]
    sub = await ctx.js.pull_subscribe(
        subject,
        durable=f"{settings.store_consumer}-{stream.lower()}",
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=settings.ack_wait,
            max_ack_pending=100_000,
        ),
    )
    while not ctx.stopping.is_set():
        try:
            batch: list[Any] = await sub.fetch(settings.store_batch, timeout=1.0)
        except (TimeoutError, NatsTimeoutError):
            continue
        raw = [RawMessage(m.metadata.sequence.stream, m.subject, m.data) for m in batch]
        result = await asyncio.to_thread(absorb, store, stream, raw)
        if result.undecodable:
            ctx.metrics.decode_failures.labels("karn", stream.lower()).inc(result.undecodable)
        ctx.metrics.count_event(f"stored_{stream.lower()}", result.stats.events + result.stats.steps)
        # AckPolicy.ALL: acknowledging the last message acknowledges the whole committed batch.
        with contextlib.suppress(Exception):
            await batch[-1].ack()


async def store_telemetry(ctx: ServiceContext) -> None:
    await _store_stream(ctx, subjects.TELEMETRY_STREAM, subjects.TELEMETRY_SUBJECTS)


async def store_steps(ctx: ServiceContext) -> None:
    await _store_stream(ctx, subjects.STEPS_STREAM, subjects.STEPS_SUBJECTS)


def definition() -> ServiceDefinition:
    return ServiceDefinition(
        name="karn",
        description="Telemetry: run store fed by durable consumers, live log, Sanctum and the HTTP API",
        background=[follow_telemetry, store_telemetry, store_steps],
        on_start=open_store,
        on_stop=close_store,
    )

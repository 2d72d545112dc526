"""Karn's bus adapter: durable consumers on TELEMETRY and STEPS that feed the run store, and the live log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from nats.js.api import AckPolicy, DeliverPolicy

from leyline_schemas import LeylineDecodeError, TelemetryEvent, decode, subjects
from services.karn.collector import RawMessage, absorb
from services.karn.live_log import render
from services.karn.schema import StoreSchemaError
from services.karn.store import RunStore
from services.runtime.consumers import DurableConsumer, batches
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


@dataclass(frozen=True)
class KarnState:
    """The run store every consumer writes to, open for the life of the service."""

    store: RunStore


KarnContext = ServiceContext[KarnSettings, KarnState]


async def open_store(ctx: ServiceContext[KarnSettings, None]) -> KarnState:
    """Open (or create, or migrate) the run store; a store Karn must refuse stops the service with the reason."""
    path = ctx.settings.resolved_store_path()
    try:
        store = await asyncio.to_thread(RunStore.open, path)
    except StoreSchemaError as exc:
        # Better no Karn than a Karn that silently stores nothing: the streams keep every message meanwhile.
        log.error("karn: run store refused, not starting: %s", exc)
        raise
    log.info("karn: run store at %s", path)
    return KarnState(store)


async def close_store(ctx: KarnContext) -> None:
    await asyncio.to_thread(ctx.state.store.close)


async def follow_telemetry(ctx: KarnContext) -> None:
    """The live log: every new event once (its own durable consumer), one readable line each."""
    settings = ctx.settings
    if not settings.live_log:
        await ctx.stopping.wait()
        return
    consumer = DurableConsumer(
        durable=settings.consumer,
        stream=subjects.TELEMETRY_STREAM,
        subject=subjects.TELEMETRY_SUBJECTS,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.NEW,
        ack_wait=30,
        max_ack_pending=10_000,
        batch=256,
    )
    async for batch in batches(ctx.js, consumer, ctx.stopping):
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


async def _store_stream(ctx: KarnContext, stream: str, subject: str) -> None:
    """Feed one stream into the store from its start; a batch is acknowledged only once it is committed."""
    settings = ctx.settings
    store = ctx.state.store
    consumer = DurableConsumer(
        durable=f"{settings.store_consumer}-{stream.lower()}",
        stream=stream,
        subject=subject,
        ack_policy=AckPolicy.ALL,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait,
        max_ack_pending=100_000,
        batch=settings.store_batch,
    )
    async for batch in batches(ctx.js, consumer, ctx.stopping):
        raw = [RawMessage(m.metadata.sequence.stream, m.subject, m.data) for m in batch]
        result = await asyncio.to_thread(absorb, store, stream, raw)
        if result.undecodable:
            ctx.metrics.decode_failures.labels("karn", stream.lower()).inc(result.undecodable)
        ctx.metrics.count_event(f"stored_{stream.lower()}", result.stats.events + result.stats.steps)
        # AckPolicy.ALL: acknowledging the last message acknowledges the whole committed batch.
        with contextlib.suppress(Exception):
            await batch[-1].ack()


async def store_telemetry(ctx: KarnContext) -> None:
    await _store_stream(ctx, subjects.TELEMETRY_STREAM, subjects.TELEMETRY_SUBJECTS)


async def store_steps(ctx: KarnContext) -> None:
    await _store_stream(ctx, subjects.STEPS_STREAM, subjects.STEPS_SUBJECTS)


def definition() -> ServiceDefinition[KarnSettings, KarnState]:
    return ServiceDefinition(
        name="karn",
        description="Telemetry: run store fed by durable consumers, live log, Sanctum and the HTTP API",
        background=[follow_telemetry, store_telemetry, store_steps],
        on_start=open_store,
        on_stop=close_store,
    )

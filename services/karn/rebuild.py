"""`esper karn rebuild`: a fresh run store from the TELEMETRY and STEPS streams, swapped in only once complete."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from leyline_schemas import subjects
from services.karn.collector import RawMessage, absorb
from services.karn.store import RunStore
from services.runtime.bus import connect
from services.runtime.settings import RuntimeSettings

STREAMS = ((subjects.TELEMETRY_STREAM, subjects.TELEMETRY_SUBJECTS), (subjects.STEPS_STREAM, subjects.STEPS_SUBJECTS))


@dataclass
class RebuildReport:
    """How many messages each stream gave, how many were new, and how many could not be decoded."""

    store_path: Path
    messages: dict[str, int] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)
    undecodable: dict[str, int] = field(default_factory=dict)
    runs: int = 0


def _sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]


async def rebuild(
    nats_url: str, store_path: Path, *, batch: int = 1000, progress: Callable[[str], None] | None = None
) -> RebuildReport:
    """Replay both streams from their first message into a new file, then atomically replace `store_path`."""
    nc = await connect(RuntimeSettings.from_env({"service": "karn-rebuild", "nats_url": nats_url}))
    js = nc.jetstream()
    scratch = store_path.with_name(f"{store_path.name}.rebuild-{os.getpid()}")
    for stale in (scratch, *_sidecars(scratch)):
        stale.unlink(missing_ok=True)
    report = RebuildReport(store_path)
    store = RunStore.open(scratch)
    complete = False
    try:
        for stream, subject in STREAMS:
            try:
                info = await js.stream_info(stream)
            except NotFoundError:
                continue
            last = int(info.state.last_seq)
            report.messages[stream] = report.stored[stream] = report.undecodable[stream] = 0
            if not info.state.messages:
                continue
            name = f"karn-rebuild-{uuid.uuid4().hex[:8]}"
            sub = await js.pull_subscribe(
                subject,
                stream=stream,
                config=ConsumerConfig(
                    name=name, ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0
                ),
            )
            try:
                seen = 0
                while seen < last:
                    try:
                        msgs = await sub.fetch(batch, timeout=2.0)
                    except (TimeoutError, NatsTimeoutError):
                        break
                    raw = [RawMessage(m.metadata.sequence.stream, m.subject, m.data) for m in msgs]
                    result = absorb(store, stream, raw)
                    seen = max(seen, max(r.seq for r in raw))
                    report.messages[stream] += len(raw)
                    report.stored[stream] += result.stats.events + result.stats.steps
                    report.undecodable[stream] += result.undecodable
                    if progress is not None:
                        progress(f"{stream}: {seen}/{last}")
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                with contextlib.suppress(Exception):
                    await js.delete_consumer(stream, name)
        report.runs = len(store.read("SELECT run_id FROM runs WHERE run_id != '_system'"))
        complete = True
    finally:
        store.close()
        await nc.close()
        if not complete:
            for stale in (scratch, *_sidecars(scratch)):
                stale.unlink(missing_ok=True)
    # An old write-ahead log must never be applied to the new file: remove it before the swap.
    for stale in _sidecars(store_path):
        stale.unlink(missing_ok=True)
    os.replace(scratch, store_path)
    return report

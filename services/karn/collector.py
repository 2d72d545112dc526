"""From raw stream messages to the store: decode each one (counting and skipping what cannot be), ingest the batch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from leyline_schemas import LeylineDecodeError, StepRecord, TelemetryEvent, decode, subjects
from services.karn.store import IngestStats, Item, RunStore

log = logging.getLogger("esper.karn.collector")

MESSAGE_TYPES: dict[str, type[TelemetryEvent] | type[StepRecord]] = {
    subjects.TELEMETRY_STREAM: TelemetryEvent,
    subjects.STEPS_STREAM: StepRecord,
}


@dataclass(frozen=True)
class RawMessage:
    """One message as read from a stream: its stream sequence, subject and bytes."""

    seq: int
    subject: str
    data: bytes


@dataclass
class AbsorbResult:
    stats: IngestStats
    undecodable: int


def absorb(store: RunStore, stream: str, messages: Sequence[RawMessage]) -> AbsorbResult:
    """Decode and ingest one batch of one stream in a single transaction, remembering the last sequence."""
    message_type = MESSAGE_TYPES[stream]
    items: list[Item] = []
    undecodable = 0
    for message in messages:
        try:
            items.append(decode(message.data, message_type))
        except LeylineDecodeError as exc:
            undecodable += 1
            log.warning("karn: skipped undecodable %s message %d on %s: %s", stream, message.seq, message.subject, exc)
    last = max((m.seq for m in messages), default=0)
    stats = store.ingest(items, {stream: last} if last else None)
    if undecodable:
        store.count(f"undecodable.{stream}", undecodable)
    return AbsorbResult(stats, undecodable)

"""Typed reads of KV entries (the message stored under a key, or None) and the listing of a bucket's keys."""

from __future__ import annotations

from typing import TypeVar

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from leyline_schemas import LeylineDecodeError, Message, decode

T = TypeVar("T", bound=Message)

#: Seconds the server keeps a key listing's consumer once it is done with (nats.py's own `keys()` keeps it 5 min).
KEYS_CONSUMER_TTL = 2.0


async def bucket_keys(kv: KeyValue, timeout: float = 10.0) -> list[str]:
    """Every key in the bucket, deleted ones left out (empty for an empty bucket).

    nats.py's `KeyValue.keys()` leaves its ordered consumer on the server for 5 minutes after it is done. Called on
    every poll (each env worker lists the runs twice a second) that piles up until JetStream refuses new consumers
    ("maximum consumers limit reached"), leases included; this listing's consumer goes within seconds.
    """
    watcher = await kv.watch(">", ignore_deletes=True, meta_only=True, inactive_threshold=KEYS_CONSUMER_TTL)
    found = []
    try:
        while (entry := await next_update(watcher, timeout)) is not None:
            found.append(entry.key)
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return found


async def read_message(kv: KeyValue, key: str, message_type: type[T]) -> T | None:
    """The `message_type` stored under `key`; None when the key is absent, deleted or holds something else."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    if not entry.value:
        return None
    try:
        return decode(entry.value, message_type)
    except LeylineDecodeError:
        return None


async def next_update(watcher: KeyValue.KeyWatcher, timeout: float) -> KeyValue.Entry | None:
    """The next change a KV watch sees, None for the end-of-initial-values marker; TimeoutError after `timeout`.

    nats.py's `KeyWatcher.updates` carries no annotations, so strict typing stops there: this is the one typed door.
    """
    entry: KeyValue.Entry | None = await watcher.updates(timeout=timeout)  # type: ignore[no-untyped-call]
    return entry

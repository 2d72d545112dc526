"""Typed reads of KV entries: the message stored under a key, or None."""

from __future__ import annotations

from typing import TypeVar

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from leyline_schemas import LeylineDecodeError, Message, decode

T = TypeVar("T", bound=Message)


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

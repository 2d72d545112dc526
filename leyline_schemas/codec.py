"""MessagePack encoding of Leyline messages; decoding is strict on types and tolerant of unknown fields."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any, TypeVar

import msgspec

from leyline_schemas.errors import LeylineDecodeError

T = TypeVar("T", bound=msgspec.Struct)

_encoder = msgspec.msgpack.Encoder()
_PATH = re.compile(r"- at `(?P<path>[^`]*)`$")


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


_decoders: dict[type[Any], msgspec.msgpack.Decoder[Any]] = {}
# msgspec (0.22, GIL builds) attaches a struct type's decoding info to the class *before* filling it in, and fills it
# in with Python calls between which another thread can run. A decoder built by that other thread for any type that
# reaches the same class sees the half-built info and segfaults on its first message (seen: Karn's store thread and
# its event loop building their first decoders at once). So every decoder is built under one lock.
_build_lock = threading.Lock()


def decoder(message_type: type[T]) -> msgspec.msgpack.Decoder[T]:
    """The (cached) MessagePack decoder for `message_type`, safe to ask for from any thread."""
    found = _decoders.get(message_type)
    if found is None:
        with _build_lock:
            found = _decoders.get(message_type)
            if found is None:
                found = _decoders[message_type] = msgspec.msgpack.Decoder(message_type)
    return found


def warm(message_types: Iterable[type[Any]]) -> None:
    """Build the decoders of `message_types` now (at import, before any thread decodes)."""
    for message_type in message_types:
        decoder(message_type)


def decode(data: bytes, message_type: type[T]) -> T:
    """Decode `data` as `message_type`, raising LeylineDecodeError naming the type and the offending field."""
    try:
        message: T = decoder(message_type).decode(data)
    except msgspec.ValidationError as exc:
        text = str(exc)
        match = _PATH.search(text)
        path = match.group("path") if match else ""
        detail = _PATH.sub("", text).strip()
        wrong_type = path == "$.msg" or "missing required field `msg`" in text
        raise LeylineDecodeError(message_type.__name__, path, detail, wrong_type=wrong_type) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # invalid UTF-8 in a str is not a msgspec.DecodeError
        raise LeylineDecodeError(message_type.__name__, "", f"malformed MessagePack: {exc}") from exc
    return message


def to_builtins(message: msgspec.Struct) -> Any:
    """A JSON-ready view of a message (enums as values, bytes as base64)."""
    return msgspec.to_builtins(message)


def pack_float32(values: list[float]) -> bytes:
    """Pack floats as little-endian float32 (how recurrent state travels)."""
    import array
    import sys

    packed = array.array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def unpack_float32(data: bytes) -> list[float]:
    import array
    import sys

    if len(data) % 4:
        raise ValueError(f"packed float32 state has {len(data)} bytes, not a multiple of 4")
    unpacked = array.array("f")
    unpacked.frombytes(data)
    if sys.byteorder != "little":
        unpacked.byteswap()
    return unpacked.tolist()

"""MessagePack encoding of Leyline messages; decoding is strict on types and tolerant of unknown fields."""

from __future__ import annotations

import re
from functools import cache
from typing import Any, TypeVar

import msgspec

from leyline_schemas.errors import LeylineDecodeError

T = TypeVar("T", bound=msgspec.Struct)

_encoder = msgspec.msgpack.Encoder()
_PATH = re.compile(r"- at `(?P<path>[^`]*)`$")


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


@cache
def _decoder(message_type: type[Any]) -> msgspec.msgpack.Decoder[Any]:
    return msgspec.msgpack.Decoder(message_type)


def decode(data: bytes, message_type: type[T]) -> T:
    """Decode `data` as `message_type`, raising LeylineDecodeError naming the type and the offending field."""
    try:
        message: T = _decoder(message_type).decode(data)
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

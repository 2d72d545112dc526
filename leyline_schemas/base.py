"""Base classes for Leyline messages: frozen, keyword-only msgspec structs."""

from __future__ import annotations

import msgspec

#: 2: kasmina2 phase 0 appended two lifecycle ops and a blueprint, which an old strict decoder rejects.
SCHEMA_VERSION = 2


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """A nested value inside a message; not sent on its own."""


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="msg", tag=True):
    """A top-level message on the bus; tagged by its class name so a wrong type is named on decode."""

    schema_version: int = SCHEMA_VERSION

"""Base classes for Leyline messages: frozen, keyword-only msgspec structs."""

from __future__ import annotations

import msgspec

SCHEMA_VERSION = 1


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """A nested value inside a message; not sent on its own."""


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="msg", tag=True):
    """A top-level message on the bus; tagged by its class name so a wrong type is named on decode."""

    schema_version: int = SCHEMA_VERSION

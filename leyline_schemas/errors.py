"""Typed errors: the ErrorReply every endpoint answers with, and the one decode error type."""

from __future__ import annotations

from leyline_schemas.base import Message
from leyline_schemas.enums import ErrorCode


class ErrorReply(Message, frozen=True, kw_only=True):
    """Never silence and never a crash: what went wrong with a request, and where."""

    code: ErrorCode
    message: str
    subject: str = ""
    field: str = ""


class LeylineDecodeError(ValueError):
    """Bytes that are not a valid `message_type`; `field` is the JSON path of the offending field."""

    def __init__(self, message_type: str, field: str, detail: str, *, wrong_type: bool = False) -> None:
        self.message_type = message_type
        self.field = field
        self.detail = detail
        self.wrong_type = wrong_type
        where = f" at {field}" if field else ""
        super().__init__(f"cannot decode {message_type}{where}: {detail}")


class RemoteError(RuntimeError):
    """A request answered with an ErrorReply."""

    def __init__(self, reply: ErrorReply) -> None:
        self.reply = reply
        where = f" (field {reply.field})" if reply.field else ""
        super().__init__(f"{reply.subject}: {reply.code.value}: {reply.message}{where}")

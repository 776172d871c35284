"""The request envelope of the front door (bluesky-queueserver's) and the failure reply."""

from __future__ import annotations

import msgspec

from .errors import StationError

__all__ = ["ALLOWED_REQUEST_KEYS", "ErrorReply", "ErrorReplyWithId", "Request", "error_reply"]

ALLOWED_REQUEST_KEYS = ("method", "params")


class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``{"method": str, "params": {...}}``; params stay raw until the method's params type decodes them."""

    method: str
    params: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class ErrorReply(msgspec.Struct, kw_only=True):
    """Every failed request gets this: `success: false`, a human `msg` and a stable `error_code`."""

    success: bool = False
    msg: str
    error_code: str


class ErrorReplyWithId(ErrorReply, kw_only=True):
    """A failure that concerns one object (a DAQ) also names it, as OCM's `DaqException` does."""

    id: str


def error_reply(err: StationError) -> ErrorReply:
    """The reply for a failed request."""
    if err.id:
        return ErrorReplyWithId(msg=err.msg, error_code=err.code, id=err.id)
    return ErrorReply(msg=err.msg, error_code=err.code)

"""The request envelope of the front door (bluesky-queueserver's) and the failure reply."""

from __future__ import annotations

import msgspec

__all__ = ["ALLOWED_REQUEST_KEYS", "ErrorReply", "Request"]

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

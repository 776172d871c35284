"""Typed errors: every failure that crosses a socket carries a stable `code` and a human `msg`."""

from __future__ import annotations

from typing import ClassVar

import msgspec

__all__ = [
    "ActorFailed",
    "ActorStopped",
    "ConfigError",
    "Conflict",
    "DaqFailed",
    "DeadlineExceeded",
    "ErrorInfo",
    "InternalError",
    "InvalidParams",
    "InvalidQuery",
    "InvalidRequest",
    "InvalidState",
    "MalformedRequest",
    "NotFound",
    "PermissionDenied",
    "RequestTooLarge",
    "StationError",
    "StorageError",
    "UnknownActor",
    "UnknownMethod",
    "UnsupportedMessage",
    "error_from_code",
]


class ErrorInfo(msgspec.Struct, frozen=True, tag="error_info"):
    """Wire form of an error: what travels on the bus and in failed replies."""

    code: str
    msg: str
    id: str = ""
    """The id of the object the failure concerns, when there is one (OCM's `DaqException.id`)."""


_BY_CODE: dict[str, type[StationError]] = {}


class StationError(Exception):
    """Base of every error stationd reports; `code` is stable, `msg` is for people."""

    code: ClassVar[str] = "internal_error"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _BY_CODE.setdefault(cls.code, cls)

    def __init__(self, msg: str, *, id: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.id = id
        """The id of the object the failure concerns ("" when none), e.g. the DAQ of a failed command."""

    def to_info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, msg=self.msg, id=self.id)


class InternalError(StationError):
    """A bug or an unexpected failure inside stationd."""

    code = "internal_error"


_BY_CODE["internal_error"] = InternalError


class MalformedRequest(StationError):
    """The request bytes could not be decoded, or did not hold an object."""

    code = "malformed_request"


class InvalidRequest(StationError):
    """The request envelope is wrong: missing `method`, unexpected top-level keys."""

    code = "invalid_request"


class UnknownMethod(StationError):
    """The request names a method that does not exist."""

    code = "unknown_method"


class InvalidParams(StationError):
    """The params are unknown, missing or of the wrong type."""

    code = "invalid_params"


class InvalidState(StationError):
    """The recipient is not in a state that allows the request (a plan already runs, nothing to resume)."""

    code = "invalid_state"


class RequestTooLarge(StationError):
    """The request is larger than the configured limit."""

    code = "request_too_large"


class DeadlineExceeded(StationError):
    """No reply came before the deadline (an ask, or a client request)."""

    code = "timeout"


class ActorStopped(StationError):
    """The actor stopped before it handled the message."""

    code = "actor_stopped"


class UnknownActor(StationError):
    """The message was addressed to an actor that does not exist."""

    code = "unknown_actor"


class UnsupportedMessage(StationError):
    """The actor does not accept this message type."""

    code = "unsupported_message"


class ActorFailed(StationError):
    """The actor raised an unexpected exception while handling an ask."""

    code = "actor_failed"


class PermissionDenied(StationError):
    """The caller's identity is not allowed to do this."""

    code = "permission_denied"


class InvalidQuery(StationError):
    """A query names an unknown field or lookup, or gives a value of the wrong type."""

    code = "invalid_query"


class NotFound(StationError):
    """No record with this id."""

    code = "not_found"


class Conflict(StationError):
    """The change contradicts the record's state (a duplicate id, a finalized set)."""

    code = "conflict"


class StorageError(StationError):
    """The store cannot be used: unreadable, corrupt, from a newer version, or unreachable."""

    code = "storage_error"


class DaqFailed(StationError):
    """A DAQ command failed (OCM's `DaqException`): a source failed to start, every source failed to stop,
    an abort failed. The reply names the DAQ in `id`."""

    code = "daq_failed"


class ConfigError(StationError):
    """The configuration is invalid."""

    code = "config_error"


def error_from_code(code: str, msg: str, id: str = "") -> StationError:
    """Rebuild the typed error for a code received from a peer (unknown codes keep their code)."""
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(msg, id=id)
    err = StationError(msg, id=id)
    err.code = code  # type: ignore[misc]  # an error from a newer peer: keep its code verbatim
    return err

"""The bus envelope: what every actor-to-actor message travels in.

Frames on the bus: a sender's DEALER sends ``[recipient, envelope]``; the ROUTER forwards
``[recipient, sender_socket, envelope]``; the recipient's DEALER receives ``[sender_socket, envelope]``.
The body stays raw bytes until the recipient decodes it with its own inbox type.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec

__all__ = ["RUNTIME", "Envelope", "Kind"]

RUNTIME = "_runtime"
"""Recipient name of the runtime itself (heartbeats, readiness, publishing from child processes)."""


class Kind(IntEnum):
    """What an envelope carries."""

    TELL = 0
    """A message that expects no reply."""
    ASK = 1
    """A request: the recipient answers with REPLY or ERROR carrying the same correlation id."""
    REPLY = 2
    """The answer to an ASK."""
    ERROR = 3
    """A typed error (`ErrorInfo`) answering an ASK."""
    CONTROL = 4
    """Runtime control traffic (stop, log level, heartbeat, readiness); never reaches actor code."""


class Envelope(msgspec.Struct, array_like=True, frozen=True):
    """Header and body of one bus message."""

    kind: int
    sender: str
    """Logical name of the sending actor (or the daemon component)."""
    corr: int = 0
    """Correlation id pairing an ASK with its REPLY/ERROR; 0 for TELL and CONTROL."""
    deadline: float = 0.0
    """Unix time after which the asker no longer waits (0: none); expired asks are dropped unhandled."""
    body: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    """The message, msgpack-encoded."""
    user: str = ""
    """Authenticated user on whose behalf the message was sent (from the client's CurveZMQ key), or ""."""
    user_group: str = ""
    """Authenticated user group of `user`, or ""."""

"""Topics and payloads of the info stream (the daemon's PUB socket).

Every message is two frames, ``[topic, payload]``, as bluesky-queueserver publishes them; every payload
carries `seq`, a per-topic sequence number starting at 1, so a monitor can see what it missed.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "CONSOLE",
    "DOC_PREFIX",
    "EVENT_PREFIX",
    "INFO",
    "LOG",
    "ConsoleMessage",
    "EventMessage",
    "InfoMessage",
    "LogMessage",
    "event_topic",
]

LOG = "log"
CONSOLE = "QS_Console"
INFO = "QS_Info"
EVENT_PREFIX = "event."
DOC_PREFIX = "doc."


def event_topic(actor: str, name: str) -> str:
    """Topic of an actor's event: ``event.<actor>.<name>``."""
    return f"{EVENT_PREFIX}{actor}.{name}"


class ConsoleMessage(msgspec.Struct, kw_only=True):
    """`QS_Console`: a chunk of console text, in bluesky-queueserver's format plus `seq`."""

    time: float
    msg: str
    seq: int = 0


class InfoMessage(msgspec.Struct, kw_only=True):
    """`QS_Info`: ``{"time", "msg": {"status": {...}}}`` as bluesky-queueserver publishes it, plus `seq`."""

    time: float
    msg: dict[str, Any]
    seq: int = 0


class EventMessage(msgspec.Struct, kw_only=True):
    """`event.<actor>.<name>`: something happened in an actor."""

    seq: int = 0
    time: float
    actor: str
    name: str
    data: Any


class LogMessage(msgspec.Struct, kw_only=True):
    """`log`: one structured log event."""

    seq: int = 0
    time: float
    level: str
    actor: str
    event: str
    fields: dict[str, Any] = {}
    """The event's other key/value pairs."""

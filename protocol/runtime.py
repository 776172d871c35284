"""Control messages between the runtime, its process actors and supervisors."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "ActorExited",
    "BusPing",
    "ControlMessage",
    "Heartbeat",
    "NodeReady",
    "PublishRequest",
    "SetLogLevel",
    "StopActor",
]


class Heartbeat(msgspec.Struct, frozen=True, tag="heartbeat"):
    """A process actor is alive and its event loop is responsive."""

    actor: str


class NodeReady(msgspec.Struct, frozen=True, tag="node_ready"):
    """A process actor finished `on_start` and handles messages."""

    actor: str
    pid: int


class ActorExited(msgspec.Struct, frozen=True, tag="actor_exited"):
    """A process actor's last word before its process exits: why it stopped."""

    actor: str
    reason: str
    abnormal: bool


class PublishRequest(msgspec.Struct, frozen=True, tag="publish"):
    """Ask the daemon's publisher to publish on the info stream (used by actors in child processes)."""

    topic: str
    payload: Any


class PublishBatch(msgspec.Struct, frozen=True, tag="publish_batch"):
    """Several publications in one message, published in order (a worker's documents of one batch)."""

    items: list[PublishRequest]


class StopActor(msgspec.Struct, frozen=True, tag="stop_actor"):
    """Stop gracefully: finish the current message, run `on_stop`, answer queued asks with actor_stopped."""


class SetLogLevel(msgspec.Struct, frozen=True, tag="set_log_level"):
    """Change the actor's log level (sent on SIGHUP reload)."""

    level: str


class BusPing(msgspec.Struct, frozen=True, tag="bus_ping"):
    """A round trip through the bus router, used by the watchdog to prove the runtime is healthy."""

    token: int


ControlMessage = (
    Heartbeat | NodeReady | ActorExited | PublishRequest | PublishBatch | StopActor | SetLogLevel | BusPing
)

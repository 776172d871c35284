"""The supervision tree as data: actor and supervisor specifications (built from config by the daemon)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import msgspec
from msgspec import Meta

__all__ = ["ActorSpec", "ChildSpec", "Mode", "RestartType", "Strategy", "SupervisorSpec", "walk"]

ActorName = Annotated[
    str,
    Meta(
        pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Unique actor name: lower case, digits, underscores."
    ),
]


class Strategy(StrEnum):
    """How a supervisor reacts when a child must be restarted (Erlang/OTP names)."""

    ONE_FOR_ONE = "one_for_one"
    """Restart only the child that exited."""
    ONE_FOR_ALL = "one_for_all"
    """Stop all other children (in reverse order), then start all of them again (in order)."""
    REST_FOR_ONE = "rest_for_one"
    """Stop the children started after the one that exited, then restart it and them (in order)."""


class RestartType(StrEnum):
    """When a child that exited is restarted."""

    PERMANENT = "permanent"
    """Always."""
    TRANSIENT = "transient"
    """Only after an abnormal exit (crash, kill, missed heartbeat)."""
    TEMPORARY = "temporary"
    """Never; it is removed from the tree when it exits."""


class Mode(StrEnum):
    """Where an actor runs."""

    INPROC = "inproc"
    """In the daemon process, on its event loop, with an inproc:// mailbox."""
    PROCESS = "process"
    """In its own spawned OS process, with an ipc:// mailbox and heartbeats."""


class ActorSpec(
    msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag="actor", tag_field="kind"
):
    """A supervised actor."""

    name: ActorName
    actor: Annotated[str, Meta(description="Actor class as `package.module:Class`.")]
    mode: Annotated[Mode, Meta(description="`inproc` or `process`.")] = Mode.INPROC
    restart: Annotated[RestartType, Meta(description="`permanent`, `transient` or `temporary`.")] = (
        RestartType.PERMANENT
    )
    shutdown_timeout: Annotated[
        float, Meta(gt=0, description="Seconds a graceful stop may take before the actor is killed.")
    ] = 5.0
    options: Annotated[
        dict[str, Any], Meta(description="Options passed to the actor (its `Options` type).")
    ] = {}
    log_level: Annotated[str | None, Meta(description="Log level of this actor; default: the daemon's.")] = (
        None
    )
    heartbeat_timeout: Annotated[
        Annotated[float, Meta(gt=0)] | None,
        Meta(description="A process actor silent this long is killed; default: [runtime]'s."),
    ] = None


class SupervisorSpec(
    msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True, tag="supervisor", tag_field="kind"
):
    """A supervisor and its children, started in order and stopped in reverse order."""

    name: ActorName
    strategy: Annotated[Strategy, Meta(description="`one_for_one`, `one_for_all` or `rest_for_one`.")] = (
        Strategy.ONE_FOR_ONE
    )
    intensity: Annotated[
        int, Meta(ge=0, description="Restarts allowed within `period`; one more and the supervisor gives up.")
    ] = 5
    period: Annotated[float, Meta(gt=0, description="Window in seconds over which restarts are counted.")] = (
        30.0
    )
    restart: Annotated[RestartType, Meta(description="Restart type of this supervisor under its parent.")] = (
        RestartType.PERMANENT
    )
    shutdown_timeout: Annotated[
        float, Meta(gt=0, description="Seconds to stop all children before giving up on a graceful stop.")
    ] = 30.0
    children: Annotated[list[ActorSpec | SupervisorSpec], Meta(description="Children in start order.")] = []


ChildSpec = ActorSpec | SupervisorSpec


def walk(spec: ChildSpec):
    """Yield every spec of a tree, parents before children."""
    yield spec
    if isinstance(spec, SupervisorSpec):
        for child in spec.children:
            yield from walk(child)

"""Messages and events of supervisors, and the actor-state record shown by `status`."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar

import msgspec

__all__ = [
    "ActorInfo",
    "ActorState",
    "ChildExited",
    "ChildRestarted",
    "GetTree",
    "SupervisorEscalated",
    "TreeSnapshot",
]


class ActorState(StrEnum):
    """Life-cycle state of a supervised child."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


class ActorInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One node of the actor tree, as published in `child_state` events and shown by `status`."""

    name: str
    parent: str | None
    kind: str
    """`actor` or `supervisor`."""
    mode: str
    """`inproc` (in the daemon process) or `process` (its own OS process)."""
    state: ActorState
    restarts: int = 0
    pid: int | None = None
    restart_type: str = "permanent"
    last_exit: str | None = None
    """Why the child last exited (None if it never did)."""
    since: float = 0.0
    """Unix time of the last state change."""


class ChildExited(msgspec.Struct, frozen=True, tag="child_exited"):
    """Runtime to supervisor: a child stopped without being asked to."""

    child: str
    incarnation: int
    reason: str
    abnormal: bool


class TreeSnapshot(msgspec.Struct, frozen=True):
    """Reply to `GetTree`."""

    supervisor: str
    strategy: str
    children: list[ActorInfo]


class GetTree(msgspec.Struct, frozen=True, tag="get_tree"):
    """Ask a supervisor for the state of its children."""

    reply_type: ClassVar[type] = TreeSnapshot


class ChildRestarted(msgspec.Struct, frozen=True):
    """Event `event.<supervisor>.child_restarted`: a child was restarted."""

    child: str
    restarts: int
    cause: str
    strategy: str


class SupervisorEscalated(msgspec.Struct, frozen=True):
    """Event `event.<supervisor>.escalated`: the restart intensity was exceeded; the supervisor gives up."""

    supervisor: str
    reason: str
    intensity: int
    period: float

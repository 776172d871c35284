"""Front-door methods of the daemon itself: `ping`, `status`, `config_get`."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from .queue import QueueStatus
from .supervision import ActorInfo

__all__ = ["ConfigGetParams", "ConfigGetReply", "PingParams", "Status", "StatusParams"]


class Status(QueueStatus, kw_only=True):
    """Reply of `status` and `ping` (bluesky-queueserver returns the status object for both): the queue
    manager's fields (bluesky-queueserver's), then the daemon's."""

    success: bool = True
    msg: str
    """`stationd <version>`."""
    time: str
    """ISO 8601 local time at which this status was produced."""
    version: str
    protocol_version: int
    pid: int
    daemon_state: str
    """`starting`, `running` or `stopping`."""
    started_at: float
    """Unix time at which the daemon started."""
    uptime: float
    """Seconds since the daemon started."""
    status_uid: str
    """Changes exactly when the actor tree or daemon state changes."""
    actors: list[ActorInfo]
    """The supervision tree, parents before children, in start order."""


class StatusParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="status"):
    """`status`: the daemon's status object."""

    reply_type: ClassVar[type] = Status


class PingParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="ping"):
    """`ping`: same reply as `status`."""

    reply_type: ClassVar[type] = Status


class ConfigGetReply(msgspec.Struct, kw_only=True):
    """Reply of `config_get`."""

    success: bool = True
    msg: str = ""
    config: dict[str, Any]
    """`ip_connect_info` (always `{}`: no IPython kernel) and `stationd`, the effective configuration with
    secrets removed."""


class ConfigGetParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="config_get"):
    """`config_get`: the daemon's effective configuration."""

    reply_type: ClassVar[type] = ConfigGetReply

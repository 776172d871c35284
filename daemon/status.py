"""The status snapshot: kept current from supervision events, answered by `status`, published on QS_Info."""

from __future__ import annotations

import asyncio
import datetime
import os
import time
import uuid
from typing import Any

import msgspec

from stationd.protocol.pubsub import EventMessage, event_topic
from stationd.protocol.queue import QueueStatus
from stationd.protocol.supervision import ActorInfo
from stationd.protocol.system import Status
from stationd.protocol.version import PROTOCOL_VERSION, VERSION
from stationd.protocol.worker import QUEUE_MANAGER

from .publisher import Publisher

__all__ = ["StatusBoard"]

_MIN_INFO_INTERVAL = 0.01
"""Least time (s) between two change-driven QS_Info publications: a burst of changes (a plan's end, thousands
of queued items) is published once per interval, its last state at the end of it, not once per change."""


class StatusBoard:
    """Holds what `status` reports; every change gets a new `status_uid` and is published on QS_Info."""

    def __init__(self, publisher: Publisher, *, publish_period: float = 1.0) -> None:
        self._publisher = publisher
        self._publish_period = publish_period
        self._actors: dict[str, ActorInfo] = {}
        self._queue = QueueStatus()
        self._publish_scheduled = False
        self._published_at = -_MIN_INFO_INTERVAL
        """`time.monotonic()` of the last change-driven publication."""
        self.started_at = time.time()
        self.daemon_state = "starting"
        self.status_uid = str(uuid.uuid4())
        publisher.add_listener("event.", self._on_event)
        publisher.coalesce(event_topic(QUEUE_MANAGER, "status"))  # `status` and QS_Info carry it to clients

    def set_daemon_state(self, state: str) -> None:
        self.daemon_state = state
        self._changed()

    def status(self) -> Status:
        now = time.time()
        return Status(
            **msgspec.structs.asdict(self._queue),
            msg=f"stationd {VERSION}",
            time=datetime.datetime.fromtimestamp(now).isoformat(),
            version=VERSION,
            protocol_version=PROTOCOL_VERSION,
            pid=os.getpid(),
            daemon_state=self.daemon_state,
            started_at=self.started_at,
            uptime=round(now - self.started_at, 3),
            status_uid=self.status_uid,
            actors=list(self._actors.values()),
        )

    async def publish_periodically(self) -> None:
        """Publish the status on QS_Info at least every `publish_period` s (as bluesky-queueserver does)."""
        if self._publish_period <= 0:
            return
        while True:
            await asyncio.sleep(self._publish_period)
            self._publisher.publish_info(self.status())

    def _on_event(self, topic: str, message: Any) -> None:
        if not isinstance(message, EventMessage):
            return
        if message.actor == QUEUE_MANAGER and message.name == "status":
            data = message.data
            self._queue = data if isinstance(data, QueueStatus) else msgspec.convert(data, QueueStatus)
            self._changed()
            return
        if message.name != "child_state":
            return
        data = message.data
        info = data if isinstance(data, ActorInfo) else msgspec.convert(data, ActorInfo)
        self._actors[info.name] = info
        self._changed()

    def _changed(self) -> None:
        self.status_uid = str(uuid.uuid4())
        if self._publish_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the first periodic publish covers it
        self._publish_scheduled = True
        wait = self._published_at + _MIN_INFO_INTERVAL - time.monotonic()
        if wait > 0:
            loop.call_later(wait, self._publish_now)
        else:
            loop.call_soon(self._publish_now)

    def _publish_now(self) -> None:
        self._publish_scheduled = False
        self._published_at = time.monotonic()
        self._publisher.publish_info(self.status())

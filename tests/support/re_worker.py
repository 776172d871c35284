"""A stand-in queue manager for RunEngine worker tests: every tell it gets is published as an event."""

from __future__ import annotations

from typing import Any

from stationd.actors.base import Actor
from stationd.protocol.worker import (
    ExistingChanged,
    PlanEnded,
    PlanPaused,
    ReStateChanged,
    RunsChanged,
    TaskEnded,
)

TOLD = "told"
"""Event name under which the stand-in publishes each tell (`event.queue_manager.told`, data: the message)."""


class QueueManagerStandIn(Actor):
    """Accepts the worker's tells and publishes them, so that a test can await them as events."""

    inbox = PlanEnded | PlanPaused | RunsChanged | ReStateChanged | TaskEnded | ExistingChanged

    async def handle(self, msg: Any) -> None:
        self.ctx.publish(TOLD, msg)

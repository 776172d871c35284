"""A source that is an actor of this daemon (a device poller), addressed as `actor://<actor_name>`."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec

from stationd.protocol.daq import (
    SourceAbort,
    SourceAck,
    SourceResult,
    SourceStart,
    SourceStop,
    SourceWait,
    SourceWaitReply,
)
from stationd.protocol.errors import InvalidParams, StationError

from ._result import checked_result
from .base import Source, SourceAddress, SourceFailed

__all__ = ["ActorSource", "AskFn", "actor_name_of"]

AskFn = Callable[[str, msgspec.Struct], Awaitable[Any]]
"""The actor context's `ask(to, msg)`: the reply decoded as `type(msg).reply_type`, or a typed
`StationError` raised."""

_R = TypeVar("_R")
_ACTOR_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def actor_name_of(uri: str) -> str:
    """The actor named by an `actor://<actor_name>` URI; `InvalidParams` for anything else."""
    parts = urlsplit(uri)
    if (
        parts.scheme != "actor"
        or not _ACTOR_NAME.match(parts.netloc)
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise InvalidParams(f"{uri}: an actor source URI is actor://<actor_name>")
    return parts.netloc


class ActorSource(Source):
    """Drives an in-daemon actor with the source protocol messages through `ask`; the actor's typed errors
    (and the bus's: unknown actor, actor stopped, deadline) become `SourceFailed`."""

    def __init__(self, address: SourceAddress, daq_id: str, ask: AskFn) -> None:
        super().__init__(address, daq_id)
        self.actor = actor_name_of(address.uri)
        self._ask = ask

    async def _request(self, msg: msgspec.Struct, reply_type: type[_R]) -> _R:
        try:
            reply = await self._ask(self.actor, msg)
        except StationError as exc:
            raise SourceFailed(exc.msg) from exc
        if not isinstance(reply, reply_type):
            raise SourceFailed(
                f"actor {self.actor} answered {type(msg).__name__} with {type(reply).__name__}, "
                f"not {reply_type.__name__}"
            )
        return reply

    async def start(self) -> None:
        await self._request(SourceStart(daq_id=self.daq_id, source=self.address.name), SourceAck)

    async def stop(self) -> SourceResult:
        return checked_result(await self._request(SourceStop(daq_id=self.daq_id), SourceResult))

    async def abort(self) -> None:
        await self._request(SourceAbort(daq_id=self.daq_id), SourceAck)

    async def wait_end(self, timeout: float) -> bool:
        """The ask must be allowed longer than `timeout` (the `AskFn` given decides its own deadline)."""
        reply = await self._request(SourceWait(daq_id=self.daq_id, timeout=timeout), SourceWaitReply)
        return reply.ended

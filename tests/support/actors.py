"""A test actor that does on command what real actors do by accident: crash, fail, block, exit."""

from __future__ import annotations

import asyncio
import os
from typing import Any, ClassVar

import msgspec

from stationd.actors.base import Actor, Deferred
from stationd.protocol import daq
from stationd.protocol.errors import InvalidState, PermissionDenied


class Echoed(msgspec.Struct, frozen=True):
    text: str
    pid: int
    actor: str
    caller: str | None = None
    caller_group: str | None = None
    success: bool = True
    msg: str = ""


class Echo(msgspec.Struct, frozen=True, tag="probe_echo"):
    """Ask: answer with the text, the pid and the caller's user."""

    text: str
    reply_type: ClassVar[type] = Echoed


class Crash(msgspec.Struct, frozen=True, tag="probe_crash"):
    """Tell: raise, which crashes the actor."""

    reason: str = "boom"


class Fail(msgspec.Struct, frozen=True, tag="probe_fail"):
    """Ask: raise a plain exception (a bug), which goes back to the asker as actor_failed."""


class Refuse(msgspec.Struct, frozen=True, tag="probe_refuse"):
    """Ask: raise a typed StationError, which goes back to the asker as itself."""


class Block(msgspec.Struct, frozen=True, tag="probe_block"):
    """Ask or tell: wait forever (until the actor is cancelled)."""


class Finish(msgspec.Struct, frozen=True, tag="probe_finish"):
    """Tell: stop normally (a transient child is then not restarted)."""


class Exit(msgspec.Struct, frozen=True, tag="probe_exit"):
    """Tell: end the process at once with this exit code (process mode only)."""

    code: int = 3


class Announce(msgspec.Struct, frozen=True, tag="probe_announce"):
    """Tell: publish an event `event.<name>.announced` and log a line."""

    text: str


class Broadcast(msgspec.Struct, frozen=True, tag="probe_broadcast"):
    """Tell: publish `{"n": i}` on each of the topics, in one `publish_topics` call."""

    topics: list[str]


class Later(msgspec.Struct, frozen=True, tag="probe_later"):
    """Ask: a deferred reply, sent when a `Release` tell comes (an error reply when `refuse`)."""

    text: str
    refuse: bool = False
    reply_type: ClassVar[type] = Echoed


class Release(msgspec.Struct, frozen=True, tag="probe_release"):
    """Tell: let every waiting `Later` ask answer."""


class ProbeOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    fail_start: bool = False


class Probe(Actor):
    inbox = Echo | Crash | Fail | Refuse | Block | Finish | Exit | Announce | Broadcast | Later | Release
    Options = ProbeOptions

    def __init__(self, ctx: Any, options: ProbeOptions) -> None:
        super().__init__(ctx, options)
        self._released = asyncio.Event()

    async def on_start(self) -> None:
        if self.options.fail_start:
            raise RuntimeError("configured to fail at start")
        self.ctx.publish("started", {"pid": os.getpid()})

    async def handle(self, msg: Any) -> Any:
        match msg:
            case Echo(text=text):
                caller = getattr(self.ctx, "caller", None)
                return Echoed(
                    text, os.getpid(), self.ctx.name, caller and caller.user, caller and caller.user_group
                )
            case Crash(reason=reason):
                raise RuntimeError(reason)
            case Fail():
                raise ValueError("a bug in the handler")
            case Refuse():
                raise PermissionDenied("not for you")
            case Block():
                await asyncio.Event().wait()
            case Finish():
                self.ctx.stop()
            case Exit(code=code):
                os._exit(code)
            case Later():
                return Deferred(self._later(msg))
            case Release():
                self._released.set()
            case Broadcast(topics=topics):
                self.ctx.publish_topics([(topic, {"n": i}) for i, topic in enumerate(topics)])
            case Announce(text=text):
                self.ctx.publish("announced", {"text": text})
                self.ctx.log.info("announcing", text=text)
            case _:
                raise AssertionError(msg)
        return None

    async def _later(self, msg: Later) -> Echoed:
        await self._released.wait()
        if msg.refuse:
            raise PermissionDenied(f"{msg.text}: not for you")
        return Echoed(msg.text, os.getpid(), self.ctx.name)


class InstrumentSource(Actor):
    """An in-daemon metadata source, as a device poller will be: answers the DAQ source protocol with the
    readings it holds (here a fixed temperature) as keywords."""

    inbox = daq.SourceStart | daq.SourceStop | daq.SourceAbort | daq.SourceWait

    def __init__(self, ctx: Any, options: Any) -> None:
        super().__init__(ctx, options)
        self._recording: set[str] = set()

    async def handle(self, msg: Any) -> Any:
        match msg:
            case daq.SourceStart(daq_id=daq_id):
                self._recording.add(daq_id)
                return daq.SourceAck()
            case daq.SourceStop(daq_id=daq_id) if daq_id in self._recording:
                self._recording.discard(daq_id)
                return daq.SourceResult(
                    keywords=[daq.EsoKeyword(name="INS TEMP1 VAL", value=4.2, comment="[K] cold plate")]
                )
            case daq.SourceStop(daq_id=daq_id):
                raise InvalidState(f"not recording for DAQ {daq_id}")
            case daq.SourceAbort(daq_id=daq_id):
                self._recording.discard(daq_id)
                return daq.SourceAck()
            case daq.SourceWait():
                return daq.SourceWaitReply(ended=False)
            case _:
                raise AssertionError(msg)

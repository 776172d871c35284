"""The bus: one ROUTER that forwards envelopes between actor mailboxes without decoding them (an envelope for
a mailbox of the bus's own process and loop is handed to it directly).

A message addressed to an actor that is not connected gets an immediate typed error back (for asks), so a dead
recipient never makes an asker wait for its deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import zmq

from stationd.protocol.envelope import RUNTIME, Envelope, Kind
from stationd.protocol.errors import ActorStopped, StationError, UnknownActor

from .mailbox import decode_envelope, encode_body, encode_envelope, local_mailbox
from .socket_reader import SocketReader

__all__ = ["Bus"]

_RUNTIME = RUNTIME.encode()


class Bus:
    """ROUTER bound to every bus endpoint (inproc for the daemon's actors, ipc/tcp for child processes)."""

    def __init__(
        self,
        zctx: zmq.Context[Any],
        endpoints: list[str],
        *,
        on_runtime: Callable[[bytes, Envelope], None],
        was_started: Callable[[str], bool],
    ) -> None:
        self._sock: zmq.Socket[bytes] = zctx.socket(zmq.ROUTER, socket_class=zmq.Socket)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unknown recipient -> EHOSTUNREACH, not a silent drop
        self._sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted process actor takes over its identity
        self._sock.setsockopt(zmq.SNDHWM, 0)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._sock.setsockopt(zmq.LINGER, 0)
        for endpoint in endpoints:
            self._sock.bind(endpoint)
        self.endpoints = endpoints
        self._on_runtime = on_runtime
        self._was_started = was_started
        self._reader = SocketReader(self._sock, self._route)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.task = self._loop.create_task(self._reader.serve(), name="bus")

    def _route(self, frames: list[bytes]) -> None:
        if len(frames) != 3:
            return  # not a mailbox: nothing on the bus sends other shapes
        sender, recipient, raw = frames
        if recipient == _RUNTIME:
            self._on_runtime(sender, decode_envelope(raw))
        elif (mailbox := local_mailbox(recipient, self._loop)) is not None:
            mailbox.deliver(sender, raw)
        elif not self._forward([recipient, sender, raw]):
            self._unreachable(sender, recipient.decode(errors="replace"), raw)

    def _forward(self, frames: list[bytes]) -> bool:
        """Send without blocking; False when the recipient is not connected (or, never with no high-water
        mark, its queue is full)."""
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                raise
            return False
        return True

    def _unreachable(self, sender: bytes, recipient: str, raw: bytes) -> None:
        env = decode_envelope(raw)
        if env.kind != Kind.ASK:
            return  # tells to a stopped actor are dropped, as in any actor system
        err: StationError
        if self._was_started(recipient):
            err = ActorStopped(f"actor {recipient!r} is not running")
        else:
            err = UnknownActor(f"no actor named {recipient!r}")
        self.reply_error(sender, env.corr, err)

    def reply_error(self, to: bytes, corr: int, err: StationError) -> None:
        self._deliver(to, Envelope(Kind.ERROR, RUNTIME, corr, body=encode_body(err.to_info())))

    def send(self, to: str, env: Envelope) -> bool:
        """Send an envelope from the runtime itself; False when `to` is not connected (it stopped)."""
        return self._deliver(to.encode(), env)

    def _deliver(self, to: bytes, env: Envelope) -> bool:
        delivered = self._forward([to, _RUNTIME, encode_envelope(env)])
        self._reader.check()  # sent from outside `_route`: messages that arrived meanwhile must be read
        return delivered

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self._sock.close()

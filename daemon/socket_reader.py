"""Serve a ZMQ socket from the event loop's reader callback instead of through `zmq.asyncio`.

`zmq.asyncio` makes a future per receive and per send and wakes a task for each message; taking messages
in the loop's reader callback, in batches, costs a fraction of that (the front door, the bus and every
mailbox carry all of the daemon's traffic, so this is most of a request's overhead). What makes it correct:

- the socket's descriptor (`zmq.FD`) only says that *something changed*: a batch reads until `zmq.EVENTS`
  shows nothing left, and a batch that stopped early schedules the next one itself;
- any other operation on the socket (a send) may take that signal without reading: the owner calls `check`
  after sending from outside `on_message`, which schedules a read.

Owners create the socket as `zctx.socket(kind, socket_class=zmq.Socket)`: a plain socket on the daemon's
`zmq.asyncio` context, still closed by the context's `destroy`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import zmq

__all__ = ["SocketReader"]

_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)  # plain ints: enum members cost a lookup per use
READ_BATCH = 64
"""Most messages taken from a socket before other callbacks (actors, replies) get a turn."""


class SocketReader:
    """Passes each message (its frames) of a plain, non-blocking-used socket to `on_message`, in the loop."""

    def __init__(
        self, sock: zmq.Socket[Any], on_message: Callable[[list[Any]], None], *, copy: bool = True
    ) -> None:
        self.sock = sock
        self._on_message = on_message
        self._copy = copy
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed: asyncio.Future[None] | None = None
        self._scheduled = False

    async def serve(self) -> None:
        """Read until cancelled; raises what made the socket unusable or what `on_message` raised."""
        self._loop = asyncio.get_running_loop()
        self._failed = self._loop.create_future()
        fd = self.sock.getsockopt(zmq.FD)
        self._loop.add_reader(fd, self._read)
        try:
            self._schedule()  # messages that came before the reader was added raise no new edge
            await self._failed
        finally:
            self._loop.remove_reader(fd)

    def check(self) -> None:
        """After a send outside `on_message`: look for messages in the next loop iteration (the send may
        have taken the descriptor's signal). Scheduling the look costs less than looking (a `zmq.EVENTS`
        query is two system calls), and the sends of one iteration share it."""
        self._schedule()

    def read_now(self) -> None:
        """Handle every message already queued on the socket at once (before one that would overtake them)."""
        sock = self.sock
        while not sock.closed and sock.getsockopt(_EVENTS) & _POLLIN:
            self._on_message(sock.recv_multipart(zmq.NOBLOCK, copy=self._copy))

    def _schedule(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._read)

    def _read(self) -> None:
        self._scheduled = False
        sock, on_message, copy = self.sock, self._on_message, self._copy
        if sock.closed or self._failed is None or self._failed.done():
            return  # scheduled before the socket was closed or failed
        try:
            for _ in range(READ_BATCH):
                if not sock.getsockopt(_EVENTS) & _POLLIN:  # cheaper than a receive that fails
                    return
                on_message(sock.recv_multipart(zmq.NOBLOCK, copy=copy))
            self._schedule()
        except Exception as exc:  # the socket is unusable or the owner has a bug: `serve` ends with it
            self._failed.set_exception(exc)

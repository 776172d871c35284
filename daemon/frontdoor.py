"""The front door: a ROUTER speaking bluesky-queueserver's `{"method", "params"}` envelope in JSON or msgpack.

Requests are handled concurrently: methods the front door owns are answered inline, the others are forwarded
to their owning actor as an ask. Every failure is a reply with `success: false`, a `msg` naming the problem
and a stable `error_code`; nothing a client sends can stop the daemon.

While the daemon starts its actors, `status` is answered at once and the other requests wait until the actors
are up (`open`): a client that connects the moment the daemon answers never meets an actor not started yet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import zmq

from stationd.actors.base import set_checkpoint
from stationd.protocol.errors import DeadlineExceeded, InternalError, StationError
from stationd.protocol.frontdoor import ErrorReply, error_reply
from stationd.protocol.methods import FRONT_DOOR, Method
from stationd.protocol.system import ConfigGetParams, ConfigGetReply, PingParams, StatusParams

from .busy_poll import after_request
from .mailbox import Mailbox
from .requests import Codec, RequestDecoder
from .security import CurveServer, Identity
from .socket_reader import SocketReader
from .status import StatusBoard

__all__ = ["FrontDoor"]

_Request = tuple[list[bytes], Codec, Method, Any, "Identity | None"]
"""A decoded request: (routing prefix, codec, method, params, the client's CurveZMQ identity)."""


@dataclasses.dataclass(eq=False, slots=True)
class _Held:
    """A request waiting for the actors to start, and the timer that gives up on it."""

    request: _Request
    timer: asyncio.TimerHandle | None = None


class FrontDoor:
    """Control socket of the daemon.

    The socket is served from the event loop's reader callback (`SocketReader`), and a forwarded request is
    answered from its ask's done-callback rather than by a task of its own (together about a third of a
    `status` round trip)."""

    def __init__(
        self,
        zctx: zmq.Context[Any],
        addr: str,
        *,
        methods: Mapping[str, Method],
        board: StatusBoard,
        config_view: dict[str, Any],
        mailbox: Mailbox,
        max_request_bytes: int,
        request_timeout: float,
        curve: CurveServer | None = None,
        log: Any,
    ) -> None:
        self._board = board
        self._config_view = config_view
        self._mailbox = mailbox
        self._timeout = request_timeout
        self._curve = curve
        self._log = log
        self._decoder = RequestDecoder(methods, max_request_bytes)
        self._asks: set[asyncio.Future[Any]] = set()
        self._sock: zmq.Socket[bytes] = zctx.socket(zmq.ROUTER, socket_class=zmq.Socket)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SNDHWM, 100_000)
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        # Past 4x the limit libzmq drops the connection unread: the limit's error reply needs the bytes in
        # hand, this bound keeps a hostile client from making the daemon buffer gigabytes.
        self._sock.setsockopt(zmq.MAXMSGSIZE, 4 * max_request_bytes)
        if curve is not None:
            curve.apply(self._sock)
        self._sock.bind(addr)
        self.addr = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self._reader = SocketReader(self._sock, self._on_request, copy=curve is None)
        self._serving = False
        self._held: list[_Held] | None = []
        """Requests for actors received before `open` (None once open)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        """Runs while the socket is served; ends with the error that stopped it."""

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.task = self._loop.create_task(self._reader.serve(), name="front_door")
        set_checkpoint(self._serve_waiting)

    def open(self) -> None:
        """The actor tree has started: forward the requests held until now, in the order they came."""
        held, self._held = self._held or [], None
        for h in held:
            if h.timer is not None:
                h.timer.cancel()
            self._forward(*h.request)

    async def close(self) -> None:
        set_checkpoint(None)
        for h in self._held or []:
            if h.timer is not None:
                h.timer.cancel()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for ask in list(self._asks):
            ask.cancel()
        self._sock.close()

    def _serve_waiting(self) -> None:
        """The actors' `checkpoint`: handle the requests already waiting on the socket now (a local method
        is answered, a forwarded one queued with its actor), instead of after the rest of the loop pass."""
        try:
            if asyncio.get_running_loop() is not self._loop:
                return  # a store used from another thread or loop: not ours to serve from
        except RuntimeError:
            return
        if not self._serving and not self._sock.closed:
            self._serving = True
            try:
                self._reader.read_now()
            finally:
                self._serving = False

    def _on_request(self, frames: list[Any]) -> None:
        after_request()  # the client's next request will likely follow at once: keep the loop awake
        identity = None
        if self._curve is not None:  # frames are zmq.Frame: the key the client authenticated with
            identity = self._curve.identity(frames[-1].get("User-Id"))
            frames = [f.bytes for f in frames]
        self._handle(frames[:-1], frames[-1], identity)

    def _handle(self, prefix: list[bytes], payload: bytes, identity: Identity | None) -> None:
        codec = self._decoder.codec_for(payload)
        try:
            method, params = self._decoder.decode(codec, payload)
        except StationError as err:
            self._send(prefix, codec, error_reply(err))
            return
        except Exception as exc:  # the client boundary: a decoding bug is logged loudly, never fatal
            self._log.error("request_decoding_bug", payload=payload[:200], exc_info=exc)
            self._send(
                prefix, codec, ErrorReply(msg=f"Internal error: {exc!r}", error_code=InternalError.code)
            )
            return
        if method.owner == FRONT_DOOR:
            self._send(prefix, codec, self._answer_locally(params))
        elif self._held is not None:
            self._hold((prefix, codec, method, params, identity))
        else:
            self._forward(prefix, codec, method, params, identity)

    def _hold(self, request: _Request) -> None:
        assert self._loop is not None and self._held is not None
        held = _Held(request)
        held.timer = self._loop.call_later(self._timeout, self._expire, held)
        self._held.append(held)

    def _expire(self, held: _Held) -> None:
        """A request held for the whole request timeout: the actors are still starting."""
        if self._held is not None and held in self._held:
            self._held.remove(held)
            prefix, codec = held.request[:2]
            err = DeadlineExceeded(f"the daemon is still starting its actors after {self._timeout:g} s")
            self._send(prefix, codec, error_reply(err))

    def _forward(
        self, prefix: list[bytes], codec: Codec, method: Method, params: Any, identity: Identity | None
    ) -> None:
        try:
            ask = self._mailbox.ask_future(
                method.owner,
                params,
                timeout=self._timeout + (getattr(params, method.wait_param) if method.wait_param else 0.0),
                reply_type=method.reply,
                user=identity.user if identity else "",
                user_group=identity.user_group if identity else "",
            )
        except StationError as err:
            self._send(prefix, codec, error_reply(err))
            return
        self._asks.add(ask)
        ask.add_done_callback(functools.partial(self._answer, prefix, codec))

    def _answer_locally(self, params: Any) -> Any:
        match params:
            case StatusParams() | PingParams():
                return self._board.status()
            case ConfigGetParams():
                return ConfigGetReply(config={"ip_connect_info": {}, "stationd": self._config_view})
            case _:
                raise AssertionError(f"front door has no local handler for {type(params).__name__}")

    def _answer(self, prefix: list[bytes], codec: Codec, ask: asyncio.Future[Any]) -> None:
        """Reply with what the owning actor answered (or the error of the ask)."""
        self._asks.discard(ask)
        if ask.cancelled():
            return  # the daemon is closing
        exc = ask.exception()
        if exc is None:
            reply = ask.result()
        elif isinstance(exc, StationError):
            reply = error_reply(exc)
        else:  # a bug on the way back: the client still gets an answer
            self._log.error("request_forwarding_bug", exc_info=exc)
            reply = ErrorReply(msg=f"Internal error: {exc!r}", error_code=InternalError.code)
        self._send(prefix, codec, reply)

    def _send(self, prefix: list[bytes], codec: Codec, reply: Any) -> None:
        # ROUTER never blocks: past a peer's high-water mark (or for a peer gone) the reply is dropped
        self._sock.send_multipart([*prefix, codec.encode(reply)], zmq.NOBLOCK)
        self._reader.check()  # requests that arrived meanwhile must still be read

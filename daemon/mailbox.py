"""A DEALER on the bus: sends tells, asks and replies, and pairs asks with their replies.

Replies and control messages are handled by the receive task as soon as they arrive, so an actor that awaits
an ask inside `handle` is never blocked by its own mailbox; requests (tells and asks) are passed to a callback
(the actor cell queues them and handles them one at a time).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq

from stationd.protocol.codec import msgpack_decoder, msgpack_encoder
from stationd.protocol.envelope import Envelope, Kind
from stationd.protocol.errors import (
    ActorStopped,
    DeadlineExceeded,
    ErrorInfo,
    InternalError,
    StationError,
    error_from_code,
)
from stationd.protocol.runtime import ControlMessage

from .socket_reader import SocketReader

__all__ = ["Mailbox", "Request", "decode_envelope", "encode_envelope", "local_mailbox"]

_ENCODER = msgpack_encoder()
_ENVELOPE_DECODER = msgspec.msgpack.Decoder(Envelope)
_CONTROL_DECODER = msgpack_decoder(ControlMessage)
_ERROR_DECODER = msgspec.msgpack.Decoder(ErrorInfo)
_REPLY_DECODERS: dict[Any, msgspec.msgpack.Decoder] = {}
_LOCAL: dict[bytes, Mailbox] = {}
"""Open mailboxes of this process by identity: a message between two of them skips the sockets and is
delivered at once, inside `send` (same event loop; deliveries happen in send order, and a receiver only queues
a request or resolves a future, so nothing runs re-entrantly), which cuts a request's latency by more than
half."""


def local_mailbox(identity: bytes, loop: asyncio.AbstractEventLoop | None) -> Mailbox | None:
    """The open mailbox of this process with this identity that runs on `loop` (see `_LOCAL`), if any."""
    mailbox = _LOCAL.get(identity)
    if mailbox is None or mailbox._loop is not loop:
        return None
    return mailbox


def encode_envelope(env: Envelope) -> bytes:
    return _ENCODER.encode(env)


def decode_envelope(raw: bytes) -> Envelope:
    return _ENVELOPE_DECODER.decode(raw)


def encode_body(msg: Any) -> msgspec.Raw:
    return msgspec.Raw(_ENCODER.encode(msg))


def _reply_decoder(reply_type: Any) -> msgspec.msgpack.Decoder:
    dec = _REPLY_DECODERS.get(reply_type)
    if dec is None:
        dec = _REPLY_DECODERS[reply_type] = msgpack_decoder(reply_type)
    return dec


def _expire(future: asyncio.Future[Any], to: str, msg: Any, timeout: float) -> None:
    if not future.done():
        tag = type(msg).__struct_config__.tag if isinstance(msg, msgspec.Struct) else type(msg).__name__
        future.set_exception(DeadlineExceeded(f"{to} did not answer {tag!r} within {timeout:g} s"))


def _error_envelope(sender: str, corr: int, err: StationError) -> Envelope:
    return Envelope(Kind.ERROR, sender, corr, body=encode_body(err.to_info()))


@dataclass(slots=True)
class Request:
    """A tell or an ask waiting to be handled."""

    reply_to: bytes
    """Socket identity of the sender: replies go there."""
    envelope: Envelope


@dataclass(slots=True)
class _Pending:
    recipient: str
    future: asyncio.Future[Any]
    reply_type: Any


class Mailbox:
    """One named DEALER connected to the bus router."""

    def __init__(
        self,
        zctx: zmq.Context[Any],
        bus_addr: str,
        name: str,
        *,
        on_request: Callable[[Request], None],
        on_control: Callable[[Any], None] | None = None,
        linger_ms: int = 100,
    ) -> None:
        self.name = name
        self._sock: zmq.Socket[bytes] = zctx.socket(zmq.DEALER, socket_class=zmq.Socket)
        self._sock.setsockopt(zmq.IDENTITY, name.encode())
        self._sock.setsockopt(zmq.SNDHWM, 0)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._sock.setsockopt(zmq.LINGER, linger_ms)
        self._sock.connect(bus_addr)
        self._on_request = on_request
        self._on_control = on_control
        self._pending: dict[int, _Pending] = {}
        self._corr = itertools.count(1)
        self.task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reader = SocketReader(self._sock, self._received)
        self.closed = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.task = self._loop.create_task(self._reader.serve(), name=f"mailbox:{self.name}")
        _LOCAL[self.name.encode()] = self  # a restarted actor's new mailbox takes over the name

    # -- sending -------------------------------------------------------------------------------------------
    def send(self, recipient: str | bytes, env: Envelope) -> None:
        """Queue an envelope for `recipient` (an actor name or a socket identity); never blocks."""
        if self.closed:
            raise ActorStopped(f"mailbox {self.name!r} is closed")
        to = recipient.encode() if isinstance(recipient, str) else recipient
        local = local_mailbox(to, self._loop)
        if local is not None:
            local._incoming_local(self.name.encode(), env)
            return
        try:  # never blocks: no high-water mark, and the bus's pipe exists from `connect` on
            self._sock.send_multipart([to, encode_envelope(env)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            recipient = to.decode(errors="replace")
            raise InternalError(f"{self.name}: sending to {recipient} failed: {exc}") from None
        self._reader.check()  # the send may have taken the signal of messages that arrived meanwhile

    def tell(self, to: str, msg: Any, *, user: str = "", user_group: str = "") -> None:
        self.send(to, Envelope(Kind.TELL, self.name, body=encode_body(msg), user=user, user_group=user_group))

    def control(self, to: str, msg: Any) -> None:
        self.send(to, Envelope(Kind.CONTROL, self.name, body=encode_body(msg)))

    async def ask(
        self,
        to: str,
        msg: Any,
        *,
        timeout: float,
        reply_type: Any = None,
        user: str = "",
        user_group: str = "",
    ) -> Any:
        """Send `msg` to `to` and await the reply; raise the typed error of a failure or of the deadline."""
        return await self.ask_future(
            to, msg, timeout=timeout, reply_type=reply_type, user=user, user_group=user_group
        )

    def ask_future(
        self,
        to: str,
        msg: Any,
        *,
        timeout: float,
        reply_type: Any = None,
        user: str = "",
        user_group: str = "",
    ) -> asyncio.Future[Any]:
        """`ask` as a future, for callers that answer from a done-callback instead of a task per request
        (the front door). The future fails with `DeadlineExceeded` after `timeout`; cancelling it forgets
        the ask."""
        corr = next(self._corr)
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if reply_type is None:
            reply_type = getattr(type(msg), "reply_type", Any)
        self._pending[corr] = _Pending(to, future, reply_type)
        deadline = loop.call_later(timeout, _expire, future, to, msg, timeout)
        future.add_done_callback(functools.partial(self._asked, corr, deadline))
        try:
            self.send(
                to,
                Envelope(
                    Kind.ASK,
                    self.name,
                    corr,
                    time.time() + timeout,
                    encode_body(msg),
                    user=user,
                    user_group=user_group,
                ),
            )
        except BaseException:
            future.cancel()
            raise
        return future

    def _asked(self, corr: int, deadline: asyncio.TimerHandle, _future: asyncio.Future[Any]) -> None:
        deadline.cancel()
        self._pending.pop(corr, None)

    def reply(self, req: Request, result: Any) -> None:
        self.send(req.reply_to, Envelope(Kind.REPLY, self.name, req.envelope.corr, body=encode_body(result)))

    def reply_error(self, req: Request, err: StationError) -> None:
        self.send(req.reply_to, _error_envelope(self.name, req.envelope.corr, err))

    def fail_pending(self, recipient: str, err: StationError) -> None:
        """Fail every ask still waiting for `recipient` (it stopped, so no reply will come)."""
        for pending in self._pending.values():
            if pending.recipient == recipient and not pending.future.done():
                pending.future.set_exception(type(err)(err.msg))

    # -- receiving -----------------------------------------------------------------------------------------
    def _received(self, frames: list[bytes]) -> None:
        reply_to, raw = frames
        self._incoming(reply_to, decode_envelope(raw))

    def deliver(self, sender: bytes, raw: bytes) -> None:
        """An envelope the bus of this process routed here: handed over at once instead of being sent on
        (a send and a receive on inproc sockets, and a loop pass, per message from a child process)."""
        self._incoming_local(sender, decode_envelope(raw))

    def _incoming_local(self, reply_to: bytes, env: Envelope) -> None:
        """An envelope from a mailbox of this process: what the bus delivered before it is handled first
        (e.g. a dead worker's last documents before the queue manager's request to close its runs)."""
        if not self.closed:
            self._reader.read_now()
        self._incoming(reply_to, env)

    def _incoming(self, reply_to: bytes, env: Envelope) -> None:
        """An envelope from the bus or, directly, from another mailbox of this process."""
        if self.closed:
            if env.kind == Kind.ASK:  # delivered locally after this mailbox closed: as the bus would answer
                sender = _LOCAL.get(reply_to)
                if sender is not None and not sender.closed:
                    err = ActorStopped(f"actor {self.name!r} is not running")
                    sender._incoming(self.name.encode(), _error_envelope(self.name, env.corr, err))
            return
        kind = env.kind
        if kind == Kind.REPLY or kind == Kind.ERROR:
            self._resolve(env)
        elif kind == Kind.CONTROL:
            if self._on_control is not None:
                self._on_control(_CONTROL_DECODER.decode(env.body))
        else:
            self._on_request(Request(reply_to, env))

    def _resolve(self, env: Envelope) -> None:
        pending = self._pending.get(env.corr)
        if pending is None or pending.future.done():
            return  # the asker gave up (deadline) before the reply came
        try:
            if env.kind == Kind.ERROR:
                info = _ERROR_DECODER.decode(env.body)
                pending.future.set_exception(error_from_code(info.code, info.msg, info.id))
            else:
                pending.future.set_result(_reply_decoder(pending.reply_type).decode(env.body))
        except msgspec.DecodeError as exc:
            pending.future.set_exception(InternalError(f"undecodable reply from {pending.recipient}: {exc}"))

    def drain(self) -> list[Request]:
        """Take the requests that reached the socket but were not received yet (used when stopping)."""
        out: list[Request] = []
        while True:
            try:
                reply_to, raw = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            env = decode_envelope(raw)
            if env.kind in (Kind.TELL, Kind.ASK):
                out.append(Request(reply_to, env))

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if _LOCAL.get(self.name.encode()) is self:
            del _LOCAL[self.name.encode()]
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)  # it may have died of its own error
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(
                    ActorStopped(f"{self.name} stopped while awaiting {pending.recipient}")
                )
        self._sock.close()

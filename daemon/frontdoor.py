"""The front door: a ROUTER speaking bluesky-queueserver's `{"method", "params"}` envelope in JSON or msgpack.

Requests are handled concurrently: methods the front door owns are answered inline, the others are forwarded
to their owning actor as an ask. Every failure is a reply with `success: false`, a `msg` naming the problem
and a stable `error_code`; nothing a client sends can stop the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import zmq
import zmq.asyncio

from stationd.protocol.errors import InternalError, StationError
from stationd.protocol.frontdoor import ErrorReply, error_reply
from stationd.protocol.methods import FRONT_DOOR, Method
from stationd.protocol.system import ConfigGetParams, ConfigGetReply, PingParams, StatusParams

from .mailbox import Mailbox
from .requests import Codec, RequestDecoder
from .security import CurveServer, Identity
from .status import StatusBoard

__all__ = ["FrontDoor"]


class FrontDoor:
    """Control socket of the daemon."""

    def __init__(
        self,
        zctx: zmq.asyncio.Context,
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
        self._tasks: set[asyncio.Task[None]] = set()
        self._sock = zctx.socket(zmq.ROUTER)
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
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._serve(), name="front_door")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._sock.close()

    async def _serve(self) -> None:
        need_props = self._curve is not None
        recv = self._sock.recv_multipart
        while True:
            frames = await recv(copy=not need_props)
            identity = None
            if need_props:
                identity = self._curve.identity(frames[-1].get("User-Id"))  # type: ignore[union-attr]
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
            return
        task = asyncio.get_running_loop().create_task(self._forward(prefix, codec, method, params, identity))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answer_locally(self, params: Any) -> Any:
        match params:
            case StatusParams() | PingParams():
                return self._board.status()
            case ConfigGetParams():
                return ConfigGetReply(config={"ip_connect_info": {}, "stationd": self._config_view})
            case _:
                raise AssertionError(f"front door has no local handler for {type(params).__name__}")

    async def _forward(
        self, prefix: list[bytes], codec: Codec, method: Method, params: Any, identity: Identity | None
    ) -> None:
        try:
            reply = await self._mailbox.ask(
                method.owner,
                params,
                timeout=self._timeout + (getattr(params, method.wait_param) if method.wait_param else 0.0),
                reply_type=method.reply,
                user=identity.user if identity else "",
                user_group=identity.user_group if identity else "",
            )
        except StationError as err:
            reply = error_reply(err)
        self._send(prefix, codec, reply)

    def _send(self, prefix: list[bytes], codec: Codec, reply: Any) -> None:
        self._sock.send_multipart([*prefix, codec.encode(reply)])

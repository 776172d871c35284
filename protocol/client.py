"""Python clients of a stationd daemon: `Client` (sync), `AsyncClient` (asyncio) and info-stream subscribers.

Requests use bluesky-queueserver's envelope over a DEALER socket. Each request carries a correlation
frame that the daemon's ROUTER echoes back, so a late reply is never mistaken for the answer to a later
request, and the async client can have many requests in flight on one socket.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from .codec import Encoding, detect_encoding, json_decoder, json_encoder, msgpack_decoder, msgpack_encoder
from .errors import DeadlineExceeded, error_from_code
from .system import Status

__all__ = [
    "DEFAULT_CONTROL_ADDR",
    "DEFAULT_INFO_ADDR",
    "AsyncClient",
    "AsyncSubscriber",
    "Client",
    "CurveKeys",
    "InfoEvent",
    "Subscriber",
]

DEFAULT_CONTROL_ADDR = "tcp://127.0.0.1:60615"
DEFAULT_INFO_ADDR = "tcp://127.0.0.1:60625"

_DECODE_ANY = {Encoding.JSON: json_decoder(dict[str, Any]), Encoding.MSGPACK: msgpack_decoder(dict[str, Any])}
_ENCODERS = {Encoding.JSON: json_encoder(), Encoding.MSGPACK: msgpack_encoder()}


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """Keys a client needs when the daemon runs CurveZMQ: the server's public key and the client's pair."""

    server_public_key: str
    client_public_key: str
    client_secret_key: str

    @classmethod
    def from_files(cls, server_public_file: str, client_secret_file: str) -> CurveKeys:
        """Load from `stationd keys generate` files: the server's `.key` and the client's `.key_secret`."""
        import zmq.auth

        server_public, _ = zmq.auth.load_certificate(server_public_file)
        client_public, client_secret = zmq.auth.load_certificate(client_secret_file)
        if client_secret is None:
            raise ValueError(f"{client_secret_file} holds no secret key")
        return cls(server_public.decode(), client_public.decode(), client_secret.decode())

    def apply(self, sock: zmq.Socket[Any]) -> None:
        sock.curve_serverkey = self.server_public_key.encode()
        sock.curve_publickey = self.client_public_key.encode()
        sock.curve_secretkey = self.client_secret_key.encode()


def _check_reply(method: str, reply: dict[str, Any]) -> dict[str, Any]:
    if reply.get("success", True) is False:
        code = reply.get("error_code", "request_failed")
        raise error_from_code(code, reply.get("msg", f"{method} failed"), reply.get("id") or "")
    return reply


def _new_socket(zctx: zmq.Context[Any], kind: int, curve: CurveKeys | None) -> Any:
    sock = zctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        curve.apply(sock)
    return sock


class Client:
    """Synchronous client; one request at a time. Failed replies raise the typed `StationError`."""

    def __init__(
        self,
        addr: str | None = None,
        *,
        timeout: float = 10.0,
        encoding: Encoding | str = Encoding.JSON,
        curve: CurveKeys | None = None,
        zctx: zmq.Context[Any] | None = None,
    ) -> None:
        self.addr = addr or os.environ.get("STATIOND_CONTROL_ADDR", DEFAULT_CONTROL_ADDR)
        self.timeout = timeout
        self._encoding = Encoding(encoding)
        self._sock = _new_socket(zctx or zmq.Context.instance(), zmq.DEALER, curve)
        self._sock.connect(self.addr)
        self._ids = itertools.count(1)

    def request(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send one request and return the reply object; raise its typed error when `success` is false."""
        return _check_reply(method, self.request_raw(method, params, timeout=timeout))

    def request_raw(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Like `request`, but return a failed reply instead of raising."""
        req: dict[str, Any] = {"method": method}
        if params is not None:
            req["params"] = params
        return self.send_bytes(_ENCODERS[self._encoding].encode(req), timeout=timeout)

    def send_bytes(self, payload: bytes, *, timeout: float | None = None) -> dict[str, Any]:
        """Send raw request bytes (any encoding, even malformed) and return the decoded reply."""
        corr = next(self._ids).to_bytes(8, "little")
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        # the send waits too while the daemon is not reachable (e.g. it refused our CurveZMQ key): not forever
        if not self._sock.poll(limit * 1000, zmq.POLLOUT):
            raise DeadlineExceeded(f"no reply from {self.addr} within {limit:g} s")
        self._sock.send_multipart([corr, b"", payload], zmq.NOBLOCK)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._sock.poll(remaining * 1000, zmq.POLLIN):
                raise DeadlineExceeded(f"no reply from {self.addr} within {limit:g} s")
            frames = self._sock.recv_multipart()
            if frames[0] == corr:
                return _DECODE_ANY[detect_encoding(frames[-1])].decode(frames[-1])

    def ping(self) -> Status:
        return msgspec.convert(self.request("ping"), Status)

    def status(self) -> Status:
        return msgspec.convert(self.request("status"), Status)

    def config_get(self) -> dict[str, Any]:
        return self.request("config_get")["config"]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client; many requests may be in flight at once on its one socket."""

    def __init__(
        self,
        addr: str | None = None,
        *,
        timeout: float = 10.0,
        encoding: Encoding | str = Encoding.JSON,
        curve: CurveKeys | None = None,
        zctx: zmq.asyncio.Context | None = None,
    ) -> None:
        self.addr = addr or os.environ.get("STATIOND_CONTROL_ADDR", DEFAULT_CONTROL_ADDR)
        self.timeout = timeout
        self._encoding = Encoding(encoding)
        self._sock = _new_socket(zctx or zmq.asyncio.Context.instance(), zmq.DEALER, curve)
        self._sock.connect(self.addr)
        self._ids = itertools.count(1)
        self._pending: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self._receiver: asyncio.Task[None] | None = None

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        return _check_reply(method, await self.request_raw(method, params, timeout=timeout))

    async def request_raw(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        req: dict[str, Any] = {"method": method}
        if params is not None:
            req["params"] = params
        return await self.send_bytes(_ENCODERS[self._encoding].encode(req), timeout=timeout)

    async def send_bytes(self, payload: bytes, *, timeout: float | None = None) -> dict[str, Any]:
        if self._receiver is None:
            self._receiver = asyncio.get_running_loop().create_task(self._receive())
        corr = next(self._ids).to_bytes(8, "little")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[corr] = future
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):  # the send too: it waits while the daemon is not reachable
                await self._sock.send_multipart([corr, b"", payload])
                return await future
        except TimeoutError:
            raise DeadlineExceeded(f"no reply from {self.addr} within {limit:g} s") from None
        finally:
            self._pending.pop(corr, None)

    async def _receive(self) -> None:
        while True:
            frames = await self._sock.recv_multipart()
            future = self._pending.get(frames[0])
            if future is not None and not future.done():
                future.set_result(_DECODE_ANY[detect_encoding(frames[-1])].decode(frames[-1]))

    async def ping(self) -> Status:
        return msgspec.convert(await self.request("ping"), Status)

    async def status(self) -> Status:
        return msgspec.convert(await self.request("status"), Status)

    async def config_get(self) -> dict[str, Any]:
        return (await self.request("config_get"))["config"]

    async def close(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
            try:
                await self._receiver
            except asyncio.CancelledError:
                pass
        self._sock.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass(frozen=True, slots=True)
class InfoEvent:
    """One message of the info stream."""

    topic: str
    payload: dict[str, Any]
    missed: int
    """Messages of this topic lost before this one (a gap in `seq`), 0 normally."""

    @property
    def seq(self) -> int:
        return int(self.payload.get("seq", 0))


class _GapTracker:
    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def event(self, topic_b: bytes, raw: bytes) -> InfoEvent:
        topic = topic_b.decode(errors="replace")
        payload = _DECODE_ANY[detect_encoding(raw)].decode(raw)
        seq = payload.get("seq")
        missed = 0
        if isinstance(seq, int):
            last = self._last.get(topic)
            if last is not None and seq > last + 1:
                missed = seq - last - 1
            self._last[topic] = seq
        return InfoEvent(topic, payload, missed)


def _subscribe(sock: Any, topics: Iterable[str]) -> None:
    for topic in topics or [""]:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())


class Subscriber:
    """Blocking subscriber of the info stream; `topics` are prefixes (`""`: everything)."""

    def __init__(
        self,
        addr: str | None = None,
        topics: Iterable[str] = ("",),
        *,
        curve: CurveKeys | None = None,
        zctx: zmq.Context[Any] | None = None,
    ) -> None:
        self.addr = addr or os.environ.get("STATIOND_INFO_ADDR", DEFAULT_INFO_ADDR)
        self._sock = _new_socket(zctx or zmq.Context.instance(), zmq.SUB, curve)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        _subscribe(self._sock, list(topics))
        self._sock.connect(self.addr)
        self._gaps = _GapTracker()

    def recv(self, timeout: float | None = None) -> InfoEvent:
        """Next message; `DeadlineExceeded` when none arrives within `timeout` seconds."""
        if timeout is not None and not self._sock.poll(timeout * 1000, zmq.POLLIN):
            raise DeadlineExceeded(f"no info message within {timeout:g} s")
        topic, raw = self._sock.recv_multipart()
        return self._gaps.event(topic, raw)

    def __iter__(self) -> Iterator[InfoEvent]:
        while True:
            yield self.recv()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSubscriber:
    """asyncio subscriber of the info stream."""

    def __init__(
        self,
        addr: str | None = None,
        topics: Iterable[str] = ("",),
        *,
        curve: CurveKeys | None = None,
        zctx: zmq.asyncio.Context | None = None,
    ) -> None:
        self.addr = addr or os.environ.get("STATIOND_INFO_ADDR", DEFAULT_INFO_ADDR)
        self._sock = _new_socket(zctx or zmq.asyncio.Context.instance(), zmq.SUB, curve)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        _subscribe(self._sock, list(topics))
        self._sock.connect(self.addr)
        self._gaps = _GapTracker()

    async def recv(self, timeout: float | None = None) -> InfoEvent:
        try:
            async with asyncio.timeout(timeout):
                topic, raw = await self._sock.recv_multipart()
        except TimeoutError:
            raise DeadlineExceeded(f"no info message within {timeout:g} s") from None
        return self._gaps.event(topic, raw)

    async def __aiter__(self) -> AsyncIterator[InfoEvent]:
        while True:
            yield await self.recv()

    def close(self) -> None:
        self._sock.close()

    async def __aenter__(self) -> AsyncSubscriber:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

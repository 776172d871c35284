"""A source in another process, spoken to over ZMQ (`tcp://host:port`, `ipc://path`).

One DEALER socket per source and DAQ. Each request is one frame, msgpack `SourceRequest [req_id, body]`, and
is answered by `SourceResponse [req_id, body]`. A DEALER (not a REQ) so that a request cancelled by the
coordinator's timeout leaves the socket usable: one reader task hands each reply to the request with its
`req_id`, and late replies to cancelled requests find nobody waiting and are dropped. Requests may overlap
(a stop while an end-of-recording wait is out).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TypeVar
from urllib.parse import urlsplit

import msgspec
import structlog
import zmq
import zmq.asyncio

from stationd.protocol.codec import msgpack_decoder, msgpack_encoder
from stationd.protocol.daq import (
    SourceAbort,
    SourceAck,
    SourceReplyBody,
    SourceRequest,
    SourceRequestBody,
    SourceResponse,
    SourceResult,
    SourceStart,
    SourceStop,
    SourceWait,
    SourceWaitReply,
)
from stationd.protocol.errors import ErrorInfo, InvalidParams

from ._result import checked_result
from .base import Source, SourceAddress, SourceFailed

__all__ = ["ZmqSource", "check_zmq_uri"]

_log = structlog.get_logger("stationd.daq_coordinator.sources")
_R = TypeVar("_R")


def check_zmq_uri(uri: str) -> None:
    """Raise `InvalidParams` unless `uri` is `tcp://<host>:<port>` or `ipc://<path>` that a DEALER can
    connect to."""
    parts = urlsplit(uri)
    if parts.scheme == "ipc":
        if not (parts.netloc or parts.path) or parts.query or parts.fragment:
            raise InvalidParams(f"{uri}: an ipc:// URI is ipc://<path>")
        return
    if parts.scheme != "tcp":
        raise InvalidParams(f"{uri}: not a tcp:// or ipc:// URI")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or parts.hostname == "*" or port is None or port == 0:
        raise InvalidParams(f"{uri}: a tcp:// source URI is tcp://<host>:<port> (port 1-65535)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username is not None:
        raise InvalidParams(f"{uri}: a tcp:// source URI is tcp://<host>:<port>, nothing more")


def _req_id_of(payload: bytes) -> int | None:
    """The `req_id` of a reply that does not decode as a `SourceResponse`, if one can be found."""
    try:
        raw = msgspec.msgpack.decode(payload, ext_hook=lambda code, data: None)
    except msgspec.DecodeError:
        return None
    if isinstance(raw, list) and raw and type(raw[0]) is int:
        return raw[0]
    return None


class ZmqSource(Source):
    """A source served by an external process over ZMQ (see `examples/daq_source.py`).

    The connect succeeds even when nobody listens and requests then queue: the coordinator's per-request
    timeout is what notices a dead or silent source.
    """

    def __init__(self, address: SourceAddress, daq_id: str, zctx: zmq.asyncio.Context) -> None:
        super().__init__(address, daq_id)
        check_zmq_uri(address.uri)
        self._encoder = msgpack_encoder()
        self._decoder = msgpack_decoder(SourceResponse)
        self._sock = zctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(address.uri)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[SourceReplyBody]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    # -- the Source protocol ---------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._request(SourceStart(daq_id=self.daq_id, source=self.address.name), SourceAck)

    async def stop(self) -> SourceResult:
        return checked_result(await self._request(SourceStop(daq_id=self.daq_id), SourceResult))

    async def abort(self) -> None:
        await self._request(SourceAbort(daq_id=self.daq_id), SourceAck)

    async def wait_end(self, timeout: float) -> bool:
        """Ask the source to answer when the recording ended or after `timeout` seconds; the coordinator's
        request timeout must be longer than `timeout`."""
        reply = await self._request(SourceWait(daq_id=self.daq_id, timeout=timeout), SourceWaitReply)
        return reply.ended

    async def close(self) -> None:
        """Fail the requests still out, stop the reader and close the socket at once (LINGER 0)."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
        self._fail_pending("the source was closed")
        self._sock.close(linger=0)

    # -- requests and replies --------------------------------------------------------------------------------
    async def _request(self, body: SourceRequestBody, reply_type: type[_R]) -> _R:
        if self._closed:
            raise SourceFailed("the source was closed")
        self._ensure_reader()
        req_id = next(self._ids)
        fut: asyncio.Future[SourceReplyBody] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        try:
            await self._sock.send(self._encoder.encode(SourceRequest(req_id, body)))
            reply = await fut
        finally:
            del self._pending[req_id]
            if fut.done() and not fut.cancelled():
                fut.exception()  # a reply that raced our cancellation: mark it seen, the caller is gone
        if isinstance(reply, ErrorInfo):
            raise SourceFailed(reply.msg)
        if not isinstance(reply, reply_type):
            raise SourceFailed(f"expected a {reply_type.__name__} reply, got {type(reply).__name__}")
        return reply

    def _ensure_reader(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name=f"source-reader:{self.address.name}")
            self._reader.add_done_callback(self._reader_done)
            return
        if self._reader.done() and not self._reader.cancelled() and self._reader.exception() is not None:
            exc = self._reader.exception()
            raise SourceFailed(f"the reply reader failed: {exc!r}") from exc

    def _reader_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fail_pending(f"the reply reader failed: {task.exception()!r}")

    async def _read(self) -> None:
        while True:
            frames = await self._sock.recv_multipart()
            self._dispatch(frames[-1])

    def _dispatch(self, payload: bytes) -> None:
        try:
            response = self._decoder.decode(payload)
        except (msgspec.DecodeError, ValueError, TypeError) as exc:  # ext_hook: bad dtype or shape
            self._malformed(payload, exc)
            return
        fut = self._pending.get(response.req_id)
        if fut is None or fut.done():
            return  # a late reply to a request that was cancelled (timed out): nobody waits for it
        fut.set_result(response.body)

    def _malformed(self, payload: bytes, exc: Exception) -> None:
        problem = f"malformed reply from {self.address.uri}: {exc}"
        req_id = _req_id_of(payload)
        if req_id is not None:
            fut = self._pending.get(req_id)
            if fut is not None and not fut.done():
                fut.set_exception(SourceFailed(problem))
            return
        if not self._pending:
            _log.warning("malformed reply ignored", source=self.address.name, error=str(exc))
        # without a req_id the reply may belong to any request out: the source is broken for all of them
        self._fail_pending(problem)

    def _fail_pending(self, problem: str) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(SourceFailed(problem))

    def __repr__(self) -> str:
        return f"ZmqSource({self.address.name}@{self.address.uri}, daq_id={self.daq_id!r})"

"""An external DAQ data source: a process that records rows for stationd's DAQ coordinator over ZMQ.

    python examples/daq_source.py --bind tcp://127.0.0.1:5599 --rate 100 --name cam

then point a DAQ at it by name and URI, as OCM writes sources:

    daq_start prim_sources="cam@tcp://127.0.0.1:5599"      # ... later daq_stop id=<the DAQ id>

The coordinator connects a DEALER socket to this ROUTER and sends msgpack `SourceRequest [req_id, body]`
frames (`stationd.protocol.daq`); each is answered by `SourceResponse [req_id, body]`: `SourceAck` to start
and abort, `SourceResult` (keywords and numpy columns TIME, COUNTER, VALUE) to stop, `SourceWaitReply` to
wait, or `ErrorInfo` when the request cannot be served. Unlike OCM's recif, every request names its DAQ, so
one source serves several DAQs at once and stop/abort act on the right recording. Requests are answered
concurrently: a pending wait never holds up a stop.

Bind to `tcp://127.0.0.1:*` for a free port; the line `listening on <address>` (stdout) gives the address.
SIGINT or SIGTERM ends the process cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Literal, assert_never

import msgspec
import numpy as np
import zmq
import zmq.asyncio

from stationd.protocol.codec import msgpack_decoder, msgpack_encoder
from stationd.protocol.daq import (
    EsoKeyword,
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
    ValueKeyword,
)
from stationd.protocol.errors import Conflict, ErrorInfo, InvalidState, NotFound, StationError

log = logging.getLogger("daq_source")
MAX_ROWS = 10_000_000
"""The recording buffer: rows past this many are dropped."""
KEEP_FINISHED = 1000
"""How many ended recordings are remembered, so a late wait, stop or abort gets a sensible answer."""


@dataclass
class Recording:
    """One DAQ's recording on this source."""

    source: str
    """The name the DAQ gave this source."""
    t0_epoch: float = field(default_factory=time.time)
    t0_mono: float = field(default_factory=time.monotonic)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the recording ended: by itself (`--duration`), stopped or aborted."""
    end_timer: asyncio.TimerHandle | None = None


def table(rows: int, rate: float, t0: float) -> dict[str, np.ndarray]:
    """TIME (epoch s), COUNTER and VALUE (a noisy 0.5 Hz sine) sampled at `rate` from `t0`."""
    counter = np.arange(rows, dtype=np.int64)
    offset = counter / rate
    value = np.sin(np.pi * offset) + np.random.default_rng().normal(0.0, 0.05, rows)
    return {"TIME": t0 + offset, "COUNTER": counter, "VALUE": value}


def req_id_of(payload: bytes) -> int | None:
    """The `req_id` of a request that does not decode as a `SourceRequest`, if one can be found."""
    try:
        raw = msgspec.msgpack.decode(payload, ext_hook=lambda code, data: None)
    except msgspec.DecodeError:
        return None
    return raw[0] if isinstance(raw, list) and raw and type(raw[0]) is int else None


class DaqSource:
    """Serves the source protocol on a bound ROUTER socket, one recording per DAQ id."""

    def __init__(self, sock: zmq.asyncio.Socket, *, name: str, rate: float, duration: float | None) -> None:
        self.sock = sock
        self.name = name
        self.rate = rate
        self.duration = duration
        self.recordings: dict[str, Recording] = {}
        self.finished: dict[str, str] = {}
        """DAQ id -> "stopped" or "aborted", oldest first, at most KEEP_FINISHED."""
        self.tasks: set[asyncio.Task[None]] = set()
        self.encoder = msgpack_encoder()
        self.decoder = msgpack_decoder(SourceRequest)

    async def serve(self) -> None:
        """Receive requests forever, answering each in its own task."""
        while True:
            frames = await self.sock.recv_multipart()
            if len(frames) < 2:  # a ROUTER always prepends the peer's identity; anything else is noise
                continue
            task = asyncio.create_task(self.answer(frames[:-1], frames[-1]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def answer(self, envelope: list[bytes], payload: bytes) -> None:
        try:
            request = self.decoder.decode(payload)
        except (msgspec.DecodeError, ValueError, TypeError) as exc:  # ValueError/TypeError: bad numpy ext
            req_id = req_id_of(payload)
            if req_id is None:
                log.warning("ignored a request without a req_id: %s", exc)
                return
            body: SourceReplyBody = ErrorInfo("malformed_request", f"cannot decode the request: {exc}")
            response = SourceResponse(req_id, body)
        else:
            try:
                body = await self.handle(request.body)
            except StationError as exc:
                body = exc.to_info()
            response = SourceResponse(request.req_id, body)
        await self.sock.send_multipart([*envelope, self.encoder.encode(response)])

    async def handle(self, body: SourceRequestBody) -> SourceReplyBody:
        match body:
            case SourceStart(daq_id=daq_id, source=source):
                if daq_id in self.recordings:
                    raise Conflict(f"{self.name} is already recording for DAQ {daq_id!r}")
                if daq_id in self.finished:
                    raise Conflict(f"the recording of DAQ {daq_id!r} was already {self.finished[daq_id]}")
                rec = self.recordings[daq_id] = Recording(source=source)
                if self.duration is not None:
                    rec.end_timer = asyncio.get_running_loop().call_later(self.duration, rec.ended.set)
                log.info("DAQ %s: recording as %s", daq_id, source)
                return SourceAck()
            case SourceStop(daq_id=daq_id):
                rec = self.finish(daq_id, "stop")
                return await self.result(rec)
            case SourceAbort(daq_id=daq_id):
                # aborting what never started (a start that timed out) or already ended is not an error:
                # afterwards nothing is recorded for the DAQ either way
                if daq_id in self.recordings:
                    self.finish(daq_id, "abort")
                elif daq_id not in self.finished:
                    self.remember(daq_id, "aborted")  # a start arriving after this is refused
                return SourceAck()
            case SourceWait(daq_id=daq_id, timeout=timeout):
                rec = self.recordings.get(daq_id)
                if rec is None and daq_id in self.finished:
                    return SourceWaitReply(ended=True)
                if rec is None:
                    raise NotFound(f"{self.name} has no recording for DAQ {daq_id!r}")
                try:
                    async with asyncio.timeout(max(0.0, timeout)):
                        await rec.ended.wait()
                except TimeoutError:
                    return SourceWaitReply(ended=False)
                return SourceWaitReply(ended=True)
            case _:
                assert_never(body)

    def finish(self, daq_id: str, what: Literal["stop", "abort"]) -> Recording:
        rec = self.recordings.pop(daq_id, None)
        if rec is None and daq_id in self.finished:
            ended = self.finished[daq_id]
            raise InvalidState(f"cannot {what}: the recording of DAQ {daq_id!r} was already {ended}")
        if rec is None:
            raise NotFound(f"cannot {what}: {self.name} has no recording for DAQ {daq_id!r}")
        if rec.end_timer is not None:
            rec.end_timer.cancel()
        rec.ended.set()
        self.remember(daq_id, "stopped" if what == "stop" else "aborted")
        log.info("DAQ %s: %s", daq_id, what)
        return rec

    def remember(self, daq_id: str, ended: str) -> None:
        self.finished[daq_id] = ended
        if len(self.finished) > KEEP_FINISHED:
            del self.finished[next(iter(self.finished))]

    async def result(self, rec: Recording) -> SourceResult:
        elapsed = time.monotonic() - rec.t0_mono
        if self.duration is not None:
            elapsed = min(elapsed, self.duration)
        rows = min(math.floor(elapsed * self.rate), MAX_ROWS)
        columns = await asyncio.to_thread(table, rows, self.rate, rec.t0_epoch)
        keywords = [
            ValueKeyword("EXPTIME", round(elapsed, 6), "[s] time recorded"),
            EsoKeyword("DET ID", self.name, "detector"),
            EsoKeyword("DET SOURCE", rec.source, "source name in the DAQ"),
            EsoKeyword("DET RATE", self.rate, "[Hz] row rate"),
            EsoKeyword("DET ROWS", rows, "rows recorded"),
        ]
        return SourceResult(keywords=keywords, columns=columns)


async def run(bind: str, *, name: str, rate: float, duration: float | None) -> int:
    zctx = zmq.asyncio.Context()
    sock = zctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.bind(bind)
    except zmq.ZMQError as exc:
        print(f"cannot bind {bind}: {exc}", file=sys.stderr)
        sock.close()
        zctx.term()
        return 2
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    # only now: whoever waits for this line may signal us at once
    print(f"listening on {sock.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
    server = DaqSource(sock, name=name, rate=rate, duration=duration)
    serving = asyncio.create_task(server.serve())
    waiting = asyncio.create_task(stopping.wait())
    try:
        await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (serving, waiting, *server.tasks):
            task.cancel()
        await asyncio.gather(serving, waiting, *server.tasks, return_exceptions=True)
        sock.close(linger=0)
        zctx.term()
    if serving.done() and not serving.cancelled():
        serving.result()  # serving ends only by a bug: re-raise it with its traceback
    log.info("stopped")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bind", default="tcp://127.0.0.1:5599", help="ZMQ address to bind (ROUTER)")
    parser.add_argument("--rate", type=float, default=100.0, help="rows per second while recording")
    parser.add_argument("--name", default="daq_source", help="detector name written in the keywords")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds after which a recording ends by itself"
    )
    args = parser.parse_args()
    if not (math.isfinite(args.rate) and args.rate > 0):
        parser.error("--rate must be a positive number")
    if args.duration is not None and not (math.isfinite(args.duration) and args.duration >= 0):
        parser.error("--duration must be a number >= 0")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(run(args.bind, name=args.name, rate=args.rate, duration=args.duration))


if __name__ == "__main__":
    sys.exit(main())

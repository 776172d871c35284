"""The DAQ sources: OCM's `name@uri` lists, URI checks, the simulated source, the ZMQ source against the
example external source (a real subprocess on loopback) and against in-test ROUTERs, and the actor source."""

from __future__ import annotations

import asyncio
import math
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
import zmq
import zmq.asyncio

from stationd.actors.daq_coordinator.sources import (
    ActorSource,
    SimSource,
    SourceAddress,
    SourceFailed,
    ZmqSource,
    check_address,
    open_source,
    parse_daq_sources,
    parse_sources,
)
from stationd.actors.daq_coordinator.sources.sim import parse_sim_uri
from stationd.protocol.codec import msgpack_decoder, msgpack_encoder
from stationd.protocol.daq import (
    EsoKeyword,
    SourceAbort,
    SourceAck,
    SourceKind,
    SourceRequest,
    SourceResponse,
    SourceResult,
    SourceStart,
    SourceStop,
    SourceWait,
    SourceWaitReply,
)
from stationd.protocol.errors import (
    DeadlineExceeded,
    ErrorInfo,
    InvalidParams,
    NotFound,
    StationError,
    UnknownActor,
)
from tests.support.daemon import free_port
from tests.support.daq import ExternalSource, start_example_source, stop_process

ENCODER = msgpack_encoder()
REQUESTS = msgpack_decoder(SourceRequest)


def sim(uri: str, kind: SourceKind = "primary", name: str = "cam") -> SimSource:
    return SimSource(SourceAddress(name, uri, kind), "daq-1")


def keyword(result: SourceResult, name: str) -> Any:
    return next(k.value for k in result.keywords if isinstance(k, EsoKeyword) and k.name == name)


def assert_table(result: SourceResult, rows: int) -> None:
    """TIME/COUNTER/VALUE as 1-d numpy arrays of `rows` rows, TIME rising in steps of 1/rate from now-ish."""
    cols = result.columns
    assert set(cols) == {"TIME", "COUNTER", "VALUE"}
    assert cols["TIME"].dtype == np.float64 and cols["VALUE"].dtype == np.float64
    assert cols["COUNTER"].dtype == np.int64
    assert all(isinstance(c, np.ndarray) and c.shape == (rows,) for c in cols.values())
    np.testing.assert_array_equal(cols["COUNTER"], np.arange(rows))
    if rows > 1:
        assert np.all(np.diff(cols["TIME"]) > 0)
    if rows:
        assert abs(cols["TIME"][0] - time.time()) < 60


# -- source lists ------------------------------------------------------------------------------------------
def test_parse_sources_reads_one_name_at_uri_entry() -> None:
    assert parse_sources("cam@tcp://127.0.0.1:5599", "primary") == [
        SourceAddress("cam", "tcp://127.0.0.1:5599", "primary")
    ]


def test_parse_sources_keeps_several_entries_in_order_with_their_kind() -> None:
    got = parse_sources("b@sim://b a@actor://poller c@ipc:///tmp/c.sock", "metadata")
    assert [(a.name, a.uri, a.kind) for a in got] == [
        ("b", "sim://b", "metadata"),
        ("a", "actor://poller", "metadata"),
        ("c", "ipc:///tmp/c.sock", "metadata"),
    ]


def test_parse_sources_accepts_any_amount_of_whitespace() -> None:
    got = parse_sources("  \n a@sim://a \t\t b@sim://b  \n", "primary")
    assert [a.name for a in got] == ["a", "b"]
    assert parse_sources("   ", "primary") == []


def test_parse_sources_splits_at_the_first_at_sign() -> None:
    assert parse_sources("cam@ipc://@abstract", "primary")[0].uri == "ipc://@abstract"


@pytest.mark.parametrize(
    ("text", "entry"),
    [
        ("cam", "'cam'"),
        ("ok@sim://ok tcp://127.0.0.1:1", "'tcp://127.0.0.1:1'"),
        ("@sim://x", "'@sim://x'"),
        ("cam@", "'cam@'"),
    ],
    ids=["no-at", "uri-without-name", "empty-name", "empty-uri"],
)
def test_parse_sources_refuses_a_bad_entry_naming_it(text: str, entry: str) -> None:
    with pytest.raises(InvalidParams, match=entry):
        parse_sources(text, "primary")


def test_parse_sources_refuses_a_name_used_twice() -> None:
    with pytest.raises(InvalidParams, match="'cam' is used twice"):
        parse_sources("cam@sim://a cam@sim://b", "primary")


def test_parse_daq_sources_lists_primary_then_metadata_sources_checked() -> None:
    got = parse_daq_sources("cam@sim://cam?rate=5", "tcs@sim://tcs")
    assert [(a.name, a.kind) for a in got] == [("cam", "primary"), ("tcs", "metadata")]


def test_parse_daq_sources_refuses_a_name_used_in_both_lists() -> None:
    with pytest.raises(InvalidParams, match="'cam' is used twice"):
        parse_daq_sources("cam@sim://a", "cam@sim://b")


def test_parse_daq_sources_refuses_a_daq_without_sources() -> None:
    with pytest.raises(InvalidParams, match="at least one source"):
        parse_daq_sources(" ", "")


def test_parse_daq_sources_refuses_a_bad_uri_before_anything_opens() -> None:
    with pytest.raises(InvalidParams, match=r"metadata source 'tcs'.*unknown scheme"):
        parse_daq_sources("cam@sim://cam", "tcs@zpb.rr://127.0.0.1:12081/daq")


# -- URI checks --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "uri",
    [
        "sim://cam",
        "sim://",
        "sim://cam?rate=2.5&duration=0&fail=stop&hang=abort",
        "tcp://127.0.0.1:5599",
        "tcp://[::1]:5599",
        "ipc:///tmp/source.sock",
        "actor://imacrt_poller",
    ],
)
def test_check_address_accepts_the_known_schemes(uri: str) -> None:
    check_address(SourceAddress("s", uri, "primary"))


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("zpb.rr://127.0.0.1:12081/daq", "unknown scheme 'zpb.rr'"),
        ("http://127.0.0.1/x", "unknown scheme 'http'"),
        ("127.0.0.1:5599", "unknown scheme"),
        ("tcp://127.0.0.1", "tcp://<host>:<port>"),
        ("tcp://*:5599", "tcp://<host>:<port>"),
        ("tcp://127.0.0.1:99999", "tcp://<host>:<port>"),
        ("tcp://127.0.0.1:5599/daq", "nothing more"),
        ("ipc://", "ipc://<path>"),
        ("actor://", "actor://<actor_name>"),
        ("actor://poller/extra", "actor://<actor_name>"),
    ],
)
def test_check_address_refuses_a_bad_uri_naming_the_source(uri: str, problem: str) -> None:
    with pytest.raises(InvalidParams, match=r"primary source 's'") as info:
        check_address(SourceAddress("s", uri, "primary"))
    assert problem in info.value.msg


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("rate=0", "rate must be a finite number > 0"),
        ("rate=-3", "rate must be a finite number > 0"),
        ("rate=nan", "rate must be a finite number > 0"),
        ("rate=fast", "rate='fast' is not a number"),
        ("rate=1e9", "rate must be at most"),
        ("duration=-1", "duration must be a finite number >= 0"),
        ("duration=inf", "duration must be a finite number >= 0"),
        ("fail=never", "fail='never' is not one of start, stop, abort, wait"),
        ("hang=", "hang='' is not one of"),
        ("speed=3", "unknown parameter 'speed'"),
        ("rate=1&rate=2", "rate given twice"),
        ("rate", "bad query"),
    ],
)
def test_sim_uri_refuses_unknown_or_bad_parameters(query: str, problem: str) -> None:
    with pytest.raises(InvalidParams) as info:
        check_address(SourceAddress("cam", f"sim://cam?{query}", "primary"))
    assert problem in info.value.msg


def test_sim_uri_reads_every_parameter() -> None:
    config = parse_sim_uri("sim://det1?rate=250&duration=1.5&fail=wait&hang=start")
    assert (config.device, config.rate, config.duration, config.fail, config.hang) == (
        "det1",
        250.0,
        1.5,
        "wait",
        "start",
    )
    assert parse_sim_uri("sim://det1").rate == 10.0


async def test_open_source_chooses_the_class_by_scheme() -> None:
    zctx = zmq.asyncio.Context()
    try:

        async def ask(to: str, msg: msgspec.Struct) -> Any:
            raise AssertionError("opening must not ask anything")

        def opened(uri: str) -> object:
            return open_source(SourceAddress("s", uri, "primary"), "daq-1", ask=ask, zctx=zctx)

        assert isinstance(opened("sim://s"), SimSource)
        assert isinstance(actor := opened("actor://poller"), ActorSource) and actor.actor == "poller"
        zsrc = opened("tcp://127.0.0.1:5599")
        assert isinstance(zsrc, ZmqSource)
        await zsrc.close()
        with pytest.raises(InvalidParams, match="unknown scheme"):
            opened("udp://127.0.0.1:5599")
    finally:
        zctx.destroy(linger=0)


# -- SimSource ---------------------------------------------------------------------------------------------
async def test_sim_source_records_rows_at_its_rate_for_the_time_it_acquired() -> None:
    src = sim("sim://cam?rate=1000")
    before_start = time.monotonic()
    await src.start()
    after_start = time.monotonic()
    assert await src.wait_end(0.05) is False  # the device's own wait: no duration, so it never ends
    before_stop = time.monotonic()
    result = await src.stop()
    after_stop = time.monotonic()
    rows = len(result.columns["COUNTER"])
    assert (
        math.floor((before_stop - after_start) * 1000)
        <= rows
        <= math.floor((after_stop - before_start) * 1000)
    )
    assert rows >= 40
    assert_table(result, rows)
    np.testing.assert_allclose(np.diff(result.columns["TIME"]), 1e-3, atol=1e-6)  # epoch float64: ~0.2 µs
    assert keyword(result, "DET SIM ROWS") == rows
    assert keyword(result, "DET SIM RATE") == 1000.0
    assert keyword(result, "DET SIM NAME") == "cam"


async def test_sim_source_stops_recording_by_itself_after_its_duration() -> None:
    src = sim("sim://cam?rate=1000&duration=0.05")
    started = time.monotonic()
    await src.start()
    assert await src.wait_end(30) is True
    assert time.monotonic() - started >= 0.05 - 0.01  # the loop's timers may fire a clock tick early
    result = await src.stop()
    assert keyword(result, "DET SIM ROWS") == 50  # capped at duration * rate, however late the stop
    assert_table(result, 50)


async def test_sim_source_wait_end_returns_false_when_the_timeout_passes_first() -> None:
    src = sim("sim://cam?duration=60")
    await src.start()
    assert await src.wait_end(0.01) is False


async def test_sim_source_wait_end_returns_as_soon_as_the_recording_is_stopped() -> None:
    src = sim("sim://cam")
    await src.start()
    waiting = asyncio.create_task(src.wait_end(30))
    stopping = asyncio.create_task(src.stop())  # tasks run in order: the wait is out when the stop comes
    await stopping
    assert await asyncio.wait_for(waiting, 5) is True


async def test_sim_source_used_as_metadata_returns_keywords_only() -> None:
    src = sim("sim://tcs?rate=1000", kind="metadata", name="tcs")
    await src.start()
    result = await src.stop()
    assert result.columns == {}
    assert keyword(result, "INS SIM NAME") == "tcs"
    assert isinstance(keyword(result, "INS SIM VALUE"), float)


async def test_sim_source_refuses_stop_before_start_and_a_second_stop() -> None:
    src = sim("sim://cam")
    with pytest.raises(SourceFailed, match="not recording"):
        await src.stop()
    with pytest.raises(SourceFailed, match="not recording"):
        await src.wait_end(0)
    await src.start()
    with pytest.raises(SourceFailed, match="already recording"):
        await src.start()
    await src.stop()
    with pytest.raises(SourceFailed, match="already stopped"):
        await src.stop()


async def test_sim_source_abort_discards_the_recording_and_may_be_repeated() -> None:
    src = sim("sim://cam")
    await src.start()
    await src.abort()
    await src.abort()
    assert await src.wait_end(0) is True
    with pytest.raises(SourceFailed, match="already aborted"):
        await src.stop()


async def test_sim_source_abort_before_start_succeeds_and_refuses_a_later_start() -> None:
    src = sim("sim://cam")
    await src.abort()  # a start that failed or timed out is aborted too
    with pytest.raises(SourceFailed, match="was aborted"):
        await src.start()


@pytest.mark.parametrize("step", ["start", "stop", "abort", "wait"])
async def test_sim_source_fails_the_step_named_by_fail(step: str) -> None:
    src = sim(f"sim://cam?fail={step}")
    calls = {"start": src.start, "stop": src.stop, "abort": src.abort, "wait": lambda: src.wait_end(1)}
    if step != "start":
        await src.start()
    with pytest.raises(SourceFailed, match=f"^simulated failure on {step}$"):
        await calls[step]()


async def test_sim_source_hanging_stop_is_cancelled_by_a_timeout_and_can_still_be_aborted() -> None:
    src = sim("sim://cam?hang=stop")
    await src.start()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(src.stop(), 0.05)
    await asyncio.wait_for(src.abort(), 5)
    assert await src.wait_end(0) is True


@pytest.mark.parametrize("step", ["start", "abort", "wait"])
async def test_sim_source_hangs_the_step_named_by_hang_until_cancelled(step: str) -> None:
    src = sim(f"sim://cam?hang={step}")
    if step != "start":
        await src.start()
    call = {"start": src.start, "abort": src.abort, "wait": lambda: src.wait_end(0)}[step]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(call(), 0.05)


# -- the example external source, as a subprocess ------------------------------------------------------------
@pytest.fixture
async def example(tmp_path: Path) -> AsyncIterator[ExternalSource]:
    """`examples/daq_source.py` on a free loopback port, at 1000 rows/s."""
    ext = await start_example_source(tmp_path, "--rate", "1000", "--name", "det7")
    try:
        yield ext
    finally:
        await stop_process(ext.proc)


@pytest.fixture
def zctx() -> Iterator[zmq.asyncio.Context]:
    ctx = zmq.asyncio.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
async def closing() -> AsyncIterator[list[ZmqSource]]:
    """ZmqSources to close at the end of the test, whatever happened."""
    sources: list[ZmqSource] = []
    yield sources
    for src in sources:
        await src.close()


async def test_zmq_source_start_stop_returns_the_columns_as_numpy_arrays(
    example: ExternalSource, zctx: zmq.asyncio.Context, closing: list[ZmqSource]
) -> None:
    src = ZmqSource(example.address(), "daq-1", zctx)
    closing.append(src)
    before_start = time.monotonic()
    await src.start()
    after_start = time.monotonic()
    assert await src.wait_end(0.05) is False  # the example records until stopped
    before_stop = time.monotonic()
    result = await src.stop()
    after_stop = time.monotonic()
    rows = keyword(result, "DET ROWS")
    assert (
        math.floor((before_stop - after_start) * 1000)
        <= rows
        <= math.floor((after_stop - before_start) * 1000)
    )
    assert_table(result, rows)
    assert keyword(result, "DET SOURCE") == "cam" and keyword(result, "DET ID") == "det7"


async def test_zmq_source_two_daqs_on_one_external_source_stop_independently(
    example: ExternalSource, zctx: zmq.asyncio.Context, closing: list[ZmqSource]
) -> None:
    first = ZmqSource(example.address("cam_a"), "daq-a", zctx)
    second = ZmqSource(example.address("cam_b"), "daq-b", zctx)
    third = ZmqSource(example.address("cam_c"), "daq-c", zctx)
    closing.extend([first, second, third])
    for src in (first, second, third):
        await src.start()
    await third.abort()
    result_a = await first.stop()
    assert keyword(result_a, "DET SOURCE") == "cam_a"
    assert await second.wait_end(0) is False  # daq-b still records after daq-a stopped and daq-c aborted
    result_b = await second.stop()
    assert keyword(result_b, "DET SOURCE") == "cam_b"
    assert result_b.columns["TIME"][0] > result_a.columns["TIME"][0]
    with pytest.raises(SourceFailed, match="recording of DAQ 'daq-a' was already stopped"):
        await first.stop()
    with pytest.raises(SourceFailed, match="recording of DAQ 'daq-c' was already aborted"):
        await third.stop()
    assert await third.wait_end(30) is True  # ended: answered at once


async def test_zmq_source_wait_is_answered_when_another_request_stops_the_recording(
    example: ExternalSource, zctx: zmq.asyncio.Context, closing: list[ZmqSource]
) -> None:
    src = ZmqSource(example.address(), "daq-1", zctx)
    closing.append(src)
    await src.start()
    waiting = asyncio.create_task(src.wait_end(30))
    stopping = asyncio.create_task(src.stop())  # tasks run in order: the wait goes out first
    await asyncio.wait_for(stopping, 10)
    assert await asyncio.wait_for(waiting, 10) is True  # answered by the stop, not after 30 s


async def test_zmq_source_error_replies_become_source_failed(
    example: ExternalSource, zctx: zmq.asyncio.Context, closing: list[ZmqSource]
) -> None:
    src = ZmqSource(example.address(), "daq-1", zctx)
    closing.append(src)
    with pytest.raises(SourceFailed, match="cannot stop: det7 has no recording for DAQ 'daq-1'"):
        await src.stop()
    with pytest.raises(SourceFailed, match="no recording for DAQ 'daq-1'"):
        await src.wait_end(1)
    await src.start()
    with pytest.raises(SourceFailed, match="already recording for DAQ 'daq-1'"):
        await src.start()
    await src.abort()
    with pytest.raises(SourceFailed, match="recording of DAQ 'daq-1' was already aborted"):
        await src.start()


async def test_example_source_abort_of_a_daq_it_never_saw_succeeds_and_refuses_a_later_start(
    example: ExternalSource, zctx: zmq.asyncio.Context, closing: list[ZmqSource]
) -> None:
    """The coordinator aborts a source whose start timed out: the start may never have arrived."""
    src = ZmqSource(example.address(), "daq-2", zctx)
    closing.append(src)
    await src.abort()
    await src.abort()
    with pytest.raises(SourceFailed, match="was already aborted"):
        await src.start()


async def test_example_source_answers_malformed_requests_and_survives_garbage(
    example: ExternalSource, zctx: zmq.asyncio.Context, closing: list[ZmqSource]
) -> None:
    raw = zctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(example.addr)
    try:
        await raw.send(b"\xc1 not msgpack")  # no req_id to answer: ignored
        await raw.send(msgspec.msgpack.encode([41, {"type": "source_launch"}]))
        reply = msgpack_decoder(SourceResponse).decode(await asyncio.wait_for(raw.recv(), 10))
        assert reply.req_id == 41 and isinstance(reply.body, ErrorInfo)
        assert reply.body.code == "malformed_request"
    finally:
        raw.close(linger=0)
    src = ZmqSource(example.address(), "daq-1", zctx)
    closing.append(src)
    await src.start()
    await src.abort()


async def test_example_source_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    ext = await start_example_source(tmp_path)
    try:
        ext.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(ext.proc.wait(), 10) == 0
    finally:
        await stop_process(ext.proc)


# -- ZmqSource against in-test ROUTERs ---------------------------------------------------------------------
@pytest.fixture
def router(zctx: zmq.asyncio.Context) -> Iterator[tuple[zmq.asyncio.Socket, str]]:
    sock = zctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind("tcp://127.0.0.1:*")
    yield sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close(linger=0)


async def receive(sock: zmq.asyncio.Socket) -> tuple[bytes, SourceRequest]:
    ident, payload = await asyncio.wait_for(sock.recv_multipart(), 10)
    return ident, REQUESTS.decode(payload)


async def answer(sock: zmq.asyncio.Socket, ident: bytes, req_id: int, body: Any) -> None:
    await sock.send_multipart([ident, ENCODER.encode(SourceResponse(req_id, body))])


async def test_zmq_source_request_to_a_port_nobody_listens_on_waits_until_cancelled(
    zctx: zmq.asyncio.Context,
) -> None:
    probe = zctx.socket(zmq.ROUTER)
    probe.bind("tcp://127.0.0.1:*")
    addr = probe.getsockopt_string(zmq.LAST_ENDPOINT)
    probe.close(linger=0)  # the port is free again and nobody listens on it
    src = ZmqSource(SourceAddress("cam", addr, "primary"), "daq-1", zctx)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(src.start(), 0.05)
        with pytest.raises(TimeoutError):  # the socket still takes requests after a cancelled one
            await asyncio.wait_for(src.abort(), 0.05)
    finally:
        await src.close()
    with pytest.raises(SourceFailed, match="closed"):
        await src.start()


async def test_zmq_source_late_reply_of_a_cancelled_request_is_ignored_by_the_next_request(
    router: tuple[zmq.asyncio.Socket, str], zctx: zmq.asyncio.Context, closing: list[ZmqSource]
) -> None:
    sock, addr = router
    src = ZmqSource(SourceAddress("cam", addr, "primary"), "daq-1", zctx)
    closing.append(src)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(src.start(), 0.05)
    ident, held = await receive(sock)  # the first request, held past its timeout
    assert isinstance(held.body, SourceStart) and held.body.source == "cam"

    stopping = asyncio.create_task(src.stop())
    _, second = await receive(sock)
    assert isinstance(second.body, SourceStop) and second.req_id != held.req_id
    await answer(sock, ident, held.req_id, SourceAck())  # late, while the stop waits: not its answer
    await answer(sock, ident, second.req_id, SourceResult(columns={"X": np.arange(3.0)}))
    result = await asyncio.wait_for(stopping, 10)
    np.testing.assert_array_equal(result.columns["X"], [0.0, 1.0, 2.0])

    await answer(sock, ident, held.req_id, SourceAck())  # late again, between requests
    waiting = asyncio.create_task(src.wait_end(7.5))
    _, third = await receive(sock)
    assert third.body == SourceWait(daq_id="daq-1", timeout=7.5)
    await answer(sock, ident, third.req_id, SourceWaitReply(ended=True))
    assert await asyncio.wait_for(waiting, 10) is True


async def test_zmq_source_reaches_a_source_that_starts_listening_after_a_timeout(
    zctx: zmq.asyncio.Context, closing: list[ZmqSource]
) -> None:
    # a port nobody listens on; not from a ZMQ socket bound and closed: its I/O thread closes the listener
    # later, and the source's first connection could reach it and lose the start
    addr = f"tcp://127.0.0.1:{free_port()}"
    src = ZmqSource(SourceAddress("cam", addr, "primary"), "daq-1", zctx)
    closing.append(src)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(src.start(), 0.05)
    late = zctx.socket(zmq.ROUTER)
    late.setsockopt(zmq.LINGER, 0)
    late.bind(addr)
    try:
        aborting = asyncio.create_task(src.abort())
        ident, queued = await receive(late)  # the cancelled start, delivered on reconnect: answered, ignored
        assert isinstance(queued.body, SourceStart)
        await answer(late, ident, queued.req_id, ErrorInfo("invalid_state", "too late"))
        _, req = await receive(late)
        assert req.body == SourceAbort(daq_id="daq-1")
        await answer(late, ident, req.req_id, SourceAck())
        await asyncio.wait_for(aborting, 10)
    finally:
        late.close(linger=0)


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (ErrorInfo("invalid_state", "detector busy"), "^detector busy$"),
        (SourceAck(), "expected a SourceResult reply, got SourceAck"),
        (SourceResult(columns={"A": np.arange(3), "B": np.arange(4)}), "columns differ in length"),
        (SourceResult(columns={"A": np.zeros((2, 2))}), "column 'A' is not a 1-d array"),
    ],
    ids=["error-info", "wrong-reply", "ragged-columns", "2d-column"],
)
async def test_zmq_source_turns_error_and_wrong_replies_into_source_failed(
    router: tuple[zmq.asyncio.Socket, str],
    zctx: zmq.asyncio.Context,
    closing: list[ZmqSource],
    reply: Any,
    problem: str,
) -> None:
    sock, addr = router
    src = ZmqSource(SourceAddress("cam", addr, "primary"), "daq-1", zctx)
    closing.append(src)
    stopping = asyncio.create_task(src.stop())
    ident, req = await receive(sock)
    await answer(sock, ident, req.req_id, reply)
    with pytest.raises(SourceFailed, match=problem):
        await asyncio.wait_for(stopping, 10)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lambda req_id: b"\xc1", id="not-msgpack"),
        pytest.param(lambda req_id: msgspec.msgpack.encode([req_id, {"type": "nonsense"}]), id="bad-body"),
        pytest.param(lambda req_id: msgspec.msgpack.encode({"req_id": req_id}), id="not-an-array"),
        pytest.param(
            lambda req_id: msgspec.msgpack.encode(
                [req_id, {"type": "source_result", "columns": {"A": msgspec.msgpack.Ext(1, b"\0\0\0\0")}}]
            ),
            id="bad-ndarray",
        ),
    ],
)
async def test_zmq_source_malformed_reply_fails_the_request_naming_the_problem(
    router: tuple[zmq.asyncio.Socket, str], zctx: zmq.asyncio.Context, closing: list[ZmqSource], payload: Any
) -> None:
    sock, addr = router
    src = ZmqSource(SourceAddress("cam", addr, "primary"), "daq-1", zctx)
    closing.append(src)
    stopping = asyncio.create_task(src.stop())
    ident, req = await receive(sock)
    await sock.send_multipart([ident, payload(req.req_id)])
    with pytest.raises(SourceFailed, match=f"malformed reply from {addr}"):
        await asyncio.wait_for(stopping, 10)
    # the socket still serves the next request
    aborting = asyncio.create_task(src.abort())
    ident, req = await receive(sock)
    await answer(sock, ident, req.req_id, SourceAck())
    await asyncio.wait_for(aborting, 10)


# -- ActorSource -------------------------------------------------------------------------------------------
class FakeAsk:
    """A stand-in for the actor context's `ask` (a test double: the real in-daemon path over the bus is
    tested with the coordinator); answers from a script and records what was asked."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.asked: list[tuple[str, msgspec.Struct]] = []

    async def __call__(self, to: str, msg: msgspec.Struct) -> Any:
        self.asked.append((to, msg))
        reply = self.replies.pop(0)
        if isinstance(reply, StationError):
            raise reply
        return reply


def actor_source(ask: FakeAsk) -> ActorSource:
    return ActorSource(SourceAddress("thermo", "actor://imacrt_poller", "metadata"), "daq-9", ask)


async def test_actor_source_sends_the_source_protocol_to_the_named_actor() -> None:
    """The fake ask is a legitimate double here: the bus path is the lead's coordinator test."""
    ask = FakeAsk(
        SourceAck(),
        SourceWaitReply(ended=False),
        SourceResult(keywords=[EsoKeyword("INS TEMP1 VAL", 4.2)], columns={"T": [1.0, 2.0]}),
        SourceAck(),
    )
    src = actor_source(ask)
    await src.start()
    assert await src.wait_end(2.5) is False
    result = await src.stop()
    await src.abort()
    assert ask.asked == [
        ("imacrt_poller", SourceStart(daq_id="daq-9", source="thermo")),
        ("imacrt_poller", SourceWait(daq_id="daq-9", timeout=2.5)),
        ("imacrt_poller", SourceStop(daq_id="daq-9")),
        ("imacrt_poller", SourceAbort(daq_id="daq-9")),
    ]
    assert result.keywords == [EsoKeyword("INS TEMP1 VAL", 4.2)]
    assert isinstance(result.columns["T"], np.ndarray)  # lists from an actor become arrays


@pytest.mark.parametrize(
    "error",
    [
        NotFound("no recording for DAQ 'daq-9'"),
        DeadlineExceeded("no reply within 10 s"),
        UnknownActor("who?"),
    ],
    ids=lambda e: e.code,
)
async def test_actor_source_turns_typed_errors_from_ask_into_source_failed(error: StationError) -> None:
    """The fake ask raises what the real one raises: typed StationErrors."""
    src = actor_source(FakeAsk(error))
    with pytest.raises(SourceFailed, match=f"^{re.escape(error.msg)}$") as info:
        await src.start()
    assert info.value.__cause__ is error


async def test_actor_source_refuses_a_reply_of_the_wrong_type() -> None:
    """The fake ask answers a stop with an ack, as a buggy poller might."""
    with pytest.raises(SourceFailed, match="answered SourceStop with SourceAck, not SourceResult"):
        await actor_source(FakeAsk(SourceAck())).stop()

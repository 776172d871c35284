"""SocketReader on real inproc sockets: messages queued before it starts, more than one batch, reads after the
owner's own sends, and an owner error ending `serve`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import zmq
import zmq.asyncio

from stationd.daemon.socket_reader import READ_BATCH, SocketReader


class Pair:
    def __init__(self, zctx: zmq.asyncio.Context) -> None:
        self.served = zctx.socket(zmq.PAIR, socket_class=zmq.Socket)
        self.served.bind("inproc://reader")
        self.peer = zctx.socket(zmq.PAIR, socket_class=zmq.Socket)
        self.peer.connect("inproc://reader")
        self.got: list[bytes] = []
        self.enough = asyncio.Event()
        self.wanted = 0

    def on_message(self, frames: list[Any]) -> None:
        self.got.append(frames[0])
        if len(self.got) >= self.wanted:
            self.enough.set()

    async def until(self, n: int) -> None:
        self.wanted = n
        if len(self.got) < n:
            self.enough.clear()
            await asyncio.wait_for(self.enough.wait(), 5)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    zctx = zmq.asyncio.Context()
    yield Pair(zctx)
    zctx.destroy(linger=0)


async def test_messages_queued_before_serving_and_beyond_one_batch_are_all_read(pair: Pair) -> None:
    sent = [str(i).encode() for i in range(3 * READ_BATCH + 5)]
    for payload in sent:
        pair.peer.send(payload)
    reader = SocketReader(pair.served, pair.on_message)
    task = asyncio.create_task(reader.serve())
    await pair.until(len(sent))
    assert pair.got == sent
    task.cancel()


async def test_check_after_an_own_send_reads_what_arrived_meanwhile(pair: Pair) -> None:
    reader = SocketReader(pair.served, pair.on_message)
    task = asyncio.create_task(reader.serve())
    pair.peer.send(b"first")
    await pair.until(1)
    for i in range(20):  # each send on the served socket may take the signal of the peer's message
        pair.peer.send(b"in %d" % i)
        pair.served.send(b"out %d" % i)
        reader.check()
    await pair.until(21)
    assert pair.got == [b"first", *(b"in %d" % i for i in range(20))]
    assert [pair.peer.recv() for _ in range(20)] == [b"out %d" % i for i in range(20)]
    task.cancel()


async def test_read_now_takes_what_is_queued_at_once(pair: Pair) -> None:
    reader = SocketReader(pair.served, pair.on_message)
    for payload in (b"a", b"b"):
        pair.peer.send(payload)
    reader.read_now()  # inproc: a message is on the receiving socket when `send` returns
    assert pair.got == [b"a", b"b"]


async def test_an_error_of_the_owner_ends_serve_with_it(pair: Pair) -> None:
    def broken(_frames: list[Any]) -> None:
        raise ValueError("owner bug")

    reader = SocketReader(pair.served, broken)
    task = asyncio.create_task(reader.serve())
    pair.peer.send(b"x")
    with pytest.raises(ValueError, match="owner bug"):
        await asyncio.wait_for(task, 5)

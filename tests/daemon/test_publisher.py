"""The info stream's publisher on real sockets: coalesced snapshot topics, and a stopping daemon."""

from __future__ import annotations

import asyncio

import msgspec
import zmq
import zmq.asyncio

from stationd.daemon.publisher import Publisher
from stationd.protocol.pubsub import event_topic

TOPIC = event_topic("queue_manager", "status")


async def test_a_coalesced_topic_reaches_listeners_every_time_and_subscribers_latest_first() -> None:
    ctx = zmq.asyncio.Context()
    xpub = zmq.Context.shadow(ctx.underlying).socket(zmq.XPUB)
    sub = ctx.socket(zmq.SUB)
    try:
        port = xpub.bind_to_random_port("tcp://127.0.0.1")
        sub.connect(f"tcp://127.0.0.1:{port}")
        sub.subscribe(TOPIC.encode())
        # XPUB hands us the subscription: from then on the SUB receives what is sent (no slow joiner)
        assert await asyncio.to_thread(xpub.recv) == b"\x01" + TOPIC.encode()
        publisher = Publisher(xpub)
        publisher.coalesce(TOPIC)
        heard: list[int] = []
        publisher.add_listener(TOPIC, lambda _t, m: heard.append(m.data["n"]))
        for n in range(1, 101):
            publisher.publish_event("queue_manager", "status", {"n": n})
        assert heard == list(range(1, 101))  # in-process listeners: every snapshot, at once
        received = []
        while not received or received[-1]["data"]["n"] != 100:
            _topic, payload = await asyncio.wait_for(sub.recv_multipart(), 5)
            received.append(msgspec.json.decode(payload))
        assert len(received) < 10  # the first one at once, then the latest at most every 10 ms
        assert [m["seq"] for m in received] == list(range(1, len(received) + 1))  # no false gaps
    finally:
        sub.close(0)
        xpub.close(0)
        ctx.term()


def test_a_publication_after_the_socket_closed_is_dropped() -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.close(0)
    publisher = Publisher(sock)
    publisher.publish_event("queue_manager", "state", {"n": 1})  # a timer firing while the daemon stops
    publisher.publish_console("late line\n")
    ctx.term()

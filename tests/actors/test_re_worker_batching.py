"""The worker's DocumentSender: documents that come close together are published in one message and go to
the store in one tell, in order, and an explicit flush (before the plan's end is told) sends what waits at
once. The real worker and store are exercised in test_re_worker_documents.py; here a recording context
stands in for the actor's, to control time (the linger) exactly."""

from __future__ import annotations

import asyncio
from typing import Any

from stationd.actors.re_worker.documents import DocumentSender
from stationd.protocol.documents import StoreDocuments
from stationd.protocol.methods import OBSERVATION_STORE


class RecordingContext:
    def __init__(self) -> None:
        self.told: list[tuple[str, Any]] = []
        self.published: list[list[str]] = []
        self.sent = asyncio.Event()

    def tell(self, to: str, msg: Any) -> None:
        self.told.append((to, msg))
        self.sent.set()

    def publish_topics(self, items: list[tuple[str, Any]]) -> None:
        self.published.append([f"{topic}:{payload['doc']['uid']}" for topic, payload in items])


def batches(ctx: RecordingContext) -> list[list[str]]:
    assert all(to == OBSERVATION_STORE and isinstance(m, StoreDocuments) for to, m in ctx.told)
    return [[doc["uid"] for _name, doc in m.docs] for _to, m in ctx.told]


async def test_documents_within_the_linger_go_in_one_tell_after_it() -> None:
    ctx = RecordingContext()
    sender = DocumentSender(ctx, linger=0.05)  # type: ignore[arg-type]
    for uid in ("a", "b", "c"):
        sender.add("event", {"uid": uid})
    assert ctx.told == []  # waiting for more
    await asyncio.wait_for(ctx.sent.wait(), 5)
    assert batches(ctx) == [["a", "b", "c"]]
    assert ctx.published == [["doc.event:a", "doc.event:b", "doc.event:c"]]  # in one message, before it


async def test_flush_sends_at_once_and_the_timer_then_sends_nothing_more() -> None:
    ctx = RecordingContext()
    sender = DocumentSender(ctx, linger=0.05)  # type: ignore[arg-type]
    sender.add("start", {"uid": "s"})
    sender.add("stop", {"uid": "t"})
    sender.flush()
    assert batches(ctx) == [["s", "t"]]
    sender.add("start", {"uid": "s2"})  # a new batch with its own timer
    ctx.sent.clear()
    await asyncio.wait_for(ctx.sent.wait(), 5)
    assert batches(ctx) == [["s", "t"], ["s2"]]


async def test_a_full_batch_goes_without_waiting() -> None:
    ctx = RecordingContext()
    sender = DocumentSender(ctx, linger=60)  # type: ignore[arg-type]
    for i in range(1000):
        sender.add("event", {"uid": str(i)})
    assert [len(b) for b in batches(ctx)] == [1000]
    sender.flush()
    assert len(ctx.told) == 1  # nothing was left


async def test_what_waits_for_the_documents_comes_after_them_or_at_once_when_none_waits() -> None:
    ctx = RecordingContext()
    sender = DocumentSender(ctx, linger=60)  # type: ignore[arg-type]
    order: list[str] = []
    sender.then(lambda: order.append(f"first, {len(ctx.told)} batches told"))  # none waits: at once
    sender.add("start", {"uid": "s"})
    sender.then(lambda: order.append(f"run announced, {len(ctx.told)} batches told"))
    assert order == ["first, 0 batches told"]  # the start waits for the linger, and so does its announcement
    sender.flush()
    assert order == ["first, 0 batches told", "run announced, 1 batches told"]
    assert ctx.published == [["doc.start:s"]]

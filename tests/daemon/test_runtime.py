"""ask, tell, deadlines and the failure rule, with real mailboxes on a real ZMQ bus."""

from __future__ import annotations

import asyncio
import os
import time

import msgspec
import pytest
import zmq

from stationd.actors.specs import ActorSpec
from stationd.daemon.mailbox import decode_envelope, encode_body, encode_envelope
from stationd.protocol.envelope import Envelope, Kind
from stationd.protocol.errors import (
    ActorFailed,
    ActorStopped,
    DeadlineExceeded,
    PermissionDenied,
    UnknownActor,
)
from stationd.protocol.supervision import GetTree
from tests.support.actors import Announce, Block, Crash, Echo, Echoed, Fail, Later, Refuse, Release
from tests.support.harness import Harness

PROBE = "tests.support.actors:Probe"


def probe(name: str = "probe", **kw: object) -> ActorSpec:
    return ActorSpec(name=name, actor=PROBE, **kw)  # type: ignore[arg-type]


async def test_ask_returns_the_typed_reply(harness: Harness) -> None:
    await harness.start_tree(probe())
    reply = await harness.ask("probe", Echo("hello"))
    assert reply == Echoed("hello", os.getpid(), "probe")


async def test_tell_is_handled_in_order_with_asks(harness: Harness) -> None:
    await harness.start_tree(probe())
    since = harness.events.mark()
    harness.tell("probe", Announce("first"))
    await harness.ask("probe", Echo("after"))
    assert harness.events.named("probe", "announced")[-1] == {"text": "first"}
    assert since < harness.events.mark()


async def test_a_bug_in_an_ask_handler_goes_back_typed_and_the_actor_lives(harness: Harness) -> None:
    await harness.start_tree(probe())
    with pytest.raises(ActorFailed, match="ValueError: a bug in the handler"):
        await harness.ask("probe", Fail())
    assert (await harness.ask("probe", Echo("still here"))).text == "still here"
    assert harness.events.named("root", "child_restarted") == []


async def test_a_station_error_in_an_ask_keeps_its_type(harness: Harness) -> None:
    await harness.start_tree(probe())
    with pytest.raises(PermissionDenied, match="not for you"):
        await harness.ask("probe", Refuse())


async def test_an_ask_past_its_deadline_raises_timeout(harness: Harness) -> None:
    await harness.start_tree(probe(shutdown_timeout=0.5))
    harness.tell("probe", Block())
    with pytest.raises(DeadlineExceeded, match=r"probe did not answer 'probe_echo' within 0\.2 s"):
        await harness.ask("probe", Echo("x"), timeout=0.2)


async def test_an_ask_to_an_unknown_actor_fails_at_once(harness: Harness) -> None:
    await harness.start_tree(probe())
    async with asyncio.timeout(1):  # the bus answers immediately, long before the 5 s deadline
        with pytest.raises(UnknownActor, match="no actor named 'nobody'"):
            await harness.ask("nobody", Echo("x"))


async def test_a_message_the_actor_does_not_accept_is_refused(harness: Harness) -> None:
    await harness.start_tree(probe())
    with pytest.raises(Exception) as info:
        await harness.ask("probe", GetTree())
    assert getattr(info.value, "code", None) == "unsupported_message"


async def test_an_exception_in_a_tell_crashes_the_actor_and_it_is_restarted(harness: Harness) -> None:
    await harness.start_tree(probe())
    since = harness.events.mark()
    harness.tell("probe", Crash("kaput"))
    restarted = await harness.events.wait_event("root", "child_restarted", since=since, child="probe")
    assert restarted.restarts == 1
    assert "RuntimeError: kaput" in restarted.cause
    assert (await harness.ask("probe", Echo("again"))).text == "again"


async def test_queued_asks_get_actor_stopped_when_the_actor_stops(harness: Harness) -> None:
    await harness.start_tree(probe(shutdown_timeout=0.5))
    harness.tell("probe", Block())
    waiting = [asyncio.ensure_future(harness.ask("probe", Echo(str(i)))) for i in range(3)]
    await harness.ask("root", GetTree())  # the probe's mailbox has received the asks by now (bus order)
    reason = await harness.runtime.stop_child("probe", 0.5)
    assert "shutdown timeout" in reason.reason
    for fut in waiting:
        with pytest.raises(ActorStopped):
            await fut


async def test_a_deferred_reply_does_not_hold_up_the_messages_after_it(harness: Harness) -> None:
    await harness.start_tree(probe())
    later = asyncio.ensure_future(harness.ask("probe", Later("later")))
    refused = asyncio.ensure_future(harness.ask("probe", Later("refused", refuse=True)))
    assert (await harness.ask("probe", Echo("now"))).text == "now"
    assert not later.done() and not refused.done()
    harness.tell("probe", Release())
    assert (await later).text == "later"
    with pytest.raises(PermissionDenied, match="refused: not for you"):
        await refused


async def test_deferred_replies_still_waiting_get_actor_stopped_when_it_stops(harness: Harness) -> None:
    await harness.start_tree(probe())
    later = asyncio.ensure_future(harness.ask("probe", Later("never")))
    await harness.ask("probe", Echo("the deferred ask was handled before this one"))
    await harness.runtime.stop_child("probe", 0.5)
    with pytest.raises(ActorStopped):
        await later


async def test_an_ask_in_flight_to_an_actor_that_crashes_fails_with_actor_stopped(harness: Harness) -> None:
    await harness.start_tree(probe(restart="temporary"))
    harness.tell("probe", Crash())
    with pytest.raises(ActorStopped):
        await harness.ask("probe", Echo("lost"), timeout=3)


async def test_on_start_failure_fails_the_start(harness: Harness) -> None:
    with pytest.raises(ActorFailed, match="configured to fail at start"):
        await harness.start_tree(probe(options={"fail_start": True}))


@pytest.mark.parametrize("mode", ["inproc", "process"])
async def test_each_actor_logs_at_its_own_level_and_a_reload_changes_it(harness: Harness, mode: str) -> None:
    await harness.start_tree(probe("quiet", log_level="warning", mode=mode), probe("chatty", mode=mode))

    async def logs_announcing(name: str) -> bool:
        since = harness.events.mark()
        harness.tell(name, Announce("hello"))
        await harness.events.wait_event(name, "announced", since=since)
        await harness.ask(name, Echo("flush"))  # a process actor's log line precedes its reply on its socket
        return any(
            t == "log" and m.actor == name and m.event == "announcing"
            for t, m in harness.events.items[since:]
        )

    assert await logs_announcing("chatty")
    assert not await logs_announcing("quiet")
    harness.runtime.set_log_levels("info", {"quiet": "info", "chatty": "error"})  # what SIGHUP applies
    await harness.ask("quiet", Echo("sync"))  # the control message travels ahead of this ask
    assert await logs_announcing("quiet")
    assert not await logs_announcing("chatty")


async def test_an_actor_class_that_cannot_be_loaded_fails_the_start_with_the_reason(harness: Harness) -> None:
    with pytest.raises(ActorFailed, match=r"cannot load 'tests\.support\.actors:Nothing'"):
        await harness.start_tree(ActorSpec(name="ghost", actor="tests.support.actors:Nothing"))


async def test_invalid_actor_options_fail_the_start_naming_the_option(harness: Harness) -> None:
    with pytest.raises(ActorFailed, match="unknown field `colour`"):
        await harness.start_tree(probe(options={"colour": "red"}))


async def test_messages_from_another_process_reach_an_inproc_actor_in_order_and_its_reply_goes_back(
    harness: Harness,
) -> None:
    """What a child process sends an in-process actor goes through the bus, which hands it over directly."""
    await harness.start_tree(probe("near"))
    since = harness.events.mark()
    outsider = harness.runtime.zctx.socket(zmq.DEALER)  # as a child process's mailbox: ipc, own identity
    outsider.setsockopt(zmq.IDENTITY, b"outsider")
    outsider.setsockopt(zmq.LINGER, 0)
    outsider.connect(harness.runtime.bus.endpoints[1])
    try:
        for i in range(20):
            tell = Envelope(Kind.TELL, "outsider", body=encode_body(Announce(f"n{i}")))
            await outsider.send_multipart([b"near", encode_envelope(tell)])
        ask = Envelope(Kind.ASK, "outsider", 7, time.time() + 5, encode_body(Echo("last")))
        await outsider.send_multipart([b"near", encode_envelope(ask)])
        sender, raw = await asyncio.wait_for(outsider.recv_multipart(), 5)
    finally:
        outsider.close()
    reply = decode_envelope(raw)
    assert (sender, reply.kind, reply.corr) == (b"near", Kind.REPLY, 7)
    assert msgspec.msgpack.decode(reply.body, type=Echoed) == Echoed("last", os.getpid(), "near")
    assert since < harness.events.mark()
    assert [e["text"] for e in harness.events.named("near", "announced")] == [f"n{i}" for i in range(20)]

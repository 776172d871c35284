"""Process actors: the same actor class in a spawned process, watched by its exit and its heartbeats."""

from __future__ import annotations

import os
import signal
import time

import pytest

from stationd.actors.specs import ActorSpec, Mode
from stationd.protocol.errors import ActorFailed
from stationd.protocol.supervision import ActorState, GetTree
from tests.support.actors import Announce, Broadcast, Crash, Echo, Exit
from tests.support.harness import Harness

PROBE = "tests.support.actors:Probe"


def process_probe(name: str = "worker", **kw: object) -> ActorSpec:
    return ActorSpec(name=name, actor=PROBE, mode=Mode.PROCESS, **kw)  # type: ignore[arg-type]


async def test_a_process_actor_answers_from_its_own_process(harness: Harness) -> None:
    await harness.start_tree(process_probe())
    reply = await harness.ask("worker", Echo("hi"))
    assert reply.text == "hi"
    assert reply.pid == harness.pid("worker") != os.getpid()


async def test_events_and_logs_of_a_process_actor_reach_the_info_stream(harness: Harness) -> None:
    await harness.start_tree(process_probe())
    since = harness.events.mark()
    harness.tell("worker", Announce("from afar"))
    event = await harness.events.wait_event("worker", "announced", since=since)
    assert event == {"text": "from afar"}
    log = await harness.events.wait_for(lambda t, m: t == "log" and m.event == "announcing", since=since)
    assert log.actor == "worker" and log.fields["text"] == "from afar"


async def test_publications_of_a_process_actor_in_one_message_reach_the_info_stream_in_order(
    harness: Harness,
) -> None:
    await harness.start_tree(process_probe())
    since = harness.events.mark()
    topics = ["doc.start", "doc.descriptor", "doc.event", "doc.stop"]
    harness.tell("worker", Broadcast(topics))
    await harness.events.wait_for(lambda t, m: t == "doc.stop", since=since)
    published = [(t, m["n"]) for t, m in harness.events.items[since:] if t.startswith("doc.")]
    assert published == [(t, i) for i, t in enumerate(topics)]


async def test_a_process_actor_killed_with_sigkill_is_noticed_and_restarted_within_one_second(
    harness: Harness,
) -> None:
    await harness.start_tree(process_probe())
    old_pid = harness.pid("worker")
    since = harness.events.mark()
    killed_at = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    failed = await harness.events.wait_event(
        "root", "child_state", since=since, name="worker", state=ActorState.FAILED
    )
    noticed = time.monotonic() - killed_at
    await harness.events.wait_event("root", "child_restarted", since=since, child="worker")
    restarted = time.monotonic() - killed_at
    assert failed.last_exit == "killed by SIGKILL"
    assert noticed < 0.5, f"exit noticed after {noticed:.3f} s"
    assert restarted < 1.0, f"restarted after {restarted:.3f} s"
    reply = await harness.ask("worker", Echo("new life"))
    assert reply.pid == harness.pid("worker") != old_pid


async def test_a_hung_process_actor_misses_heartbeats_and_is_killed_and_restarted(harness: Harness) -> None:
    await harness.start_tree(process_probe())
    old_pid = harness.pid("worker")
    since = harness.events.mark()
    stopped_at = time.monotonic()
    os.kill(old_pid, signal.SIGSTOP)  # a real hang: the process is alive but runs nothing
    failed = await harness.events.wait_event(
        "root", "child_state", since=since, name="worker", state=ActorState.FAILED
    )
    noticed = time.monotonic() - stopped_at
    assert failed.last_exit.startswith("hung: no heartbeat for 0.45 s")
    assert noticed < 0.5 + 0.1, f"hang noticed after {noticed:.3f} s"  # timeout 0.45 s plus one loop turn
    await harness.events.wait_event("root", "child_restarted", since=since, child="worker")
    assert (await harness.ask("worker", Echo("alive"))).pid != old_pid


async def test_a_crash_inside_a_process_actor_reports_its_reason(harness: Harness) -> None:
    await harness.start_tree(process_probe())
    since = harness.events.mark()
    harness.tell("worker", Crash("deep trouble"))
    failed = await harness.events.wait_event(
        "root", "child_state", since=since, name="worker", state=ActorState.FAILED
    )
    assert failed.last_exit == "crashed: RuntimeError: deep trouble"


async def test_a_process_exit_code_is_reported(harness: Harness) -> None:
    await harness.start_tree(process_probe(restart="transient"))
    since = harness.events.mark()
    harness.tell("worker", Exit(7))
    failed = await harness.events.wait_event(
        "root", "child_state", since=since, name="worker", state=ActorState.FAILED
    )
    assert failed.last_exit == "exited with code 7"


async def test_a_process_actor_that_fails_to_start_fails_the_start(harness: Harness) -> None:
    with pytest.raises(ActorFailed, match="configured to fail at start"):
        await harness.start_tree(process_probe(options={"fail_start": True}))


async def test_a_process_actor_stops_gracefully_and_its_process_exits(harness: Harness) -> None:
    await harness.start_tree(process_probe())
    pid = harness.pid("worker")
    reason = await harness.runtime.stop_child("worker", 5.0)
    assert reason.reason == "stopped" and not reason.abnormal
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped: the runtime awaited the exit


async def test_process_and_inproc_children_mix_in_one_tree(harness: Harness) -> None:
    await harness.start_tree(process_probe("far"), ActorSpec(name="near", actor=PROBE))
    tree = await harness.ask("root", GetTree())
    assert [(c.name, c.mode, c.pid is not None) for c in tree.children] == [
        ("far", "process", True),
        ("near", "inproc", False),
    ]
    assert (await harness.ask("far", Echo("x"))).pid != (await harness.ask("near", Echo("y"))).pid


async def test_a_process_actor_whose_class_cannot_be_loaded_reports_why(harness: Harness) -> None:
    with pytest.raises(ActorFailed, match=r"No module named 'tests\.support\.nowhere'"):
        await harness.start_tree(
            ActorSpec(name="ghost", actor="tests.support.nowhere:Ghost", mode=Mode.PROCESS)
        )

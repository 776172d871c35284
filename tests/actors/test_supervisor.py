"""Supervision strategies, restart types and the intensity limit, with a test actor that fails on command."""

from __future__ import annotations

import time

import pytest

from stationd.actors.specs import ActorSpec, RestartType, Strategy, SupervisorSpec
from stationd.protocol.supervision import ActorState, GetTree
from tests.support.actors import Crash, Echo, Finish
from tests.support.harness import Harness

PROBE = "tests.support.actors:Probe"


def probe(name: str, restart: RestartType = RestartType.PERMANENT) -> ActorSpec:
    return ActorSpec(name=name, actor=PROBE, restart=restart)


async def incarnations(h: Harness, since: int) -> list[str]:
    """Names of children started since the mark (each `started` event is one incarnation)."""
    return [t.split(".")[1] for t, _ in h.events.items[since:] if t.endswith(".started")]


async def crash_and_wait_restarted(h: Harness, name: str, supervisor: str = "root") -> object:
    since = h.events.mark()
    h.tell(name, Crash())
    return await h.events.wait_event(supervisor, "child_restarted", since=since, child=name)


async def test_children_start_in_order_and_stop_in_reverse(harness: Harness) -> None:
    await harness.start_tree(probe("a"), probe("b"), probe("c"))
    assert [t.split(".")[1] for t, _ in harness.events.items if t.endswith(".started")] == ["a", "b", "c"]
    since = harness.events.mark()
    await harness.runtime.stop_root(5)
    stopped = [
        m.data.name
        for t, m in harness.events.items[since:]
        if t == "event.root.child_state" and m.data.state == ActorState.STOPPED
    ]
    assert stopped == ["c", "b", "a"]


async def test_one_for_one_restarts_only_the_crashed_child(harness: Harness) -> None:
    await harness.start_tree(probe("a"), probe("b"), probe("c"), strategy=Strategy.ONE_FOR_ONE)
    since = harness.events.mark()
    await crash_and_wait_restarted(harness, "b")
    assert await incarnations(harness, since) == ["b"]


async def test_one_for_all_restarts_every_child_in_order(harness: Harness) -> None:
    await harness.start_tree(probe("a"), probe("b"), probe("c"), strategy=Strategy.ONE_FOR_ALL)
    since = harness.events.mark()
    await crash_and_wait_restarted(harness, "b")
    await harness.events.wait_event("root", "child_restarted", since=since, child="c")
    assert await incarnations(harness, since) == ["a", "b", "c"]
    stopped = [
        m.data.name
        for t, m in harness.events.items[since:]
        if t == "event.root.child_state" and m.data.state == ActorState.STOPPED
    ]
    assert stopped == ["c", "a"]  # the others, in reverse order; b had already exited


async def test_rest_for_one_restarts_the_crashed_child_and_those_after_it(harness: Harness) -> None:
    await harness.start_tree(probe("a"), probe("b"), probe("c"), strategy=Strategy.REST_FOR_ONE)
    since = harness.events.mark()
    await crash_and_wait_restarted(harness, "b")
    await harness.events.wait_event("root", "child_restarted", since=since, child="c")
    assert await incarnations(harness, since) == ["b", "c"]


async def test_transient_child_is_restarted_after_a_crash_but_not_after_a_normal_exit(
    harness: Harness,
) -> None:
    await harness.start_tree(probe("t", RestartType.TRANSIENT))
    await crash_and_wait_restarted(harness, "t")
    since = harness.events.mark()
    harness.tell("t", Finish())
    info = await harness.events.wait_event(
        "root", "child_state", since=since, name="t", state=ActorState.STOPPED
    )
    assert info.last_exit == "stopped"
    tree = await harness.ask("root", GetTree())
    assert [(c.name, c.state, c.restarts) for c in tree.children] == [("t", ActorState.STOPPED, 1)]


async def test_permanent_child_is_restarted_even_after_a_normal_exit(harness: Harness) -> None:
    await harness.start_tree(probe("p"))
    since = harness.events.mark()
    harness.tell("p", Finish())
    restarted = await harness.events.wait_event("root", "child_restarted", since=since, child="p")
    assert restarted.cause == "p exited: stopped"


async def test_temporary_child_is_never_restarted_and_leaves_the_tree(harness: Harness) -> None:
    await harness.start_tree(probe("tmp", RestartType.TEMPORARY), probe("other"))
    since = harness.events.mark()
    harness.tell("tmp", Crash())
    await harness.events.wait_event("root", "child_state", since=since, name="tmp", state=ActorState.FAILED)
    tree = await harness.ask("root", GetTree())
    assert [c.name for c in tree.children] == ["other"]
    assert harness.events.named("root", "child_restarted") == []


async def test_past_the_intensity_the_supervisor_stops_everything_in_reverse_and_gives_up(
    harness: Harness,
) -> None:
    await harness.start_tree(probe("a"), probe("b"), intensity=2, period=60)
    await crash_and_wait_restarted(harness, "b")
    await crash_and_wait_restarted(harness, "b")
    since = harness.events.mark()
    harness.tell("b", Crash())
    escalated = await harness.events.wait_event("root", "escalated", since=since)
    assert "more than 2 restarts within 60 s" in escalated.reason
    root_exit = await harness.runtime.root_exit
    assert root_exit.abnormal and "SupervisorEscalation" in root_exit.reason
    stopped = [
        m.data.name
        for t, m in harness.events.items[since:]
        if t == "event.root.child_state" and m.data.state == ActorState.STOPPED
    ]
    assert stopped == ["a"]  # b had crashed; a was stopped by the giving-up supervisor


async def test_restarts_older_than_the_period_do_not_count(harness: Harness) -> None:
    # intensity 1 allows one restart per 50 ms window: two crashes more than 50 ms apart never escalate.
    await harness.start_tree(probe("a"), intensity=1, period=0.05)
    await crash_and_wait_restarted(harness, "a")
    first = time.monotonic()  # the elapsed time is what is under test, so the test lets real time pass
    while time.monotonic() - first < 0.06:
        await harness.ask("a", Echo("spin"))
    await crash_and_wait_restarted(harness, "a")
    assert not harness.runtime.root_exit.done()


async def test_nested_supervisor_escalates_to_its_parent_which_restarts_it(harness: Harness) -> None:
    inner = SupervisorSpec(name="inner", intensity=0, children=[probe("leaf")])
    await harness.start_tree(probe("first"), inner, intensity=3)
    since = harness.events.mark()
    harness.tell("leaf", Crash())
    await harness.events.wait_event("inner", "escalated", since=since)
    restarted = await harness.events.wait_event("root", "child_restarted", since=since, child="inner")
    assert "SupervisorEscalation" in restarted.cause
    assert (await harness.ask("leaf", Echo("back"))).text == "back"
    assert not [t for t, _ in harness.events.items[since:] if t == "event.first.started"]


@pytest.mark.parametrize("strategy", list(Strategy))
async def test_get_tree_reports_states_and_restart_counts(harness: Harness, strategy: Strategy) -> None:
    await harness.start_tree(probe("a"), probe("b"), strategy=strategy)
    await crash_and_wait_restarted(harness, "a")
    if strategy != Strategy.ONE_FOR_ONE:
        await harness.events.wait_event("root", "child_restarted", child="b")
    tree = await harness.ask("root", GetTree())
    assert tree.strategy == strategy
    assert all(c.state == ActorState.RUNNING for c in tree.children)
    expected_b = 0 if strategy == Strategy.ONE_FOR_ONE else 1
    assert [(c.name, c.restarts) for c in tree.children] == [("a", 1), ("b", expected_b)]

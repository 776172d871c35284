"""The RunEngine worker in its own process, with a real RunEngine and ophyd.sim, driven as the queue manager
drives it: asks answered at once, outcomes told to a stand-in queue manager (whose tells the test awaits)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from stationd.actors.queue_manager.environment import worker_spec
from stationd.actors.specs import ActorSpec
from stationd.protocol.errors import InvalidParams, InvalidState
from stationd.protocol.pubsub import CONSOLE
from stationd.protocol.supervision import ActorState
from stationd.protocol.worker import (
    QUEUE_MANAGER,
    RE_WORKER,
    CloseEnvironment,
    ControlPlan,
    EnvironmentClosed,
    EnvironmentInfo,
    ExecutePlan,
    ExecuteTask,
    ExistingChanged,
    GetReMetadata,
    OpenEnvironment,
    PlanEnded,
    PlanPaused,
    ReStateChanged,
    RunsChanged,
    TaskEnded,
    WorkerAck,
)
from tests.support.harness import Harness
from tests.support.re_worker import TOLD

T = TypeVar("T")

OPEN_TIMEOUT = 20.0  # the profile loads in a fraction of a second; a loaded CI machine is slower
PLAN_TIMEOUT = 10.0


@pytest.fixture
async def harness(harness: Harness) -> Harness:
    """The worker process (spawned as the queue manager spawns it) and, in-process, a stand-in queue
    manager that receives its tells."""
    await harness.start_tree(
        ActorSpec(name=QUEUE_MANAGER, actor="tests.support.re_worker:QueueManagerStandIn"),
        worker_spec(),
    )
    return harness


@pytest.fixture
async def strict_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """As `harness`, with the runtime's default heartbeat timeout (0.45 s) instead of the worker's own."""
    h = Harness(tmp_path)
    try:
        await h.start_tree(
            ActorSpec(name=QUEUE_MANAGER, actor="tests.support.re_worker:QueueManagerStandIn"),
            worker_spec(heartbeat_timeout=None),
        )
        yield h
    finally:
        await h.close()


async def told(h: Harness, kind: type[T], *, since: int, timeout: float = PLAN_TIMEOUT, **fields: Any) -> T:
    """Await the first tell of this type (with these field values) the queue manager got since the mark."""

    def match(topic: str, msg: Any) -> bool:
        data = getattr(msg, "data", None)
        return (
            topic == f"event.{QUEUE_MANAGER}.{TOLD}"
            and isinstance(data, kind)
            and all(getattr(data, k) == v for k, v in fields.items())
        )

    return (await h.events.wait_for(match, since=since, timeout=timeout)).data


def tells(h: Harness, kind: type[T], *, since: int) -> list[T]:
    return [
        m.data
        for t, m in h.events.items[since:]
        if t == f"event.{QUEUE_MANAGER}.{TOLD}" and isinstance(m.data, kind)
    ]


def plan(name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {
        "item_type": "plan",
        "name": name,
        "args": list(args),
        "kwargs": kwargs,
        "user": "tester",
        "user_group": "primary",
        "item_uid": str(uuid.uuid4()),
    }


async def open_env(h: Harness, **params: Any) -> EnvironmentInfo:
    return await h.ask(RE_WORKER, OpenEnvironment(**params), timeout=OPEN_TIMEOUT)


async def run_task(h: Harness, **params: Any) -> dict[str, Any]:
    task_uid = str(uuid.uuid4())
    since = h.events.mark()
    await h.ask(RE_WORKER, ExecuteTask(task_uid=task_uid, **params))
    return (await told(h, TaskEnded, since=since, task_uid=task_uid)).result


async def start_and_pause(h: Harness, item: dict[str, Any]) -> None:
    since = h.events.mark()
    await h.ask(RE_WORKER, ExecutePlan(item=item))
    await told(h, ReStateChanged, since=since, re_state="running")
    ack = await h.ask(RE_WORKER, ControlPlan(action="pause_immediate"))
    assert ack.re_state == "running"
    await told(h, PlanPaused, since=since, item_uid=item["item_uid"])


async def test_the_default_environment_is_the_simulated_profile_with_the_given_metadata(
    harness: Harness,
) -> None:
    info = await open_env(harness, re_metadata={"beamline_id": "sim"})
    assert {"count", "scan", "grid_scan", "marked_up_count"} <= info.existing_plans.keys()
    assert {"det1", "motor", "sim_bundle_A", "direct_img"} <= info.existing_devices.keys()
    assert info.re_state == "idle"
    md = (await harness.ask(RE_WORKER, GetReMetadata())).re_metadata
    assert md["beamline_id"] == "sim" and "bluesky" in md["versions"]
    with pytest.raises(InvalidState, match="already open"):
        await open_env(harness)


async def test_a_plan_completes_with_its_run_and_reports_the_run_as_it_opens_and_closes(
    harness: Harness,
) -> None:
    await open_env(harness)
    since = harness.events.mark()
    item = plan("count", ["det1"], num=1)
    ack = await harness.ask(RE_WORKER, ExecutePlan(item=item))
    assert isinstance(ack, WorkerAck)
    ended = await told(harness, PlanEnded, since=since, item_uid=item["item_uid"])
    assert ended.result.exit_status == "completed" and ended.result.msg == ""
    assert len(ended.result.run_uids) == 1 and ended.result.scan_ids == [1]
    run_uid = ended.result.run_uids[0]
    runs = [
        [(r.uid, r.is_open, r.exit_status) for r in t.run_list]
        for t in tells(harness, RunsChanged, since=since)
    ]  # emptied by the queue manager on PlanEnded: no RunsChanged([]) after it
    assert runs == [[(run_uid, True, None)], [(run_uid, False, "success")]]
    states = [t.re_state for t in tells(harness, ReStateChanged, since=since)]
    assert states == ["running", "idle"]
    start = await harness.events.wait_for(lambda t, m: t == "doc.start", since=since)
    assert start["name"] == "start" and start["doc"]["uid"] == run_uid


async def test_documents_with_images_reach_the_info_stream_as_arrays(harness: Harness) -> None:
    await open_env(harness)
    since = harness.events.mark()
    await harness.ask(RE_WORKER, ExecutePlan(item=plan("count", ["direct_img"], num=1)))
    event = await harness.events.wait_for(lambda t, m: t == "doc.event", since=since)
    assert isinstance(event["doc"]["data"]["img"], np.ndarray)


async def test_a_plan_with_an_unknown_device_fails_with_the_error_text_and_traceback(
    harness: Harness,
) -> None:
    await open_env(harness)
    since = harness.events.mark()
    item = plan("count", ["no_such_detector"], num=1)
    await harness.ask(RE_WORKER, ExecutePlan(item=item))
    ended = await told(harness, PlanEnded, since=since, item_uid=item["item_uid"])
    assert ended.result.exit_status == "failed"
    assert ended.result.msg == "Plan failed: 'str' object has no attribute 'name'"
    assert "AttributeError" in ended.result.traceback


async def test_a_plan_with_invalid_parameters_fails_without_running(harness: Harness) -> None:
    await open_env(harness)
    since = harness.events.mark()
    item = plan("count", ["det1"], num="many")
    await harness.ask(RE_WORKER, ExecutePlan(item=item))
    ended = await told(harness, PlanEnded, since=since, item_uid=item["item_uid"])
    assert ended.result.exit_status == "failed" and ended.result.run_uids == []
    assert ended.result.msg.startswith("Plan failed: Error occurred while processing plan parameters")


async def test_a_paused_plan_resumes_to_completion_and_nothing_else_starts_meanwhile(
    harness: Harness,
) -> None:
    await open_env(harness)
    item = plan("count", ["det1"], num=10, delay=0.05)  # 0.5 s: long enough to pause, short to finish
    await start_and_pause(harness, item)
    with pytest.raises(InvalidState, match="is paused"):
        await harness.ask(RE_WORKER, ExecutePlan(item=plan("count", ["det1"])))
    with pytest.raises(InvalidState, match="only in 'running' state"):
        await harness.ask(RE_WORKER, ControlPlan(action="pause_deferred"))
    since = harness.events.mark()
    ack = await harness.ask(RE_WORKER, ControlPlan(action="resume"))
    assert ack.re_state == "paused"
    ended = await told(harness, PlanEnded, since=since, item_uid=item["item_uid"])
    assert ended.result.exit_status == "completed" and len(ended.result.run_uids) == 1


@pytest.mark.parametrize(
    ("action", "exit_status", "run_exit_status"),
    [("stop", "stopped", "success"), ("abort", "aborted", "abort"), ("halt", "halted", "abort")],
)
async def test_a_paused_plan_ends_as_the_action_says(
    harness: Harness, action: str, exit_status: str, run_exit_status: str
) -> None:
    await open_env(harness)
    item = plan("count", ["det1"], num=50, delay=0.05)
    await start_and_pause(harness, item)
    since = harness.events.mark()
    await harness.ask(RE_WORKER, ControlPlan(action=action))  # type: ignore[arg-type]
    ended = await told(harness, PlanEnded, since=since, item_uid=item["item_uid"])
    assert ended.result.exit_status == exit_status
    closed = await told(harness, RunsChanged, since=since)
    assert [(r.is_open, r.exit_status) for r in closed.run_list] == [(False, run_exit_status)]
    await told(harness, ReStateChanged, since=since, re_state="idle")


async def test_resume_is_refused_when_no_plan_is_paused(harness: Harness) -> None:
    await open_env(harness)
    with pytest.raises(InvalidState, match="must be in 'paused' state"):
        await harness.ask(RE_WORKER, ControlPlan(action="resume"))


async def test_a_script_with_update_lists_reports_its_new_plan_first_and_the_plan_then_runs(
    harness: Harness,
) -> None:
    await open_env(harness)
    script = "def two_counts(detectors):\n    yield from count(detectors)\n    yield from count(detectors)\n"
    since = harness.events.mark()
    result = await run_task(harness, kind="script", script=script, update_lists=True)
    assert result["success"] is True and result["return_value"] is None, result
    changed = await told(harness, ExistingChanged, since=since)
    assert "two_counts" in changed.existing_plans
    order = [type(m.data) for t, m in harness.events.items[since:] if t == f"event.{QUEUE_MANAGER}.{TOLD}"]
    assert order.index(ExistingChanged) < order.index(TaskEnded)
    since = harness.events.mark()
    item = plan("two_counts", ["det2"])
    await harness.ask(RE_WORKER, ExecutePlan(item=item))
    ended = await told(harness, PlanEnded, since=since, item_uid=item["item_uid"])
    assert ended.result.exit_status == "completed" and ended.result.scan_ids == [1, 2]


async def test_a_function_task_returns_its_value_and_what_it_prints_reaches_the_console(
    harness: Harness,
) -> None:
    await open_env(harness)
    await run_task(
        harness, kind="script", script="def answer(x):\n    print('thinking hard')\n    return {'x': x}\n"
    )
    since = harness.events.mark()
    result = await run_task(
        harness, kind="function", item={"item_type": "function", "name": "answer", "args": [42]}
    )
    assert result["success"] is True and result["return_value"] == {"x": 42}
    assert result["time_start"] <= result["time_stop"]
    console = await harness.events.wait_for(
        lambda t, m: t == CONSOLE and "thinking hard" in m["msg"], since=since
    )
    assert console["time"] > 0 and console["seq"] >= 1


async def test_a_function_task_fails_when_it_raises_or_its_result_is_not_json(harness: Harness) -> None:
    await open_env(harness)
    result = await run_task(harness, kind="function", item={"name": "pop_buffer_element"})
    assert result["success"] is False and "pop from empty list" in result["msg"]
    assert "IndexError" in result["traceback"]
    await run_task(harness, kind="script", script="def opaque():\n    return object()\n")
    result = await run_task(harness, kind="function", item={"name": "opaque"}, run_in_background=True)
    assert result["success"] is False and result["return_value"] is None
    assert "Task result can not be serialized as JSON" in result["msg"]


async def test_busy_user_code_in_a_task_does_not_starve_the_heartbeats(strict_harness: Harness) -> None:
    harness = strict_harness
    await open_env(harness)
    spin = (
        "import time\n"
        "def spin(seconds):\n"
        "    end, n = time.monotonic() + seconds, 0\n"
        "    while time.monotonic() < end:\n"
        "        n += 1\n"
        "    return n\n"
    )
    await run_task(harness, kind="script", script=spin)
    since = harness.events.mark()
    result = await run_task(harness, kind="function", item={"name": "spin", "args": [0.7]})  # > 0.45 s
    assert result["success"] is True and result["return_value"] > 0
    assert not [m for t, m in harness.events.items[since:] if t == "event.root.child_state"]


async def test_a_foreground_task_is_refused_while_a_plan_runs_but_a_background_task_is_not(
    harness: Harness,
) -> None:
    await open_env(harness)
    since = harness.events.mark()
    item = plan("count", ["det1"], num=20, delay=0.05)
    await harness.ask(RE_WORKER, ExecutePlan(item=item))
    await told(harness, ReStateChanged, since=since, re_state="running")
    with pytest.raises(InvalidState, match="a plan is running"):
        await harness.ask(
            RE_WORKER, ExecuteTask(task_uid="fg", kind="function", item={"name": "clear_buffer"})
        )
    result = await run_task(harness, kind="function", item={"name": "clear_buffer"}, run_in_background=True)
    assert result["success"] is True
    await harness.ask(RE_WORKER, ControlPlan(action="pause_immediate"))
    await told(harness, PlanPaused, since=since)
    await harness.ask(RE_WORKER, ControlPlan(action="abort"))
    await told(harness, PlanEnded, since=since, item_uid=item["item_uid"])


async def test_a_startup_dir_is_loaded_file_by_file_in_name_order(harness: Harness, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "10-second.py").write_text("order.append('second')\n\ndef get_order():\n    return order\n")
    (profile / "00-first.py").write_text(
        "from ophyd.sim import det1\nfrom bluesky.plans import count\norder = ['first']\n"
    )
    info = await open_env(harness, startup_dir=str(profile))
    assert set(info.existing_devices) == {"det1"} and set(info.existing_plans) == {"count"}
    result = await run_task(harness, kind="function", item={"name": "get_order"})
    assert result["return_value"] == ["first", "second"]
    since = harness.events.mark()
    item = plan("count", ["det1"])
    await harness.ask(
        RE_WORKER, ExecutePlan(item=item)
    )  # the worker made the RunEngine: there is none in the profile
    assert (await told(harness, PlanEnded, since=since)).result.exit_status == "completed"


async def test_a_failing_startup_script_is_a_typed_error_naming_the_cause(
    harness: Harness, tmp_path: Path
) -> None:
    script = tmp_path / "startup.py"
    script.write_text("from ophyd.sim import det1\nraise ValueError('the profile is broken')\n")
    with pytest.raises(InvalidParams, match="the profile is broken"):
        await open_env(harness, startup_script=str(script))
    with pytest.raises(InvalidState, match="not open"):
        await harness.ask(RE_WORKER, ExecutePlan(item=plan("count", ["det1"])))


async def test_close_environment_answers_then_the_worker_stops(harness: Harness) -> None:
    await open_env(harness)
    since = harness.events.mark()
    assert isinstance(await harness.ask(RE_WORKER, CloseEnvironment()), EnvironmentClosed)
    info = await harness.events.wait_event(
        "root", "child_state", since=since, name=RE_WORKER, state=ActorState.STOPPED
    )
    assert info.last_exit == "stopped"


def _policies(pid: int) -> set[int]:
    """The scheduling policy (field 41 of /proc/<pid>/task/<tid>/stat) of each thread of a process."""
    found = set()
    for tid in Path(f"/proc/{pid}/task").iterdir():
        stat = (tid / "stat").read_text()
        found.add(int(stat[stat.rindex(")") + 2 :].split()[38]))
    return found


async def test_the_idle_cpu_policy_puts_every_worker_thread_and_the_plan_threads_under_sched_idle(
    harness: Harness,
) -> None:
    pid = harness.runtime.running_pids()[RE_WORKER]
    assert _policies(pid) == {os.SCHED_OTHER}
    await open_env(harness, cpu_policy="idle")
    assert _policies(pid) == {os.SCHED_IDLE}
    item = plan("count", ["det1"], num=3)
    since = harness.events.mark()
    await harness.ask(RE_WORKER, ExecutePlan(item=item))
    ended = await told(harness, PlanEnded, since=since, item_uid=item["item_uid"])
    assert ended.result.exit_status == "completed"
    assert _policies(pid) == {os.SCHED_IDLE}  # the plan's thread inherited it


async def test_the_auto_cpu_policy_runs_the_worker_idle_and_normal_when_other_work_starves_it(
    harness: Harness,
) -> None:
    pid = harness.runtime.running_pids()[RE_WORKER]
    await open_env(harness, cpu_policy="auto")
    assert _policies(pid) == {os.SCHED_IDLE}
    # Other work keeps every core busy (at the normal policy), and the worker wants a CPU for 0.3 s of its
    # own time: under SCHED_IDLE it would get next to nothing.
    hogs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass")
        for _ in range(os.cpu_count() or 1)
    ]
    try:
        since = harness.events.mark()
        busy = "import time\nt = time.thread_time()\nwhile time.thread_time() - t < 0.3:\n    pass\n"
        await harness.ask(RE_WORKER, ExecuteTask(task_uid="busy", kind="script", script=busy))
        changed = await harness.events.wait_event(RE_WORKER, "cpu_policy_changed", since=since, timeout=20)
        assert changed["policy"] == "normal" and changed["reason"].startswith("waited ")
        assert _policies(pid) == {os.SCHED_OTHER}
        ended = await told(harness, TaskEnded, since=since, task_uid="busy", timeout=30)
        assert ended.result["success"], ended.result
    finally:
        for hog in hogs:
            hog.kill()
            await hog.wait()


async def test_the_normal_cpu_policy_leaves_the_worker_as_any_process(harness: Harness) -> None:
    await open_env(harness)
    assert _policies(harness.runtime.running_pids()[RE_WORKER]) == {os.SCHED_OTHER}

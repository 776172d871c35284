"""The RunEngine worker (its own process, a real RunEngine and ophyd.sim) tells its documents to a real
observation store, which stores them in order: numpy images, resources, nested runs."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from stationd.actors.queue_manager.environment import worker_spec
from stationd.actors.specs import ActorSpec
from stationd.protocol import documents as docs
from stationd.protocol.methods import OBSERVATION_STORE
from stationd.protocol.worker import (
    QUEUE_MANAGER,
    RE_WORKER,
    ExecutePlan,
    ExecuteTask,
    OpenEnvironment,
    PlanEnded,
    TaskEnded,
)
from tests.support.harness import Harness
from tests.support.re_worker import TOLD

OPEN_TIMEOUT = 20.0
PLAN_TIMEOUT = 10.0


@pytest.fixture
async def harness(harness: Harness) -> Harness:
    await harness.start_tree(
        ActorSpec(name=OBSERVATION_STORE, actor="stationd.actors.observation_store:ObservationStore"),
        ActorSpec(name=QUEUE_MANAGER, actor="tests.support.re_worker:QueueManagerStandIn"),
        worker_spec(),
    )
    return harness


async def run_plan(h: Harness, name: str, *args: Any, **kwargs: Any) -> PlanEnded:
    """Execute a plan on the worker; the `PlanEnded` it tells the (stand-in) queue manager."""
    item = {
        "item_type": "plan",
        "name": name,
        "args": list(args),
        "kwargs": kwargs,
        "item_uid": str(uuid.uuid4()),
    }
    since = h.events.mark()
    await h.ask(RE_WORKER, ExecutePlan(item=item))

    def ended(topic: str, msg: Any) -> bool:
        data = getattr(msg, "data", None)
        return topic == f"event.{QUEUE_MANAGER}.{TOLD}" and isinstance(data, PlanEnded)

    return (await h.events.wait_for(ended, since=since, timeout=PLAN_TIMEOUT)).data


async def stored_run(h: Harness, run_uid: str) -> docs.RunReply:
    """The run once the store has its stop. The worker told the documents before the plan's end, but they
    travel through the bus sockets while the tester's ask goes to the store directly (same process)."""
    await h.events.wait_event(OBSERVATION_STORE, "run_stopped", run_start=run_uid, timeout=PLAN_TIMEOUT)
    return await h.ask(OBSERVATION_STORE, docs.RunsGet(uid=run_uid))


async def test_a_plans_documents_are_stored_numpy_images_as_lists(harness: Harness) -> None:
    await harness.ask(RE_WORKER, OpenEnvironment(), timeout=OPEN_TIMEOUT)
    ended = await run_plan(harness, "count", ["direct_img", "det1"], num=2)
    assert ended.result.exit_status == "completed"
    (run_uid,) = ended.result.run_uids
    run = await stored_run(harness, run_uid)
    assert run.start["uid"] == run_uid and run.start["detectors"] == ["direct", "det1"]
    assert [e["seq_num"] for e in run.events] == [1, 2]
    image = run.events[0]["data"]["img"]  # a numpy array in the worker: a list of lists in the store
    assert isinstance(image, list) and len(image) == 10 and all(len(row) == 10 for row in image)
    assert run.descriptors[0]["data_keys"]["img"]["shape"] == [10, 10]
    assert run.stop is not None and run.stop["exit_status"] == "success"
    assert run.stop["num_events"] == {"primary": 2}


async def test_the_interleaved_documents_of_nested_runs_each_go_to_their_run(harness: Harness) -> None:
    await harness.ask(RE_WORKER, OpenEnvironment(), timeout=OPEN_TIMEOUT)
    ended = await run_plan(harness, "sim_multirun_plan_nested", npts=2, delay=0)
    assert ended.result.exit_status == "completed"
    outer, inner = ended.result.run_uids
    for uid, events, detector in ((outer, 2, "det"), (inner, 3, "det2")):
        run = await stored_run(harness, uid)
        assert [e["seq_num"] for e in run.events] == list(range(1, events + 1))
        assert all(detector in e["data"] for e in run.events)
        assert run.stop is not None and run.stop["num_events"] == {"primary": events}


async def test_an_external_detectors_resource_is_stored_with_the_run(harness: Harness) -> None:
    await harness.ask(RE_WORKER, OpenEnvironment(), timeout=OPEN_TIMEOUT)
    ended = await run_plan(harness, "count", ["img"], num=2)
    (run_uid,) = ended.result.run_uids
    run = await stored_run(harness, run_uid)
    (resource,) = run.resources
    assert resource["run_start"] == run_uid
    assert all(e["data"]["img"].startswith(resource["uid"] + "/") for e in run.events)  # datum ids
    assert len(run.events) == 2


async def test_a_value_the_bus_cannot_carry_is_stored_in_a_readable_form(harness: Harness) -> None:
    await harness.ask(RE_WORKER, OpenEnvironment(), timeout=OPEN_TIMEOUT)
    task_uid = str(uuid.uuid4())
    since = harness.events.mark()
    script = "class Lens:\n    def __repr__(self):\n        return 'Lens(f=2)'\nRE.md['lens'] = Lens()\n"
    await harness.ask(RE_WORKER, ExecuteTask(task_uid=task_uid, kind="script", script=script))
    await harness.events.wait_for(
        lambda t, m: t == f"event.{QUEUE_MANAGER}.{TOLD}" and isinstance(getattr(m, "data", None), TaskEnded),
        since=since,
        timeout=PLAN_TIMEOUT,
    )
    ended = await run_plan(harness, "count", ["det1"], num=1)
    assert ended.result.exit_status == "completed"  # the plan did not suffer from it
    run = await stored_run(harness, ended.result.run_uids[0])
    assert run.start["lens"] == "Lens(f=2)" and len(run.events) == 1

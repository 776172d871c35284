"""`QueueClient` and `AsyncQueueClient` against the real daemon: REManagerAPI's names, waits on the stream."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
import zmq

from stationd.protocol.client import Client
from stationd.protocol.errors import DeadlineExceeded, InvalidParams, InvalidState, PermissionDenied
from stationd.protocol.queue_client import AsyncQueueClient, QueueClient, WaitTimeout
from tests.support.daemon import DaemonProcess, free_port

COUNT = {"item_type": "plan", "name": "count", "args": [["det1"]], "kwargs": {"num": 2}}
SLOW = {"item_type": "plan", "name": "count", "args": [["det1"]], "kwargs": {"num": 5, "delay": 0.2}}
QUEUE_STOP = {"item_type": "instruction", "name": "queue_stop"}


@pytest.fixture
def qc(daemon: DaemonProcess) -> Iterator[QueueClient]:
    with QueueClient(daemon.control_addr, info_addr=daemon.info_addr, timeout=5.0) as client:
        yield client


def uids(reply: dict[str, Any]) -> list[str]:
    return [item["item_uid"] for item in reply["items"]]


def test_a_session_opens_the_environment_runs_plans_and_closes_it(qc: QueueClient) -> None:
    qc.environment_open()
    opened = qc.wait_for_condition(lambda s: s["manager_state"] != "creating_environment", timeout=30)
    assert (opened["manager_state"], opened["worker_environment_exists"]) == ("idle", True)

    first = qc.item_add(COUNT)["item"]
    batch = qc.item_add_batch([{**COUNT, "kwargs": {"num": 1}}, QUEUE_STOP, SLOW])
    assert (first["user"], first["user_group"]) == ("stationctl", "primary")
    assert [r["success"] for r in batch["results"]] == [True, True, True]
    second, _, slow = batch["items"]
    assert uids(qc.queue_get(offset=1, limit=2)) == [second["item_uid"], batch["items"][1]["item_uid"]]

    qc.queue_start()
    idle = qc.wait_for_idle(timeout=30)  # the queue_stop instruction ends the run with SLOW still queued
    assert (idle["items_in_queue"], idle["running_item_uid"]) == (1, None)
    history = qc.history_get()["items"]
    assert [(i["item_uid"], i["result"]["exit_status"]) for i in history] == [
        (first["item_uid"], "completed"),
        (second["item_uid"], "completed"),
    ]
    assert qc.history_get(offset=1, limit=1)["items"] == history[1:]

    task = qc.function_execute({"item_type": "function", "name": "function_sleep", "kwargs": {"time": 0.05}})
    done = qc.wait_for_completed_task(task["task_uid"], timeout=30)
    assert (done["status"], done["result"]["success"]) == ("completed", True)

    qc.queue_start()
    qc.wait_for_condition(lambda s: s["re_state"] == "running", timeout=30)
    qc.re_pause("immediate")
    paused = qc.wait_for_idle_or_paused(timeout=30)
    assert paused["manager_state"] == "paused"
    assert [run["is_open"] for run in qc.re_runs("open")["run_list"]] == [True]
    runs_uid = qc.status()["run_list_uid"]
    qc.re_abort()
    qc.wait_for_idle(timeout=30)
    assert qc.re_runs()["run_list"] == [] and qc.status()["run_list_uid"] != runs_uid  # the plan's runs only
    aborted = qc.history_get()["items"][-1]
    assert (aborted["item_uid"], aborted["result"]["exit_status"]) == (slow["item_uid"], "aborted")
    requeued = qc.queue_get()["items"]  # an aborted plan goes back to the front with a new uid
    assert [(i["name"], i["kwargs"]) for i in requeued] == [("count", SLOW["kwargs"])]
    assert requeued[0]["item_uid"] != slow["item_uid"]

    qc.history_clear(size=1)
    assert qc.history_get()["items"] == [aborted]
    qc.history_clear()
    assert (qc.history_get()["items"], qc.status()["items_in_history"]) == ([], 0)

    qc.environment_close()
    closed = qc.wait_for_condition(lambda s: s["manager_state"] != "closing_environment", timeout=30)
    assert (closed["manager_state"], closed["worker_environment_exists"]) == ("idle", False)


def test_items_are_placed_moved_updated_and_removed_by_position_and_uid(qc: QueueClient) -> None:
    a = qc.item_add(COUNT)["item"]["item_uid"]
    b = qc.item_add(COUNT, pos="front")["item"]["item_uid"]
    c = qc.item_add(COUNT, after_uid=b)["item"]["item_uid"]
    assert uids(qc.queue_get()) == [b, c, a]
    qc.item_move(uid=a, pos_dest="front")
    assert uids(qc.queue_get()) == [a, b, c]
    qc.item_move_batch(uids=[a, b], pos_dest="back")
    assert uids(qc.queue_get()) == [c, a, b]
    assert qc.item_get(pos=1)["item"]["item_uid"] == a
    updated = qc.item_update({**qc.item_get(uid=c)["item"], "kwargs": {"num": 7}})["item"]
    assert (updated["item_uid"], qc.item_get(pos="front")["item"]["kwargs"]) == (c, {"num": 7})
    assert qc.item_remove(uid=a)["item"]["item_uid"] == a
    assert uids(qc.item_remove_batch(uids=[b])) == [b]
    assert uids(qc.queue_get()) == [c]
    qc.queue_clear()
    assert qc.queue_get()["items"] == []


def test_mode_and_autostart_show_in_the_status(qc: QueueClient) -> None:
    qc.queue_mode_set(loop=True)
    assert qc.status()["plan_queue_mode"] == {"loop": True, "ignore_failures": False}
    qc.queue_mode_set(mode="default")
    assert qc.status()["plan_queue_mode"] == {"loop": False, "ignore_failures": False}
    qc.queue_autostart(True)
    assert qc.status()["queue_autostart_enabled"] is True
    qc.queue_autostart(False)
    assert qc.status()["queue_autostart_enabled"] is False


def test_the_clients_lock_key_goes_with_every_guarded_request(daemon: DaemonProcess) -> None:
    owner = QueueClient(daemon.control_addr, info_addr=daemon.info_addr, lock_key="k1", user="ops")
    other = QueueClient(daemon.control_addr, info_addr=daemon.info_addr)
    with owner, other:
        with pytest.raises(ValueError, match="needs a lock key"):
            other.lock_queue()
        info = owner.lock_queue(note="maintenance")["lock_info"]
        assert (info["queue"], info["environment"], info["user"], info["note"]) == (
            True,
            False,
            "ops",
            "maintenance",
        )
        with pytest.raises(PermissionDenied, match="Invalid lock key"):
            other.item_add(COUNT)
        owner.item_add(COUNT)
        other.item_add(COUNT, lock_key="k1")
        assert other.lock_info()["lock_info"]["queue"] is True
        assert owner.unlock()["lock_info"]["queue"] is False
        other.item_add(COUNT)
        assert other.status()["items_in_queue"] == 3


def test_refusals_raise_the_typed_error_with_the_daemons_message(qc: QueueClient) -> None:
    with pytest.raises(InvalidState, match=r"^RE Worker environment does not exist\.$"):
        qc.queue_start()
    with pytest.raises(InvalidParams, match="not in the list of allowed plans"):
        qc.item_add({"item_type": "plan", "name": "no_such_plan"})
    with pytest.raises(InvalidParams, match="out of range"):
        qc.item_get(pos=3)


def test_a_wait_already_satisfied_returns_the_current_status_without_the_stream(
    daemon: DaemonProcess,
) -> None:
    with QueueClient(daemon.control_addr, info_addr=daemon.info_addr) as qc:
        qc.wait_for_idle(timeout=10)  # the queue manager loads its descriptions after the daemon is ready
    nobody = f"tcp://127.0.0.1:{free_port()}"  # no info stream there: only the status check can answer
    with QueueClient(daemon.control_addr, info_addr=nobody) as qc:
        status = qc.wait_for_idle(timeout=5)
    assert (status["manager_state"], status["pid"]) == ("idle", daemon.proc.pid)


def test_a_wait_that_is_not_satisfied_raises_wait_timeout(qc: QueueClient) -> None:
    started = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"within 0\.3 s") as caught:
        qc.wait_for_condition(lambda s: s["manager_state"] == "paused", timeout=0.3)
    assert time.monotonic() - started >= 0.3
    assert isinstance(caught.value, DeadlineExceeded)
    assert caught.value.code == "timeout"


@pytest.fixture
def stale_and_fresh_publisher() -> Iterator[str]:
    """A PUB sending `paused` statuses built long ago ("stale") and in the future ("fresh"), in turn."""
    sock = zmq.Context.instance().socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()

    def publish() -> None:
        n = 0
        while not stop.wait(0.01):
            for uid, built in [("stale", "2000-01-01T00:00:00.000001"), ("fresh", "2999-01-01T00:00:00")]:
                n += 1
                status = {"manager_state": "paused", "status_uid": uid, "time": built}
                payload = {"seq": n, "time": 0.5, "msg": {"status": status}}
                sock.send_multipart([b"QS_Info", msgspec.json.encode(payload)])

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join()
        sock.close(linger=0)


def test_waits_follow_the_stream_and_skip_messages_older_than_the_status(
    daemon: DaemonProcess, stale_and_fresh_publisher: str
) -> None:
    with QueueClient(daemon.control_addr, info_addr=stale_and_fresh_publisher) as qc:
        status = qc.wait_for_condition(lambda s: s["manager_state"] == "paused", timeout=10)
    assert status["status_uid"] == "fresh"


def test_an_existing_client_is_used_and_left_open(daemon: DaemonProcess) -> None:
    with Client(daemon.control_addr) as client:
        with QueueClient(client=client, user="alice", user_group="primary") as qc:
            assert qc.item_add(COUNT)["item"]["user"] == "alice"
        assert client.request("queue_get")["items"][0]["user"] == "alice"


async def test_the_async_client_sees_a_change_made_while_it_waits(daemon: DaemonProcess) -> None:
    async with AsyncQueueClient(daemon.control_addr, info_addr=daemon.info_addr) as qc:
        first_look = asyncio.Event()
        seen: list[int] = []

        def one_queued(status: dict[str, Any]) -> bool:
            seen.append(status["items_in_queue"])
            first_look.set()
            return status["items_in_queue"] == 1

        waiting = asyncio.create_task(qc.wait_for_condition(one_queued, timeout=10))
        await first_look.wait()
        added = (await qc.item_add(COUNT))["item"]
        status = await waiting
        assert (seen[0], status["items_in_queue"]) == (0, 1)  # the answer came from the stream
        assert uids(await qc.queue_get()) == [added["item_uid"]]
        with pytest.raises(WaitTimeout):
            await qc.wait_for_condition(lambda s: s["items_in_queue"] == 2, timeout=0.2)

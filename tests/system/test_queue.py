"""The queue manager in a real daemon, driven by bluesky-queueserver-api (unchanged) and our client: a whole
session, validation, locks, modes, console, and the incumbent's `qserver` CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bluesky_queueserver_api import BInst, BPlan
from bluesky_queueserver_api.comm_base import RequestFailedError

from stationd.protocol.errors import StationError
from tests.support.daemon import DaemonProcess, start_daemon
from tests.support.queue import COUNT, api, env_open, idle, plan, wait_status


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for this module's tests, its environment opened once (each test leaves it idle)."""
    d = start_daemon(tmp_path_factory.mktemp("queue"))
    yield d
    d.stop()


def _open(d: DaemonProcess) -> None:
    with d.client() as client:
        if not client.request("status")["worker_environment_exists"]:
            client.request("environment_open")
    wait_status(d, env_open)


def _clear(d: DaemonProcess) -> None:
    with d.client() as client:
        client.request("queue_clear")
        client.request("queue_mode_set", {"mode": "default"})


def test_items_are_validated_at_add_time_with_clear_messages(session: DaemonProcess) -> None:
    rm = api(session)
    _clear(session)
    # before the environment ever opened: the built-in profile's cached descriptions allow queueing
    added = rm.item_add(BPlan("count", ["det1", "det2"], num=2))
    assert added["success"] and added["qsize"] == 1
    assert added["item"]["user_group"] == "primary" and added["item"]["item_uid"]

    with pytest.raises(RequestFailedError) as unknown:
        rm.item_add(BPlan("count", ["det1", "no_such_detector"]))  # the incumbent accepts this one
    assert "no_such_detector" in str(unknown.value) and "not in the list of allowed devices" in str(
        unknown.value
    )
    with pytest.raises(RequestFailedError, match="device 'det2' in parameter 'args' is not movable"):
        rm.item_add(BPlan("rel_scan", ["det1"], "det2", -1, 1, 3))  # a detector where a motor belongs
    with pytest.raises(RequestFailedError, match="Plan 'no_such_plan' is not in the list of allowed plans"):
        rm.item_add(BPlan("no_such_plan"))
    with pytest.raises(RequestFailedError, match="Unknown user group: 'nobody'"):
        rm.item_add(BPlan("count", ["det1"]), user_group="nobody")
    # test_user may use det1 but not det3 (the incumbent's default permissions)
    with pytest.raises(RequestFailedError, match="det3"):
        rm.item_add(BPlan("count", ["det3"]), user_group="test_user")
    assert rm.item_add(BPlan("count", ["det1"]), user_group="test_user")["success"]

    with session.client() as client:
        batch = client.request_raw(
            "queue_item_add_batch",
            {"items": [COUNT, plan("count", ["nope"]), COUNT], "user": "u", "user_group": "primary"},
        )
        assert batch["success"] is False and batch["error_code"] == "invalid_params"
        assert batch["msg"] == "Failed to add all items: validation of 1 out of 3 submitted items failed"
        assert [r["success"] for r in batch["results"]] == [True, False, True]
        assert batch["results"][1]["msg"].startswith("Failed to add a plan: ")
        assert client.request("status")["items_in_queue"] == 2  # nothing of the batch was added
        bad_type = client.request_raw("queue_item_add", {"item": [1], "user": "u", "user_group": "primary"})
        assert bad_type["success"] is False and "must have type 'dict'" in bad_type["msg"]
        with pytest.raises(StationError) as unknown_param:
            client.request("queue_item_add", {"item": COUNT, "user": "u", "user_group": "primary", "x": 1})
        assert unknown_param.value.code == "invalid_params" and "x" in unknown_param.value.msg


def test_queue_editing_keeps_positions_and_uids(session: DaemonProcess) -> None:
    rm = api(session)
    _clear(session)
    a = rm.item_add(BPlan("count", ["det1"], num=1))["item"]
    b = rm.item_add(BPlan("count", ["det2"], num=1))["item"]
    c = rm.item_add(BPlan("count", ["det1"], num=3), pos="front")["item"]
    uids = lambda: [i["item_uid"] for i in rm.queue_get()["items"]]  # noqa: E731
    assert uids() == [c["item_uid"], a["item_uid"], b["item_uid"]]
    rm.item_move(uid=c["item_uid"], pos_dest="back")
    assert uids() == [a["item_uid"], b["item_uid"], c["item_uid"]]
    rm.item_move_batch(uids=[c["item_uid"], b["item_uid"]], pos_dest="front")
    assert uids() == [c["item_uid"], b["item_uid"], a["item_uid"]]
    token = rm.status()["plan_queue_uid"]
    updated = rm.item_update({**a, "kwargs": {"num": 5}})["item"]
    assert updated["item_uid"] == a["item_uid"] and updated["kwargs"] == {"num": 5}
    assert rm.status()["plan_queue_uid"] != token  # the token changes exactly when the queue does
    token = rm.status()["plan_queue_uid"]
    assert rm.item_get(pos=0)["item"]["item_uid"] == c["item_uid"]
    assert rm.status()["plan_queue_uid"] == token
    removed = rm.item_remove(uid=b["item_uid"])
    assert removed["item"]["item_uid"] == b["item_uid"] and removed["qsize"] == 2
    with pytest.raises(RequestFailedError, match="is not in the queue"):
        rm.item_remove(uid=b["item_uid"])
    # paging, beyond the incumbent
    with session.client() as client:
        page = client.request("queue_get", {"offset": 1, "limit": 1})
    assert [i["item_uid"] for i in page["items"]] == [a["item_uid"]]


def test_queue_runs_to_the_end_and_records_history(session: DaemonProcess) -> None:
    rm = api(session)
    _clear(session)
    _open(session)
    history_before = rm.status()["items_in_history"]
    for num in (1, 2, 3):
        rm.item_add(BPlan("count", ["det1", "det2"], num=num))
    rm.queue_start()
    status = wait_status(session, lambda s: idle(s) and s["items_in_queue"] == 0)
    assert status["items_in_history"] == history_before + 3 and status["running_item_uid"] is None
    history = rm.history_get()["items"][-3:]
    assert [h["kwargs"]["num"] for h in history] == [1, 2, 3]
    assert all(h["result"]["exit_status"] == "completed" for h in history)
    assert all(len(h["result"]["run_uids"]) == 1 for h in history)
    with session.client() as client:
        last = client.request("history_get", {"offset": status["items_in_history"] - 1})["items"]
    assert last == history[-1:]


def test_queue_stop_instruction_loop_mode_and_immediate_execution(session: DaemonProcess) -> None:
    rm = api(session)
    _clear(session)
    _open(session)
    rm.queue_mode_set(loop=True)
    first = rm.item_add(BPlan("count", ["det1"], num=1))["item"]
    rm.item_add(BInst("queue_stop"))
    rm.queue_start()
    wait_status(session, idle)
    queue = rm.queue_get()["items"]
    # loop mode: the plan and the instruction went back to the end with new uids; the instruction stopped it
    assert [i["name"] for i in queue] == ["count", "queue_stop"]
    assert queue[0]["item_uid"] != first["item_uid"]
    assert rm.history_get()["items"][-1]["item_uid"] == first["item_uid"]
    assert rm.status()["plan_queue_mode"] == {"loop": True, "ignore_failures": False}

    rm.queue_mode_set(mode="default")
    before = [i["item_uid"] for i in rm.queue_get()["items"]]
    executed = rm.item_execute(BPlan("count", ["det2"], num=1))
    assert executed["success"]
    wait_status(session, lambda s: idle(s) and s["running_item_uid"] is None)
    assert [i["item_uid"] for i in rm.queue_get()["items"]] == before  # the queue did not move
    last = rm.history_get()["items"][-1]
    assert last["item_uid"] == executed["item"]["item_uid"] and last["result"]["exit_status"] == "completed"


def test_pause_resume_stop_abort_and_halt(session: DaemonProcess) -> None:
    rm = api(session)
    _clear(session)
    _open(session)
    outcomes = {}
    for action in ("stop", "abort", "halt"):
        _clear(session)
        item = rm.item_add(BPlan("count", ["det1"], num=400, delay=0.05))["item"]
        rm.queue_start()
        wait_status(session, lambda s: s["re_state"] == "running")
        rm.re_pause(option="deferred" if action == "stop" else "immediate")
        wait_status(session, lambda s: s["manager_state"] == "paused" and s["re_state"] == "paused")
        if action == "stop":  # resume once, then pause again
            rm.re_resume()
            wait_status(session, lambda s: s["re_state"] == "running")
            rm.re_pause(option="immediate")
            wait_status(session, lambda s: s["manager_state"] == "paused")
        getattr(rm, f"re_{action}")()
        status = wait_status(session, idle)
        last = rm.history_get()["items"][-1]
        assert last["item_uid"] == item["item_uid"]
        outcomes[action] = (last["result"]["exit_status"], status["items_in_queue"])
        queue = rm.queue_get()["items"]
        if action != "stop":  # aborted/halted: back at the front with a new uid, carrying its result
            assert queue[0]["name"] == "count" and queue[0]["item_uid"] != item["item_uid"]
            assert queue[0]["result"]["exit_status"] == outcomes[action][0]
    assert outcomes == {"stop": ("stopped", 0), "abort": ("aborted", 1), "halt": ("halted", 1)}
    with pytest.raises(RequestFailedError, match="RE Manager is not paused"):
        rm.re_resume()
    with pytest.raises(RequestFailedError, match="Option 'later' is not supported"):
        rm.re_pause(option="later")


def test_locks_guard_queue_and_environment_with_a_hashed_key(session: DaemonProcess) -> None:
    rm = api(session)
    _clear(session)
    info = rm.lock(lock_key="s3cret", queue=True, note="calibration", user="ann")
    assert info["lock_info"]["queue"] and not info["lock_info"]["environment"]
    assert info["lock_info"]["user"] == "ann" and info["lock_info"]["note"] == "calibration"
    try:
        with pytest.raises(RequestFailedError, match="Invalid lock key") as refused:
            rm.item_add(BPlan("count", ["det1"]))
        assert "RE Manager is locked by ann" in str(refused.value)
        assert rm.item_add(BPlan("count", ["det1"]), lock_key="s3cret")["success"]
        assert rm.status()["lock"] == {"environment": False, "queue": True}
        with pytest.raises(RequestFailedError, match="Invalid lock key"):
            rm.unlock(lock_key="wrong")
        with pytest.raises(RequestFailedError, match="different key"):
            rm.lock(lock_key="other", environment=True, user="bob")
    finally:
        rm.unlock(lock_key="s3cret")
    assert rm.lock_info()["lock_info"]["queue"] is False
    # the key is stored hashed: it appears nowhere in the state directory
    assert not any(b"s3cret" in p.read_bytes() for p in session.state_dir.rglob("*") if p.is_file())


def test_console_output_reaches_the_console_monitor(session: DaemonProcess) -> None:
    rm = api(session)
    _clear(session)
    _open(session)
    rm.console_monitor.enable()
    try:
        rm.item_add(BPlan("count", ["det1"], num=1))
        rm.queue_start()
        wait_status(session, lambda s: idle(s) and s["items_in_queue"] == 0)
        text = ""
        while "count" not in text:
            text += rm.console_monitor.next_msg(timeout=10)["msg"]
    finally:
        rm.console_monitor.disable()


def test_tasks_run_functions_and_scripts_in_the_worker(session: DaemonProcess) -> None:
    rm = api(session)
    _open(session)
    reply = rm.function_execute({"item_type": "function", "name": "function_sleep", "args": [0.01]})
    task = reply["task_uid"]
    rm.wait_for_completed_task(task, timeout=10)
    result = rm.task_result(task)
    assert result["status"] == "completed" and result["result"]["success"]
    with pytest.raises(RequestFailedError, match="not allowed for users from 'primary' group"):
        rm.function_execute({"item_type": "function", "name": "clear_buffer"})

    plans_token = rm.status()["plans_existing_uid"]
    task = rm.script_upload("def extra_plan():\n    yield from count([det1])\n")["task_uid"]
    rm.wait_for_completed_task(task, timeout=10)
    assert rm.task_result(task)["result"]["success"]
    assert "extra_plan" in rm.plans_existing()["plans_existing"]
    assert rm.status()["plans_existing_uid"] != plans_token
    assert "extra_plan" in rm.plans_allowed()["plans_allowed"]
    assert rm.item_add(BPlan("extra_plan"))["success"]
    assert rm.task_status("no-such-task")["status"] == "not_found"


def test_environment_close_and_the_incumbent_cli(session: DaemonProcess) -> None:
    qserver = shutil.which("qserver", path=str(Path(sys.executable).parent))
    assert qserver is not None, "bluesky-queueserver-api's qserver CLI is a test dependency"
    _clear(session)
    _open(session)

    def run(*args: str) -> str:
        done = subprocess.run(
            [qserver, "--zmq-control-addr", session.control_addr, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "manager_state" in run("status")
    run("queue", "add", "plan", '{"name": "count", "args": [["det1"]], "kwargs": {"num": 2}}')
    assert "'num': 2" in run("queue", "get")
    run("queue", "start")
    wait_status(session, lambda s: idle(s) and s["items_in_queue"] == 0)
    assert "completed" in run("history", "get")
    run("environment", "close")
    wait_status(session, lambda s: idle(s) and not s["worker_environment_exists"])
    with pytest.raises(RequestFailedError, match="RE Worker environment does not exist"):
        api(session).queue_start()


def test_permissions_can_be_read_replaced_validated_and_reloaded(session: DaemonProcess) -> None:
    rm = api(session)
    original = rm.permissions_get()["user_group_permissions"]
    assert set(original["user_groups"]) == {"root", "primary", "test_user"}
    allowed_token = rm.status()["plans_allowed_uid"]
    narrowed = {
        "user_groups": {
            "root": original["user_groups"]["root"],
            "primary": {**original["user_groups"]["primary"], "allowed_plans": [":^count$"]},
        }
    }
    rm.permissions_set(narrowed)
    assert rm.status()["plans_allowed_uid"] != allowed_token
    assert list(rm.plans_allowed()["plans_allowed"]) == ["count"]
    with pytest.raises(RequestFailedError, match="Plan 'scan' is not in the list of allowed plans"):
        rm.item_add(BPlan("scan", ["det1"], "motor", -1, 1, 3))
    with pytest.raises(RequestFailedError, match="Unknown user group: 'test_user'"):
        rm.plans_allowed(user_group="test_user")
    with pytest.raises(RequestFailedError, match="root"):
        rm.permissions_set({"user_groups": {"primary": {}}})  # no root group: refused, nothing changed
    assert rm.permissions_get()["user_group_permissions"] == narrowed
    rm.permissions_reload()  # back to the file
    assert rm.permissions_get()["user_group_permissions"] == original
    assert "scan" in rm.plans_allowed()["plans_allowed"]


async def test_the_async_api_drives_the_same_session(session: DaemonProcess) -> None:
    from bluesky_queueserver_api.zmq.aio import REManagerAPI as AsyncREManagerAPI

    _clear(session)
    _open(session)
    rm = AsyncREManagerAPI(
        zmq_control_addr=session.control_addr,
        zmq_info_addr=session.info_addr,
        status_expiration_period=0.02,
        status_polling_period=0.02,
    )
    try:
        item = (await rm.item_add(BPlan("count", ["det2"], num=2)))["item"]
        await rm.queue_start()
        await rm.wait_for_idle(timeout=20)
        history = await rm.history_get()
        assert history["items"][-1]["item_uid"] == item["item_uid"]
        assert history["items"][-1]["result"]["exit_status"] == "completed"
        assert (await rm.status())["items_in_queue"] == 0
    finally:
        await rm.close()


FAILING = """
import bluesky.plan_stubs as bps

def failing_plan():
    yield from bps.null()
    raise RuntimeError("boom")
"""


def test_failures_stop_the_queue_unless_ignored_and_autostart_follows(session: DaemonProcess) -> None:
    rm = api(session)
    _clear(session)
    _open(session)
    task = rm.script_upload(FAILING)["task_uid"]
    rm.wait_for_completed_task(task, timeout=10)
    failing = rm.item_add(BPlan("failing_plan"))["item"]
    after = rm.item_add(BPlan("count", ["det1"], num=1))["item"]
    before = rm.status()["items_in_history"]
    rm.queue_autostart(True)
    status = wait_status(session, lambda s: idle(s) and s["items_in_history"] == before + 1)
    # a failure stops the queue, puts the item back in front (new uid, with its result), disables autostart
    last = rm.history_get()["items"][-1]
    assert last["item_uid"] == failing["item_uid"] and last["result"]["exit_status"] == "failed"
    assert "boom" in last["result"]["msg"] and "RuntimeError" in last["result"]["traceback"]
    queue = rm.queue_get()["items"]
    assert queue[0]["name"] == "failing_plan" and queue[1]["item_uid"] == after["item_uid"]
    assert not status["queue_autostart_enabled"]

    rm.queue_mode_set(ignore_failures=True)
    rm.queue_start()
    wait_status(session, lambda s: idle(s) and s["items_in_queue"] == 0)
    outcomes = [h["result"]["exit_status"] for h in rm.history_get()["items"][-2:]]
    assert outcomes == ["failed", "completed"]  # ignored: the queue went on

    rm.queue_autostart(True)  # autostart starts whatever is added while idle
    added = rm.item_add(BPlan("count", ["det2"], num=1))["item"]
    wait_status(session, lambda s: idle(s) and s["items_in_queue"] == 0 and s["running_item_uid"] is None)
    assert rm.history_get()["items"][-1]["item_uid"] == added["item_uid"]
    rm.queue_autostart(False)
    rm.queue_mode_set(mode="default")


def test_queue_stop_lets_the_running_plan_finish(session: DaemonProcess) -> None:
    rm = api(session)
    _clear(session)
    _open(session)
    with pytest.raises(RequestFailedError, match="Queue is not running"):
        rm.queue_stop()
    first = rm.item_add(BPlan("count", ["det1"], num=10, delay=0.05))["item"]
    second = rm.item_add(BPlan("count", ["det1"], num=1))["item"]
    rm.queue_start()
    wait_status(session, lambda s: s["running_item_uid"] == first["item_uid"])
    rm.queue_stop()
    assert rm.status()["queue_stop_pending"]
    status = wait_status(session, lambda s: idle(s) and s["running_item_uid"] is None)
    assert not status["queue_stop_pending"]
    assert rm.history_get()["items"][-1]["item_uid"] == first["item_uid"]
    assert [i["item_uid"] for i in rm.queue_get()["items"]] == [second["item_uid"]]

"""Faults the incumbent does not survive, done for real with signals: a killed worker, a hung plan, a killed
daemon, SIGTERM during a plan, and a crashed queue manager (`manager_kill`)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from bluesky_queueserver_api import BPlan
from bluesky_queueserver_api.comm_base import RequestFailedError

from tests.support.daemon import DaemonProcess, start_daemon
from tests.support.queue import alive, api, env_open, idle, long_count, wait_status, worker_pid

HANG_SCRIPT = """
import time
import bluesky.plan_stubs as bps

def hang_plan():
    time.sleep(3600)  # blocks the RunEngine's loop: no pause, stop or abort can reach it
    yield from bps.null()
"""


def _open_and_run(d: DaemonProcess, *items: dict) -> list[str]:
    """Open the environment, queue `items`, start the queue and wait until the first one runs."""
    rm = api(d)
    rm.environment_open()
    wait_status(d, env_open)
    uids = [rm.item_add(item)["item"]["item_uid"] for item in items]
    rm.queue_start()
    wait_status(d, lambda s: s["running_item_uid"] == uids[0] and s["re_state"] == "running")
    return uids


def test_a_killed_worker_fails_the_plan_requeues_it_and_closes_the_environment(tmp_path: Path) -> None:
    d = start_daemon(tmp_path)
    try:
        uids = _open_and_run(d, long_count(), BPlan("count", ["det2"], num=1).to_dict())
        pid = worker_pid(d)
        open_runs = lambda: api(d).re_runs(option="open")["run_list"]  # noqa: E731
        wait_status(d, lambda _: bool(open_runs()))  # re-checked at each status change (runs change it)
        (run,) = open_runs()
        with d.subscriber("event.observation_store.run_stopped") as stops:
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            status = wait_status(d, lambda s: not s["worker_environment_exists"] and idle(s))
            noticed = time.monotonic() - killed_at
            stopped = stops.recv(timeout=10).payload["data"]
        # the open run is closed in the store as failed
        assert (stopped["run_start"], stopped["exit_status"]) == (run["uid"], "fail")
        with d.client() as client:
            assert client.request("runs_get", {"uid": run["uid"]})["stop"]["exit_status"] == "fail"
        assert noticed < 0.5, f"the worker's death was noticed after {noticed:.3f} s"  # the bound
        rm = api(d)
        last = rm.history_get()["items"][-1]
        assert last["item_uid"] == uids[0] and last["result"]["exit_status"] == "failed"
        assert "SIGKILL" in last["result"]["msg"]
        queue = rm.queue_get()["items"]
        assert [i["item_uid"] == uids[0] for i in queue] == [False, False]  # back at the front, new uid
        assert queue[0]["kwargs"] == last["kwargs"] and queue[1]["item_uid"] == uids[1]
        assert status["running_item_uid"] is None and status["re_state"] is None
        # opened again without environment_destroy, and the queue drains
        rm.environment_open()
        wait_status(d, env_open)
        rm.item_remove(pos="front")
        rm.queue_start()
        wait_status(d, lambda s: idle(s) and s["items_in_queue"] == 0)
        assert rm.history_get()["items"][-1]["result"]["exit_status"] == "completed"
    finally:
        d.stop()


def test_environment_destroy_ends_a_hung_plan_within_a_second(tmp_path: Path) -> None:
    d = start_daemon(tmp_path)
    try:
        rm = api(d)
        rm.environment_open()
        wait_status(d, env_open)
        task = rm.script_upload(HANG_SCRIPT)["task_uid"]
        rm.wait_for_completed_task(task, timeout=10)
        item = rm.item_add(BPlan("hang_plan"))["item"]
        rm.queue_start()
        wait_status(d, lambda s: s["running_item_uid"] == item["item_uid"])
        pid = worker_pid(d)
        started = time.monotonic()
        rm.environment_destroy()
        elapsed = time.monotonic() - started
        assert not alive(pid)
        assert elapsed < 1.0, f"environment_destroy took {elapsed:.3f} s"  # the bound
        status = wait_status(d, idle)
        assert not status["worker_environment_exists"]
        last = rm.history_get()["items"][-1]
        assert last["item_uid"] == item["item_uid"]
        assert (last["result"]["exit_status"], last["result"]["msg"]) == (
            "failed",
            "RE Worker environment was destroyed",
        )
        assert rm.queue_get()["items"][0]["name"] == "hang_plan"
    finally:
        d.stop()


def test_a_killed_daemon_restarts_with_queue_history_modes_and_locks(tmp_path: Path) -> None:
    d = start_daemon(tmp_path)
    try:
        uids = _open_and_run(d, long_count(), BPlan("count", ["det2"], num=1).to_dict())
        rm = api(d)
        rm.queue_mode_set(ignore_failures=True)
        rm.lock(lock_key="k", environment=True, user="ann", note="beam time")
        history_before = rm.history_get()["items"]
        worker = worker_pid(d)
        d.proc.kill()
        d.proc.wait()
    finally:
        d.stop()
    assert _wait_gone(worker), "the worker outlived the daemon"
    d = start_daemon(tmp_path)
    try:
        rm = api(d)
        status = rm.status()
        assert status["plan_queue_mode"] == {"loop": False, "ignore_failures": True}
        assert status["lock"] == {"environment": True, "queue": False}
        assert rm.lock_info()["lock_info"]["note"] == "beam time"
        assert not status["worker_environment_exists"] and status["running_item_uid"] is None
        history = rm.history_get()["items"]
        assert history[:-1] == history_before
        interrupted = history[-1]
        assert interrupted["item_uid"] == uids[0] and interrupted["result"]["exit_status"] == "unknown"
        assert "daemon restarted" in interrupted["result"]["msg"]
        queue = rm.queue_get()["items"]
        assert queue[0]["kwargs"] == interrupted["kwargs"] and queue[0]["item_uid"] != uids[0]
        assert queue[1]["item_uid"] == uids[1]
    finally:
        d.stop()


def test_sigterm_during_a_plan_stops_it_records_it_and_exits_0(tmp_path: Path) -> None:
    d = start_daemon(tmp_path)
    try:
        uids = _open_and_run(d, long_count())
        worker = worker_pid(d)
    finally:
        assert d.stop() == 0
    assert not alive(worker)
    d = start_daemon(tmp_path)
    try:
        rm = api(d)
        last = rm.history_get()["items"][-1]
        assert last["item_uid"] == uids[0]
        assert last["result"]["exit_status"] == "stopped" and "shutting down" in last["result"]["msg"]
        assert len(last["result"]["run_uids"]) == 1  # the run was closed by RunEngine stop
        queue = rm.queue_get()["items"]
        assert len(queue) == 1 and queue[0]["kwargs"] == last["kwargs"]  # put back, to run again
    finally:
        d.stop()


def test_manager_kill_restarts_the_queue_manager_from_its_persisted_state(tmp_path: Path) -> None:
    d = start_daemon(tmp_path)
    try:
        rm = api(d)
        kept = rm.item_add(BPlan("count", ["det1"], num=2))["item"]
        rm.queue_mode_set(loop=True)
        with d.client() as client:
            client.request("manager_kill")
            # the front door keeps answering while the supervisor restarts the actor
            assert client.request("ping")["daemon_state"] == "running"
        status = wait_status(
            d, lambda s: any(a["name"] == "queue_manager" and a["restarts"] == 1 for a in s["actors"])
        )
        status = wait_status(d, idle)
        assert status["plan_queue_mode"]["loop"] is True
        assert [i["item_uid"] for i in rm.queue_get()["items"]] == [kept["item_uid"]]
        assert rm.item_add(BPlan("count", ["det1"]))["success"]
    finally:
        d.stop()


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether the process `pid` (not our child: the daemon's) ends within `timeout`."""
    try:
        psutil.Process(pid).wait(timeout)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        return False
    return True


def test_manager_stop_safe_on_is_refused_while_busy_and_safe_off_stops_the_daemon(tmp_path: Path) -> None:
    d = start_daemon(tmp_path)
    try:
        uids = _open_and_run(d, long_count())
        rm = api(d)
        with pytest.raises(RequestFailedError, match="allowed only in 'idle' state"):
            rm.send_request(method="manager_stop", params={"option": "safe_on"})
        rm.send_request(method="manager_stop", params={"option": "safe_off"})
        assert d.proc.wait(timeout=20) == 0  # an orderly stop: the plan is stopped and recorded
    finally:
        d.stop()
    d = start_daemon(tmp_path)
    try:
        last = api(d).history_get()["items"][-1]
        assert (last["item_uid"], last["result"]["exit_status"]) == (uids[0], "stopped")
        with d.client() as client:
            client.request("manager_stop", {"option": "safe_on"})  # idle: accepted
        assert d.proc.wait(timeout=20) == 0
    finally:
        d.stop()


def test_manager_kill_during_a_plan_records_it_and_requeues_it(tmp_path: Path) -> None:
    d = start_daemon(tmp_path)
    try:
        uids = _open_and_run(d, long_count())
        worker = worker_pid(d)
        with d.client() as client:
            client.request("manager_kill")
        wait_status(
            d, lambda s: any(a["name"] == "queue_manager" and a["restarts"] == 1 for a in s["actors"])
        )
        assert _wait_gone(worker)  # the crashed manager's worker does not linger
        rm = api(d)
        last = rm.history_get()["items"][-1]
        assert last["item_uid"] == uids[0] and last["result"]["exit_status"] == "unknown"
        assert "queue manager crashed" in last["result"]["msg"]
        assert rm.queue_get()["items"][0]["kwargs"] == last["kwargs"]
        rm.environment_open()
        assert wait_status(d, env_open)["worker_environment_exists"]
    finally:
        d.stop()


def test_an_invalid_permissions_file_is_reported_on_each_request_until_fixed(tmp_path: Path) -> None:
    bad = tmp_path / "permissions.yaml"
    bad.write_text("user_groups:\n  primary:\n    allowed_plans: [null]\n")  # no `root` group
    d = start_daemon(tmp_path, config=f'[queue_manager]\nuser_group_permissions = "{bad}"\n')
    try:
        with d.client() as client:
            reply = client.request_raw(
                "queue_item_add", {"item": long_count(), "user": "u", "user_group": "primary"}
            )
            assert reply["success"] is False and "User group permissions are not valid" in reply["msg"]
            assert client.request("ping")["daemon_state"] == "running"
        from stationd.actors.queue_manager.permissions import default_permissions_path

        bad.write_text(default_permissions_path().read_text())  # fixed in place, then reloaded
        rm = api(d)
        rm.permissions_reload()
        assert rm.item_add(long_count())["success"]
    finally:
        d.stop()


def test_a_failing_startup_script_leaves_the_environment_closed_and_says_why(tmp_path: Path) -> None:
    script = tmp_path / "startup.py"
    script.write_text("from ophyd.sim import det1\nraise RuntimeError('the cryostat is not answering')\n")
    d = start_daemon(tmp_path, config=f'[queue_manager]\nstartup_script = "{script}"\n')
    try:
        with d.subscriber("QS_Console") as console:
            api(d).environment_open()
            text = ""
            while "Failed to open the environment" not in text:
                text += console.recv(timeout=10).payload["msg"]
        status = wait_status(d, idle)
        assert not status["worker_environment_exists"] and status["worker_environment_state"] == "closed"
        assert "the cryostat is not answering" in text
        script.write_text("from ophyd.sim import det1\nfrom bluesky.plans import count\n")
        api(d).environment_open()  # fixed: it opens (a fresh spare worker is ready)
        assert wait_status(d, env_open)["worker_environment_exists"]
    finally:
        d.stop()

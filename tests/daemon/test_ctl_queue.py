"""`stationctl` queue-server commands against the real daemon (qserver's commands, `--wait`, `watch`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from stationd.daemon.ctl_queue import item_from_args
from stationd.protocol.queue_client import QueueClient
from tests.daemon.test_ctl import ctl, ctl_process
from tests.support.daemon import DaemonProcess


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("STATIOND_")] + ["FORCE_COLOR"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def at(daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch) -> DaemonProcess:
    """The daemon, with stationctl pointed at it through the environment."""
    monkeypatch.setenv("STATIOND_CONTROL_ADDR", daemon.control_addr)
    monkeypatch.setenv("STATIOND_INFO_ADDR", daemon.info_addr)
    return daemon


@pytest.fixture
def qc(at: DaemonProcess) -> Iterator[QueueClient]:
    with QueueClient(at.control_addr, info_addr=at.info_addr) as client:
        yield client


def row(out: str, *cells: str) -> str:
    """The one table line holding every cell, in order."""
    pattern = r".*".join(re.escape(c) for c in cells)
    found = [line for line in out.splitlines() if re.search(pattern, line)]
    assert len(found) == 1, f"{cells} in {len(found)} lines of:\n{out}"
    return found[0]


def queued(qc: QueueClient) -> list[tuple[str, Any, Any]]:
    return [(i["name"], i.get("args"), i.get("kwargs")) for i in qc.queue_get()["items"]]


@pytest.mark.parametrize(
    ("kind", "tokens", "item"),
    [
        (
            "plan",
            ['{"name": "count", "args": [["det1"]], "kwargs": {"num": 3}}'],
            {"item_type": "plan", "name": "count", "args": [["det1"]], "kwargs": {"num": 3}},
        ),
        (
            "plan",
            ["{'name': 'count', 'args': [['det1']]}"],
            {"item_type": "plan", "name": "count", "args": [["det1"]]},
        ),
        (
            "plan",
            ["count", '["det1", "det2"]', "num=3", "delay=0.5", "md={'a': True}"],
            {
                "item_type": "plan",
                "name": "count",
                "args": [["det1", "det2"]],
                "kwargs": {"num": 3, "delay": 0.5, "md": {"a": True}},
            },
        ),
        ("plan", ["mv", "motor", "-1.5"], {"item_type": "plan", "name": "mv", "args": ["motor", -1.5]}),
        ("plan", ["count"], {"item_type": "plan", "name": "count"}),
        ("instruction", ["queue-stop"], {"item_type": "instruction", "name": "queue_stop"}),
        ("instruction", ["queue_stop"], {"item_type": "instruction", "name": "queue_stop"}),
    ],
)
def test_items_are_read_as_json_python_literals_or_shorthand(
    kind: str, tokens: list[str], item: dict[str, Any]
) -> None:
    assert item_from_args(kind, tokens) == item


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["queue", "add", "plan", "count", "num=1", "det1"],
            "positional argument 'det1' after keyword arguments",
        ),
        (["queue", "add", "plan", "{'name': 'count'}", "x"], "not one JSON (or Python) dict"),
        (["queue", "add", "plan", "[1, 2]"], "is not a plan name"),
        (["queue", "add", "instruction", "pause"], "the only instruction is queue-stop"),
        (["queue", "mode", "set", "loop"], "KEY=VALUE (or `default`)"),
        (["queue", "item", "move", "front"], "queue item move ITEM DEST"),
        (["re", "pause", "later"], "re pause takes deferred or immediate, not 'later'"),
        (["re", "resume", "now"], "re resume takes no option"),
        (["watch", "--count", "0"], "argument --count: must be > 0"),
    ],
)
def test_malformed_commands_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = ctl(capsys, *args)
    assert (code, out) == (2, "")
    assert message in err


def test_a_session_from_the_shell(
    at: DaemonProcess, qc: QueueClient, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl(capsys, "environment", "open", "--wait") == (0, "environment open\n", "")

    code, out, _ = ctl(
        capsys, "queue", "add", "plan", '{"name": "count", "args": [["det1"]], "kwargs": {"num": 2}}'
    )
    assert code == 0
    assert re.fullmatch(r'added count\(\["det1"\], num=2\) as [0-9a-f]{8}; 1 queued\n', out)
    assert ctl(capsys, "queue", "add", "plan", "count", '["det1"]', "num=3")[0] == 0
    assert ctl(capsys, "queue", "add", "instruction", "queue-stop")[0] == 0
    code, out, _ = ctl(
        capsys, "--json", "queue", "add", "plan", "front", "count", "['det2']", "--user", "ann"
    )
    first = json.loads(out)["item"]
    assert (code, first["name"], first["args"], first["user"]) == (0, "count", [["det2"]], "ann")

    code, out, _ = ctl(capsys, "queue", "get")
    assert code == 0
    assert "queue (4 items)" in out
    assert row(out, "0", first["item_uid"][:8], "count", '["det2"]', "ann")
    assert row(out, "1", "count", '["det1"], num=2', "stationctl")
    assert row(out, "2", "count", '["det1"], num=3', "stationctl")
    assert row(out, "3", "[queue_stop]")

    code, out, err = ctl(capsys, "queue", "start", "--wait")
    assert (code, err) == (0, "")
    assert out.startswith("queue started\nmanager idle\n3 finished\n")
    assert row(out, "0", first["item_uid"][:8], "count", '["det2"]', "ann", "completed")
    assert row(out, '["det1"], num=3', "completed")

    code, out, _ = ctl(capsys, "history", "get", "--offset", "1", "--limit", "1")
    assert code == 0
    assert "history (3 items)" in out
    assert row(out, "1", "count", '["det1"], num=2', "stationctl", "completed")
    assert "num=3" not in out
    code, out, _ = ctl(capsys, "--json", "history", "get")
    assert [i["result"]["exit_status"] for i in json.loads(out)["items"]] == ["completed"] * 3
    assert ctl(capsys, "environment", "update", "--wait") == (0, "environment updated\n", "")
    code, out, _ = ctl(capsys, "queue", "execute", "plan", "count", '["det3"]', "--wait")
    assert code == 0
    assert re.match(r'executing count\(\["det3"\]\) as [0-9a-f]{8}\nmanager idle\n1 finished\n', out)
    assert row(out, "3", "count", '["det3"]', "completed")

    assert ctl(capsys, "queue", "add", "plan", "count", '["det1"]', "num=5", "delay=0.2")[0] == 0
    code, out, _ = ctl(capsys, "watch", "--count", "1", "--rows", "2")
    assert code == 0
    assert re.search(r"^manager\s+idle", out, re.M)
    assert re.search(r"^environment\s+open \(idle\)", out, re.M)
    assert "queue: next 1 of 1" in out
    assert row(out, "0", "count", '["det1"], num=5, delay=0.2')
    assert "history: last 2 of 4" in out
    assert row(out, "2", "count", '["det1"], num=3', "completed")
    assert row(out, "3", "count", '["det3"]', "completed")

    assert ctl(capsys, "queue", "start")[0] == 0
    qc.wait_for_condition(lambda s: s["re_state"] == "running", timeout=30)
    code, out, _ = ctl(capsys, "re", "pause", "immediate", "--wait")
    assert (code, out) == (0, "pause requested\nmanager paused\n")
    code, out, _ = ctl(capsys, "re", "runs", "open")
    assert code == 0
    assert re.search(r"^│ [0-9a-f-]{36} │ 5 +│ open", out, re.M)  # four plans ran before
    code, out, _ = ctl(capsys, "re", "stop", "--wait")
    assert code == 0
    assert row(out, "4", "count", "delay=0.2", "stopped")

    assert ctl(capsys, "environment", "close", "--wait") == (0, "environment closed\n", "")
    assert qc.status()["worker_environment_exists"] is False


def test_items_are_got_moved_and_removed_by_position_or_uid(
    at: DaemonProcess, qc: QueueClient, capsys: pytest.CaptureFixture[str]
) -> None:
    uids = [
        qc.item_add({"item_type": "plan", "name": "count", "args": [[f"det{n}"]]})["item"]["item_uid"]
        for n in (1, 2, 3)
    ]
    code, out, _ = ctl(capsys, "queue", "item", "get", "1")
    assert code == 0
    assert row(out, uids[1][:8], "count", '["det2"]')
    assert ctl(capsys, "queue", "item", "move", "back", "front")[0] == 0
    assert [args for _, args, _ in queued(qc)] == [[["det3"]], [["det1"]], [["det2"]]]
    assert ctl(capsys, "queue", "item", "move", uids[2], "after", uids[1])[0] == 0
    assert [args for _, args, _ in queued(qc)] == [[["det1"]], [["det2"]], [["det3"]]]
    code, out, _ = ctl(capsys, "queue", "item", "remove", uids[0])
    assert (code, out.splitlines()[0]) == (0, "removed")
    assert ctl(capsys, "--json", "queue", "item", "remove")[0] == 0  # the back
    assert [args for _, args, _ in queued(qc)] == [[["det2"]]]
    assert ctl(capsys, "queue", "add", "plan", "--pos", "front", "count", '["det4"]')[0] == 0
    assert ctl(capsys, "queue", "add", "plan", "before_uid", uids[1], "count", '["det5"]')[0] == 0
    assert [args for _, args, _ in queued(qc)] == [[["det4"]], [["det5"]], [["det2"]]]
    assert ctl(capsys, "queue", "clear") == (0, "queue cleared\n", "")
    assert queued(qc) == []


def test_mode_autostart_and_stop_requests_reach_the_status(
    at: DaemonProcess, qc: QueueClient, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ctl(capsys, "queue", "mode", "set", "loop=true", "ignore_failures=false")
    assert (code, out) == (0, "queue mode: loop=true, ignore_failures=false\n")
    assert qc.status()["plan_queue_mode"] == {"loop": True, "ignore_failures": False}
    assert (
        ctl(capsys, "queue", "mode", "set", "default")[1] == "queue mode: loop=false, ignore_failures=false\n"
    )
    assert ctl(capsys, "queue", "autostart", "on") == (0, "autostart on\n", "")
    assert qc.status()["queue_autostart_enabled"] is True
    assert ctl(capsys, "queue", "autostart", "off")[0] == 0
    assert qc.status()["queue_autostart_enabled"] is False
    assert ctl(capsys, "queue", "stop-cancel") == (0, "queue stop cancelled\n", "")
    assert ctl(capsys, "history", "clear") == (0, "history cleared\n", "")


def test_a_locked_queue_needs_the_key(
    at: DaemonProcess, qc: QueueClient, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ctl(capsys, "lock", "queue", "--key", "k1", "--note", "calibrating", "--user", "ops")
    assert code == 0
    assert re.search(r"^queue locked\s+on\s*$", out, re.M)
    assert re.search(r"^by\s+ops at \d\d/\d\d/\d{4} \d\d:\d\d:\d\d\s*$", out, re.M)
    code, out, err = ctl(capsys, "queue", "add", "plan", "count", '["det1"]')
    assert (code, out) == (1, "")
    assert err.startswith("error [permission_denied]: Invalid lock key: \nRE Manager is locked by ops at ")
    assert ctl(capsys, "queue", "add", "plan", "count", '["det1"]', "--lock-key", "k1")[0] == 0
    code, out, _ = ctl(capsys, "--json", "lock", "info")
    assert json.loads(out)["lock_info"]["note"] == "calibrating"
    code, out, _ = ctl(capsys, "unlock", "--key", "k1")
    assert re.search(r"^queue locked\s+off\s*$", out, re.M)
    assert qc.status()["lock"] == {"environment": False, "queue": False}


def test_daemon_refusals_print_the_code_and_message(
    at: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl(capsys, "queue", "start") == (
        1,
        "",
        "error [invalid_state]: RE Worker environment does not exist.\n",
    )
    assert ctl(capsys, "queue", "item", "get", "7") == (
        1,
        "",
        "error [invalid_params]: Failed to get an item: Index '7' is out of range (parameter pos = '7')\n",
    )
    code, _, err = ctl(capsys, "re", "pause")
    assert (code, err) == (
        1,
        "error [invalid_state]: Environment does not exist. Can not pause Run Engine.\n",
    )


def test_a_wait_that_runs_out_is_an_error_naming_the_timeout(
    at: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = ctl(capsys, "environment", "open", "--wait", "--wait-timeout", "0.05")
    assert (code, out) == (1, "")
    assert err == "error [timeout]: the queue manager did not reach the awaited state within 0.05 s\n"


def test_watch_json_fetches_the_queue_again_when_it_changed(at: DaemonProcess, qc: QueueClient) -> None:
    cmd = [sys.executable, "-m", "stationd.daemon.ctl", "--json", "watch"]
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        first = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        added = qc.item_add({"item_type": "plan", "name": "count", "args": [["det1"]]})["item"]
        while True:  # every update has the status; the queue only when plan_queue_uid changed
            record = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            if "queue" in record:
                break
            assert record["status"]["plan_queue_uid"] == first["status"]["plan_queue_uid"]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert set(first) == {"status", "queue", "history", "runs"}
    assert (first["queue"]["items"], first["history"]["items"]) == ([], [])
    assert [i["item_uid"] for i in record["queue"]["items"]] == [added["item_uid"]]
    assert record["status"]["items_in_queue"] == 1
    assert (proc.returncode, err) == (0, "")


def test_manager_stop_stops_the_daemon(at: DaemonProcess) -> None:
    done = ctl_process("--control-addr", at.control_addr, "manager", "stop")
    assert (done.returncode, done.stdout, done.stderr) == (0, "stationd is stopping (safe_on)\n", "")
    assert at.proc.wait(timeout=15) == 0

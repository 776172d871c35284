"""`stationctl` against the real daemon: ping, status, monitor, daemon errors, CurveZMQ keys."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import zmq

from stationd.daemon.ctl import format_duration, main
from stationd.daemon.security import generate_keys
from stationd.protocol.version import PROTOCOL_VERSION, VERSION
from tests.support.daemon import DaemonProcess, free_port, start_daemon

TREE_CONFIG = """
[[supervisor.children]]
kind = "supervisor"
name = "lab"
[[supervisor.children.children]]
kind = "actor"
name = "probe_a"
actor = "tests.support.actors:Probe"
[[supervisor.children]]
kind = "actor"
name = "probe_b"
actor = "tests.support.actors:Probe"
mode = "process"
"""


def _env() -> dict[str, str]:
    """The environment for stationctl: no STATIOND_* or colour settings leaking in, wide lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATIOND_") and k != "FORCE_COLOR"}
    env["COLUMNS"] = "200"
    return env


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("STATIOND_")] + ["FORCE_COLOR"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COLUMNS", "200")


def ctl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `stationctl ARGS` in-process; return its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def ctl_process(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `stationctl ARGS` as its own process, concurrently with the daemon."""
    cmd = [sys.executable, "-m", "stationd.daemon.ctl", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env())


def test_ping_reports_version_address_and_latency(
    daemon: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = ctl(capsys, "--control-addr", daemon.control_addr, "ping")
    assert (code, err) == (0, "")
    assert re.fullmatch(
        rf"stationd {re.escape(VERSION)} at {re.escape(daemon.control_addr)}: ok \(\d+\.\d ms\)\n", out
    )


def test_ping_takes_the_address_from_the_environment(
    daemon: DaemonProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATIOND_CONTROL_ADDR", daemon.control_addr)
    code, out, _ = ctl(capsys, "ping")
    assert code == 0
    assert f"at {daemon.control_addr}: ok" in out


def test_ping_json_is_the_status_object(daemon: DaemonProcess, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = ctl(capsys, "--control-addr", daemon.control_addr, "ping", "--json")
    reply = json.loads(out)
    assert code == 0
    assert (reply["version"], reply["pid"], reply["daemon_state"]) == (VERSION, daemon.proc.pid, "running")


def test_ping_with_nobody_listening_fails_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    addr = f"tcp://127.0.0.1:{free_port()}"
    code, out, err = ctl(capsys, "--control-addr", addr, "--timeout", "0.3", "ping")
    assert (code, out) == (1, "")
    assert f"stationd did not answer at {addr} within 0.3 s" in err


def test_status_shows_daemon_facts_and_the_supervisor(
    daemon: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = ctl(capsys, "--control-addr", daemon.control_addr, "status")
    assert (code, err) == (0, "")
    assert f"stationd {VERSION} at {daemon.control_addr}" in out
    assert re.search(rf"^protocol\s+{PROTOCOL_VERSION}\b", out, re.M)
    assert re.search(rf"^pid\s+{daemon.proc.pid}\b", out, re.M)
    assert re.search(r"^state\s+running\b", out, re.M)
    assert re.search(r"^uptime\s+\d+\.\d s\b", out, re.M)
    supervisor = next(line for line in out.splitlines() if "supervisor  supervisor" in line)
    assert "running" in supervisor
    assert f"pid {daemon.proc.pid}" in supervisor


def test_status_draws_children_under_their_parents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = start_daemon(tmp_path, config=TREE_CONFIG)
    try:
        code, out, _ = ctl(capsys, "--control-addr", d.control_addr, "status")
    finally:
        d.stop()
    assert code == 0
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"actors \(\d+\)", line))
    # the queue manager's worker process (re_worker) comes and goes with the environment: not drawn here
    tree = [line for line in lines[start + 1 :] if "re_worker" not in line]
    nodes = [re.match(r"([^a-z]*)([a-z_]+)", line) for line in tree]  # tree guides, then the actor name
    builtin = ["observation_store", "queue_manager", "daq_coordinator"]
    names = ["supervisor", *builtin, "lab", "probe_a", "probe_b"]
    assert [m[2] for m in nodes if m] == names
    depth = [len(m[1]) for m in nodes if m]
    assert depth[0] < depth[1] == depth[2] == depth[3] == depth[4] < depth[5]  # supervisor > (…, lab) > …
    assert depth[6] == depth[4]  # probe_b is lab's sibling
    assert re.search(r"probe_b\s+actor process\s+\w+\s+restarts 0\s+pid \d+", tree[6])


def test_status_json_parses_with_the_actor_list(
    daemon: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ctl(capsys, "--control-addr", daemon.control_addr, "status", "--json")
    status = json.loads(out)
    assert code == 0
    assert [(a["name"], a["parent"], a["state"]) for a in status["actors"] if a["name"] != "re_worker"] == [
        ("supervisor", None, "running"),
        ("observation_store", "supervisor", "running"),
        ("queue_manager", "supervisor", "running"),
        ("daq_coordinator", "supervisor", "running"),
    ]


def test_monitor_json_receives_consecutive_qs_info(daemon: DaemonProcess) -> None:
    # The SUB may join after a publication (slow joiner), but QS_Info repeats every second.
    done = ctl_process(
        "--info-addr", daemon.info_addr, "--json", "monitor", "--topic", "QS_Info", "--count", "2"
    )
    assert (done.returncode, done.stderr) == (0, "")
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["topic"], r["missed"]) for r in records] == [("QS_Info", 0), ("QS_Info", 0)]
    assert records[1]["payload"]["seq"] == records[0]["payload"]["seq"] + 1
    status = records[0]["payload"]["msg"]["status"]
    assert (status["pid"], status["daemon_state"]) == (daemon.proc.pid, "running")


def test_monitor_summarises_qs_info_on_one_line(daemon: DaemonProcess) -> None:
    done = ctl_process("monitor", "--info-addr", daemon.info_addr, "--topic", "QS_", "--count", "1")
    assert done.returncode == 0
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d\.\d{3} QS_Info +daemon running, \d+ actors, uid [0-9a-f]{8}\n", done.stdout
    )


def test_monitor_exits_quietly_on_ctrl_c(daemon: DaemonProcess) -> None:
    cmd = [sys.executable, "-m", "stationd.daemon.ctl", "--info-addr", daemon.info_addr, "--json", "monitor"]
    cmd += ["--topic", "QS_Info"]  # the status repeats every second; other topics come when things happen
    # A shell may start background jobs with SIGINT ignored; give the child the default, as a terminal would.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        first = json.loads(proc.stdout.readline())  # type: ignore[union-attr]  # the monitor is now receiving
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert first["topic"] == "QS_Info"
    assert (proc.returncode, err) == (0, "")


@pytest.fixture
def fake_publisher() -> Iterator[str]:
    """A PUB publishing a log, console, event and info message in rounds; `log` skips every other seq."""
    sock = zmq.Context.instance().socket(zmq.PUB)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    stop = threading.Event()
    enc = msgspec.json.encode

    def publish() -> None:
        n = 0
        while not stop.wait(0.01):  # pace, do not flood: a SUB joining late still sees whole rounds
            n += 1
            log = {
                "seq": 2 * n,
                "time": 0.5,
                "level": "warning",
                "actor": "probe",
                "event": "hot",
                "fields": {"t": 71.5},
            }
            console = {"seq": n, "time": 0.5, "msg": "[W] probe: hot t=71.5\n"}
            event = {
                "seq": n,
                "time": 0.5,
                "actor": "probe",
                "name": "announced",
                "data": {"text": "hi", "n": [1, 2]},
            }
            status = {"daemon_state": "stopping", "actors": [{}, {}], "status_uid": "0123456789abcdef"}
            for topic, payload in [
                ("log", log),
                ("QS_Console", console),
                ("event.probe.announced", event),
                ("QS_Info", {"seq": n, "time": 0.5, "msg": {"status": status}}),
            ]:
                sock.send_multipart([topic.encode(), enc(payload)])

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join()
        sock.close(linger=0)


def test_monitor_renders_each_topic_and_reports_gaps(
    fake_publisher: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = ctl(capsys, "--info-addr", fake_publisher, "monitor", "--count", "9")
    assert code == 0
    lines = [line[13:] for line in out.splitlines()]  # drop the HH:MM:SS.mmm time
    assert "log        warning probe hot t=71.5" in lines
    assert "QS_Console [W] probe: hot t=71.5" in lines
    assert 'event.probe.announced probe.announced {"text":"hi","n":[1,2]}' in lines
    assert "QS_Info    daemon stopping, 2 actors, uid 01234567" in lines
    assert "missed 1 messages on log" in {line.strip() for line in out.splitlines()}


def test_monitor_filters_topics_by_prefix(fake_publisher: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = ctl(
        capsys,
        "--info-addr",
        fake_publisher,
        "--json",
        "monitor",
        "--topic",
        "event.",
        "--topic",
        "QS_C",
        "--count",
        "6",
    )
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert {r["topic"] for r in records} == {"event.probe.announced", "QS_Console"}
    assert all(r["missed"] == 0 for r in records)


@pytest.mark.parametrize(
    ("error_code", "msg"), [("permission_denied", "not for you"), ("quota_exceeded", "from a newer daemon")]
)
def test_daemon_errors_print_code_and_message(
    error_code: str, msg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")

    def answer() -> None:
        if sock.poll(10_000, zmq.POLLIN):
            identity, corr, _, _request = sock.recv_multipart()
            failed = {"success": False, "error_code": error_code, "msg": msg}
            sock.send_multipart([identity, corr, b"", json.dumps(failed).encode()])

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        code, out, err = ctl(capsys, "--control-addr", f"tcp://127.0.0.1:{port}", "status")
    finally:
        thread.join()
        sock.close(linger=0)
    assert (code, out, err) == (1, "", f"error [{error_code}]: {msg}\n")


@pytest.fixture
def curve_daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path, Path]]:
    """A CurveZMQ daemon, the server's public key file and an admitted client's secret key file."""
    server_public, server_secret = generate_keys(tmp_path / "keys", "server")
    client_public, client_secret = generate_keys(tmp_path / "keys", "client")
    client_key = client_public.read_text().split('public-key = "')[1].split('"')[0]
    config = (
        f'[security]\nserver_secret_key_file = "{server_secret}"\n'
        f'[[security.clients]]\npublic_key = "{client_key}"\nuser = "ops"\n'
    )
    d = start_daemon(tmp_path, config=config)
    try:
        yield d, server_public, client_secret
    finally:
        d.stop()


def test_curve_keys_are_used_for_requests_and_the_info_stream(
    curve_daemon: tuple[DaemonProcess, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d, server_key, client_key = curve_daemon
    keys = ["--server-key", str(server_key), "--client-key", str(client_key)]
    code, out, _ = ctl(capsys, "--control-addr", d.control_addr, *keys, "ping")
    assert code == 0
    assert f"at {d.control_addr}: ok" in out
    monitor = ctl_process(
        "--info-addr", d.info_addr, *keys, "--json", "monitor", "--topic", "QS_Info", "--count", "1"
    )
    assert monitor.returncode == 0
    assert json.loads(monitor.stdout)["topic"] == "QS_Info"
    code, out, err = ctl(capsys, "--control-addr", d.control_addr, "--timeout", "0.5", "ping")
    assert (code, out) == (1, "")
    assert f"did not answer at {d.control_addr}" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server-key", "server.key", "ping"], "--server-key and --client-key go together"),
        (
            ["--server-key", "missing.key", "--client-key", "missing.key_secret", "ping"],
            "cannot load CurveZMQ keys",
        ),
        (["--timeout", "0", "ping"], "argument --timeout: must be > 0"),
        (["monitor", "--count", "x"], "argument --count: invalid int value: 'x'"),
    ],
)
def test_bad_options_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = ctl(capsys, *args)
    assert (code, out) == (2, "")
    assert message in err


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(4.3, "4.3 s"), (187, "3m 07s"), (7509.9, "2h 05m 09s"), (86400 + 61, "1d 0h 01m 01s")],
)
def test_uptime_is_human_readable(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text

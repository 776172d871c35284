"""The real daemon as a subprocess: answers, refuses bad input without dying, publishes, leaves no orphans."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import msgspec
import psutil
import pytest
import zmq

from stationd.protocol.client import Client
from stationd.protocol.errors import DeadlineExceeded, UnknownMethod
from tests.support.daemon import DaemonProcess, start_daemon

PROCESS_PROBE = """
[[supervisor.children]]
kind = "actor"
name = "worker"
actor = "tests.support.actors:Probe"
mode = "process"
"""


def actor_process(daemon_pid: int, name: str) -> psutil.Process:
    """The child process that runs the actor `name` (the daemon has others: the RE worker, ...)."""
    return next(p for p in psutil.Process(daemon_pid).children() if p.cmdline()[-1:] == [name])


def test_ping_and_status_show_the_version_and_the_actor_tree(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        status = client.ping()
        assert status.success and status.msg.startswith("stationd ")
        assert status.daemon_state == "running" and status.pid == daemon.proc.pid
        assert [(a.name, a.state) for a in status.actors if a.name != "re_worker"] == [
            ("supervisor", "running"),
            ("observation_store", "running"),
            ("queue_manager", "running"),
            ("daq_coordinator", "running"),
        ]
        assert client.status().uptime >= status.uptime


def test_config_get_returns_the_effective_config_as_queueserver_shapes_it(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        config = client.config_get()
    assert config["ip_connect_info"] == {}
    assert config["stationd"]["control_addr"] == daemon.control_addr
    assert config["stationd"]["state_dir"] == str(daemon.state_dir)


BAD_INPUTS = [
    b"",
    b"\x00\xff\xfe garbage",
    b"not json{",
    b"[1, 2, 3]",
    b"null",
    b'{"method": 1}',
    b'{"method": "status", "params": {"nope": true}}',
    b'{"method": "status", "unexpected": 1}',
    b'{"method": "no_such_method"}',
    msgspec.msgpack.encode({"method": "status"})[:-3],
    msgspec.msgpack.encode([1, 2]),
    b"\x81\xa2\x00\x80",  # msgpack map whose key is not UTF-8
    b"\x81\xa6method\xa6status\x81",  # msgpack with trailing garbage
]


def test_malformed_input_gets_an_error_reply_and_the_daemon_keeps_serving(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        for payload in BAD_INPUTS:
            reply = client.send_bytes(payload)
            assert reply["success"] is False, payload
            assert reply["msg"] and reply["error_code"], reply
        with pytest.raises(UnknownMethod, match="Unknown method 'frobnicate'"):
            client.request("frobnicate")
        assert client.ping().daemon_state == "running"
    assert daemon.proc.poll() is None


def test_msgpack_requests_get_msgpack_replies(daemon: DaemonProcess) -> None:
    with daemon.client(encoding="msgpack") as client:
        sock = client._sock
        sock.send_multipart([b"id", b"", msgspec.msgpack.encode({"method": "status"})])
        _, _, raw = sock.recv_multipart()
    assert msgspec.msgpack.decode(raw)["daemon_state"] == "running"


def test_a_request_over_the_size_limit_gets_an_error_naming_the_sizes(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, config="max_request_bytes = 2048\n")
    try:
        with d.client() as client:
            reply = client.request_raw("status", {"pad": "x" * 4000})
            assert reply["error_code"] == "request_too_large"
            assert "exceeds the limit of 2048 bytes" in reply["msg"]
            # Far past the limit the transport drops the message unread: no reply, and the daemon lives on.
            with pytest.raises(DeadlineExceeded):
                client.request_raw("status", {"pad": "x" * 20000}, timeout=0.5)
        with d.client() as fresh:
            assert fresh.ping().daemon_state == "running"
    finally:
        assert d.stop() == 0


def test_concurrent_clients_are_all_answered(daemon: DaemonProcess) -> None:
    errors: list[BaseException] = []
    answered: list[int] = []

    def run_client(index: int) -> None:
        try:
            with Client(daemon.control_addr, timeout=5, zctx=zmq.Context()) as client:
                for _ in range(200):
                    assert client.status().daemon_state == "running"
                    client.send_bytes(b"junk")  # interleave bad requests: they must not disturb others
            answered.append(index)
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run_client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(answered) == list(range(8))


def test_the_info_stream_carries_status_and_logs_with_sequence_numbers(daemon: DaemonProcess) -> None:
    with daemon.subscriber("QS_Info", "log", "QS_Console") as sub:
        # QS_Info comes at least once a second: once it arrives, the subscription is live (the queue
        # manager's worker process may have said something on QS_Console before)
        while sub.recv(timeout=5).topic != "QS_Info":
            pass
        daemon.signal(signal.SIGHUP)  # logs `log_levels_reloaded`
        seen: dict[str, list[int]] = {}
        while not {"log", "QS_Console"} <= set(seen) or len(seen.get("QS_Info", [])) < 2:
            event = sub.recv(timeout=5)
            seen.setdefault(event.topic, []).append(event.seq)
            if event.topic == "QS_Info":
                assert event.payload["msg"]["status"]["daemon_state"] == "running"
                assert isinstance(event.payload["time"], float)
            if event.topic == "log":
                assert {"level", "actor", "event", "time", "seq"} <= set(event.payload)
            if event.topic == "QS_Console":
                assert isinstance(event.payload["msg"], str)
    for seqs in seen.values():
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_sigterm_stops_the_tree_and_exits_zero(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, config=PROCESS_PROBE)
    child = actor_process(d.proc.pid, "worker")
    d.signal(signal.SIGTERM)
    assert d.proc.wait(10) == 0
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    log = d.log()
    assert log.index('"event":"daemon_stopping"') < log.index('"event":"daemon_stopped"')


def test_no_child_process_outlives_a_kill_9_of_the_daemon(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, config=PROCESS_PROBE)
    children = psutil.Process(d.proc.pid).children(recursive=True)
    assert children, "the process actor should run in a child process"
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait(5)
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, [p.cmdline() for p in alive]
    # the ports are free again: a new daemon binds them
    again = start_daemon(
        tmp_path / "again", args=("--control-addr", d.control_addr, "--info-addr", d.info_addr)
    )
    try:
        with Client(d.control_addr, timeout=5) as client:  # the old address, now served by the new daemon
            assert client.ping().pid == again.proc.pid
    finally:
        again.stop()
        d.notify.close()


def test_the_tree_giving_up_makes_the_daemon_exit_non_zero(tmp_path: Path) -> None:
    config = PROCESS_PROBE + "\n[supervisor]\nintensity = 0\n"
    d = start_daemon(tmp_path, config=config)
    worker = actor_process(d.proc.pid, "worker")
    worker.kill()
    assert d.proc.wait(10) == 2
    assert '"event":"tree_failed"' in d.log()
    d.notify.close()


def test_bad_input_does_not_leak_memory(daemon: DaemonProcess) -> None:
    proc = psutil.Process(daemon.proc.pid)

    def hammer(rounds: int) -> None:
        with daemon.client() as client:
            for i in range(rounds):
                for payload in BAD_INPUTS:
                    client.send_bytes(payload)
                client.request_raw("status", {f"unknown_{i}": i})

    hammer(200)  # warm up caches and allocator pools
    before = proc.memory_info().rss
    hammer(1000)  # 12,000 bad requests
    growth_mb = (proc.memory_info().rss - before) / 2**20
    assert growth_mb < 2, f"RSS grew by {growth_mb:.1f} MB over 12,000 bad requests"


def test_a_second_sigterm_cuts_a_slow_stop_short_and_kills_the_children(tmp_path: Path) -> None:
    config = PROCESS_PROBE.replace('mode = "process"', 'mode = "process"\nshutdown_timeout = 60.0')
    d = start_daemon(tmp_path, config=config)
    worker = actor_process(d.proc.pid, "worker")
    worker.suspend()  # SIGSTOP: it cannot answer the graceful stop, which would then take 60 s
    d.signal(signal.SIGTERM)
    d.notify.wait_for("STOPPING=1")
    d.signal(signal.SIGTERM)
    assert d.proc.wait(10) == 3
    assert psutil.wait_procs([worker], timeout=5)[1] == []
    assert '"event":"forced_stop"' in d.log()
    d.notify.close()


def test_a_port_in_use_is_a_clear_start_failure(daemon: DaemonProcess, tmp_path: Path) -> None:
    second = start_daemon(tmp_path / "second", args=("--control-addr", daemon.control_addr), wait_ready=False)
    assert second.proc.wait(10) == 1
    failure = [line for line in second.log().splitlines() if '"event":"start_failed"' in line]
    assert failure and "Address already in use" in failure[0], second.log()
    assert "Traceback" not in second.log()
    second.notify.close()
    with daemon.client() as client:
        assert client.ping().daemon_state == "running"  # the first one is unaffected


def test_an_invalid_server_key_is_a_clear_start_failure(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, config='[security]\nserver_secret_key = "not-a-key"\n', wait_ready=False)
    assert d.proc.wait(10) == 1
    assert "invalid server secret key" in d.log() and "Traceback" not in d.log()
    d.notify.close()

"""Queue benchmark: stationd against the incumbent bluesky-queueserver 0.0.25 RE Manager, one after the other
in one run, with the same startup profile (ophyd.sim det, det1, det2, motor, motor1, motor2; bluesky.plans
count, scan, ...; a RunEngine without BestEffortCallback) and the same plans, talking raw ZMQ JSON
({"method", "params"}) from one DEALER socket to each (stationd's ROUTER; the incumbent's REP echoes the
envelope). Figures per system, with ratios (> 1: stationd better), and stationd's targets:

1. launch: Popen to the first `status` reply (s); asked every 20 ms.
2. `environment_open` / `environment_close` (s): from sending the request until `status`, polled every 5 ms,
   shows the environment open (closed) and `manager_state` idle. Opened 3 s after launch (stationd's warm
   spare worker, its design, has started by then).
3. `status` RTT p50/p99 (µs), 1,000 sequential after 100 warm-ups, environment open and idle.
4. idle CPU (% of one core, utime+stime over 5 s) and RSS (MB) of all processes of each system with the
   environment open: stationd = daemon + worker child(ren); incumbent = watchdog + manager + worker (Redis,
   which it needs, is reported beside it, outside the ratio).
5. `queue_item_add` x 1,000 sequential (after 50 warm-ups): items/s (>= 4,000) and RTT p50/p99 (ms).
6. `queue_item_add_batch` of 1,000 items in one request: items/s (>= 20,000).
7. execution of N x `count([det1], num=1)` (200 on stationd, 20 on the incumbent by default since it runs
   about 2 plans/s): plans/s from `queue_start` to idle with all in history (>= 100/s); per-plan span and
   start-to-start p50 (ms) from the history; CPU ms per plan of all the system's processes (schedstat).
8. `status` RTT while plans run (stationd p99 <= 1 ms): 1,000 requests, one every 5 ms, while the queue
   executes the same plan back to back (queued for the whole window at the rate of 7); a p99 over fewer
   samples would be the worst two or three of them.
9. the same while ~1 s plans run back to back (`count([det1], num=10, delay=0.1)`, the RunEngine mostly
   waiting, as with real exposures): the equal-load comparison of the two systems (stationd p99 <= 1 ms).
10. for reference: the same plan in a bare in-process RunEngine of the same profile (ms per plan).

The incumbent's server runs from its own .bench-venv/, never from stationd's .venv (where bluesky-queueserver
is only a library for profile_ops): the first run installs there, for this benchmark only,
bluesky-queueserver==0.0.25, matplotlib which it imports, and bluesky/ophyd/pyzmq at the versions of .venv;
and redis-server with apt-get when it is not on PATH (root). Redis runs on a free loopback port with
--save '' --appendonly no. Every process the script starts is stopped by PID at the end.
Takes about a minute (the first run adds the installs).

Run: make bench-queue   or   .venv/bin/python bench/queue_manager.py [--plans 200] [--incumbent-plans 20]
     [--skip-incumbent] [--worker-cpu-policy auto|normal|idle]   (the last output line is one JSON object
     with every figure; see worker_cpu_policy in the README)
"""

from __future__ import annotations

import abc
import argparse
import importlib.metadata
import itertools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import zmq

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / ".bench-venv"
INCUMBENT = "bluesky-queueserver==0.0.25"
SETTLE_S, IDLE_S, POLL_S = 3.0, 5.0, 0.005
RTT_WARMUP, RTT_N, ADD_WARMUP, ADD_N, BATCH_N = 100, 1_000, 50, 1_000, 1_000
STATUS_LOAD_N = 1_000
USER = {"user": "bench", "user_group": "primary"}
_JSON_ENCODER = msgspec.json.Encoder()
PLAN = {"item_type": "plan", "name": "count", "args": [["det1"]], "kwargs": {"num": 1}}
EXPOSING_PLAN = {**PLAN, "kwargs": {"num": 10, "delay": 0.1}}
"""A plan that spends its time as real ones do (exposures, settling): ~1 s, the RunEngine mostly waiting."""
PROFILE = '''\
"""Benchmark profile (bench/queue_manager.py): simulated devices, standard plans, a RunEngine without
BestEffortCallback, the same for stationd and bluesky-queueserver."""
from bluesky import RunEngine
from bluesky.plans import count, grid_scan, list_scan, rel_scan, scan
from ophyd.sim import det, det1, det2, motor, motor1, motor2

RE = RunEngine({})
'''
TARGETS = {  # stationd figure: (bound, True when the figure must be at most the bound)
    "queue_item_add_per_s": (4_000, False), "queue_item_add_batch_per_s": (20_000, False),
    "plans_per_s": (100, False), "status_rtt_running_p99_us": (1_000, True),
    "status_rtt_exposing_p99_us": (1_000, True),
}  # fmt: skip


# -- helpers ----------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def centiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) of `samples`."""
    c = statistics.quantiles(samples, n=100, method="inclusive")
    return c[49], c[98]


def descendants(pid: int) -> list[int]:
    """`pid` and every live descendant (from /proc/<pid>/task/*/children)."""
    out = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                out += descendants(int(child))
    except FileNotFoundError:
        return []
    return out


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)


def rss_mb(pid: int) -> float:
    try:
        return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1]) / 1024
    except (FileNotFoundError, TypeError):
        return 0.0


def proc_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return "?"
    words = [
        Path(argv[0].decode(errors="replace")).name,
        *(a.decode(errors="replace") for a in argv[1:] if a),
    ]
    return " ".join(words)[:90]


def cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds of all live threads of one process (schedstat: finer than clock ticks)."""
    ns = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            ns += int((task / "schedstat").read_text().split()[0])
    except FileNotFoundError:
        pass
    return ns


def idle_cpu(pids: list[int], seconds: float) -> tuple[dict[int, float], dict[int, float]]:
    """Percent of one core per process over `seconds`: from utime+stime, and from schedstat."""
    t0, ticks, ns = time.monotonic(), {p: cpu_ticks(p) for p in pids}, {p: cpu_ns(p) for p in pids}
    time.sleep(seconds)
    wall, hz = time.monotonic() - t0, os.sysconf("SC_CLK_TCK")
    return (
        {p: 100 * (cpu_ticks(p) - ticks[p]) / hz / wall for p in pids},
        {p: 100 * (cpu_ns(p) - ns[p]) / 1e9 / wall for p in pids},
    )


def run_quiet(cmd: list[str], what: str, **kwargs: Any) -> None:
    """Run an install step; on failure show its output and stop."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise RuntimeError(f"{what} failed ({' '.join(cmd)}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


# -- installs (benchmark only) -----------------------------------------------------------------------------
def ensure_redis() -> str:
    """Path of redis-server, installed with apt-get when missing."""
    if path := shutil.which("redis-server"):
        return path
    print("installing redis-server (apt-get) for the incumbent", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_quiet(["apt-get", "update", "-qq"], "apt-get update", env=env)
    run_quiet(["apt-get", "install", "-y", "-qq", "redis-server"], "apt-get install redis-server", env=env)
    if path := shutil.which("redis-server"):
        return path
    raise RuntimeError("redis-server is still not on PATH after apt-get install")


def ensure_bench_venv() -> Path:
    """.bench-venv with the incumbent, re-created when the wanted versions change; returns its bin/."""
    same = [f"{name}=={importlib.metadata.version(name)}" for name in ("bluesky", "ophyd", "pyzmq")]
    wanted = [INCUMBENT, "matplotlib", *same]
    stamp = BENCH_VENV / ".installed"
    if stamp.is_file() and stamp.read_text().split() == wanted:
        return BENCH_VENV / "bin"
    print(f"installing {' '.join(wanted)} into {BENCH_VENV} (benchmark only)", flush=True)
    shutil.rmtree(BENCH_VENV, ignore_errors=True)
    run_quiet([sys.executable, "-m", "venv", str(BENCH_VENV)], "creating .bench-venv")
    pip = [str(BENCH_VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    run_quiet([*pip, "--quiet", *wanted], "pip install into .bench-venv")
    stamp.write_text("\n".join(wanted))
    return BENCH_VENV / "bin"


# -- a client for both -------------------------------------------------------------------------------------
class Conn:
    """One DEALER socket with bluesky-queueserver's JSON envelope. Each request carries a correlation frame:
    stationd's ROUTER and the incumbent's REP both echo the frames before the empty delimiter. Lean on
    purpose, so that the client's own cost weighs little in a round trip (it is the same for both systems):
    a blocking receive with a timeout instead of a poll and a receive, msgspec's JSON codec."""

    def __init__(self, zctx: zmq.Context[Any], addr: str, name: str, timeout: float = 30.0) -> None:
        self.sock = zctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(addr)
        self.name, self.timeout, self.n = name, timeout, 0
        self._rcvtimeo = -2  # none set yet

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        self.n += 1
        corr = self.n.to_bytes(8, "little")
        req: dict[str, Any] = {"method": method} if params is None else {"method": method, "params": params}
        wait_ms = int((timeout or self.timeout) * 1000)
        if wait_ms != self._rcvtimeo:
            self.sock.setsockopt(zmq.RCVTIMEO, wait_ms)
            self._rcvtimeo = wait_ms
        self.sock.send_multipart([corr, b"", _JSON_ENCODER.encode(req)])
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                frames = self.sock.recv_multipart()
            except zmq.Again:
                frames = None
            if frames is None or time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no reply to {method} within {timeout or self.timeout:g} s")
            if frames[0] == corr:
                return msgspec.json.decode(frames[-1])

    def ok(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        reply = self.call(method, params, timeout)
        if reply.get("success") is False:
            raise RuntimeError(f"{self.name}: {method} failed: {reply.get('msg')}")
        return reply

    def close(self) -> None:
        self.sock.close()


def first_reply(zctx: zmq.Context[Any], addr: str, proc: subprocess.Popen[bytes], t0: float) -> float:
    """Seconds from `t0` (perf_counter at Popen) to the first successful `status` reply; asks every 20 ms."""
    sock = zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RECONNECT_IVL, 5)  # retry the connect every 5 ms, not libzmq's default 100 ms
    sock.connect(addr)
    next_ask = 0.0
    try:
        while True:
            now = time.perf_counter() - t0
            if proc.poll() is not None or now > 60:
                raise RuntimeError(f"{addr} did not answer; see the log above")
            if now >= next_ask:
                try:
                    sock.send_multipart([b"launch", b"", b'{"method": "status"}'], zmq.NOBLOCK)
                except zmq.Again:  # queue full while the server is not up yet
                    pass
                next_ask = now + 0.02
            if sock.poll(5) and json.loads(sock.recv_multipart()[-1]).get("success") is not False:
                return time.perf_counter() - t0
    finally:
        sock.close()


# -- the two systems ---------------------------------------------------------------------------------------
class System(abc.ABC):
    """A server under test: its root process, control address, log and the PIDs it ever had."""

    name = ""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.info = f"tcp://127.0.0.1:{free_port()}"
        self.log = tmp / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: dict[int, str] = {}  # pid: start time, so that a reused PID is never killed
        self.conn: Conn | None = None

    @abc.abstractmethod
    def command(self) -> tuple[list[str], dict[str, str]]:
        """The command line and environment that launch this system."""

    def launch(self, zctx: zmq.Context[Any]) -> float:
        cmd, env = self.command()
        with open(self.log, "wb") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            return first_reply(zctx, self.control, self.proc, t0)
        except RuntimeError:
            print(self.log.read_text()[-3000:], file=sys.stderr)
            raise

    def pids(self) -> list[int]:
        """The root process and its live descendants (remembered for the final cleanup)."""
        pids = descendants(self.proc.pid) if self.proc else []
        self.seen.update((p, _started(p)) for p in pids)
        return pids

    def shutdown(self, conn: Conn | None) -> None:
        """Ask for an orderly stop (SIGTERM by default)."""
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, conn: Conn | None) -> None:
        """Stop every process this system had, by PID: orderly first, then SIGKILL."""
        if self.proc is None:
            return
        self.pids()
        if self.proc.poll() is None:
            try:
                self.shutdown(conn)
                self.proc.wait(20)
            except (subprocess.TimeoutExpired, TimeoutError, RuntimeError) as exc:
                print(f"  {self.name}: orderly stop failed ({exc}); killing", flush=True)
        deadline = time.monotonic() + 5
        for pid, started in sorted(self.seen.items()):
            while _running(pid, started) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _running(pid, started):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return []


def _started(pid: int) -> str:
    """Start time of a process (field 22 of proc(5)); "" once it is gone."""
    fields = _stat(pid)
    return fields[19] if fields else ""


def _running(pid: int, started: str) -> bool:
    """The same process (same start time) is still there and not a zombie."""
    fields = _stat(pid)
    return bool(fields) and fields[19] == started and fields[0] != "Z"


class Stationd(System):
    name = "stationd"

    def __init__(self, tmp: Path, profile: Path, worker_cpu_policy: str = "auto") -> None:
        super().__init__(tmp)
        self.config = tmp / "stationd.toml"
        self.config.write_text(
            "[queue_manager]\n"
            f"startup_dir = {json.dumps(str(profile))}\n"
            f"user_group_permissions = {json.dumps(str(profile / 'user_group_permissions.yaml'))}\n"
            f"worker_cpu_policy = {json.dumps(worker_cpu_policy)}\n"
        )

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [sys.executable, "-m", "stationd.daemon", "serve", "--state-dir", str(self.tmp / "state"),
               "--control-addr", self.control, "--info-addr", self.info,
               "--config", str(self.config)]  # fmt: skip
        return cmd, {k: v for k, v in os.environ.items() if not k.startswith("STATIOND_")}


class Incumbent(System):
    name = "incumbent"

    def __init__(self, tmp: Path, profile: Path, bin_dir: Path, redis_port: int) -> None:
        super().__init__(tmp)
        self.profile, self.bin_dir, self.redis_port = profile, bin_dir, redis_port

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [str(self.bin_dir / "start-re-manager"), "--zmq-control-addr", self.control,
               "--zmq-info-addr", self.info, "--zmq-publish-console", "ON",
               "--redis-addr", f"127.0.0.1:{self.redis_port}",
               "--redis-name-prefix", f"bench{uuid.uuid4().hex[:12]}",
               "--startup-dir", str(self.profile),
               "--existing-plans-devices", str(self.profile / "existing_plans_and_devices.yaml"),
               "--update-existing-plans-devices", "ENVIRONMENT_OPEN",
               "--user-group-permissions", str(self.profile / "user_group_permissions.yaml")]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QSERVER_", "STATIOND_"))}
        return cmd, env

    def shutdown(self, conn: Conn | None) -> None:
        """`manager_stop` (safe_off: also when a plan is left running); SIGTERM when it does not answer."""
        try:
            if conn is None:
                raise RuntimeError("no connection")
            conn.ok("manager_stop", {"option": "safe_off"}, timeout=5)
        except (RuntimeError, TimeoutError):
            self.proc.send_signal(signal.SIGTERM)


class Redis:
    """redis-server on a free loopback port, nothing persisted."""

    def __init__(self, exe: str, tmp: Path) -> None:
        self.port = free_port()
        with open(tmp / "redis.log", "wb") as log:
            self.proc = subprocess.Popen(
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(tmp), "--daemonize", "no"], stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self._pong():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{(tmp / 'redis.log').read_text()[-2000:]}")
            time.sleep(0.02)

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- measurements ------------------------------------------------------------------------------------------
Check = Callable[[dict[str, Any]], bool]


def wait_status(conn: Conn, done: Check, timeout: float) -> tuple[float, list[float]]:
    """Poll `status` every POLL_S until `done(status)`; (seconds from the call, RTTs in µs)."""
    t0, rtts = time.perf_counter(), []
    while True:
        t = time.perf_counter()
        status = conn.call("status")
        rtts.append((time.perf_counter() - t) * 1e6)
        if done(status):
            return time.perf_counter() - t0, rtts
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{conn.name}: state not reached within {timeout:g} s; last status {status}")
        time.sleep(POLL_S)


def env_change(conn: Conn, method: str, exists: bool, timeout: float) -> tuple[float, float]:
    """(seconds until accepted, seconds until status shows the environment `exists` and manager idle)."""
    t0 = time.perf_counter()
    conn.ok(method)
    accepted = time.perf_counter() - t0
    wait_status(
        conn, lambda s: s["worker_environment_exists"] is exists and s["manager_state"] == "idle", timeout
    )
    return accepted, time.perf_counter() - t0


def status_rtt(conn: Conn) -> tuple[float, float]:
    samples = []
    for _ in range(RTT_WARMUP + RTT_N):
        t = time.perf_counter()
        conn.call("status")
        samples.append((time.perf_counter() - t) * 1e6)
    return centiles(samples[RTT_WARMUP:])


def sequential_adds(conn: Conn) -> tuple[float, float, float]:
    """(items/s, RTT p50 ms, RTT p99 ms) of ADD_N sequential `queue_item_add` after ADD_WARMUP."""
    for _ in range(ADD_WARMUP):
        conn.ok("queue_item_add", {"item": PLAN, **USER})
    conn.ok("queue_clear")
    rtts = []
    t0 = time.perf_counter()
    for _ in range(ADD_N):
        t = time.perf_counter()
        reply = conn.call("queue_item_add", {"item": PLAN, **USER})
        rtts.append((time.perf_counter() - t) * 1e3)
        if not reply.get("success"):
            raise RuntimeError(f"{conn.name}: queue_item_add failed: {reply.get('msg')}")
    rate = ADD_N / (time.perf_counter() - t0)
    qsize = reply["qsize"]
    if qsize != ADD_N:
        raise RuntimeError(f"{conn.name}: queue holds {qsize} items after {ADD_N} adds")
    return (rate, *centiles(rtts))


def batch_add(conn: Conn, n: int) -> float:
    """Seconds of one `queue_item_add_batch` of n items (queue must be empty)."""
    t0 = time.perf_counter()
    reply = conn.ok("queue_item_add_batch", {"items": [PLAN] * n, **USER}, timeout=60)
    seconds = time.perf_counter() - t0
    if reply["qsize"] != n:
        raise RuntimeError(f"{conn.name}: queue holds {reply['qsize']} items after a batch of {n}")
    return seconds


def execute(conn: Conn, n: int) -> dict[str, Any]:
    """Run n plans through the queue; plans/s, per-plan span and start-to-start."""
    conn.ok("history_clear")
    batch_add(conn, n)
    t0 = time.perf_counter()
    conn.ok("queue_start")
    seconds, _ = wait_status(
        conn,
        lambda s: s["manager_state"] == "idle" and s["items_in_queue"] == 0 and s["items_in_history"] == n,
        timeout=30 + n * 2.0,
    )
    seconds = time.perf_counter() - t0
    history = conn.ok("history_get")["items"]
    bad = [i["result"] for i in history if i["result"]["exit_status"] != "completed"]
    if len(history) != n or bad:
        raise RuntimeError(f"{conn.name}: {len(history)} items in history, not completed: {bad[:2]}")
    res = sorted((i["result"] for i in history), key=lambda r: r["time_start"])
    spans = [(r["time_stop"] - r["time_start"]) * 1e3 for r in res]
    starts = [(b["time_start"] - a["time_start"]) * 1e3 for a, b in itertools.pairwise(res)]
    return {"plans": n, "plans_per_s": n / seconds, "seconds": seconds,
            "plan_span_p50_ms": statistics.median(spans),
            "start_to_start_p50_ms": statistics.median(starts) if starts else None}  # fmt: skip


def status_while_running(conn: Conn, plans_per_s: float, plan: dict[str, Any] = PLAN) -> tuple[float, float]:
    """(p50, p99 µs) of STATUS_LOAD_N `status` requests, one every POLL_S, while the queue runs `plan` back
    to back (enough queued for the whole window at `plans_per_s`); then the queue is stopped and
    emptied."""
    conn.ok("history_clear")
    window = STATUS_LOAD_N * (POLL_S + 0.002)
    reserve = int(plans_per_s * window * 1.5) + 10
    for i in range(0, reserve, BATCH_N):
        conn.ok("queue_item_add_batch", {"items": [plan] * min(BATCH_N, reserve - i), **USER})
    conn.ok("queue_start")
    rtts: list[float] = []
    while len(rtts) < STATUS_LOAD_N:
        t = time.perf_counter()
        status = conn.call("status")
        rtts.append((time.perf_counter() - t) * 1e6)
        if status["items_in_queue"] == 0:
            raise RuntimeError(f"{conn.name}: the queue ran out after {len(rtts)} status samples")
        time.sleep(POLL_S)
    conn.ok("queue_stop")
    wait_status(conn, lambda s: s["manager_state"] == "idle", 60)
    conn.ok("queue_clear")
    conn.ok("history_clear")
    return centiles(rtts)


def measure(system: System, zctx: zmq.Context[Any], n_plans: int) -> dict[str, Any]:
    """Every figure of one system, printed as it comes; the system is stopped by the caller."""
    r: dict[str, Any] = {}

    def say(text: str) -> None:
        print(f"  {system.name}: {text}", flush=True)

    r["launch_to_first_status_s"] = system.launch(zctx)
    say(f"launch -> first status {r['launch_to_first_status_s']:.3f} s")
    conn = system.conn = Conn(zctx, system.control, system.name)
    time.sleep(SETTLE_S)
    accepted, r["environment_open_s"] = env_change(conn, "environment_open", True, 120)
    r["environment_open_accept_s"] = accepted
    say(f"environment_open {r['environment_open_s']:.3f} s (accepted after {accepted * 1e3:.1f} ms)")
    r["status_rtt_idle_p50_us"], r["status_rtt_idle_p99_us"] = p50, p99 = status_rtt(conn)
    say(f"status RTT idle p50 {p50:.0f} µs, p99 {p99:.0f} µs")
    time.sleep(1.0)  # let the status requests' effects settle before the idle window
    pids = system.pids()
    cpu, fine = idle_cpu(pids, IDLE_S)
    rss = {p: rss_mb(p) for p in pids}
    r["idle_cpu_percent"], r["idle_cpu_percent_schedstat"] = sum(cpu.values()), sum(fine.values())
    r["rss_mb"], r["processes"] = sum(rss.values()), len(pids)
    r["per_process"] = [
        {"pid": p, "cmd": proc_name(p), "idle_cpu_percent": round(cpu[p], 2),
         "idle_cpu_percent_schedstat": round(fine[p], 3), "rss_mb": round(rss[p], 1)}
        for p in pids
    ]  # fmt: skip
    say(f"idle CPU {r['idle_cpu_percent']:.2f} % over {IDLE_S:g} s (schedstat "
        f"{r['idle_cpu_percent_schedstat']:.3f} %), RSS {r['rss_mb']:.0f} MB")  # fmt: skip
    for p in r["per_process"]:
        say(f"    pid {p['pid']}: {p['idle_cpu_percent_schedstat']:.3f} %, {p['rss_mb']:.0f} MB  {p['cmd']}")
    rate, p50, p99 = sequential_adds(conn)
    r["queue_item_add_per_s"], r["queue_item_add_rtt_p50_ms"], r["queue_item_add_rtt_p99_ms"] = rate, p50, p99
    say(f"queue_item_add x{ADD_N}: {rate:,.0f} items/s, RTT p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    t = time.perf_counter()
    conn.ok("queue_clear")
    r["queue_clear_1000_ms"] = (time.perf_counter() - t) * 1e3
    seconds = batch_add(conn, BATCH_N)
    r["queue_item_add_batch_per_s"], r["queue_item_add_batch_s"] = BATCH_N / seconds, seconds
    say(f"queue_item_add_batch of {BATCH_N}: {BATCH_N / seconds:,.0f} items/s ({seconds * 1e3:.1f} ms)")
    conn.ok("queue_clear")
    pids, cpu0 = system.pids(), time.perf_counter()
    before = {p: cpu_ns(p) for p in pids}
    r.update(x := execute(conn, n_plans))
    r["cpu_ms_per_plan"] = sum(cpu_ns(p) - before[p] for p in pids) / 1e6 / n_plans
    r["cpu_percent_while_running"] = (
        sum(cpu_ns(p) - before[p] for p in pids) / 1e7 / (time.perf_counter() - cpu0)
    )
    say(f"{n_plans} x count([det1], num=1): {x['plans_per_s']:.2f} plans/s ({x['seconds']:.2f} s)")
    say(f"  CPU {r['cpu_ms_per_plan']:.1f} ms per plan ({r['cpu_percent_while_running']:.0f} % of a core)")
    say(
        f"  plan span p50 {x['plan_span_p50_ms']:.1f} ms, "
        f"start-to-start p50 {x['start_to_start_p50_ms']:.1f} ms"
    )
    p50, p99 = status_while_running(conn, x["plans_per_s"])
    r["status_rtt_running_p50_us"], r["status_rtt_running_p99_us"] = p50, p99
    r["status_samples_running"] = STATUS_LOAD_N
    say(f"status RTT while plans run ({STATUS_LOAD_N} samples) p50 {p50:.0f} µs, p99 {p99:.0f} µs")
    p50, p99 = status_while_running(conn, 1.0, EXPOSING_PLAN)
    r["status_rtt_exposing_p50_us"], r["status_rtt_exposing_p99_us"] = p50, p99
    say(f"status RTT while ~1 s plans run (count num=10 delay=0.1) p50 {p50:.0f} µs, p99 {p99:.0f} µs")
    accepted, r["environment_close_s"] = env_change(conn, "environment_close", False, 60)
    r["environment_close_accept_s"] = accepted
    say(f"environment_close {r['environment_close_s']:.3f} s (accepted after {accepted * 1e3:.1f} ms)")
    return r


def bare_run_engine(profile: Path, n: int = 50) -> tuple[float, float]:
    """(median ms, p99 ms) of count([det1], num=1) in a RunEngine of the profile, in this process."""
    ns: dict[str, Any] = {}
    path = profile / "bench_profile.py"
    exec(compile(path.read_text(), str(path), "exec"), ns)
    re_, count, det1 = ns["RE"], ns["count"], ns["det1"]
    times = []
    for _ in range(5 + n):
        t = time.perf_counter()
        re_(count([det1], num=1))
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times[5:]), centiles(times[5:])[1]


def write_profile(tmp: Path) -> Path:
    profile = tmp / "profile"
    profile.mkdir()
    (profile / "bench_profile.py").write_text(PROFILE)
    import bluesky_queueserver  # stationd's own copy: the same default permissions file as the incumbent's

    sim = Path(bluesky_queueserver.__file__).parent / "profile_collection_sim"
    shutil.copy(sim / "user_group_permissions.yaml", profile / "user_group_permissions.yaml")
    return profile


# -- report ------------------------------------------------------------------------------------------------
HIGHER_BETTER = {"queue_item_add_per_s", "queue_item_add_batch_per_s", "plans_per_s"}
COMPARED = ["launch_to_first_status_s", "environment_open_s", "environment_close_s", "status_rtt_idle_p50_us",
            "status_rtt_idle_p99_us", "status_rtt_running_p50_us", "status_rtt_running_p99_us",
            "status_rtt_exposing_p50_us", "status_rtt_exposing_p99_us",
            "idle_cpu_percent", "idle_cpu_percent_schedstat", "rss_mb", "queue_item_add_per_s",
            "queue_item_add_rtt_p50_ms", "queue_item_add_rtt_p99_ms", "queue_item_add_batch_per_s",
            "queue_clear_1000_ms", "plans_per_s", "plan_span_p50_ms", "start_to_start_p50_ms",
            "cpu_ms_per_plan"]  # fmt: skip


def rounded(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 4) if abs(v) < 10 else round(v, 1)
    return v


def report(res: dict[str, dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    s, i = res.get("stationd", {}), res.get("incumbent", {})
    out: dict[str, Any] = {
        "ratio_note": "ratios > 1 mean stationd is better: stationd_over_incumbent for rates, "
        "incumbent_over_stationd for times, latencies, CPU and memory",
    }
    for key in COMPARED:
        entry = {"stationd": rounded(s.get(key)), "incumbent": rounded(i.get(key))}
        sv, iv = s.get(key), i.get(key)
        if isinstance(sv, float | int) and isinstance(iv, float | int):
            if key in HIGHER_BETTER:
                entry["stationd_over_incumbent"] = rounded(sv / iv) if iv else None
            else:
                entry["incumbent_over_stationd"] = rounded(iv / sv) if sv else None
        out[key] = entry
    for key in ("environment_open_accept_s", "environment_close_accept_s", "processes", "plans", "seconds",
                "queue_item_add_batch_s", "status_samples_running",
                "cpu_percent_while_running"):  # fmt: skip
        out[key] = {"stationd": rounded(s.get(key)), "incumbent": rounded(i.get(key))}
    out["per_process"] = {k: v.get("per_process") for k, v in res.items()}
    out.update(extra)
    out["targets_met"] = {k: (s[k] <= b if at_most else s[k] >= b) if k in s else None
                          for k, (b, at_most) in TARGETS.items()}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plans", type=int, default=200, help="plans executed on stationd (default 200)")
    ap.add_argument("--incumbent-plans", type=int, default=20, help="plans on the incumbent (default 20)")
    ap.add_argument("--skip-incumbent", action="store_true", help="measure stationd only")
    ap.add_argument(
        "--worker-cpu-policy", choices=["auto", "normal", "idle"], default="auto",
        help="stationd's [queue_manager] worker_cpu_policy (default auto, the daemon's default)",
    )  # fmt: skip
    args = ap.parse_args()

    bin_dir = redis_exe = None
    if not args.skip_incumbent:
        bin_dir, redis_exe = ensure_bench_venv(), ensure_redis()
    tmp = Path(tempfile.mkdtemp(prefix="sdbench-queue-"))
    zctx = zmq.Context()
    res: dict[str, dict[str, Any]] = {}
    extra: dict[str, Any] = {
        "plan": "count([det1], num=1)",
        "worker_cpu_policy": args.worker_cpu_policy,
        "profile": "ophyd.sim det, det1, det2, motor, motor1, motor2; bluesky.plans; RunEngine without BEC",
        "notes": [
            f"plans executed: {args.plans} on stationd, {args.incumbent_plans} on the incumbent (it "
            "completes about 2 plans/s: its manager notices a plan's end by a 0.5 s poll)",
            f"environment_open is sent {SETTLE_S:g} s after the first status reply; stationd opens it in a "
            "warm spare worker started at launch, the incumbent spawns its worker then",
            "idle_cpu_percent: utime+stime over 5 s (one clock tick = 0.2 %); _schedstat: the same from "
            "/proc/<pid>/task/*/schedstat, finer; cpu_ms_per_plan from schedstat over the whole execution",
            "incumbent RSS and CPU: watchdog + manager + worker; its Redis is in incumbent_redis_rss_mb",
            "status RTT while running is taken at each system's own plan rate (stationd runs ~70x more "
            "plans per second, keeping about one core busy), so it is not an equal-load comparison; "
            "status_rtt_exposing is: both run the same ~1 s plans (count num=10 delay=0.1) back to back",
        ],
    }
    redis = None
    try:
        profile = write_profile(tmp)
        print("stationd:", flush=True)
        system: System = Stationd(tmp, profile, args.worker_cpu_policy)
        try:
            res["stationd"] = measure(system, zctx, args.plans)
        finally:
            system.stop(system.conn)
        if not args.skip_incumbent:
            print(f"incumbent ({INCUMBENT}, Redis {shutil.which('redis-server')}):", flush=True)
            redis = Redis(redis_exe, tmp)
            system = Incumbent(tmp, profile, bin_dir, redis.port)
            try:
                res["incumbent"] = measure(system, zctx, args.incumbent_plans)
                redis_mb = rss_mb(redis.proc.pid)
                extra["incumbent_redis_rss_mb"] = round(redis_mb, 1)
                extra["incumbent_with_redis_rss_mb"] = round(res["incumbent"]["rss_mb"] + redis_mb, 1)
            finally:
                system.stop(system.conn)
        median, p99 = bare_run_engine(profile)
        extra["bare_run_engine_ms"] = {"p50": round(median, 2), "p99": round(p99, 2)}
        print(f"bare in-process RunEngine: {median:.2f} ms per plan (p99 {p99:.2f} ms)", flush=True)
    finally:
        if redis is not None:
            redis.stop()
        zctx.destroy(linger=0)
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report(res, extra)))


if __name__ == "__main__":
    main()

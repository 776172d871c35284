"""Front-door benchmark of stationd: starts the real daemon (free loopback ports) and measures, with targets:

1. status RTT: p50/p99 µs of 2,000 sequential `status` from one sync Client after 200 warm-ups (p50 <= 200).
2. concurrent req/s: 8 DEALERs (2 spawned processes x 4, one request in flight each) send 5,000 `status`
   each; total requests / wall time (>= 15,000/s).
3. pub/sub events/s: 200,000 events from the daemon's `Publisher` (PUB socket here) to one SUB in a spawned
   process, timed there from first to last message; gaps in `seq` count as lost (>= 50,000/s).
4. launch: Popen to READY=1 on a fake NOTIFY_SOCKET, and to the first `status` reply; median of 5 (<= 0.3 s).
5. idle CPU: utime+stime of the daemon and its children over 10 s idle, % of one core (<= 0.1 %); clock
   ticks resolve only 0.1 % over 10 s, so schedstat's finer figure is printed beside it.
6. RSS: VmRSS of the daemon at the end (<= 60 MB); and whether it imported bluesky or ophyd (it must not).

Run: .venv/bin/python bench/front_door.py   (the last output line is one JSON object with every figure)
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing as mp
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
from pathlib import Path

import zmq

from stationd.daemon.publisher import Publisher
from stationd.protocol.client import Client
from stationd.protocol.codec import Encoding

WARMUP, RTT_N = 200, 2_000
PROCS, SOCKS_PER_PROC, PER_CLIENT = 2, 4, 5_000
EVENTS, LAUNCHES, IDLE_S = 200_000, 5, 10.0
STATUS = b'{"method":"status"}'
TARGETS = {  # figure: (bound, True when the figure must be at most the bound)
    "status_rtt_p50_us": (200, True), "concurrent_req_per_s": (15_000, False),
    "pubsub_events_per_s": (50_000, False), "launch_to_first_reply_s": (0.3, True),
    "idle_cpu_percent": (0.1, True), "rss_mb": (60, True), "imports_bluesky": (False, True),
}  # fmt: skip


def free_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class Daemon:
    """`stationd serve` as a subprocess with its own state dir, ports, log file and notify socket."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="sdbench-"))  # short: AF_UNIX paths are <= 107 bytes
        self.control, self.info = free_addr(), free_addr()
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.tmp / "notify"))
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> tuple[float, float]:
        """Start; return (seconds to READY=1, seconds to the first `status` reply), both from Popen."""
        cmd = [sys.executable, "-m", "stationd.daemon", "serve", "--state-dir", str(self.tmp / "state"),
               "--control-addr", self.control, "--info-addr", self.info]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("STATIOND_")}
        env["NOTIFY_SOCKET"] = str(self.tmp / "notify")
        zctx = zmq.Context()
        sock = zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.RECONNECT_IVL, 5)  # retry the connect every 5 ms, not libzmq's default 100 ms
        sock.connect(self.control)
        t_ready, t_reply, next_ask = None, None, 0.0
        try:
            with open(self.tmp / "daemon.log", "wb") as log:
                t0 = time.perf_counter()
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            while t_ready is None or t_reply is None:
                now = time.perf_counter() - t0
                if self.proc.poll() is not None or now > 20:
                    raise RuntimeError(f"daemon did not start:\n{(self.tmp / 'daemon.log').read_text()}")
                if t_reply is None and now >= next_ask:  # ask again every 20 ms until a reply comes
                    sock.send_multipart([b"launch", b"", STATUS])
                    next_ask = now + 0.02
                readable = zmq.select([sock, fd := self.notify.fileno()], [], [], 0.005)[0]
                if sock in readable and b'"success":false' not in sock.recv_multipart()[-1]:
                    t_reply = t_reply or time.perf_counter() - t0
                if fd in readable and "READY=1" in self.notify.recv(4096).decode().split("\n"):
                    t_ready = time.perf_counter() - t0
        finally:
            zctx.destroy(linger=0)
        return t_ready, t_reply

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def launches() -> tuple[float, float]:
    """Median (seconds to READY=1, seconds to first reply) over LAUNCHES fresh daemons."""
    times = []
    for i in range(LAUNCHES):
        daemon = Daemon()
        try:
            times.append(daemon.launch())
        finally:
            daemon.stop()
        print(f"  launch {i + 1}: READY=1 after {times[-1][0]:.3f} s, first reply after {times[-1][1]:.3f} s")
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def status_rtt(addr: str) -> tuple[float, float]:
    """p50, p99 in µs of sequential `status` round trips from one sync Client."""
    samples = []
    with Client(addr, timeout=5.0) as client:
        for _ in range(WARMUP + RTT_N):
            t = time.perf_counter_ns()
            client.request("status")
            samples.append((time.perf_counter_ns() - t) / 1000)
    centiles = statistics.quantiles(samples[WARMUP:], n=100)
    return centiles[49], centiles[98]


def client_worker(addr: str, ready: mp.Event, go: mp.Event, out: mp.Queue) -> None:
    """Spawned: SOCKS_PER_PROC DEALERs, one request in flight each, PER_CLIENT each; put (start, end)."""
    zctx = zmq.Context()
    socks = [zctx.socket(zmq.DEALER) for _ in range(SOCKS_PER_PROC)]
    poller = zmq.Poller()
    for s in socks:
        s.connect(addr)
        s.send_multipart([b"w", b"", STATUS])  # warm-up: connected before the clock starts
        s.recv_multipart()
        poller.register(s, zmq.POLLIN)
    ready.set()
    go.wait()
    left = dict.fromkeys(socks, PER_CLIENT)
    t0 = time.monotonic()  # CLOCK_MONOTONIC: comparable across processes
    for s in socks:
        s.send_multipart([b"%d" % left[s], b"", STATUS])
    while any(left.values()):
        events = poller.poll(5_000)
        if not events:
            raise RuntimeError("no reply within 5 s")
        for s, _ in events:
            frames = s.recv_multipart()
            assert frames[0] == b"%d" % left[s] and b'"success":false' not in frames[-1], frames
            left[s] -= 1
            if left[s]:
                s.send_multipart([b"%d" % left[s], b"", STATUS])
    out.put((t0, time.monotonic()))
    zctx.destroy(linger=0)


def concurrent_rate(ctx: mp.context.SpawnContext, addr: str, procs: list) -> float:
    """Aggregate `status` req/s of PROCS x SOCKS_PER_PROC clients, clock from first start to last end."""
    out, go, readies = ctx.Queue(), ctx.Event(), [ctx.Event() for _ in range(PROCS)]
    for ready in readies:
        procs.append(ctx.Process(target=client_worker, args=(addr, ready, go, out)))
        procs[-1].start()
    if not all(ready.wait(30) for ready in readies):
        raise RuntimeError("a client worker did not start")
    go.set()
    spans = [out.get(timeout=120) for _ in range(PROCS)]
    return PROCS * SOCKS_PER_PROC * PER_CLIENT / (max(e for _, e in spans) - min(s for s, _ in spans))


def subscriber(pub_addr: str, report_addr: str) -> None:
    """Spawned: count `event.bench.tick` messages; push b"ready" at the first message, then the result."""
    zctx = zmq.Context()
    sub, push = zctx.socket(zmq.SUB), zctx.socket(zmq.PUSH)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"event.")
    sub.connect(pub_addr)
    push.connect(report_addr)
    sub.recv_multipart()
    push.send(b"ready")
    count, last_seq, lost, first, last = 0, 0, 0, 0.0, 0.0
    while sub.poll(2_000):  # ends at `done`, or after 2 s of silence if `done` itself was dropped
        topic, raw = sub.recv_multipart()
        if topic == b"event.bench.done":
            break
        if topic == b"event.bench.tick":
            last = time.perf_counter()
            first = first or last
            seq = json.loads(raw)["seq"]
            lost += seq - last_seq - 1
            last_seq, count = seq, count + 1
    push.send_json({"count": count, "seconds": last - first, "lost": lost + EVENTS - last_seq})
    zctx.destroy(linger=1000)


def pubsub_rate(ctx: mp.context.SpawnContext, procs: list) -> tuple[float, int, float]:
    """(events/s at the subscriber, events lost, publish calls/s) through the daemon's Publisher."""
    zctx = zmq.Context()
    pub, pull = zctx.socket(zmq.PUB), zctx.socket(zmq.PULL)
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pull.setsockopt(zmq.RCVTIMEO, 60_000)
    pub.bind(pub_addr := free_addr())
    pull.bind(report_addr := free_addr())
    publisher = Publisher(pub, Encoding.JSON)
    try:
        procs.append(ctx.Process(target=subscriber, args=(pub_addr, report_addr)))
        procs[-1].start()
        deadline = time.monotonic() + 30
        while not pull.poll(10):  # until the subscriber got one: it is connected and subscribed
            if time.monotonic() > deadline:
                raise RuntimeError("the subscriber never connected")
            publisher.publish_event("bench", "warmup", {})
        assert pull.recv() == b"ready"
        t0 = time.perf_counter()
        for i in range(EVENTS):
            publisher.publish_event("bench", "tick", {"i": i})
        send_rate = EVENTS / (time.perf_counter() - t0)
        publisher.publish_event("bench", "done", {})
        result = pull.recv_json()  # zmq.Again after 60 s of silence
        return result["count"] / max(result["seconds"], 1e-9), result["lost"], send_rate
    finally:
        zctx.destroy(linger=0)


def cpu_used(pid: int) -> tuple[int, int]:
    """(utime+stime clock ticks, on-CPU ns of all threads from schedstat) of `pid` and its descendants."""
    ticks = ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        ns += int((task / "schedstat").read_text().split()[0])
        for child in (task / "children").read_text().split():
            ticks_c, ns_c = cpu_used(int(child))
            ticks, ns = ticks + ticks_c, ns + ns_c
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return ticks + int(fields[11]) + int(fields[12]), ns  # utime, stime: fields 14 and 15 of proc(5)


def idle_cpu(pid: int) -> tuple[float, float]:
    """(percent of one core from utime+stime, the same from schedstat) over IDLE_S seconds."""
    (ticks0, ns0), t0 = cpu_used(pid), time.monotonic()
    time.sleep(IDLE_S)
    (ticks1, ns1), wall = cpu_used(pid), time.monotonic() - t0
    return 100 * (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK") / wall, 100 * (ns1 - ns0) / 1e9 / wall


def footprint(pid: int) -> tuple[float, bool]:
    """(VmRSS in MB, whether bluesky/ophyd files are in the daemon's memory map: False if not installed)."""
    rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1]) / 1024
    installed = any(importlib.util.find_spec(name) for name in ("bluesky", "ophyd"))
    maps = Path(f"/proc/{pid}/maps").read_text()
    return rss, installed and ("bluesky" in maps or "ophyd" in maps)


def measure(daemon: Daemon, ctx: mp.context.SpawnContext, procs: list, r: dict) -> None:
    """Fill `r` with every figure, printing each as it comes."""
    r["launch_to_ready_s"], r["launch_to_first_reply_s"] = launches()
    print(f"launch, median of {LAUNCHES}: READY=1 {r['launch_to_ready_s']:.3f} s, "
          f"first status reply {r['launch_to_first_reply_s']:.3f} s")  # fmt: skip
    daemon.launch()
    pid = daemon.proc.pid
    r["status_rtt_p50_us"], r["status_rtt_p99_us"] = status_rtt(daemon.control)
    print(f"status RTT, {RTT_N} sequential: p50 {r['status_rtt_p50_us']:.0f} µs, "
          f"p99 {r['status_rtt_p99_us']:.0f} µs")  # fmt: skip
    r["concurrent_clients"] = PROCS * SOCKS_PER_PROC
    r["concurrent_req_per_s"] = concurrent_rate(ctx, daemon.control, procs)
    print(f"{r['concurrent_clients']} concurrent clients: {r['concurrent_req_per_s']:,.0f} req/s")
    r["pubsub_events_per_s"], r["pubsub_lost"], send_rate = pubsub_rate(ctx, procs)
    print(f"pub/sub: {r['pubsub_events_per_s']:,.0f} events/s received, {r['pubsub_lost']} lost of "
          f"{EVENTS:,} (publish_event calls: {send_rate:,.0f}/s)")  # fmt: skip
    time.sleep(1.0)  # let the clients' disconnects and the last QS_Info settle before the idle window
    r["idle_cpu_percent"], fine = idle_cpu(pid)
    print(f"idle CPU, {IDLE_S:g} s: {r['idle_cpu_percent']:.2f} % of a core (schedstat: {fine:.3f} %)")
    r["rss_mb"], r["imports_bluesky"] = footprint(pid)
    print(f"daemon RSS: {r['rss_mb']:.1f} MB; imported bluesky/ophyd: {r['imports_bluesky']}")


def main() -> None:
    ctx = mp.get_context("spawn")
    procs, r, daemon = [], {}, Daemon()
    try:
        measure(daemon, ctx, procs, r)
    finally:
        daemon.stop()
        for p in procs:
            p.join(5)
            p.kill()  # a no-op once it has exited
            p.join()
    out = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
    out["targets_met"] = {k: r[k] <= b if at_most else r[k] >= b for k, (b, at_most) in TARGETS.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

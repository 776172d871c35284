"""DAQ coordinator benchmark, against a real daemon on loopback with simulated sources (`sim://`).

1. start-to-Acquiring: `daq_start` round trip with 10 simulated sources (the reply comes when the DAQ is
   Acquiring); p50/p95 over N DAQs (target <= 50 ms).
2. stop-to-Completed: from sending `daq_stop` to the Completed event on the info stream, with and without
   the FITS write (Merging -> Releasing in the DAQ's history); p50/p95 (target <= 50 ms without the write).
3. await-state wake-up: an `await_daq_state(Stopped)` is pending, another client stops the DAQ; the time from
   the Stopped transition (its timestamp in the DAQ's history) to the await's reply arriving; p50/p95 (target
   p50 <= 2 ms; OCM's automatic stop waits in `awaitInterval` steps, 5 s by default).
4. 100 concurrent DAQs started, then stopped, from one asyncio client: errors and wall time.
5. FITS merge throughput (MB/s): `write_product` of 10 primary sources x 100,000 rows x 3 columns, in-process
   (median of 5), and the same size end to end in the daemon (Merging -> Releasing of one DAQ).

Every process the script starts is stopped by PID at the end. Run: make bench-daq  or
.venv/bin/python bench/daq.py [--daqs 50]   (the last output line is one JSON object with every figure)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from stationd.actors.daq_coordinator.product import write_product
from stationd.protocol.client import AsyncClient, Client, Subscriber
from stationd.protocol.daq import DaqState, DaqStatus, DaqSubState, SourceResult
from stationd.protocol.daq_client import AsyncDaqClient, DaqClient
from stationd.protocol.errors import DeadlineExceeded

SOURCES_10 = " ".join(f"det{i}@sim://det{i}?rate=100" for i in range(10))


def free_addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def centiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 2),
    }


def launch(tmp: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    control, info = free_addr(), free_addr()
    cmd = [sys.executable, "-m", "stationd.daemon", "serve", "--state-dir", str(tmp / "state")]
    cmd += ["--control-addr", control, "--info-addr", info]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATIOND_")}
    with open(tmp / "daemon.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    # one ping: ZMQ holds it until the daemon binds its socket, so this waits exactly until it answers
    with Client(control, timeout=30) as client:
        try:
            client.request("ping")
        except DeadlineExceeded:
            proc.kill()
            proc.wait()
            raise RuntimeError((tmp / "daemon.log").read_text()[-2000:]) from None
    return proc, control, info


def _step(status: DaqStatus, substate: DaqSubState) -> float:
    return next(t.timestamp for t in status.history if t.substate == substate)


def start_and_stop(daq: DaqClient, sub: Subscriber, n: int) -> dict[str, dict[str, float]]:
    starts, stops, stops_no_write = [], [], []
    for i in range(n):
        t0 = time.perf_counter()
        daq.start_daq(f"S{i}", prim_sources=SOURCES_10)
        starts.append((time.perf_counter() - t0) * 1000)
        t1 = time.perf_counter()
        daq.stop_daq(f"S{i}")
        while True:
            data = sub.recv(timeout=30).payload["data"]
            if data["id"] == f"S{i}" and data["substate"] == "Completed":
                break
        total = (time.perf_counter() - t1) * 1000
        status = daq.get_daq_status(f"S{i}")
        write = (_step(status, DaqSubState.RELEASING) - _step(status, DaqSubState.MERGING)) * 1000
        stops.append(total)
        stops_no_write.append(total - write)
    return {
        "start_to_acquiring_ms": centiles(starts),
        "stop_to_completed_ms": centiles(stops),
        "stop_to_completed_without_fits_write_ms": centiles(stops_no_write),
    }


async def await_wakeups(control: str, n: int) -> dict[str, float]:
    samples = []
    async with (
        AsyncDaqClient(client=AsyncClient(control, timeout=10)) as waiter,
        AsyncDaqClient(client=AsyncClient(control, timeout=10)) as commander,
    ):
        for i in range(n):
            daq_id = f"W{i}"
            await commander.start_daq(daq_id, prim_sources="cam@sim://cam")
            pending = asyncio.ensure_future(
                waiter.await_daq_state(daq_id, DaqState.ACQUIRING, DaqSubState.STOPPED, timeout=30)
            )
            await commander.get_daq_status(daq_id)  # the await has reached the daemon before the stop
            await commander.stop_daq(daq_id)
            await pending
            arrived = time.time()
            status = await commander.get_daq_status(daq_id)
            samples.append((arrived - _step(status, DaqSubState.STOPPED)) * 1000)
    return centiles(samples)


async def concurrent(control: str, n: int) -> dict[str, float]:
    async with AsyncDaqClient(client=AsyncClient(control, timeout=60)) as daq:
        t0 = time.perf_counter()
        started = await asyncio.gather(
            *(daq.start_daq(f"C{i}", prim_sources="a@sim://a b@sim://b") for i in range(n)),
            return_exceptions=True,
        )
        t1 = time.perf_counter()
        stopped = await asyncio.gather(*(daq.stop_daq(f"C{i}") for i in range(n)), return_exceptions=True)
        t2 = time.perf_counter()
        done = await asyncio.gather(
            *(daq.await_daq_state(f"C{i}", DaqState.COMPLETED, DaqSubState.COMPLETED, 60) for i in range(n)),
            return_exceptions=True,
        )
        t3 = time.perf_counter()
    errors = [r for r in [*started, *stopped, *done] if isinstance(r, BaseException)]
    errors += [
        r for r in done if not isinstance(r, BaseException) and r.status.substate != DaqSubState.COMPLETED
    ]
    return {
        "daqs": n,
        "errors": len(errors),
        "start_all_s": round(t1 - t0, 3),
        "stop_all_s": round(t2 - t1, 3),
        "until_all_completed_s": round(t3 - t1, 3),
    }


def merge_throughput(tmp: Path) -> float:
    rows = 100_000
    rng = np.random.default_rng(1)
    sources = [
        (
            f"det{i}",
            SourceResult(
                columns={
                    "TIME": np.arange(rows, dtype="f8"),
                    "COUNTER": np.arange(rows),
                    "VALUE": rng.random(rows),
                }
            ),
        )
        for i in range(10)
    ]
    rates = []
    for k in range(5):
        t0 = time.perf_counter()
        info = write_product(
            tmp / f"m{k}.fits", file_id=f"M{k}", orig_file="m.fits", user_keywords=[], primary=sources
        )
        rates.append(info.size / 2**20 / (time.perf_counter() - t0))
        (tmp / f"m{k}.fits").unlink()
    return round(statistics.median(rates), 1)


def merge_in_daemon(daq: DaqClient) -> dict[str, float]:
    sources = " ".join(f"det{i}@sim://det{i}?rate=100000&duration=1" for i in range(10))
    daq.start_daq("BIG", prim_sources=sources)
    done = daq.await_daq_state("BIG", DaqState.COMPLETED, DaqSubState.COMPLETED, 120).status
    seconds = _step(done, DaqSubState.RELEASING) - _step(done, DaqSubState.MERGING)
    size_mb = Path(done.result).stat().st_size / 2**20
    return {
        "size_mb": round(size_mb, 1),
        "merge_s": round(seconds, 3),
        "mb_per_s": round(size_mb / seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--daqs", type=int, default=50, help="DAQs per latency figure (default 50)")
    args = ap.parse_args()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-daq-") as tmp_name:
        tmp = Path(tmp_name)
        figures["fits_merge_mb_per_s_in_process"] = merge_throughput(tmp)
        proc, control, info = launch(tmp)
        try:
            with (
                Subscriber(info, ["event.daq_coordinator.state_changed"]) as sub,
                DaqClient(client=Client(control, timeout=30)) as daq,
            ):
                daq.start_daq("warm-up", prim_sources="cam@sim://cam")  # first use: imports, caches
                daq.stop_daq("warm-up")
                daq.await_daq_state("warm-up", DaqState.COMPLETED, DaqSubState.COMPLETED, 30)
                figures |= start_and_stop(daq, sub, args.daqs)
                figures["await_wakeup_ms"] = asyncio.run(await_wakeups(control, args.daqs))
                figures["concurrent"] = asyncio.run(concurrent(control, 100))
                figures["fits_merge_in_daemon"] = merge_in_daemon(daq)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    targets = {
        "start_to_acquiring_p50_le_50ms": figures["start_to_acquiring_ms"]["p50"] <= 50,  # type: ignore[index]
        "stop_to_completed_without_write_p50_le_50ms": figures["stop_to_completed_without_fits_write_ms"][
            "p50"
        ]  # type: ignore[index]
        <= 50,
        "await_wakeup_p50_le_2ms": figures["await_wakeup_ms"]["p50"] <= 2,  # type: ignore[index]
        "concurrent_no_errors": figures["concurrent"]["errors"] == 0,  # type: ignore[index]
    }
    figures["targets_met"] = targets
    for key, value in figures.items():
        print(f"{key:45} {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

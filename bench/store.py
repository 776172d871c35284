"""Storage benchmark of the observation store (SQLite backend; MongoDB on nx-27017 if it works), with targets:

1. insert rows/s: --rows observations (default 1,000,000; 20 DUTs x 10 fields, 1-3 of 50 tags, 1,000 run ids,
   30 days) built first, then inserted into a fresh `SQLiteStore` 10,000 per `insert`, 4 calls in flight
   (the writer thread commits them together); only the inserts are timed (>= 100,000/s).
2. query p50/p99 ms over 200 varied queries each (parse_query + store.query, limit 20, count included):
   (a) dut_label + 2-3 dut_field__in + a 1-day created_timestamp__range (p50 <= 5), (b) tags__overlap with
   2 tags (p50 <= 10), (c) latest="dut_field" for one dut_label (p50 <= 20). The store caches counts; the
   targets are checked on "cold" figures, the cache emptied before every query; "warm" ones keep it.
3. front door: the real daemon on a copy of that file (`<state_dir>/observations.sqlite`); 500 sequential
   `observations_query` {"dut_label": "QB3", "limit": 20} after 50 warm-ups (p50 <= 1 ms).
4. database size on disk per million observations, MB: the file plus -wal after a checkpoint.
5. MongoDB (nx-27017 --db memory, --mongo-rows, default 50,000): 1 and 2 again with 20 queries of each kind
   (nx-27017 takes up to seconds per query), under "mongo", no targets; skipped with the reason if it fails.

Run: .venv/bin/python bench/store.py [--rows 100000]   (the last output line is one JSON object)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stationd.actors.observation_store.collections import OBSERVATIONS
from stationd.actors.storage.query import parse_query
from stationd.actors.storage.sqlite import SQLiteStore
from stationd.protocol.client import Client
from stationd.protocol.observations import ObservationData

BATCH, IN_FLIGHT = 10_000, 4
REPS, MONGO_REPS = 200, 20  # nx-27017 takes seconds per query
FD_WARMUP, FD_N = 50, 500
DUTS = [f"QB{i}" for i in range(1, 21)]
FIELDS = {"frequency": "Hz", "anharmonicity": "Hz", "t1": "s", "t2_echo": "s", "t2_ramsey": "s",
          "readout_fidelity": "", "pi_amplitude": "V", "pi_duration": "s", "flux_bias": "V",
          "temperature": "K"}  # fmt: skip
TAGS = [f"tag{i:02d}" for i in range(50)]
START, DAYS = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC), 30
TARGETS = {  # figure: (bound, True when the figure must be at most the bound)
    "insert_rows_per_s": (100_000, False), "q_field_range_p50_ms": (5, True),
    "q_tags_overlap_p50_ms": (10, True), "q_latest_p50_ms": (20, True), "frontdoor_query_p50_ms": (1, True),
}  # fmt: skip


def build(n: int, rng: random.Random) -> list[ObservationData]:
    """n observations as the actor builds them, created_timestamp increasing over DAYS days."""
    runs = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(1_000)]
    step = datetime.timedelta(days=DAYS) / n
    out = []
    for i in range(n):
        field = rng.choice(list(FIELDS))
        t = START + i * step
        out.append(ObservationData(
            dut_label=(dut := rng.choice(DUTS)), dut_field=f"{dut}.{field}", value=rng.gauss(5e9, 1e8),
            unit=FIELDS[field], source={"type": "measurement_source", "run_id": runs[i * len(runs) // n]},
            tags=rng.sample(TAGS, rng.randint(1, 3)), created_timestamp=t, modified_timestamp=t,
        ))  # fmt: skip
    return out


def centiles(samples: list[float]) -> tuple[float, float]:
    c = statistics.quantiles(samples, n=100)
    return c[49], c[98]


async def insert_all(store: Any, recs: list[ObservationData]) -> float:
    """Rows/s of inserting `recs` BATCH at a time, IN_FLIGHT calls at once."""
    batches = [recs[i : i + BATCH] for i in range(0, len(recs), BATCH)]
    t0 = time.perf_counter()
    for i in range(0, len(batches), IN_FLIGHT):
        await asyncio.gather(*(store.insert("observations", b) for b in batches[i : i + IN_FLIGHT]))
    return len(recs) / (time.perf_counter() - t0)


def field_range(rng: random.Random) -> dict[str, Any]:
    dut = rng.choice(DUTS)
    fields = [f"{dut}.{f}" for f in rng.sample(list(FIELDS), rng.randint(2, 3))]
    lo = START + datetime.timedelta(seconds=rng.uniform(0, (DAYS - 1) * 86_400))
    hi = lo + datetime.timedelta(days=1)
    return {
        "dut_label": dut,
        "dut_field__in": fields,
        "created_timestamp__range": [lo.isoformat(), hi.isoformat()],
    }


QUERIES: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "field_range": field_range,
    "tags_overlap": lambda rng: {"tags__overlap": rng.sample(TAGS, 2)},
    "latest": lambda rng: {"dut_label": rng.choice(DUTS), "latest": "dut_field"},
}


async def time_queries(store: Any, rng: random.Random, r: dict[str, Any], reps: int, prefix: str) -> None:
    """p50/p99 ms of `reps` queries of each kind (after a few warm-ups), parse_query and count included;
    with SQLite twice: cold (count cache emptied before each query), then warm."""
    counts = getattr(store, "_counts", None)  # SQLiteStore's count cache
    for cold in [True, False] if counts is not None else [True]:
        await _time_queries(store, rng, r, reps, prefix, counts if cold else None)


async def _time_queries(
    store: Any, rng: random.Random, r: dict[str, Any], reps: int, prefix: str, empty: dict[Any, Any] | None
) -> None:
    warmup = max(2, reps // 20)
    suffix = "" if empty is not None or not hasattr(store, "_counts") else "_warm"
    for name, make in QUERIES.items():
        samples, found = [], []
        for _ in range(warmup + reps):
            params = make(rng)
            if empty is not None:
                empty.clear()
            t = time.perf_counter()
            page, count = await store.query("observations", parse_query(OBSERVATIONS, params))
            samples.append((time.perf_counter() - t) * 1000)
            found.append(count)
            assert len(page) == min(count, 20), (params, len(page), count)
        p50, p99 = r[f"q_{name}{suffix}_p50_ms"], r[f"q_{name}{suffix}_p99_ms"] = centiles(samples[warmup:])
        print(f"{prefix}query {name}{suffix}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, {reps} queries "
              f"(median meta.count {statistics.median(found[warmup:]):,.0f})")  # fmt: skip


async def store_phase(
    store: Any, recs: list[ObservationData], r: dict[str, Any], reps: int, name: str
) -> None:
    """Figures 1 and 2 on one store: insert `recs`, then time the queries."""
    await store.open()
    try:
        r["insert_rows_per_s"] = await insert_all(store, recs)
        print(f"{name}: inserted {len(recs):,} rows, {BATCH:,} per insert, {IN_FLIGHT} in flight: "
              f"{r['insert_rows_per_s']:,.0f} rows/s")  # fmt: skip
        await time_queries(store, random.Random(2), r, reps, prefix=f"{name}: ")
    finally:
        await store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], log: Path, ready: Callable[[], bool], procs: list[Any], **kw: Any) -> Any:
    """Popen `cmd` (output to `log`) and wait until `ready()`; RuntimeError with the log if it never is."""
    with open(log, "wb") as out:
        procs.append(proc := subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kw))
    deadline = time.monotonic() + 60
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{cmd[0]} did not start:\n{log.read_text()}")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def db_size(db: Path) -> tuple[float, float]:
    """(MB of the file plus -wal after a checkpoint, MB of -wal that closing the store left behind)."""
    wal = db.with_name(db.name + "-wal")
    left = wal.stat().st_size / 1e6 if wal.exists() else 0.0
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = db.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return size / 1e6, left


def front_door(tmp: Path, db: Path, procs: list[Any]) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, meta.count) of `observations_query` on the daemon started over a copy of `db`."""
    (state := tmp / "state").mkdir()
    shutil.copyfile(db, state / "observations.sqlite")
    control, info = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATIOND_")}
    env["NOTIFY_SOCKET"] = str(tmp / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(env["NOTIFY_SOCKET"])
        notify.settimeout(0.05)

        def ready() -> bool:
            try:
                return "READY=1" in notify.recv(4096).decode().split("\n")
            except TimeoutError:
                return False

        cmd = [sys.executable, "-m", "stationd.daemon", "serve", "--state-dir", str(state),
               "--control-addr", control, "--info-addr", info]  # fmt: skip
        daemon = start(cmd, tmp / "daemon.log", ready, procs, env=env)
    samples, params = [], {"dut_label": "QB3", "limit": 20}
    try:
        with Client(control, timeout=60) as client:
            for _ in range(FD_WARMUP + FD_N):
                t = time.perf_counter()
                reply = client.request("observations_query", params)
                samples.append((time.perf_counter() - t) * 1000)
                assert len(reply["items"]) == 20, reply
    finally:
        stop(daemon)
    return *centiles(samples[FD_WARMUP:]), reply["meta"]["count"]


def mongo(tmp: Path, rows: int, procs: list[Any]) -> dict[str, Any]:
    """Figures 1 and 2 on MongoStore over an in-memory nx-27017; {"skipped": why} when that cannot run."""
    try:
        import pymongo

        from stationd.actors.storage.mongo import MongoStore
    except ImportError as exc:
        return {"skipped": f"no MongoDB backend: {exc}"}
    nx = shutil.which("nx-27017", path=str(Path(sys.executable).parent)) or shutil.which("nx-27017")
    if nx is None:
        return {"skipped": "nx-27017 is not installed"}
    uri = f"mongodb://127.0.0.1:{(port := free_port())}"
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250) as ping:

        def ready() -> bool:
            try:
                return bool(ping.admin.command("ping"))
            except pymongo.errors.PyMongoError:
                return False

        cmd = [nx, "--db", "memory", "--host", "127.0.0.1", "-p", str(port)]
        server = start(cmd, tmp / "nx.log", ready, procs)
    r: dict[str, Any] = {"server": "nx-27017 --db memory", "rows": rows}
    try:
        store = MongoStore(uri, "stationd_bench", [OBSERVATIONS])
        asyncio.run(store_phase(store, build(rows, random.Random(3)), r, MONGO_REPS, "mongo"))
    except Exception as exc:  # the backend is in progress: report it, keep the SQLite figures
        return {"skipped": f"MongoStore failed: {type(exc).__name__}: {exc}"}
    finally:
        stop(server)
    return r


def measure(args: argparse.Namespace, tmp: Path, procs: list[Any], r: dict[str, Any]) -> None:
    """Fill `r` with every figure, printing each as it comes."""
    t0 = time.perf_counter()
    recs = build(args.rows, random.Random(1))
    r["rows"], r["build_rows_per_s"] = args.rows, args.rows / (time.perf_counter() - t0)
    print(
        f"built {args.rows:,} ObservationData: {r['build_rows_per_s']:,.0f} rows/s (not part of the insert)"
    )
    db = tmp / "observations.sqlite"
    asyncio.run(store_phase(SQLiteStore(db, [OBSERVATIONS]), recs, r, REPS, "sqlite"))
    del recs
    r["db_mb"], r["wal_left_after_close_mb"] = db_size(db)
    r["db_mb_per_million"] = r["db_mb"] * 1_000_000 / args.rows
    print(f"sqlite: {r['db_mb']:.1f} MB on disk after a checkpoint, {r['db_mb_per_million']:.1f} MB per "
          f"million rows; close() had left a {r['wal_left_after_close_mb']:.1f} MB -wal behind")  # fmt: skip
    r["frontdoor_source"] = f"copied the {args.rows:,}-row file to <state_dir>/observations.sqlite"
    r["frontdoor_query_p50_ms"], r["frontdoor_query_p99_ms"], r["frontdoor_count"] = front_door(
        tmp, db, procs
    )
    print(f"front door, {r['frontdoor_source']}: {FD_N} sequential observations_query dut_label=QB3 limit=20 "
          f"(meta.count {r['frontdoor_count']:,}): p50 {r['frontdoor_query_p50_ms']:.2f} ms, "
          f"p99 {r['frontdoor_query_p99_ms']:.2f} ms")  # fmt: skip
    if args.mongo_rows > 0:
        r["mongo"] = mongo(tmp, min(args.mongo_rows, args.rows), procs)
        if "skipped" in r["mongo"]:
            print(f"mongo: skipped: {r['mongo']['skipped']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="observations for SQLite (default 1e6)")
    parser.add_argument("--mongo-rows", type=int, default=50_000, help="observations for MongoDB (0: skip)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sdstore-"))  # short: AF_UNIX paths are <= 107 bytes
    procs: list[subprocess.Popen[bytes]] = []
    r: dict[str, Any] = {}
    try:
        measure(args, tmp, procs, r)
    finally:
        for proc in procs:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    def rounded(d: dict[str, Any]) -> dict[str, Any]:
        return {k: rounded(v) if isinstance(v, dict) else round(v, 3) if isinstance(v, float) else v
                for k, v in d.items()}  # fmt: skip

    out = rounded(r)
    out["targets_met"] = {k: r[k] <= b if at_most else r[k] >= b for k, (b, at_most) in TARGETS.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

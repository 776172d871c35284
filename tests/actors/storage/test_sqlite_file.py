"""What only the SQLite file has: refusing files it must not touch, kill -9 durability.

The behaviour both backends share is in test_store.py."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from stationd.actors.storage import SQLiteStore, parse_query
from stationd.protocol.errors import StorageError
from tests.actors.storage.records import RECS

ROOT = Path(__file__).resolve().parents[3]


async def test_a_file_from_a_newer_stationd_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 1398033988")
        conn.execute("PRAGMA user_version = 99")
        conn.execute("CREATE TABLE precious (x)")
    before = path.read_bytes()
    with pytest.raises(StorageError, match="layout version 99, newer than this stationd reads"):
        await SQLiteStore(path, [RECS]).open()
    assert path.read_bytes() == before


async def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA application_id = 42")
    with pytest.raises(StorageError, match="another application"):
        await SQLiteStore(path, [RECS]).open()


async def test_a_corrupt_file_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StorageError, match="file is not a database"):
        await SQLiteStore(path, [RECS]).open()
    assert path.read_bytes() == b"this is not a database at all" * 100


async def test_an_acknowledged_write_survives_kill_9_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.storage_writer",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    acknowledged = [int(await proc.stdout.readline()) for _ in range(200)]
    proc.kill()  # SIGKILL: no chance to flush or close anything
    await proc.wait()
    s = SQLiteStore(path, [RECS])
    await s.open()
    try:
        found = {r.rec_id for r in await s.get_many("recs", acknowledged)}
        assert found == set(acknowledged)
        got, _ = await s.query("recs", parse_query(RECS, {"tags__overlap": "t3", "limit": 0}))
        assert {r.rec_id for r in got} >= {i for i in acknowledged if (i - 1) % 7 == 3}
    finally:
        await s.close()

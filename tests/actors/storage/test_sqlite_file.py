"""What only the SQLite file has: refusing files it must not touch, kill -9 durability.

The behaviour both backends share is in test_store.py."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import msgspec
import pytest

from stationd.actors.storage import Collection, SQLiteStore, parse_query
from stationd.actors.storage.sqlite import Op
from stationd.protocol.errors import Conflict, StorageError
from tests.actors.storage.records import RECS, Rec, rec

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


async def test_a_layout_1_file_gets_its_array_side_tables_migrated_to_value_sets(tmp_path: Path) -> None:
    """Layout 1 kept one row per array item in `recs__tags(value, rid)`; layout 2 keeps value sets."""
    path = tmp_path / "s.sqlite"
    s = SQLiteStore(path, [RECS])
    await s.open()
    await s.insert("recs", [rec("a", tags=["x", "y"]), rec("b", tags=["y"]), rec("c")])
    await s.close()
    with sqlite3.connect(path) as conn:  # turn it into what layout 1 wrote
        conn.execute("DROP TABLE recs__tags__sets")
        conn.execute("DROP TABLE recs__tags__members")
        conn.execute("DROP INDEX recs__tags")
        conn.execute("ALTER TABLE recs DROP COLUMN tags")
        conn.execute(
            "CREATE TABLE recs__tags (value NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (value, rid))"
        )
        conn.executemany("INSERT INTO recs__tags VALUES (?, ?)", [("x", 1), ("y", 1), ("y", 2)])
        conn.execute("PRAGMA user_version = 1")
    s = SQLiteStore(path, [RECS])
    await s.open()
    try:
        got, count = await s.query("recs", parse_query(RECS, {"tags__overlap": ["y"]}))
        assert [r.name for r in got] == ["a", "b"] and count == 2
        got, _ = await s.query("recs", parse_query(RECS, {"tags__contains": ["x", "y"]}))
        assert [r.name for r in got] == ["a"]
    finally:
        await s.close()
    with sqlite3.connect(path) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "recs__tags" not in tables and conn.execute("PRAGMA user_version").fetchone()[0] == 2


async def test_value_sets_no_row_uses_any_more_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    s = SQLiteStore(path, [RECS])
    await s.open()
    try:
        (grown,) = await s.insert("recs", [rec("grown", tags=["a"])])
        (other,) = await s.insert("recs", [rec("other", tags=["a"])])
        for n in range(2, 30):  # a list growing one item per update, as observation sets do
            grown = msgspec.structs.replace(grown, tags=[f"t{i}" for i in range(n)])
            await s.update("recs", [grown])
        got, count = await s.query("recs", parse_query(RECS, {"tags__overlap": ["a"]}))
        assert [r.name for r in got] == ["other"] and count == 1  # the set {a} is still used by `other`
        with sqlite3.connect(path) as conn:
            sets = conn.execute("SELECT count(*) FROM recs__tags__sets").fetchone()[0]
            members = conn.execute("SELECT count(*) FROM recs__tags__members").fetchone()[0]
        assert (sets, members) == (2, 1 + 29)
        await s.delete("recs", [grown.rec_id, other.rec_id])
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM recs__tags__members").fetchone()[0] == 0
        await s.insert("recs", [rec("again", tags=["a", "t0"])])  # new sets after removals
        got, _ = await s.query("recs", parse_query(RECS, {"tags__contains": ["t0", "a"]}))
        assert [r.name for r in got] == ["again"]
    finally:
        await s.close()


async def test_write_many_is_all_or_nothing_across_collections(tmp_path: Path) -> None:
    other = Collection("others", Rec, "rec_id")
    s = SQLiteStore(tmp_path / "s.sqlite", [RECS, other])
    await s.open()
    try:
        (a,) = await s.insert("recs", [rec("a")])
        await s.write_many(
            [Op("delete", "recs", [a.rec_id]), Op("insert", "others", [rec("moved", rec_id=1)])]
        )
        assert await s.get("recs", a.rec_id) is None and (await s.get("others", 1)).name == "moved"
        with pytest.raises(Conflict):  # the second insert repeats an id: the first write is undone too
            await s.write_many(
                [
                    Op("upsert", "recs", [rec("back", rec_id=7)]),
                    Op("insert", "others", [rec("dup", rec_id=1)]),
                ]
            )
        assert await s.get("recs", 7) is None
    finally:
        await s.close()


class _Unencodable:
    """A value no encoder knows (a client bug or a plugin's object): the write fails, the writer lives."""


async def test_a_write_that_raises_an_unexpected_error_fails_alone_and_later_writes_go_on(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite", [RECS])
    await store.open()
    try:
        with pytest.raises(StorageError, match="_Unencodable"):
            await store.insert(RECS.name, [rec("bad", payload={"v": _Unencodable()})])
        (stored,) = await store.insert(RECS.name, [rec("good")])
        assert (await store.get(RECS.name, stored.rec_id)).name == "good"
        assert await store.count(RECS.name) == 1  # nothing of the failed write was kept
    finally:
        await store.close()

"""What only the SQLite file has: refusing files it must not touch, kill -9 durability.

The behaviour both backends share is in test_store.py."""

from __future__ import annotations

import asyncio
import datetime
import os
import sqlite3
import sys
import threading
import uuid
from pathlib import Path

import msgspec
import pytest

from stationd.actors.storage import Collection, SQLiteStore, parse_query
from stationd.actors.storage.sqlite import SCHEMA_VERSION, Op
from stationd.protocol.codec import msgpack_encoder
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
        assert "recs__tags" not in tables
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


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


async def test_queued_writes_committed_together_fail_alone(tmp_path: Path) -> None:
    """Writes queued behind each other are committed in one transaction, first without savepoints; when one
    fails, the others are written again, each in a savepoint, and only the failing one is lost (with the
    value set it created)."""
    s = SQLiteStore(tmp_path / "s.sqlite", [RECS])
    await s.open()
    try:
        await s.insert("recs", [rec("taken", rec_id=1000)])
        big = 40  # more records than an inline write takes: every write goes through the writer thread

        def batch(name: str, tag: str) -> list[Rec]:
            return [rec(f"{name}{i}", tags=[tag]) for i in range(big)]

        with s._writing:  # hold the writer, so that the writes below queue up and are committed together
            writes = [
                asyncio.ensure_future(s.insert("recs", batch("a", "new-a"))),
                asyncio.ensure_future(s.insert("recs", [*batch("b", "new-b"), rec("dup", rec_id=1000)])),
                asyncio.ensure_future(s.insert("recs", batch("c", "new-a"))),
            ]
            # each task queues its write in its first step, which runs before a callback scheduled after it
            queued = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(queued.set_result, None)
            await queued
        a, b, c = await asyncio.gather(*writes, return_exceptions=True)
        assert isinstance(b, Conflict)
        assert [r.name for r in a] == [f"a{i}" for i in range(big)]
        assert [r.name for r in c] == [f"c{i}" for i in range(big)]
        assert await s.count("recs") == 1 + 2 * big
        got, count = await s.query("recs", parse_query(RECS, {"tags__overlap": ["new-a"], "limit": 0}))
        assert count == 2 * big and {r.name for r in got} == {f"{p}{i}" for p in "ac" for i in range(big)}
        assert (await s.query("recs", parse_query(RECS, {"tags__overlap": ["new-b"]})))[1] == 0
    finally:
        await s.close()


async def test_the_checkpointer_keeps_the_wal_small_and_close_removes_it(tmp_path: Path) -> None:
    """The WAL is copied into the file on a thread of its own, and the writer begins its next transaction
    after that, so that the WAL starts over instead of growing with every bulk insert."""
    path = tmp_path / "s.sqlite"
    wal = path.with_name(path.name + "-wal")
    s = SQLiteStore(path, [RECS])
    await s.open()
    try:
        await s.insert("recs", [rec(f"r{i}", tags=[f"t{i % 7}"]) for i in range(5_000)])
        one = wal.stat().st_size
        for n in range(10):
            await s.insert("recs", [rec(f"r{n}-{i}", tags=[f"t{i % 7}"]) for i in range(5_000)])
        assert wal.stat().st_size < 3 * one  # without checkpoints: ~11 times
        assert await s.count("recs") == 55_000
    finally:
        await s.close()
    assert not wal.exists()
    assert not [t for t in threading.enumerate() if t.name.startswith("sqlite-checkpoint-")]


async def test_a_layout_2_file_keeps_its_map_docs_and_new_rows_get_array_docs(tmp_path: Path) -> None:
    """Layout 2 stored every record as a msgpack map; layout 3 stores new ones as arrays of the values
    (`_doc_fields` names their field list) and reads both, rewriting nothing."""
    path = tmp_path / "s.sqlite"
    s = SQLiteStore(path, [RECS])
    await s.open()
    old = await s.insert("recs", [rec("a", tags=["x"], meta={"k": [1, 2]}), rec("b", n=3, uid=uuid.uuid4())])
    await s.close()
    with sqlite3.connect(path) as conn:  # turn it into what layout 2 wrote
        encode = msgpack_encoder().encode
        conn.executemany("UPDATE recs SET doc = ? WHERE _rid = ?", [(encode(r), r.rec_id) for r in old])
        conn.execute("ALTER TABLE recs DROP COLUMN _doc_fields")
        conn.execute("DROP TABLE _stationd_doc_fields")
        conn.execute("PRAGMA user_version = 2")
    s = SQLiteStore(path, [RECS])
    await s.open()
    try:
        assert await s.get_many("recs", [r.rec_id for r in old]) == old
        (new,) = await s.insert("recs", [rec("c", tags=["x"])])
        await s.update("recs", [msgspec.structs.replace(old[1], name="B")])
        got, count = await s.query("recs", parse_query(RECS, {"tags__overlap": ["x"]}))
        assert got == [old[0], new] and count == 2
        assert (await s.get("recs", old[1].rec_id)).name == "B"
    finally:
        await s.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        kinds = conn.execute("SELECT _rid, _doc_fields IS NULL FROM recs ORDER BY _rid").fetchall()
        assert kinds == [(old[0].rec_id, 1), (old[1].rec_id, 0), (new.rec_id, 0)]  # updated: an array now


class RecV1(msgspec.Struct, frozen=True, kw_only=True):
    rec_id: int | None = None
    name: str
    gone: str = "gone"
    at: datetime.datetime
    created_timestamp: datetime.datetime


class RecV2(msgspec.Struct, frozen=True, kw_only=True):
    """RecV1 with a field removed, one added and the others reordered."""

    rec_id: int | None = None
    added: int = 7
    at: datetime.datetime
    name: str
    created_timestamp: datetime.datetime


async def test_array_docs_are_read_by_the_fields_they_were_written_with(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    t = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)

    async def reopened(record: type[msgspec.Struct]) -> SQLiteStore:
        s = SQLiteStore(path, [Collection("recs", record, "rec_id")])
        await s.open()
        return s

    s = await reopened(RecV1)
    await s.insert("recs", [RecV1(name="v1", gone="kept", at=t, created_timestamp=t)])
    await s.close()
    s = await reopened(RecV2)
    try:
        await s.insert("recs", [RecV2(name="v2", added=1, at=t, created_timestamp=t)])
        assert await s.get_many("recs", [1, 2]) == [
            RecV2(rec_id=1, name="v1", at=t, created_timestamp=t),
            RecV2(rec_id=2, name="v2", added=1, at=t, created_timestamp=t),
        ]
    finally:
        await s.close()
    s = await reopened(RecV1)  # back to the first fields: a third list, the second's docs still read
    try:
        assert await s.get_many("recs", [1, 2]) == [
            RecV1(rec_id=1, name="v1", gone="kept", at=t, created_timestamp=t),
            RecV1(rec_id=2, name="v2", at=t, created_timestamp=t),
        ]
    finally:
        await s.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM _stationd_doc_fields").fetchone()[0] == 3

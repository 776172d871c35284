"""The SQLite backend: all-or-nothing writes, ids, reopening, refusing files it must not touch, migrations."""

from __future__ import annotations

import asyncio
import datetime
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

from stationd.actors.storage import Collection, SQLiteStore, parse_query
from stationd.protocol.errors import Conflict, NotFound, StorageError
from tests.actors.storage.records import RECS, Rec

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
ROOT = Path(__file__).resolve().parents[3]


def rec(name: str, **kw: object) -> Rec:
    return Rec(name=name, at=T0, created_timestamp=T0, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "state.sqlite", [RECS])
    await s.open()
    yield s
    await s.close()


async def test_insert_assigns_increasing_ids_and_get_returns_the_records(store: SQLiteStore) -> None:
    first = await store.insert("recs", [rec("a"), rec("b")])
    second = await store.insert("recs", [rec("c")])
    assert [r.rec_id for r in first + second] == [1, 2, 3]
    assert await store.get("recs", 2) == first[1]
    assert await store.get("recs", 99) is None
    assert [r.name for r in await store.get_many("recs", [3, 99, 1])] == ["c", "a"]


async def test_a_batch_with_a_duplicate_id_writes_nothing(store: SQLiteStore) -> None:
    await store.insert("recs", [rec("a", rec_id=5)])
    with pytest.raises(Conflict, match="exists already"):
        await store.insert("recs", [rec("b", rec_id=6), rec("c", rec_id=5)])
    assert await store.count("recs") == 1
    assert await store.get("recs", 6) is None


async def test_update_replaces_and_refuses_the_whole_batch_if_one_id_is_missing(store: SQLiteStore) -> None:
    (a, b) = await store.insert("recs", [rec("a", tags=["x"]), rec("b")])
    await store.update("recs", [msgspec.structs.replace(a, name="A", tags=["y"])])
    assert (await store.get("recs", a.rec_id)).name == "A"
    got, _ = await store.query("recs", parse_query(RECS, {"tags__overlap": ["y"]}))
    assert [r.rec_id for r in got] == [a.rec_id]
    got, _ = await store.query("recs", parse_query(RECS, {"tags__overlap": ["x"]}))
    assert got == []  # the side table follows the update
    with pytest.raises(NotFound, match="no record with rec_id 42"):
        await store.update("recs", [msgspec.structs.replace(b, name="B"), rec("ghost", rec_id=42)])
    assert (await store.get("recs", b.rec_id)).name == "b"


async def test_upsert_creates_or_replaces(store: SQLiteStore) -> None:
    (a,) = await store.insert("recs", [rec("a")])
    created = await store.upsert("recs", [msgspec.structs.replace(a, name="A"), rec("new", rec_id=10)])
    assert created == [False, True]
    assert [r.name for r in await store.get_many("recs", [a.rec_id, 10])] == ["A", "new"]
    (nxt,) = await store.insert("recs", [rec("after")])
    assert nxt.rec_id == 11  # ids continue after the largest one given


async def test_delete_removes_records_and_their_array_values(store: SQLiteStore) -> None:
    recs = await store.insert("recs", [rec("a", tags=["t"]), rec("b", tags=["t"])])
    assert await store.delete("recs", [recs[0].rec_id, 77]) == 1
    got, count = await store.query("recs", parse_query(RECS, {"tags__contains": ["t"]}))
    assert count == 1 and got[0].name == "b"


async def test_values_of_any_type_round_trip_exactly(store: SQLiteStore) -> None:
    arr = np.arange(6, dtype=np.complex128).reshape(2, 3) * (1 + 2j)
    (r,) = await store.insert("recs", [rec("a", payload=arr, meta={"nested": {"list": [1, 2.5, "x"]}})])
    back = await store.get("recs", r.rec_id)
    # `payload: Any` comes back as decoded by msgpack: the ndarray extension restores the array
    np.testing.assert_array_equal(back.payload, arr)
    assert back.payload.dtype == arr.dtype
    assert back.meta == {"nested": {"list": [1, 2.5, "x"]}}


async def test_concurrent_writers_are_committed_in_few_transactions(store: SQLiteStore) -> None:
    results = await asyncio.gather(*[store.insert("recs", [rec(f"r{i}")]) for i in range(300)])
    ids = sorted(r[0].rec_id for r in results)
    assert ids == list(range(1, 301))
    assert await store.count("recs") == 300


async def test_records_survive_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    s = SQLiteStore(path, [RECS])
    await s.open()
    await s.insert("recs", [rec("kept", tags=["t"])])
    await s.close()
    s = SQLiteStore(path, [RECS])
    await s.open()
    try:
        got, _ = await s.query("recs", parse_query(RECS, {"tags__overlap": "t"}))
        assert [r.name for r in got] == ["kept"]
        (nxt,) = await s.insert("recs", [rec("next")])
        assert nxt.rec_id == 2
    finally:
        await s.close()


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


class OldRec(msgspec.Struct, frozen=True, kw_only=True):
    rec_id: int | None = None
    name: str
    at: datetime.datetime
    created_timestamp: datetime.datetime


async def test_a_field_added_to_the_record_type_gets_its_column_filled_from_the_records(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite"
    old = SQLiteStore(path, [Collection("recs", OldRec, "rec_id")])
    await old.open()
    await old.insert("recs", [OldRec(name="a", at=T0, created_timestamp=T0)])
    await old.close()
    new = SQLiteStore(path, [RECS])
    await new.open()
    try:
        got, count = await new.query(
            "recs", parse_query(RECS, {"name": "a", "kind__isnull": True, "tags__isnull": False})
        )
        assert count == 1 and got[0].tags == [] and got[0].kind is None
        await new.insert("recs", [rec("b", tags=["t"], kind="k")])
        got, _ = await new.query("recs", parse_query(RECS, {"kind": "k", "tags__overlap": "t"}))
        assert [r.name for r in got] == ["b"]
    finally:
        await new.close()


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

"""What only the MongoDB backend has: a server that can go away, several daemons sharing one database, and
the document layout other MongoDB clients see."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import bson
import msgspec
import pymongo
import pytest

from stationd.actors.storage import Collection, MongoStore, parse_query
from stationd.protocol.errors import Conflict, StorageError
from tests.actors.storage.conftest import Backend, NxServer, free_port, mongo_backend
from tests.actors.storage.records import RECS, T0, rec


@pytest.fixture
def mongo(mongo_uri: str, mongo_admin: pymongo.MongoClient) -> Iterator[Backend]:
    b = mongo_backend(mongo_uri, mongo_admin)
    yield b
    b.discard_all()


@pytest.fixture
async def store(mongo: Backend) -> AsyncIterator[MongoStore]:
    s = mongo.store()
    await s.open()
    yield s
    await s.close()


async def test_a_lost_server_gives_storage_errors_and_the_store_works_again_once_it_is_back(
    tmp_path: Path,
) -> None:
    server = NxServer(
        tmp_path / "nx", db=str(tmp_path / "nx.sqlite")
    )  # a file: the data outlives the process
    await asyncio.to_thread(server.start)
    try:
        store = MongoStore(server.uri, "station", [RECS], server_selection_timeout_ms=500)
        await store.open()
        try:
            await store.insert("recs", [rec("kept")])
            everything = parse_query(RECS, {})
            server.kill()  # SIGKILL: connections drop, nothing answers on the port
            with pytest.raises(StorageError, match="query of recs failed, the server cannot be reached"):
                await store.query("recs", everything)
            with pytest.raises(StorageError, match="insert into recs failed, the server cannot be reached"):
                await store.insert("recs", [rec("lost")])
            await asyncio.to_thread(server.start)  # same port, same file
            got, count = await store.query("recs", everything)
            assert [r.name for r in got] == ["kept"] and count == 1
            (after,) = await store.insert("recs", [rec("after")])
            assert after.rec_id == 2
        finally:
            await store.close()
    finally:
        server.kill()


async def test_opening_against_no_server_fails_with_a_storage_error() -> None:
    store = MongoStore(
        f"mongodb://127.0.0.1:{free_port()}", "station", [RECS], server_selection_timeout_ms=300
    )
    with pytest.raises(StorageError, match="open failed, the server cannot be reached"):
        await store.open()
    with pytest.raises(StorageError, match="not open"):
        await store.get("recs", 1)


async def test_two_daemons_sharing_a_database_never_hand_out_the_same_id(mongo: Backend) -> None:
    a, b = mongo.store(), mongo.store()
    await a.open()
    await b.open()
    try:
        batches = await asyncio.gather(
            *[s.insert("recs", [rec(f"r{i}"), rec(f"r{i}+")]) for i in range(50) for s in (a, b)]
        )
        ids = sorted(r.rec_id for batch in batches for r in batch)
        assert ids == list(range(1, 201))
        assert await a.count("recs") == 200
    finally:
        await a.close()
        await b.close()


async def test_of_two_racing_batches_sharing_an_id_exactly_one_is_written_whole(mongo: Backend) -> None:
    a, b = mongo.store(), mongo.store()
    await a.open()
    await b.open()
    try:
        results = await asyncio.gather(
            a.insert("recs", [rec("a", rec_id=i) for i in range(1, 21)]),
            b.insert("recs", [rec("b", rec_id=i) for i in [*range(21, 41), 20]]),  # the shared id comes last
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["Conflict", "list"]
        winner = next(r for r in results if isinstance(r, list))
        got, count = await a.query("recs", parse_query(RECS, {"limit": 0}))
        assert count == len(winner) and got == sorted(
            winner, key=lambda r: r.rec_id
        )  # the loser left nothing
    finally:
        await a.close()
        await b.close()


async def test_documents_hold_queryable_columns_and_the_exact_record(
    store: MongoStore, mongo_admin: pymongo.MongoClient
) -> None:
    at = T0 + datetime.timedelta(microseconds=7)
    (r,) = await store.insert(
        "recs", [rec("Straße", flag=True, at=at, tags=["t"], meta={"a.b": {"c": [1]}}, payload={"any": 1})]
    )
    raw = mongo_admin[store.database]["recs"].find_one({"rec_id": r.rec_id})
    assert isinstance(raw["_id"], bson.ObjectId)  # the record id is a field of its own, never `_id`
    assert raw["at"] == 1_767_225_600_000_007  # microseconds since the epoch: BSON dates keep milliseconds
    assert raw["flag"] is True and raw["tags"] == ["t"] and raw["payload"] == 1 and raw["uid"] is None
    assert raw["meta"] == {"a%2Eb": {"%": '{"c":[1]}', "c": "[1]"}}
    assert raw["_cf"]["name"] == "strasse"
    assert msgspec.msgpack.decode(raw["doc"], type=type(r)) == r
    indexes = {
        tuple(ix["key"]): ix.get("unique", False) for ix in mongo_admin[store.database]["recs"].list_indexes()
    }
    assert indexes[("rec_id",)] is True
    assert {("created_timestamp",), ("name",), ("kind", "at"), ("tags",)} <= indexes.keys()


async def test_a_duplicate_given_id_is_refused_before_anything_is_written(store: MongoStore) -> None:
    await store.insert("recs", [rec("a", rec_id=3)])
    with pytest.raises(Conflict, match="a record with rec_id 3 exists already"):
        await store.insert("recs", [rec("b", rec_id=4), rec("c", rec_id=3)])
    assert [r.rec_id for r in (await store.query("recs", parse_query(RECS, {})))[0]] == [3]


async def test_a_database_from_a_newer_stationd_is_refused_and_left_untouched(
    mongo: Backend, mongo_admin: pymongo.MongoClient
) -> None:
    s = mongo.store()
    db = mongo_admin[s.database]
    db["_stationd_layout"].insert_one({"_id": "recs", "version": 99, "fields": {"future": "str"}})
    db["recs"].insert_one({"precious": True})
    with pytest.raises(StorageError, match="layout version 99, newer than this stationd reads"):
        await s.open()
    assert [ix["key"] for ix in db["recs"].list_indexes()] == [{"_id": 1}]  # no index created
    assert db["_stationd_layout"].find_one({"_id": "recs"})["version"] == 99
    assert db["recs"].count_documents({}) == 1


def test_fields_the_layout_needs_for_itself_are_refused() -> None:
    class Bad(msgspec.Struct):
        doc: str
        bad_id: int | None = None

    with pytest.raises(ValueError, match="reserved"):
        MongoStore("mongodb://127.0.0.1:1", "x", [Collection("bad", Bad, "bad_id")])

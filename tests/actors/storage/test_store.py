"""Both backends (SQLite, MongoDB): all-or-nothing writes, ids, reads, values, concurrency, reopening,
fields added to a record type."""

from __future__ import annotations

import asyncio
import datetime

import msgspec
import numpy as np
import pytest

from stationd.actors.storage import Collection, parse_query
from stationd.protocol.errors import Conflict, NotFound
from tests.actors.storage.conftest import Backend, Store
from tests.actors.storage.records import RECS, T0, rec


async def test_insert_assigns_increasing_ids_and_get_returns_the_records(store: Store) -> None:
    first = await store.insert("recs", [rec("a"), rec("b")])
    second = await store.insert("recs", [rec("c")])
    assert [r.rec_id for r in first + second] == [1, 2, 3]
    assert await store.get("recs", 2) == first[1]
    assert await store.get("recs", 99) is None
    assert [r.name for r in await store.get_many("recs", [3, 99, 1])] == ["c", "a"]


async def test_ids_given_in_a_batch_move_the_assigned_ones_past_them(store: Store) -> None:
    got = await store.insert("recs", [rec("a"), rec("b", rec_id=10), rec("c")])
    assert [r.rec_id for r in got] == [1, 10, 11]
    (after,) = await store.insert("recs", [rec("d")])
    assert after.rec_id == 12


async def test_a_batch_with_a_duplicate_id_writes_nothing(store: Store) -> None:
    await store.insert("recs", [rec("a", rec_id=5)])
    with pytest.raises(Conflict, match="exists already"):
        await store.insert("recs", [rec("b", rec_id=6), rec("c", rec_id=5)])
    assert await store.count("recs") == 1
    assert await store.get("recs", 6) is None


async def test_a_batch_repeating_an_id_writes_nothing(store: Store) -> None:
    with pytest.raises(Conflict):
        await store.insert("recs", [rec("b", rec_id=7), rec("c", rec_id=7)])
    assert await store.count("recs") == 0


async def test_update_replaces_and_refuses_the_whole_batch_if_one_id_is_missing(store: Store) -> None:
    (a, b) = await store.insert("recs", [rec("a", tags=["x"]), rec("b")])
    await store.update("recs", [msgspec.structs.replace(a, name="A", tags=["y"])])
    assert (await store.get("recs", a.rec_id)).name == "A"
    got, _ = await store.query("recs", parse_query(RECS, {"tags__overlap": ["y"]}))
    assert [r.rec_id for r in got] == [a.rec_id]
    got, _ = await store.query("recs", parse_query(RECS, {"tags__overlap": ["x"]}))
    assert got == []  # the array values follow the update
    with pytest.raises(NotFound, match="no record with rec_id 42"):
        await store.update("recs", [msgspec.structs.replace(b, name="B"), rec("ghost", rec_id=42)])
    assert (await store.get("recs", b.rec_id)).name == "b"


async def test_upsert_creates_or_replaces(store: Store) -> None:
    (a,) = await store.insert("recs", [rec("a")])
    created = await store.upsert("recs", [msgspec.structs.replace(a, name="A"), rec("new", rec_id=10)])
    assert created == [False, True]
    assert [r.name for r in await store.get_many("recs", [a.rec_id, 10])] == ["A", "new"]
    (nxt,) = await store.insert("recs", [rec("after")])
    assert nxt.rec_id == 11  # ids continue after the largest one given


async def test_an_upsert_that_conflicts_changes_nothing(store: Store) -> None:
    (a,) = await store.insert("recs", [rec("a")])
    with pytest.raises(Conflict):
        await store.upsert(
            "recs", [msgspec.structs.replace(a, name="A"), rec("x", rec_id=9), rec("y", rec_id=9)]
        )
    assert (await store.get("recs", a.rec_id)).name == "a"
    assert await store.get("recs", 9) is None


async def test_delete_removes_records_and_their_array_values(store: Store) -> None:
    recs = await store.insert("recs", [rec("a", tags=["t"]), rec("b", tags=["t"])])
    assert await store.delete("recs", [recs[0].rec_id, 77]) == 1
    got, count = await store.query("recs", parse_query(RECS, {"tags__contains": ["t"]}))
    assert count == 1 and got[0].name == "b"


async def test_values_of_any_type_round_trip_exactly(store: Store) -> None:
    arr = np.arange(6, dtype=np.complex128).reshape(2, 3) * (1 + 2j)
    (r,) = await store.insert("recs", [rec("a", payload=arr, meta={"nested": {"list": [1, 2.5, "x"]}})])
    back = await store.get("recs", r.rec_id)
    # `payload: Any` comes back as decoded by msgpack: the ndarray extension restores the array
    np.testing.assert_array_equal(back.payload, arr)
    assert back.payload.dtype == arr.dtype
    assert back.meta == {"nested": {"list": [1, 2.5, "x"]}}


async def test_times_keep_their_microseconds_in_queries_and_order(store: Store) -> None:
    t = [rec("a").at.replace(microsecond=us) for us in (2, 1, 999_999)]
    await store.insert("recs", [rec(f"r{i}", at=at) for i, at in enumerate(t)])
    got, _ = await store.query("recs", parse_query(RECS, {"at__range": [t[1], t[0]], "order_by": "-at"}))
    assert [r.name for r in got] == ["r0", "r1"]
    got, _ = await store.query("recs", parse_query(RECS, {"at": t[2].isoformat()}))
    assert [r.at for r in got] == [t[2]]


async def test_icontains_folds_case_as_python_does(store: Store) -> None:
    await store.insert("recs", [rec("Straße"), rec("STRASSE"), rec("Çava"), rec("plain")])
    for needle, names in [("ss", ["Straße", "STRASSE"]), ("ß", ["Straße", "STRASSE"]), ("ç", ["Çava"])]:
        got, _ = await store.query("recs", parse_query(RECS, {"name__icontains": needle}))
        assert [r.name for r in got] == names, needle
    got, _ = await store.query("recs", parse_query(RECS, {"name__contains": "ß"}))
    assert [r.name for r in got] == ["Straße"]


async def test_nested_paths_see_json_as_the_reference_does(store: Store) -> None:
    await store.insert(
        "recs",
        [
            rec("bool", meta={"flag": True, "qubits": ["QB1", "QB2"]}),
            rec("int", meta={"flag": 1, "src": {"run": 3, "a.b": "dot"}}),
            rec("text", meta={"flag": "1", "$op": "dollar"}),
        ],
    )

    async def names(**params: object) -> list[str]:
        got, _ = await store.query("recs", parse_query(RECS, params))
        return [r.name for r in got]

    assert await names(meta__flag=True) == ["bool", "int"]  # JSON true is 1
    assert await names(meta__flag="1") == ["text"]  # a string never equals a number
    assert await names(meta__flag__range=[0, 5]) == ["bool", "int"]
    assert await names(meta__flag__range=[0, "z"]) == []  # no value lies between a number and a string
    assert await names(meta__qubits__contains="QB1") == ["bool"]  # a list is its JSON text
    assert await names(meta__qubits='["QB1","QB2"]') == ["bool"]
    assert await names(meta__qubits__isnull=False) == ["bool"]
    assert await names(meta__src__run__in=[3, 4]) == ["int"]
    assert await names(**{"meta__src__a.b": "dot", "meta__$op": "dollar"}) == []
    assert await names(**{"meta__src__a.b": "dot"}) == ["int"]
    assert await names(**{"meta__$op__icontains": "DOLLAR"}) == ["text"]
    assert await names(meta__src__icontains='"RUN":3') == ["int"]  # a mapping is its JSON text too
    assert await names(meta__src__run__isnull=True) == ["bool", "text"]
    (record,) = await store.get_many("recs", [2])
    await store.update("recs", [msgspec.structs.replace(record, meta={"src": {"a.b": "moved"}})])
    assert await names(**{"meta__src__a.b": "moved"}) == ["int"]
    assert await names(**{"meta__src__a.b": "dot"}) == []


async def test_concurrent_writers_get_distinct_ids(store: Store) -> None:
    results = await asyncio.gather(*[store.insert("recs", [rec(f"r{i}")]) for i in range(300)])
    ids = sorted(r[0].rec_id for r in results)
    assert ids == list(range(1, 301))
    assert await store.count("recs") == 300


async def test_records_survive_closing_and_reopening(backend: Backend) -> None:
    s = backend.store()
    await s.open()
    await s.insert("recs", [rec("kept", tags=["t"])])
    await s.close()
    s = backend.store()
    await s.open()
    try:
        got, _ = await s.query("recs", parse_query(RECS, {"tags__overlap": "t"}))
        assert [r.name for r in got] == ["kept"]
        (nxt,) = await s.insert("recs", [rec("next")])
        assert nxt.rec_id == 2
    finally:
        await s.close()


class OldRec(msgspec.Struct, frozen=True, kw_only=True):
    rec_id: int | None = None
    name: str
    at: datetime.datetime
    created_timestamp: datetime.datetime


async def test_a_field_added_to_the_record_type_gets_its_column_filled_from_the_records(
    backend: Backend,
) -> None:
    old = backend.store([Collection("recs", OldRec, "rec_id")])
    await old.open()
    await old.insert("recs", [OldRec(name="a", at=T0, created_timestamp=T0)])
    await old.close()
    new = backend.store()
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


async def test_counts_stay_exact_through_appends_updates_deletes_and_failed_writes(store: Store) -> None:
    """The same query asked again after each kind of write (SQLite answers repeats from its count cache)."""
    overlap = parse_query(RECS, {"tags__overlap": ["t"], "limit": 1})
    latest = parse_query(RECS, {"latest": "name", "limit": 1})

    async def counts() -> tuple[int, int, int]:
        return (
            (await store.query("recs", overlap))[1],
            (await store.query("recs", latest))[1],
            await store.count("recs", overlap),
        )

    first = await store.insert("recs", [rec("a", tags=["t"]), rec("b", tags=["u"])])
    assert await counts() == (1, 2, 1)
    await store.insert("recs", [rec("c", tags=["u", "t"]), rec("a", tags=["t", "t"])])  # appended
    assert await counts() == (3, 3, 3)
    await store.update("recs", [msgspec.structs.replace(first[1], tags=["t"], name="a")])  # changed in place
    assert await counts() == (4, 2, 4)
    await store.delete("recs", [first[0].rec_id])
    assert await counts() == (3, 2, 3)
    await store.insert("recs", [rec("below", rec_id=first[0].rec_id, tags=["t"])])  # appended below the top
    assert await counts() == (4, 3, 4)
    with pytest.raises(Conflict):  # a new value set in a batch that fails is not remembered
        await store.insert("recs", [rec("e", tags=["v", "t"]), rec("dup", rec_id=first[1].rec_id)])
    assert await counts() == (4, 3, 4)
    await store.insert("recs", [rec("e", tags=["t", "v"])])
    got, _ = await store.query("recs", parse_query(RECS, {"tags__contains": ["v", "t"]}))
    assert [(r.name, r.tags) for r in got] == [("e", ["t", "v"])]
    assert await counts() == (5, 4, 5)

"""Bluesky documents in the observation store, on both backends, through real tells and asks on the bus:
the normalized collections, pages unpacked, numpy values, duplicates, closing open runs, reading runs."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import event_model
import msgspec
import numpy as np
import pymongo
import pytest

from stationd.actors.observation_store.collections import DATUMS, RUN_COLLECTIONS
from stationd.actors.specs import ActorSpec
from stationd.actors.storage import Collection, MongoStore, SQLiteStore, parse_query
from stationd.actors.storage.store import Store
from stationd.protocol import documents as docs
from stationd.protocol import observations as obs
from stationd.protocol.errors import InvalidQuery, NotFound
from tests.support.harness import Harness
from tests.support.mongo import NxServer

STORE = "observation_store"
DET = {"source": "sim", "dtype": "number", "shape": []}
T0 = 1_795_000_000.0


@dataclass
class Station:
    """The observation store on one backend, and a way to look at its storage directly."""

    h: Harness
    backend: str
    open_store: Callable[[list[Collection]], Store]
    """A second store on the same file or database (to read what the front door does not return)."""
    layout: Callable[[], dict[str, set[tuple[str, ...]]]]
    """Collection -> its indexes (as tuples of fields), as the backend has them."""
    mongo: tuple[str, str] | None = None
    """(URI, database) on MongoDB."""


def _sqlite_layout(path: Path) -> dict[str, set[tuple[str, ...]]]:
    with sqlite3.connect(path) as conn:
        out: dict[str, set[tuple[str, ...]]] = {}
        for c in RUN_COLLECTIONS:
            names = [r[1] for r in conn.execute(f'PRAGMA index_list("{c.name}")')]
            out[c.name] = {tuple(r[2] for r in conn.execute(f'PRAGMA index_info("{n}")')) for n in names}
        return out


def _mongo_layout(uri: str, database: str) -> dict[str, set[tuple[str, ...]]]:
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        db = client[database]
        return {
            name: {tuple(k for k, _ in ix["key"]) for ix in db[name].index_information().values()}
            for name in db.list_collection_names()
        }


@pytest.fixture(params=["sqlite", "mongodb"])
async def station(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Station]:
    h = Harness(tmp_path)
    options: dict[str, Any] = {}
    mongo = None
    if request.param == "mongodb":
        uri, database = request.getfixturevalue("mongo_uri"), f"runs_{uuid.uuid4().hex}"
        options |= {"backend": "mongodb", "mongodb_uri": uri, "mongodb_database": database}
        mongo = (uri, database)

        def open_store(colls: list[Collection]) -> Store:
            return MongoStore(uri, database, colls)

        def layout() -> dict[str, set[tuple[str, ...]]]:
            return _mongo_layout(uri, database)
    else:

        def open_store(colls: list[Collection]) -> Store:
            return SQLiteStore(tmp_path / "observations.sqlite", colls)

        def layout() -> dict[str, set[tuple[str, ...]]]:
            return _sqlite_layout(tmp_path / "observations.sqlite")

    await h.start_tree(
        ActorSpec(name=STORE, actor="stationd.actors.observation_store:ObservationStore", options=options)
    )
    yield Station(h, request.param, open_store, layout, mongo)
    await h.close()


def run(
    *, scan_id: int = 1, events: int = 3, baseline: bool = False, stop: bool = True, **md: Any
) -> list[tuple[str, dict[str, Any]]]:
    """A run's documents as bluesky's document factories make them: `count([det1, det2], num=events)`,
    started at `T0 + scan_id`."""
    metadata = {
        "plan_name": "count",
        "plan_type": "generator",
        "scan_id": scan_id,
        "detectors": ["det1", "det2"],
    }
    bundle = event_model.compose_run(time=T0 + scan_id, metadata=metadata | md)
    out: list[tuple[str, dict[str, Any]]] = [("start", bundle.start_doc)]
    primary = bundle.compose_descriptor(name="primary", data_keys={"det1": DET, "det2": DET})
    out.append(("descriptor", primary.descriptor_doc))
    if baseline:
        base = bundle.compose_descriptor(name="baseline", data_keys={"motor": DET})
        out.append(("descriptor", base.descriptor_doc))
        out.append(("event", base.compose_event(data={"motor": 0.5}, timestamps={"motor": 1.0})))
    for i in range(events):
        out.append(
            (
                "event",
                primary.compose_event(data={"det1": i, "det2": i / 2}, timestamps={"det1": i, "det2": i}),
            )
        )
    if stop:
        out.append(("stop", bundle.compose_stop()))
    return out


def by_name(documents: list[tuple[str, dict[str, Any]]], name: str) -> list[dict[str, Any]]:
    return [d for n, d in documents if n == name]


async def get_run(h: Harness, uid: str, **kw: Any) -> docs.RunReply:
    return await h.ask(STORE, docs.RunsGet(uid=uid, **kw))


async def test_a_runs_documents_are_stored_in_order_and_read_back_unchanged(station: Station) -> None:
    documents = run(baseline=True)
    station.h.tell(STORE, docs.StoreDocuments(docs=documents[:3]))  # the worker's batches are any split
    station.h.tell(STORE, docs.StoreDocuments(docs=documents[3:]))
    got = await get_run(station.h, documents[0][1]["uid"])  # handled after the tells: one mailbox, in order
    assert got.start == documents[0][1]
    assert got.stop == documents[-1][1]
    assert got.descriptors == by_name(documents, "descriptor")
    primary, baseline = got.descriptors
    events = by_name(documents, "event")
    assert got.events == [e for e in events if e["descriptor"] == primary["uid"]] + [
        e for e in events if e["descriptor"] == baseline["uid"]
    ]  # stream by stream, in order of the descriptors' time, each by seq_num
    assert (got.events_meta.count, got.events_meta.offset, got.events_meta.limit) == (4, 0, 100)


async def test_the_collections_and_indexes_are_suitcase_mongos(station: Station) -> None:
    documents = run()
    station.h.tell(STORE, docs.StoreDocuments(docs=documents))
    await get_run(station.h, documents[0][1]["uid"])
    layout = station.layout()
    assert {"run_start", "run_stop", "event_descriptor", "event", "resource", "datum"} <= set(layout)
    assert {("uid",), ("time",), ("scan_id",), ("plan_name", "time")} <= layout["run_start"]
    assert {("uid",), ("run_start",)} <= layout["run_stop"]
    assert {("uid",), ("run_start", "time")} <= layout["event_descriptor"]
    assert {("uid",), ("descriptor", "seq_num")} <= layout["event"]
    assert {("datum_id",), ("resource",)} <= layout["datum"]
    if station.mongo is not None:  # the documents' own fields, where suitcase-mongo's readers look
        uri, database = station.mongo
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
            db = client[database]
            event = db["event"].find_one({"seq_num": 2})
            assert event is not None
            assert {k: event[k] for k in ("uid", "descriptor", "seq_num", "time", "data")} == {
                k: by_name(documents, "event")[1][k] for k in ("uid", "descriptor", "seq_num", "time", "data")
            }
            assert db["run_start"].find_one({"scan_id": 1, "plan_name": "count"}) is not None


async def test_event_pages_and_datum_pages_are_unpacked(station: Station) -> None:
    bundle = event_model.compose_run(metadata={"plan_name": "count", "scan_id": 7})
    primary = bundle.compose_descriptor(name="primary", data_keys={"img": DET | {"external": "FILESTORE:"}})
    resource = bundle.compose_resource(spec="AD_HDF5", root="/data", resource_path="a.h5", resource_kwargs={})
    datums = resource.compose_datum_page(datum_kwargs={"point_number": [0, 1, 2]})
    page = primary.compose_event_page(
        data={"img": datums["datum_id"]},
        timestamps={"img": [1.0, 2.0, 3.0]},
        seq_num=[1, 2, 3],
        filled={"img": [False, False, False]},
    )
    start = bundle.start_doc
    station.h.tell(
        STORE,
        docs.StoreDocuments(
            docs=[
                ("start", start),
                ("descriptor", primary.descriptor_doc),
                ("resource", resource.resource_doc),
                ("datum_page", datums),
                ("event_page", page),
            ]
        ),
    )
    got = await get_run(station.h, start["uid"])
    assert got.events == list(event_model.unpack_event_page(page))
    assert got.resources == [resource.resource_doc]
    assert got.stop is None  # the run is still open
    store = station.open_store([DATUMS])
    await store.open()
    try:
        stored, count = await store.query(
            DATUMS.name,
            parse_query(DATUMS, {"resource": resource.resource_doc["uid"], "order_by": "datum_id"}),
        )
    finally:
        await store.close()
    assert count == 3
    assert [msgspec.structs.asdict(d) for d in stored] == list(event_model.unpack_datum_page(datums))


async def test_numpy_arrays_are_stored_as_lists_and_the_rest_of_the_document_is_unchanged(
    station: Station,
) -> None:
    bundle = event_model.compose_run(metadata={"plan_name": "count", "scan_id": 2, "gain": np.float64(2.5)})
    primary = bundle.compose_descriptor(
        name="primary", data_keys={"img": {"source": "sim", "dtype": "array", "shape": [2, 3]}}
    )
    image = np.arange(6, dtype=np.uint16).reshape(2, 3)
    event = primary.compose_event(data={"img": image}, timestamps={"img": 1.5}, validate=False)
    station.h.tell(  # the numpy values travel on the bus as they are (the codec's extension)
        STORE,
        docs.StoreDocuments(
            docs=[("start", bundle.start_doc), ("descriptor", primary.descriptor_doc), ("event", event)]
        ),
    )
    got = await get_run(station.h, bundle.start_doc["uid"])
    assert got.events == [event | {"data": {"img": [[0, 1, 2], [3, 4, 5]]}}]
    assert got.start == bundle.start_doc | {"gain": 2.5}
    assert type(got.start["gain"]) is float


async def test_documents_sent_again_are_kept_once_and_a_bad_one_does_not_lose_the_others(
    station: Station,
) -> None:
    documents = run(events=2)
    start_uid = documents[0][1]["uid"]
    broken = {"uid": "no-seq-num", "descriptor": documents[1][1]["uid"], "time": 1.0, "data": {}}
    station.h.tell(STORE, docs.StoreDocuments(docs=documents[:3]))
    station.h.tell(STORE, docs.StoreDocuments(docs=[*documents[1:3], ("event", broken), *documents[3:]]))
    station.h.tell(STORE, docs.StoreDocuments(docs=[("stream_datum", {"uid": "x"})]))  # a kind not stored
    got = await get_run(station.h, start_uid)
    assert got.events == by_name(documents, "event")
    assert got.stop == documents[-1][1]
    logged = {m.event for t, m in station.h.events.items if t == "log"}
    assert {"document_refused", "document_kind_not_stored"} <= logged


async def test_a_whole_run_in_one_batch_sent_twice_is_stored_and_announced_once(station: Station) -> None:
    documents = run(events=2)  # start, descriptor, events and stop together: one transaction on SQLite
    start_uid = documents[0][1]["uid"]
    since = station.h.events.mark()
    station.h.tell(STORE, docs.StoreDocuments(docs=documents))
    station.h.tell(STORE, docs.StoreDocuments(docs=documents))  # again: every document is stored already
    got = await get_run(station.h, start_uid)
    assert (got.start, got.stop) == (documents[0][1], documents[-1][1])
    assert got.events == by_name(documents, "event")
    stopped = [m for t, m in station.h.events.items[since:] if t == f"event.{STORE}.run_stopped"]
    assert [m.data["run_start"] for m in stopped] == [start_uid]


async def test_close_open_runs_writes_a_stop_counting_the_stored_events_per_stream(station: Station) -> None:
    open_run = run(scan_id=1, events=3, baseline=True, stop=False)
    closed_run = run(scan_id=2, events=1)
    station.h.tell(STORE, docs.StoreDocuments(docs=open_run + closed_run))
    open_uid, closed_uid = open_run[0][1]["uid"], closed_run[0][1]["uid"]
    since = station.h.events.mark()
    reply = await station.h.ask(
        STORE,
        docs.CloseOpenRuns(run_uids=[open_uid, closed_uid, "never-started"], reason="RE worker died"),
    )
    assert reply.run_uids == [open_uid]
    stop = (await get_run(station.h, open_uid)).stop
    assert stop is not None
    assert (
        stop["run_start"] == open_uid and stop["exit_status"] == "fail" and stop["reason"] == "RE worker died"
    )
    assert stop["num_events"] == {"primary": 3, "baseline": 1}
    assert stop["uid"] not in (open_uid, closed_uid) and stop["time"] >= open_run[0][1]["time"]
    event_model.schema_validators[event_model.DocumentNames.stop].validate(stop)
    assert (await get_run(station.h, closed_uid)).stop == closed_run[-1][1]  # it had one: left alone
    assert await station.h.events.wait_event(STORE, "run_stopped", since=since, exit_status="fail") == {
        "run_start": open_uid,
        "uid": stop["uid"],
        "exit_status": "fail",
        "reason": "RE worker died",
    }
    again = await station.h.ask(STORE, docs.CloseOpenRuns(run_uids=[open_uid], reason="twice"))
    assert again.run_uids == []
    late = event_model.compose_run(uid=open_uid).compose_stop()  # the real stop, after the synthetic one
    station.h.tell(STORE, docs.StoreDocuments(docs=[("stop", late)]))
    assert (await get_run(station.h, open_uid)).stop == stop


async def test_run_events_are_paged_across_streams_and_filtered_by_stream(station: Station) -> None:
    documents = run(events=5, baseline=True)
    uid = documents[0][1]["uid"]
    station.h.tell(STORE, docs.StoreDocuments(docs=documents))
    events = (await get_run(station.h, uid, limit=0)).events
    assert len(events) == 6
    page = await get_run(station.h, uid, offset=4, limit=2)
    assert page.events == events[4:6] and page.events_meta.count == 6
    only = await get_run(station.h, uid, stream="baseline")
    assert [e["data"] for e in only.events] == [{"motor": 0.5}] and only.events_meta.count == 1
    with pytest.raises(NotFound, match="no run with uid 'nope'"):
        await get_run(station.h, "nope")


async def test_runs_query_looks_up_start_documents_newest_first(station: Station) -> None:
    first = run(scan_id=1, sample={"name": "Silicon"})
    second = run(scan_id=2, sample={"name": "Gold"}, detectors=["det3"])
    third = run(scan_id=3, plan_name="scan")
    station.h.tell(STORE, docs.StoreDocuments(docs=first + second + third))
    starts = [first[0][1], second[0][1], third[0][1]]

    async def query(**lookups: Any) -> list[int]:
        reply = await station.h.ask(STORE, docs.RunsQuery(lookups=lookups))
        assert reply.meta.count == len(reply.items) or "limit" in lookups
        return [s["scan_id"] for s in reply.items]

    assert await query() == [3, 2, 1]
    assert await query(plan_name="count") == [2, 1]
    assert await query(scan_id__in=[1, 3], order_by="time") == [1, 3]
    assert await query(time__range=[starts[1]["time"], starts[2]["time"]]) == [3, 2]
    assert await query(sample__name__icontains="silic") == [1]
    assert await query(detectors__contains=["det3"]) == [2]
    assert await query(limit=1, offset=1) == [2]
    reply = await station.h.ask(STORE, docs.RunsQuery(lookups={"limit": 1}))
    assert reply.items == [starts[2]] and reply.meta.count == 3 and reply.meta.order_by == "-time"
    with pytest.raises(InvalidQuery, match="scan_id"):
        await query(scan_id__icontains="x")


async def test_a_backend_failure_while_storing_is_logged_and_the_store_keeps_running(tmp_path: Path) -> None:
    server = NxServer(tmp_path / "nx")
    await asyncio.to_thread(server.start)
    h = Harness(tmp_path)
    try:
        options = {"backend": "mongodb", "mongodb_uri": server.uri, "mongodb_timeout": 0.3}
        await h.start_tree(
            ActorSpec(name=STORE, actor="stationd.actors.observation_store:ObservationStore", options=options)
        )
        documents = run(events=3)
        h.tell(STORE, docs.StoreDocuments(docs=documents[:2]))
        assert (await get_run(h, documents[0][1]["uid"])).descriptors == [documents[1][1]]
        server.kill()  # SIGKILL: nothing answers any more
        h.tell(STORE, docs.StoreDocuments(docs=documents[2:]))
        settings = await h.ask(STORE, obs.SettingsGet())  # answered after the tell: the actor lives on
        assert settings.settings == {}
        (failed,) = [m for t, m in h.events.items if t == "log" and m.event == "documents_not_stored"]
        assert failed.level == "error"
        assert (failed.fields["collection"], failed.fields["records"]) == ("event", 4)  # 3 events, the stop
        assert "cannot be reached" in failed.fields["error"]
    finally:
        await h.close()
        server.kill()

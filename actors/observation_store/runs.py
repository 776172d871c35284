"""Bluesky documents in the observation store: storing what the RunEngine worker tells (pages unpacked, numpy
values as lists), closing the runs a dead worker left open, and reading runs back."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import msgspec

from stationd.actors.base import ActorContext
from stationd.actors.storage.collection import Collection
from stationd.actors.storage.query import RESERVED, parse_query
from stationd.actors.storage.store import Store
from stationd.protocol import documents as docs
from stationd.protocol.errors import Conflict, NotFound, StationError
from stationd.protocol.observations import QueryMeta, QueryReply

from .collections import (
    DATUMS,
    DESCRIPTORS,
    EVENTS,
    RESOURCES,
    RUN_STARTS,
    RUN_STOPS,
    DatumRecord,
    DescriptorRecord,
    EventRecord,
    ResourceRecord,
    RunStartRecord,
    RunStopRecord,
)

__all__ = ["Runs", "plain"]

_REFUSED = (KeyError, TypeError, ValueError, msgspec.ValidationError)
"""What a document that does not follow bluesky's schema raises while it is turned into records."""
_DEFAULT_ORDER = "-time"
_DEFAULT_STREAM = "primary"
"""Stream of a descriptor without a name (bluesky's default)."""
_MAX_OPEN = 10_000
"""Most runs remembered as open (see `Runs._open`); past it the oldest are forgotten (the store is asked)."""


def plain(value: Any) -> Any:
    """A document as the backends store it: numpy arrays as (nested) lists, numpy scalars as Python ones,
    tuples as lists, mapping keys as text; complex numbers (no JSON form) as their text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return plain(value.tolist())
    if isinstance(value, complex):
        return str(value)
    return value


def _text(doc: Mapping[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {type(value).__name__}")
    return value


def _time(doc: Mapping[str, Any]) -> float:
    value = doc["time"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"time must be a number, not {type(value).__name__}")
    return float(value)


def _optional(value: Any, type_: type) -> Any:
    """A looked-up field copied out of a document: None unless of the expected type."""
    return value if isinstance(value, type_) and not isinstance(value, bool) else None


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _records(name: str, doc: dict[str, Any]) -> list[tuple[Collection, msgspec.Struct]] | None:
    """The records of one (plain) document, None for a kind that is not stored; raises one of `_REFUSED`
    when it does not fit bluesky's schema."""
    match name:
        case "start":
            record: msgspec.Struct = RunStartRecord(
                uid=_text(doc, "uid"),
                time=_time(doc),
                scan_id=_optional(doc.get("scan_id"), int),
                plan_name=_optional(doc.get("plan_name"), str),
                plan_type=_optional(doc.get("plan_type"), str),
                detectors=_names(doc.get("detectors")),
                motors=_names(doc.get("motors")),
                document=doc,
            )
            return [(RUN_STARTS, record)]
        case "stop":
            record = RunStopRecord(
                uid=_text(doc, "uid"),
                run_start=_text(doc, "run_start"),
                time=_time(doc),
                exit_status=_optional(doc.get("exit_status"), str),
                document=doc,
            )
            return [(RUN_STOPS, record)]
        case "descriptor":
            record = DescriptorRecord(
                uid=_text(doc, "uid"),
                run_start=_text(doc, "run_start"),
                time=_time(doc),
                name=_optional(doc.get("name"), str),
                document=doc,
            )
            return [(DESCRIPTORS, record)]
        case "resource":
            record = ResourceRecord(
                uid=_text(doc, "uid"),
                run_start=_optional(doc.get("run_start"), str),
                spec=_optional(doc.get("spec"), str),
                document=doc,
            )
            return [(RESOURCES, record)]
        case "event":
            return [(EVENTS, msgspec.convert(doc, EventRecord))]
        case "datum":
            return [(DATUMS, msgspec.convert(doc, DatumRecord))]
        case "event_page":
            from event_model import unpack_event_page  # imported when needed: it takes ~0.1 s

            return [(EVENTS, msgspec.convert(e, EventRecord)) for e in unpack_event_page(doc)]
        case "datum_page":
            from event_model import unpack_datum_page

            return [(DATUMS, msgspec.convert(d, DatumRecord)) for d in unpack_datum_page(doc)]
    return None


def _runs_of(records: list[tuple[Collection, msgspec.Struct]]) -> Iterator[tuple[Collection, list[Any]]]:
    """Consecutive records of one collection, together (one write each), in order."""
    i = 0
    while i < len(records):
        coll = records[i][0]
        j = i
        while j < len(records) and records[j][0] is coll:
            j += 1
        yield coll, [r for _, r in records[i:j]]
        i = j


class Runs:
    """The bluesky documents of one observation store (its `Store`, which holds the run collections)."""

    def __init__(self, store: Store, ctx: ActorContext) -> None:
        self.store = store
        self.ctx = ctx
        self._unknown: set[str] = set()
        """Names of documents not stored (`stream_resource`, …), each logged once."""
        self._open: dict[str, None] = {}
        """Runs whose start this instance stored and whose stop it has not (oldest first): their first stop is
        stored without asking the store for one (a query, on a reader thread, per run). Only this instance
        writes stops, so none can exist for them."""

    # -- writing ---------------------------------------------------------------------------------------------
    async def store_documents(self, documents: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Write documents in order, each collection's consecutive ones together. Never raises (they come in
        a tell): a document that does not fit bluesky's schema is logged and skipped; when the backend fails,
        the failure and the documents left unwritten are logged."""
        records: list[tuple[Collection, msgspec.Struct]] = []
        for name, doc in documents:
            try:
                found = _records(name, plain(doc))
            except _REFUSED as exc:
                uid = doc.get("uid", doc.get("datum_id"))
                error = f"{type(exc).__name__}: {exc}"
                self.ctx.log.warning("document_refused", name=name, uid=uid, error=error)
                continue
            if found is not None:
                records += found
            elif name not in self._unknown:
                self._unknown.add(name)
                self.ctx.log.warning("document_kind_not_stored", name=name)
        written = 0
        for coll, group in _runs_of(records):
            try:
                await self._insert(coll, group)
            except StationError as exc:  # nothing after it is written either: never out of order
                self.ctx.log.error(
                    "documents_not_stored",
                    error=exc.msg,
                    collection=coll.name,
                    records=len(records) - written,
                )
                return
            written += len(group)

    async def _insert(self, coll: Collection, records: list[Any]) -> None:
        if coll is RUN_STOPS:
            await self._insert_stops(records)
            return
        try:
            await self.store.insert(coll.name, records)
        except Conflict:  # a document stored already (sent again): keep the new ones, as suitcase-mongo does
            await self._insert_new(coll, records)
            return
        if coll is RUN_STARTS:
            self._opened([r.uid for r in records])

    def _opened(self, run_uids: list[str]) -> None:
        """Remember runs whose start was just stored (a run started before is not: it may have a stop)."""
        self._open.update(dict.fromkeys(run_uids))
        while len(self._open) > _MAX_OPEN:
            del self._open[next(iter(self._open))]

    async def _insert_stops(self, stops: list[RunStopRecord]) -> None:
        """One stop per run (suitcase-mongo's unique index): a second one (a real stop after a synthetic
        one) is dropped. Each stored stop is published as `run_stopped`: the run is complete in the store."""
        kept: dict[str, RunStopRecord] = {}
        for stop in stops:
            existing = kept.get(stop.run_start)
            if existing is None and stop.run_start not in self._open:
                existing = await self._stop_of(stop.run_start)
            if existing is None:
                kept[stop.run_start] = stop
            elif existing.uid != stop.uid:
                self.ctx.log.warning(
                    "second_stop_dropped", run_start=stop.run_start, uid=stop.uid, kept=existing.uid
                )
        if kept:
            await self.store.insert(RUN_STOPS.name, list(kept.values()))
        for run_uid in kept:
            self._open.pop(run_uid, None)
        for stop in kept.values():
            self.ctx.publish(
                "run_stopped",
                {
                    "run_start": stop.run_start,
                    "uid": stop.uid,
                    "exit_status": stop.exit_status,
                    "reason": stop.document.get("reason", ""),
                },
            )

    async def _insert_new(self, coll: Collection, records: list[Any]) -> None:
        key = coll.id_field
        first: dict[str, Any] = {}
        for r in records:
            first.setdefault(getattr(r, key), r)
        stored = {getattr(r, key): r for r in await self.store.get_many(coll.name, list(first))}
        for record_id, r in first.items():
            if record_id in stored and stored[record_id] != r:
                self.ctx.log.warning("duplicate_document_differs", collection=coll.name, uid=record_id)
        new = [r for record_id, r in first.items() if record_id not in stored]
        if new:
            await self.store.insert(coll.name, new)

    async def close_open_runs(self, msg: docs.CloseOpenRuns) -> docs.RunsClosed:
        """Write a stop document for each started run without one; `num_events` from the stored events.
        Raises what the backend raises (it comes in an ask)."""
        closed = []
        for run_uid in dict.fromkeys(msg.run_uids):
            if await self.store.get(RUN_STARTS.name, run_uid) is None:
                self.ctx.log.warning("unknown_run_not_closed", run_start=run_uid)
                continue
            if await self._stop_of(run_uid) is not None:
                continue
            num_events: Counter[str] = Counter()
            for d in await self._descriptors(run_uid):
                num_events[d.name or _DEFAULT_STREAM] += await self._count_events(d.uid)
            stop = {
                "uid": str(uuid.uuid4()),
                "time": time.time(),
                "run_start": run_uid,
                "exit_status": msg.exit_status,
                "reason": msg.reason,
                "num_events": dict(num_events),
            }
            record = RunStopRecord(
                uid=stop["uid"],
                run_start=run_uid,
                time=stop["time"],
                exit_status=msg.exit_status,
                document=stop,
            )
            await self._insert_stops([record])
            closed.append(run_uid)
        return docs.RunsClosed(run_uids=closed)

    # -- reading ---------------------------------------------------------------------------------------------
    async def get_run(self, msg: docs.RunsGet) -> docs.RunReply:
        start = await self.store.get(RUN_STARTS.name, msg.uid)
        if start is None:
            raise NotFound(f"no run with uid {msg.uid!r}")
        stop = await self._stop_of(msg.uid)
        descriptors = await self._descriptors(msg.uid)
        resources, _ = await self.store.query(
            RESOURCES.name, parse_query(RESOURCES, {"run_start": msg.uid, "limit": 0})
        )
        streams = [d for d in descriptors if msg.stream is None or (d.name or _DEFAULT_STREAM) == msg.stream]
        events, count = await self._events(streams, msg.offset, msg.limit)
        return docs.RunReply(
            start=start.document,
            stop=None if stop is None else stop.document,
            descriptors=[d.document for d in descriptors],
            resources=[r.document for r in resources],
            events=events,
            events_meta=QueryMeta(count=count, order_by="seq_num", limit=msg.limit, offset=msg.offset),
        )

    async def query_runs(self, lookups: Mapping[str, Any]) -> QueryReply:
        """Start documents by lookups; keys that are not fields of `run_start` look inside the document."""
        params: dict[str, Any] = {}
        for key, value in lookups.items():
            known = key in RESERVED or key.split("__", 1)[0] in RUN_STARTS.fields
            params[key if known else f"document__{key}"] = value
        params.setdefault("order_by", _DEFAULT_ORDER)
        q = parse_query(RUN_STARTS, params)
        starts, count = await self.store.query(RUN_STARTS.name, q)
        order_by = params["order_by"]
        return QueryReply(
            items=[s.document for s in starts],
            meta=QueryMeta(
                count=count,
                order_by=",".join(order_by) if isinstance(order_by, list) else order_by,
                limit=q.limit,
                offset=q.offset,
            ),
        )

    async def _stop_of(self, run_uid: str) -> RunStopRecord | None:
        found, _ = await self.store.query(
            RUN_STOPS.name, parse_query(RUN_STOPS, {"run_start": run_uid, "limit": 1})
        )
        return found[0] if found else None

    async def _descriptors(self, run_uid: str) -> list[DescriptorRecord]:
        q = parse_query(DESCRIPTORS, {"run_start": run_uid, "order_by": "time", "limit": 0})
        found, _ = await self.store.query(DESCRIPTORS.name, q)
        return found

    async def _count_events(self, descriptor: str) -> int:
        return await self.store.count(EVENTS.name, parse_query(EVENTS, {"descriptor": descriptor}))

    async def _events(
        self, descriptors: list[DescriptorRecord], offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the events of these descriptors, one after the other, each by `seq_num` (an index
        range per descriptor); and how many they have in all."""
        page: list[dict[str, Any]] = []
        total, skip, wanted = 0, offset, limit if limit > 0 else None
        for d in descriptors:
            if wanted == 0:
                total += await self._count_events(d.uid)
                continue
            q = parse_query(
                EVENTS, {"descriptor": d.uid, "order_by": "seq_num", "offset": skip, "limit": wanted or 0}
            )
            found, count = await self.store.query(EVENTS.name, q)
            page += [msgspec.structs.asdict(e) for e in found]
            total += count
            skip = max(0, skip - count)
            if wanted is not None:
                wanted -= len(found)
        return page, total

"""The MongoDB backend: the same collections, lookups and all-or-nothing writes as `SQLiteStore`, over
PyMongo's native async client.

Layout per collection `c` (a MongoDB collection of the same name), mirroring the SQLite one:

- `_id`: the driver's ObjectId (never the record id: stand-ins such as nx-27017 sort integer `_id`s as text);
- `<id field>`: the record id, unique index; int ids come from a counter document (`find_one_and_update` with
  `$inc`), so two daemons sharing a database never hand out the same id;
- one field per scalar field as `to_column` stores it (times as integer microseconds, UUIDs as text), except
  booleans, which stay booleans; nullable fields hold null;
- one array per array field (items as `to_column`), indexed: `overlap` is `$in`, `contains` is `$all`;
- one embedded document per mapping field, queried by dotted path. It is the field's JSON (what SQLite's
  `json_extract` sees), made safe to query: keys are escaped (`%`, `.`, `$`, NUL), a list is stored as its
  JSON text (as `json_extract` returns it, and so that Mongo never looks inside arrays), and each nested
  mapping also holds its own JSON text under the key `%` (no escaped key can be `%`), which `exact`, `in`,
  `range` and `contains` compare against, as the reference does;
- `_cf`: case-folded copies (`str.casefold`) of the text fields and of the mappings' strings, so `icontains`
  is a plain substring test with exactly Python's case folding (a regex's `i` option folds differently:
  `ß` and `ss`);
- a not-null marker (1 or null) per field of any other type;
- `doc`: the exact record (msgpack), which is what reads return.

MongoDB has no multi-document transactions on a standalone server (nor does nx-27017), so every write checks
first (duplicate ids, missing ids) and, when the server fails half-way, undoes what it did as far as it can.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from bson import ObjectId
from bson.errors import BSONError
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConnectionFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
)

from stationd.protocol.codec import msgpack_decoder, msgpack_encoder
from stationd.protocol.errors import Conflict, NotFound, StorageError

from .collection import Collection
from .fields import Kind, to_column
from .mongo_filters import FOLDED, RESERVED, all_of, column, condition, mirror
from .query import Query

__all__ = ["COUNTERS", "LAYOUT", "LAYOUT_VERSION", "MongoStore"]

LAYOUT_VERSION = 1
"""Version of the document layout; a database holding a higher one is refused, never rewritten."""
LAYOUT = "_stationd_layout"
"""Collection describing the layout: per collection `{_id: <collection>, version, fields: {name: kind}}`."""
COUNTERS = "_stationd_ids"
"""Collection of id counters: per collection with int ids `{_id: <collection>, n: <last id handed out>}`."""
_CHUNK = 1000
"""Most ids in one `$in`."""


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


@dataclass(slots=True)
class _Layout:
    coll: Collection
    id_kind: Kind
    encode: Any = field(default_factory=lambda: msgpack_encoder().encode)
    decoder: Any = None

    def key(self, record_id: Any) -> Any:
        """A record id as stored in the id field."""
        return column(self.id_kind, record_id)


class MongoStore:
    """Collections of msgspec records in one MongoDB database; the same API and semantics as `SQLiteStore`."""

    def __init__(
        self,
        uri: str,
        database: str,
        collections: Sequence[Collection],
        *,
        server_selection_timeout_ms: int = 5000,
    ) -> None:
        self.uri = uri
        self.database = database
        self._timeout_ms = server_selection_timeout_ms
        self._layouts: dict[str, _Layout] = {}
        for c in collections:
            clash = [n for n in RESERVED if n in c.fields]
            if clash or c.name in (COUNTERS, LAYOUT):
                raise ValueError(f"{c.name}: {clash or c.name!r} is reserved by the MongoDB layout")
            self._layouts[c.name] = _Layout(c, c.fields[c.id_field].kind, decoder=msgpack_decoder(c.record))
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._db: AsyncDatabase[dict[str, Any]] | None = None

    # -- life cycle -----------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and create the indexes; raise `StorageError` when the server cannot be reached."""
        try:
            self._client = AsyncMongoClient(
                self.uri,
                serverSelectionTimeoutMS=self._timeout_ms,
                connectTimeoutMS=self._timeout_ms,
                appname="stationd",
            )
        except PyMongoError as exc:
            raise StorageError(
                f"MongoDB database {self.database!r}: bad connection settings: {exc}"
            ) from None
        self._db = self._client[self.database]
        try:
            with self._guard("open"):
                await self._check_version()
                for layout in self._layouts.values():
                    await self._prepare(layout)
        except StorageError:
            await self.close()
            raise

    async def close(self) -> None:
        client, self._client, self._db = self._client, None, None
        if client is not None:
            await client.close()

    # -- writes: each call is one all-or-nothing unit ------------------------------------------------------
    async def insert(self, coll: str, records: Sequence[msgspec.Struct]) -> list[Any]:
        """Insert records (ids assigned where missing); all or none. Raises `Conflict` on a duplicate id."""
        layout = self._layouts[coll]
        with self._guard(f"insert into {coll}"):
            out = await self._assign_ids(layout, records)
            await self._insert(layout, out)
        return out

    async def update(self, coll: str, records: Sequence[msgspec.Struct]) -> None:
        """Replace existing records by id; all or none. Raises `NotFound` naming a missing id."""
        layout = self._layouts[coll]
        c = layout.coll
        with self._guard(f"update of {coll}"):
            ids = [getattr(r, c.id_field) for r in records]
            old = await self._stored(layout, ids)
            for i in ids:
                if layout.key(i) not in old:
                    raise NotFound(f"{c.name}: no record with {c.id_field} {i}")
            await self._replace(layout, records, old)

    async def upsert(self, coll: str, records: Sequence[msgspec.Struct]) -> list[bool]:
        """Replace records by id, inserting those that do not exist; returns which ones were created."""
        layout = self._layouts[coll]
        c = layout.coll
        with self._guard(f"upsert into {coll}"):
            ids = [getattr(r, c.id_field) for r in records]
            old = await self._stored(layout, [i for i in ids if i is not None])
            created = [i is None or layout.key(i) not in old for i in ids]
            new = await self._assign_ids(layout, [r for r, new in zip(records, created, strict=True) if new])
            inserted = await self._insert(layout, new)
            try:
                await self._replace(layout, [r for r, n in zip(records, created, strict=True) if not n], old)
            except BaseException:
                await self._undo(layout, inserted)
                raise
        return created

    async def delete(self, coll: str, ids: Sequence[Any]) -> int:
        """Delete records by id; returns how many existed."""
        layout = self._layouts[coll]
        table = self._table(layout)
        keys = list(dict.fromkeys(layout.key(i) for i in ids))
        deleted = 0
        with self._guard(f"delete from {coll}"):
            for chunk in _chunks(keys):
                deleted += (
                    await table.delete_many({layout.coll.id_field: {"$in": list(chunk)}})
                ).deleted_count
        return deleted

    # -- reads ---------------------------------------------------------------------------------------------
    async def get(self, coll: str, record_id: Any) -> Any | None:
        found = await self.get_many(coll, [record_id])
        return found[0] if found else None

    async def get_many(self, coll: str, ids: Sequence[Any]) -> list[Any]:
        """The records with these ids that exist, in the order of `ids`."""
        layout = self._layouts[coll]
        with self._guard(f"read of {coll}"):
            found = await self._stored(layout, ids, projection={layout.coll.id_field: 1, "doc": 1})
        keys = [layout.key(i) for i in ids]
        return [layout.decoder.decode(found[k]["doc"]) for k in keys if k in found]

    async def query(self, coll: str, q: Query) -> tuple[list[Any], int]:
        """(the page of records, how many match in all)."""
        layout = self._layouts[coll]
        c = layout.coll
        table = self._table(layout)
        match = all_of([condition(layout.coll, f) for f in q.filters])
        order = self._order(layout, q)
        with self._guard(f"query of {coll}"):
            if q.latest is None:
                cursor = table.find(match, {"doc": 1, "_id": 0}).sort(order).skip(q.offset)
                if q.limit > 0:
                    cursor = cursor.limit(q.limit)
                docs = [d["doc"] async for d in cursor]
            else:
                newest = [(c.created_field, DESCENDING), (c.id_field, DESCENDING)]
                pipeline: list[dict[str, Any]] = [
                    {"$match": match},
                    {"$sort": dict(newest)},
                    {"$group": {"_id": f"${q.latest}", "d": {"$first": "$$ROOT"}}},
                    {"$replaceRoot": {"newRoot": "$d"}},
                    {"$sort": dict(order)},
                ]
                if q.offset:
                    pipeline.append({"$skip": q.offset})
                if q.limit > 0:
                    pipeline.append({"$limit": q.limit})
                pipeline.append({"$project": {"doc": 1, "_id": 0}})
                docs = [d["doc"] async for d in await table.aggregate(pipeline)]
            count = await self._count(layout, match, q.latest)
        return [layout.decoder.decode(d) for d in docs], count

    async def count(self, coll: str, q: Query | None = None) -> int:
        layout = self._layouts[coll]
        q = q or Query()
        with self._guard(f"count of {coll}"):
            return await self._count(layout, all_of([condition(layout.coll, f) for f in q.filters]), q.latest)

    # -- internals: connection and errors ------------------------------------------------------------------
    def _table(self, layout: _Layout) -> AsyncCollection[dict[str, Any]]:
        if self._db is None:
            raise StorageError(f"MongoDB database {self.database!r}: the store is not open")
        return self._db[layout.coll.name]

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn the driver's errors into `StorageError`s that say what failed and why."""
        try:
            yield
        except (ServerSelectionTimeoutError, AutoReconnect, ConnectionFailure) as exc:
            raise StorageError(
                f"MongoDB database {self.database!r}: {what} failed, the server cannot be reached "
                f"({type(exc).__name__}: {_short(exc)})"
            ) from exc
        except PyMongoError as exc:
            raise StorageError(
                f"MongoDB database {self.database!r}: {what} failed ({type(exc).__name__}: {_short(exc)})"
            ) from exc
        except (BSONError, OverflowError) as exc:
            raise StorageError(
                f"MongoDB database {self.database!r}: {what} failed, a value cannot be stored in MongoDB "
                f"({exc})"
            ) from exc

    async def _check_version(self) -> None:
        """Refuse a database written by a newer stationd, before writing anything to it."""
        assert self._db is not None
        newer = await self._db[LAYOUT].find_one({"version": {"$gt": LAYOUT_VERSION}})
        if newer is not None:
            raise StorageError(
                f"MongoDB database {self.database!r} has layout version {newer['version']}, newer than this "
                f"stationd reads ({LAYOUT_VERSION}); refusing to touch it (upgrade stationd, or use another "
                "database)"
            )

    async def _prepare(self, layout: _Layout) -> None:
        """Create the indexes, fill the columns of fields the record type gained, move the id counter past
        every stored id."""
        c = layout.coll
        table = self._table(layout)
        await table.create_index([(c.id_field, ASCENDING)], unique=True, name=f"{c.name}__id")
        if c.created_field:
            await table.create_index([(c.created_field, ASCENDING)], name=f"{c.name}__created")
        for index in c.indexed:
            await table.create_index([(n, ASCENDING) for n in index], name=f"{c.name}__{'__'.join(index)}")
        await self._migrate(layout)
        if c.id_kind == "int":  # ids written without the counter (or before it existed) still count
            last = await table.find_one(
                {c.id_field: {"$type": "number"}}, {c.id_field: 1}, sort=[(c.id_field, -1)]
            )
            if last is not None:
                await self._raise_counter(c, last[c.id_field])

    async def _migrate(self, layout: _Layout) -> None:
        """When the record type has fields (or kinds) the stored documents were not written with, recompute
        every document's columns from its record, as SQLite's additive migration does."""
        assert self._db is not None
        c = layout.coll
        table = self._table(layout)
        fields = {f.name: f"{f.kind}:{f.item_kind or ''}" for f in c.fields.values()}
        known = await self._db[LAYOUT].find_one({"_id": c.name})
        if known is None or not fields.items() <= known.get("fields", {}).items():
            writes: list[UpdateOne] = []
            async for d in table.find({}, {"doc": 1}):
                try:
                    record = layout.decoder.decode(d["doc"])
                except msgspec.ValidationError as exc:
                    raise StorageError(
                        f"MongoDB database {self.database!r}: {c.name} holds a record that does not fit "
                        f"{c.record.__name__} ({exc}); a new field needs a default"
                    ) from None
                columns = self._document(layout, record)
                del columns["_id"], columns["doc"]
                writes.append(UpdateOne({"_id": d["_id"]}, {"$set": columns}))
                if len(writes) == _CHUNK:
                    await table.bulk_write(writes, ordered=False)
                    writes = []
            if writes:
                await table.bulk_write(writes, ordered=False)
        await self._db[LAYOUT].update_one(
            {"_id": c.name}, {"$set": {"version": LAYOUT_VERSION, "fields": fields}}, upsert=True
        )

    # -- internals: writing ----------------------------------------------------------------------------------
    def _document(self, layout: _Layout, record: Any) -> dict[str, Any]:
        c = layout.coll
        doc: dict[str, Any] = {"_id": ObjectId()}
        folded: dict[str, Any] = {}
        for f in c.fields.values():
            value = getattr(record, f.name)
            if f.kind == Kind.ARRAY:
                item = f.item_kind or Kind.STR
                doc[f.name] = None if value is None else [column(item, v) for v in value]
            elif f.kind == Kind.JSON:
                plain = None if value is None else msgspec.json.decode(to_column(Kind.JSON, value))
                doc[f.name] = None if plain is None else mirror(plain, fold=False, root=True)
                if isinstance(plain, dict):
                    folded[f.name] = mirror(plain, fold=True, root=True)
            else:
                doc[f.name] = column(f.kind, value)
                if f.kind == Kind.STR and doc[f.name] is not None:
                    folded[f.name] = doc[f.name].casefold()
        doc[FOLDED] = folded
        doc["doc"] = layout.encode(record)
        return doc

    async def _raise_counter(self, c: Collection, at_least: int) -> None:
        assert self._db is not None
        await self._db[COUNTERS].update_one({"_id": c.name}, {"$max": {"n": at_least}}, upsert=True)

    async def _take_ids(self, c: Collection, n: int) -> range:
        assert self._db is not None
        counter = await self._db[COUNTERS].find_one_and_update(
            {"_id": c.name}, {"$inc": {"n": n}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return range(counter["n"] - n + 1, counter["n"] + 1)

    async def _assign_ids(self, layout: _Layout, records: Sequence[Any]) -> list[Any]:
        """The records with their ids: int ids in record order from the shared counter, given ids moving the
        counter past them (as SQLite's `1, 10, 11` for `[None, 10, None]`); uuid4s where missing."""
        c = layout.coll
        out = list(records)
        i = 0
        while i < len(out):
            given = getattr(out[i], c.id_field) is not None
            j = i
            while j < len(out) and (getattr(out[j], c.id_field) is not None) == given:
                j += 1
            if given:
                if c.id_kind == "int":
                    await self._raise_counter(c, max(getattr(r, c.id_field) for r in out[i:j]))
            elif c.id_kind == "str":
                raise Conflict(f"{c.name}: records need an explicit {c.id_field}")
            else:
                new_ids: Sequence[Any] = (
                    await self._take_ids(c, j - i)
                    if c.id_kind == "int"
                    else [uuid.uuid4() for _ in range(i, j)]
                )
                for k, new_id in zip(range(i, j), new_ids, strict=True):
                    out[k] = msgspec.structs.replace(out[k], **{c.id_field: new_id})
            i = j
        return out

    async def _insert(self, layout: _Layout, records: Sequence[Any]) -> list[ObjectId]:
        """Insert records that have ids; all or none. Returns the `_id`s written."""
        if not records:
            return []
        c = layout.coll
        seen: set[Any] = set()
        for r in records:
            key = layout.key(getattr(r, c.id_field))
            if key in seen:
                raise Conflict(f"{c.name}: {c.id_field} {getattr(r, c.id_field)} appears twice in the batch")
            seen.add(key)
        existing = await self._stored(layout, [getattr(r, c.id_field) for r in records], {c.id_field: 1})
        if existing:
            first = next(
                getattr(r, c.id_field) for r in records if layout.key(getattr(r, c.id_field)) in existing
            )
            raise Conflict(f"{c.name}: a record with {c.id_field} {first} exists already")
        docs = [self._document(layout, r) for r in records]
        oids = [d["_id"] for d in docs]
        try:
            await self._table(layout).insert_many(docs, ordered=True)
        except BulkWriteError as exc:  # another writer took one of the ids since the check
            await self._undo(layout, oids)
            if any(e.get("code") == 11000 for e in exc.details.get("writeErrors", [])):
                raise Conflict(
                    f"{c.name}: a record with one of these {c.id_field}s exists already "
                    "(written concurrently)"
                ) from None
            raise
        except BaseException:
            await self._undo(layout, oids)
            raise
        return oids

    async def _replace(self, layout: _Layout, records: Sequence[Any], old: dict[Any, dict[str, Any]]) -> None:
        """Replace existing records (their stored documents in `old`); on failure put the old ones back.

        A replacement is a `$set` of every field of the layout, which is the same as replacing the document
        (nx-27017 refuses binary values in replacement documents, not in `$set`)."""
        if not records:
            return
        c = layout.coll
        table = self._table(layout)
        writes = []
        for r in records:
            doc = self._document(layout, r)
            del doc["_id"]
            writes.append(UpdateOne({c.id_field: layout.key(getattr(r, c.id_field))}, {"$set": doc}))
        try:
            await table.bulk_write(writes, ordered=True)
        except BaseException:
            restore = [UpdateOne({"_id": d["_id"]}, {"$set": _without_id(d)}) for d in old.values()]
            with contextlib.suppress(PyMongoError):
                await table.bulk_write(restore, ordered=False)
            raise

    async def _undo(self, layout: _Layout, oids: list[ObjectId]) -> None:
        """Remove documents this store inserted (best effort: when the server is gone, so is the undo)."""
        if oids:
            with contextlib.suppress(PyMongoError):
                await self._table(layout).delete_many({"_id": {"$in": oids}})

    # -- internals: reading ----------------------------------------------------------------------------------
    async def _stored(
        self, layout: _Layout, ids: Sequence[Any], projection: dict[str, Any] | None = None
    ) -> dict[Any, dict[str, Any]]:
        """Stored documents of these ids, by id as stored."""
        c = layout.coll
        table = self._table(layout)
        keys = list(dict.fromkeys(layout.key(i) for i in ids))
        found: dict[Any, dict[str, Any]] = {}
        for chunk in _chunks(keys):
            async for d in table.find({c.id_field: {"$in": list(chunk)}}, projection):
                found[d[c.id_field]] = d
        return found

    async def _count(self, layout: _Layout, match: dict[str, Any], latest: str | None) -> int:
        table = self._table(layout)
        pipeline: list[dict[str, Any]] = [{"$match": match}]
        if latest is not None:
            pipeline.append({"$group": {"_id": f"${latest}"}})
        pipeline.append({"$count": "n"})  # not count_documents: nx-27017 miscounts null matches there
        counted = [d async for d in await table.aggregate(pipeline)]
        return counted[0]["n"] if counted else 0  # MongoDB returns no document for no groups

    @staticmethod
    def _order(layout: _Layout, q: Query) -> list[tuple[str, int]]:
        """Sort keys: the query's (the first mention of a field wins), then the id ascending."""
        order: dict[str, int] = {}
        for o in q.order_by:
            order.setdefault(o.field, DESCENDING if o.descending else ASCENDING)
        order.setdefault(layout.coll.id_field, ASCENDING)
        return list(order.items())


def _without_id(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_id"}


def _short(exc: BaseException) -> str:
    """The first part of a driver message (server selection errors append the whole topology)."""
    if isinstance(exc, BulkWriteError) and exc.details.get("writeErrors"):
        return str(exc.details["writeErrors"][0].get("errmsg"))
    text = str(exc).split(", Timeout:")[0].split(", full error:")[0]
    return text if len(text) <= 300 else text[:300] + "…"

"""The embedded backend: one SQLite file per store, WAL, a writer thread that commits queued writes together,
and reader threads for queries (one thread hop per call, never per row). The layout is described in `sql.py`.

A small write made while the writer thread is idle is committed at once on the caller's thread (the event
loop) through the same connection: for a few rows, the hop to the writer thread and back costs more than the
commit itself and wakes two threads. The commit still happens before the call returns (an acknowledged write
survives kill -9), and it never overtakes a queued write.

Counts are cached: a query's count is kept with the collection's change counter and highest row key, and
while only rows were appended since, the next count of the same query adds what the new rows contribute
(one index range) instead of counting every match again."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import operator
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from stationd.protocol.codec import msgpack_decoder, msgpack_encoder
from stationd.protocol.errors import Conflict, NotFound, StationError, StorageError

from .collection import Collection
from .fields import Kind, column_converter, to_column
from .query import Query
from .sql import Select, column_type, id_column, members_table, select, sets_table

__all__ = ["SCHEMA_VERSION", "Op", "SQLiteStore"]

SCHEMA_VERSION = 2
"""Layout version written to `PRAGMA user_version`; a file with a higher one is refused, never rewritten.
1 -> 2: array fields moved from per-item side tables `c__<field>(value, rid)` to value sets (migrated)."""
APPLICATION_ID = 0x53544E44  # "STND": marks the file as a stationd store
_MAX_BATCH = 512
"""Most write calls committed in one transaction."""
_INLINE_RECORDS = 32
"""Most records of a write committed on the caller's thread (a bigger one would hold the event loop)."""
_INLINE_RUN = 100
"""Inline commits in a row before a write goes through the writer thread anyway: SQLite's automatic
checkpoint (it copies the WAL into the database file and syncs it: milliseconds) is enabled only there, so
that it never runs on the event loop."""
_CHECKPOINT_PAGES = 1000
"""WAL size (pages) from which a commit of the writer thread checkpoints (SQLite's default)."""
_MAX_CACHED = 65_536
"""Most value sets an array field keeps in memory (then the cache starts over)."""
_CACHED_LEN = 32
"""Longest array whose value set is kept in memory (long ones are rarely repeated)."""
_MAX_COUNTS = 1_024
"""Most query counts kept."""


def _icontains(haystack: Any, needle: Any) -> bool:
    return isinstance(haystack, str) and isinstance(needle, str) and needle.casefold() in haystack.casefold()


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    uri = f"file:{path}?mode={'ro' if readonly else 'rwc'}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.create_function("stationd_icontains", 2, _icontains, deterministic=True)
    return conn


@dataclass(slots=True)
class _Write:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


@dataclass(frozen=True, slots=True)
class Op:
    """One write of `SQLiteStore.write_many`: insert or upsert records, or delete ids."""

    kind: Literal["insert", "upsert", "delete"]
    coll: str
    items: Sequence[Any]


@dataclass(slots=True)
class _ValueSets:
    """An array field's value sets (see `sql.py`) and the ids of those seen, by array and by members."""

    field: str
    find: str
    create: str
    add_member: str
    remove: str
    remove_member: str
    indexed: bool
    """Whether rows can be found by their set: only then are sets no row uses any more removed."""
    convert: Callable[[Any], Any]
    by_array: dict[tuple[Any, ...], int] = field(default_factory=dict)
    by_key: dict[bytes, int] = field(default_factory=dict)

    def forget(self) -> None:
        self.by_array.clear()
        self.by_key.clear()


@dataclass(slots=True)
class _Layout:
    """Per-collection statements and counters, prepared once."""

    coll: Collection
    columns: list[str]
    insert: str
    update: str
    value_sets: dict[str, _ValueSets]
    next_rid: int = 1
    next_id: int = 1
    top_rid: int = 0
    """Highest row key written."""
    changes: int = 0
    """Counts commits that changed or removed rows, or added rows below `top_rid`: cached counts of an older
    value are stale. Bumped after the commit, read before a reader's snapshot, so never too new."""
    changed: bool = False
    encode: Callable[[Any], bytes] = field(default=msgpack_encoder().encode)
    decoder: Any = None
    values: Callable[[Any], tuple[Any, ...]] = tuple
    """The record's column values, in `columns` order (raw)."""
    converters: list[tuple[int, Callable[[Any], Any]]] = field(default_factory=list)
    """(position in a row, raw value -> SQL value) of the columns that need converting (arrays: their value
    set's id, which needs the writer thread)."""


class SQLiteStore:
    """Collections of msgspec records in one SQLite file."""

    def __init__(self, path: Path, collections: Sequence[Collection], *, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self._synchronous = synchronous
        self._layouts = {c.name: self._layout(c) for c in collections}
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"sqlite-read-{self.path.stem}")
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        """The writer's connection: used by the writer thread, or by an inline write holding `_writing`."""
        self._writing = threading.Lock()
        """Held while the writer's connection commits (a batch of the writer thread, or an inline write)."""
        self._queued = 0
        """Writes handed to the writer thread and not committed yet (under `_lock`): while there are any, a
        new write is queued behind them, never committed inline ahead of them."""
        self._inline_run = 0
        """Inline commits since the last write that went through the writer thread (see `_INLINE_RUN`)."""
        self._counts: dict[tuple[Any, ...], tuple[int, int, int]] = {}
        """(collection, count SQL, params) -> (count, `changes`, `top_rid`) when counted."""

    # -- life cycle -----------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Open (or create) the file and bring every collection's layout up to date; raise `StorageError`
        when the file is not a stationd store, is corrupt or comes from a newer version."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._enqueue(_Write(self._prepare, ready, loop))  # the writer's first job, before anything else
        self._writer = threading.Thread(
            target=self._write_loop, name=f"sqlite-write-{self.path.stem}", daemon=True
        )
        self._writer.start()
        try:
            await ready
        except StorageError:
            await self.close()
            raise

    async def close(self) -> None:
        """Finish pending reads and writes, then close: readers first, so that the writer's connection is the
        last one and SQLite checkpoints and removes the WAL file."""
        await asyncio.to_thread(self._readers.shutdown, True)
        with self._lock:
            for conn in self._reader_conns:
                conn.close()
            self._reader_conns.clear()
        if self._writer is not None:
            self._enqueue(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None

    # -- writes: each call is one all-or-nothing unit ------------------------------------------------------
    async def insert(self, coll: str, records: Sequence[msgspec.Struct]) -> list[Any]:
        """Insert records (ids assigned where missing); all or none. Raises `Conflict` on a duplicate id."""
        layout = self._layouts[coll]
        return await self._write(lambda conn: self._insert(conn, layout, records), len(records))

    async def update(self, coll: str, records: Sequence[msgspec.Struct]) -> None:
        """Replace existing records by id; all or none. Raises `NotFound` naming a missing id."""
        layout = self._layouts[coll]
        await self._write(lambda conn: self._replace(conn, layout, records, create=False), len(records))

    async def upsert(self, coll: str, records: Sequence[msgspec.Struct]) -> list[bool]:
        """Replace records by id, inserting those that do not exist; returns which ones were created."""
        layout = self._layouts[coll]
        return await self._write(lambda conn: self._replace(conn, layout, records, create=True), len(records))

    async def delete(self, coll: str, ids: Sequence[Any]) -> int:
        """Delete records by id; returns how many existed."""
        layout = self._layouts[coll]
        return await self._write(lambda conn: self._delete(conn, layout, ids), len(ids))

    async def write_many(self, ops: Sequence[Op]) -> None:
        """Several writes to any collections as one all-or-nothing unit, in order."""
        prepared = [(op, self._layouts[op.coll]) for op in ops]

        def write(conn: sqlite3.Connection) -> None:
            for op, layout in prepared:
                match op.kind:
                    case "insert":
                        self._insert(conn, layout, op.items)
                    case "upsert":
                        self._replace(conn, layout, op.items, create=True)
                    case "delete":
                        self._delete(conn, layout, op.items)

        if prepared:
            await self._write(write, sum(len(op.items) for op in ops))

    # -- reads ---------------------------------------------------------------------------------------------
    async def get(self, coll: str, record_id: Any) -> Any | None:
        found = await self.get_many(coll, [record_id])
        return found[0] if found else None

    async def get_many(self, coll: str, ids: Sequence[Any]) -> list[Any]:
        """The records with these ids that exist, in the order of `ids`."""
        layout = self._layouts[coll]
        c = layout.coll
        kind = c.fields[c.id_field].kind
        keys = [to_column(kind, i) for i in ids]
        key = id_column(c)

        def read(conn: sqlite3.Connection) -> list[Any]:
            found: dict[Any, Any] = {}
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                wanted = ",".join("?" * len(chunk))
                sql = f'SELECT {key}, doc FROM "{c.name}" WHERE {key} IN ({wanted})'
                found.update(conn.execute(sql, chunk).fetchall())
            return [layout.decoder.decode(found[k]) for k in keys if k in found]

        return await self._read(read)

    async def query(self, coll: str, q: Query) -> tuple[list[Any], int]:
        """(the page of records, how many match in all)."""
        layout = self._layouts[coll]
        sel = select(layout.coll, q)
        return await self._read(lambda conn: self._page_and_count(conn, layout, sel, page=True))

    async def count(self, coll: str, q: Query | None = None) -> int:
        layout = self._layouts[coll]
        sel = select(layout.coll, q or Query())
        _, count = await self._read(lambda conn: self._page_and_count(conn, layout, sel, page=False))
        return count

    def _page_and_count(
        self, conn: sqlite3.Connection, layout: _Layout, sel: Select, *, page: bool
    ) -> tuple[list[Any], int]:
        """(the page's records if `page`, the count), read in one snapshot (reader thread)."""
        changes = layout.changes  # before the snapshot starts: a cached count is never newer than it
        conn.execute("BEGIN")
        try:
            docs = conn.execute(sel.page, sel.page_params).fetchall() if page else []
            count = self._count(conn, layout, sel, changes)
        finally:
            conn.execute("COMMIT")
        return [layout.decoder.decode(d) for (d,) in docs], count

    def _count(self, conn: sqlite3.Connection, layout: _Layout, sel: Select, changes: int) -> int:
        """The query's count, from the cache when nothing but appended rows can have changed it."""
        key = (layout.coll.name, sel.count, *sel.count_params)
        try:
            hash(key)
        except TypeError:  # a parameter that cannot be a key (none should be): count without the cache
            return conn.execute(sel.count, sel.count_params).fetchone()[0]
        top = conn.execute(f'SELECT max(_rid) FROM "{layout.coll.name}"').fetchone()[0] or 0
        with self._lock:
            cached = self._counts.pop(key, None)
        count = None
        if cached is not None and cached[1] == changes:
            count, _, counted_top = cached
            if top != counted_top:
                if sel.count_after is None:
                    count = None
                else:
                    count += conn.execute(sel.count_after, [*sel.count_params, counted_top]).fetchone()[0]
        if count is None:
            count = conn.execute(sel.count, sel.count_params).fetchone()[0]
        with self._lock:
            self._counts[key] = (count, changes, top)  # last used goes last: the first is evicted first
            if len(self._counts) > _MAX_COUNTS:
                del self._counts[next(iter(self._counts))]
        return count

    # -- internals: layout and schema ------------------------------------------------------------------------
    def _layout(self, coll: Collection) -> _Layout:
        columns = list(coll.fields)
        names = ", ".join(f'"{n}"' for n in ["_rid", "doc", *columns])
        insert = f'INSERT INTO "{coll.name}" ({names}) VALUES ({",".join("?" * (len(columns) + 2))})'
        update = (
            f'UPDATE "{coll.name}" SET '
            + ", ".join(f'"{n}" = ?' for n in ["doc", *columns])
            + " WHERE _rid = ?"
        )
        value_sets = {
            f.name: _ValueSets(
                field=f.name,
                find=f"SELECT id FROM {sets_table(coll, f.name)} WHERE key = ?",
                create=f"INSERT INTO {sets_table(coll, f.name)} (key) VALUES (?)",
                add_member=f"INSERT INTO {members_table(coll, f.name)} (value, set_id) VALUES (?, ?)",
                remove=f"DELETE FROM {sets_table(coll, f.name)} WHERE id = ?",
                remove_member=f"DELETE FROM {members_table(coll, f.name)} WHERE value = ? AND set_id = ?",
                indexed=f.name not in coll.unindexed,
                convert=column_converter(f.item_kind or Kind.STR) or _same,
            )
            for f in coll.array_fields
        }
        converters = [
            functools.partial(self._value_set, value_sets[n]) if n in value_sets else column_converter(f.kind)
            for n, f in coll.fields.items()
        ]
        getter = operator.attrgetter(*columns)
        return _Layout(
            coll,
            columns,
            insert,
            update,
            value_sets,
            decoder=msgpack_decoder(coll.record),
            values=(lambda r: (getter(r),)) if len(columns) == 1 else getter,
            converters=[(i + 2, c) for i, c in enumerate(converters) if c is not None],
        )

    def _value_set(self, sets: _ValueSets, array: Sequence[Any]) -> int:
        """The id of the value set of `array`, created when new (writer thread only)."""
        items = tuple(array)
        found = sets.by_array.get(items)
        if found is not None:
            return found
        members = self._members(sets, items)
        # a digest, so that long arrays do not make long keys; 128 bits: no collision in any real store
        key = hashlib.blake2b(msgspec.msgpack.encode(members), digest_size=16).digest()
        found = sets.by_key.get(key)
        if found is None:
            assert self._conn is not None
            row = self._conn.execute(sets.find, (key,)).fetchone()
            if row is not None:
                found = row[0]
            else:
                found = self._conn.execute(sets.create, (key,)).lastrowid
                self._conn.executemany(sets.add_member, [(m, found) for m in members])
            if len(sets.by_key) >= _MAX_CACHED:
                sets.forget()
            sets.by_key[key] = found
        if len(items) <= _CACHED_LEN:
            if len(sets.by_array) >= _MAX_CACHED:
                sets.by_array.clear()
            sets.by_array[items] = found
        return found

    @staticmethod
    def _members(sets: _ValueSets, array: Sequence[Any]) -> list[Any]:
        return sorted(set(map(sets.convert, array)))

    def _sets_of(
        self, conn: sqlite3.Connection, layout: _Layout, rids: Sequence[int]
    ) -> dict[Any, list[Any]]:
        """(field, set id) -> members, of the indexed array fields of these rows (before they change)."""
        sets = [vs for vs in layout.value_sets.values() if vs.indexed]
        found: dict[Any, list[Any]] = {}
        if not sets:
            return found
        columns = ", ".join(f'"{vs.field}"' for vs in sets)
        for rid in rids:
            *ids, doc = conn.execute(
                f'SELECT {columns}, doc FROM "{layout.coll.name}" WHERE _rid = ?', (rid,)
            ).fetchone()
            record = layout.decoder.decode(doc)
            for vs, set_id in zip(sets, ids, strict=True):
                found[vs.field, set_id] = self._members(vs, getattr(record, vs.field))
        return found

    def _drop_unused(self, conn: sqlite3.Connection, layout: _Layout, sets: dict[Any, list[Any]]) -> None:
        """Remove the value sets among `sets` that no row uses any more (after rows changed or went)."""
        for (name, set_id), members in sets.items():
            used = conn.execute(f'SELECT 1 FROM "{layout.coll.name}" WHERE "{name}" = ? LIMIT 1', (set_id,))
            if used.fetchone() is None:
                vs = layout.value_sets[name]
                conn.execute(vs.remove, (set_id,))
                conn.executemany(vs.remove_member, [(m, set_id) for m in members])
                vs.forget()

    def _check_file(self, conn: sqlite3.Connection) -> None:
        """Refuse a file that is not ours or is newer, before anything (even WAL mode) writes to it."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id not in (0, APPLICATION_ID):
            raise StorageError(
                f"{self.path} is an SQLite file of another application (id {app_id:#x}); refusing to use it"
            )
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.path} has layout version {version}, newer than this stationd reads "
                f"({SCHEMA_VERSION}); "
                "refusing to touch it (upgrade stationd, or point it at another state directory)"
            )

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Runs in the writer thread inside the first transaction: mark the file ours, create or migrate."""
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for layout in self._layouts.values():
            self._ensure_tables(conn, layout)

    def _ensure_tables(self, conn: sqlite3.Connection, layout: _Layout) -> None:
        """Create the collection's tables, or add what a newer record type declares (filled from `doc`)."""
        c = layout.coll
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{c.name}" (_rid INTEGER PRIMARY KEY, doc BLOB NOT NULL)')
        present = {row[1] for row in conn.execute(f'PRAGMA table_info("{c.name}")')}
        added = [n for n in layout.columns if n not in present]
        for name in added:
            conn.execute(f'ALTER TABLE "{c.name}" ADD COLUMN "{name}" {column_type(c.fields[name].kind)}')
        for f in c.array_fields:
            conn.execute(f'DROP TABLE IF EXISTS "{c.name}__{f.name}"')  # layout 1's per-item side table
            sets, members = sets_table(c, f.name), members_table(c, f.name)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {sets} (id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE)"
            )
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {members} (value NOT NULL, set_id INTEGER NOT NULL, "
                "PRIMARY KEY (value, set_id)) WITHOUT ROWID"
            )
        if added and conn.execute(f'SELECT 1 FROM "{c.name}" LIMIT 1').fetchone():
            self._backfill(conn, layout, added)
        if c.id_kind != "int":  # integer ids are the row key itself
            conn.execute(f'CREATE UNIQUE INDEX IF NOT EXISTS "{c.name}__id" ON "{c.name}" ("{c.id_field}")')
        if c.created_field:
            conn.execute(
                f'CREATE INDEX IF NOT EXISTS "{c.name}__created" ON "{c.name}" ("{c.created_field}")'
            )
        for index in c.indexed:
            cols = ", ".join(f'"{n}"' for n in index)
            conn.execute(f'CREATE INDEX IF NOT EXISTS "{c.name}__{"__".join(index)}" ON "{c.name}" ({cols})')
        layout.top_rid = conn.execute(f'SELECT coalesce(max(_rid), 0) FROM "{c.name}"').fetchone()[0]
        layout.next_rid = layout.top_rid + 1
        if c.id_kind == "int":
            layout.next_id = conn.execute(
                f'SELECT coalesce(max("{c.id_field}"), 0) + 1 FROM "{c.name}"'
            ).fetchone()[0]

    def _backfill(self, conn: sqlite3.Connection, layout: _Layout, columns: list[str]) -> None:
        c = layout.coll
        sets = ", ".join(f'"{n}" = ?' for n in columns)
        positions = [layout.columns.index(n) + 2 for n in columns]  # in a row: _rid, doc, columns…
        for rid, doc in conn.execute(f'SELECT _rid, doc FROM "{c.name}"').fetchall():
            row = self._row(layout, layout.decoder.decode(doc), rid)
            conn.execute(f'UPDATE "{c.name}" SET {sets} WHERE _rid = ?', [*(row[i] for i in positions), rid])

    # -- internals: writing ----------------------------------------------------------------------------------
    def _row(self, layout: _Layout, record: Any, rid: int) -> list[Any]:
        """The SQL values of `record`: rid, doc, then its columns."""
        row = [rid, layout.encode(record), *layout.values(record)]
        for i, convert in layout.converters:
            row[i] = convert(row[i])
        return row

    def _insert(self, conn: sqlite3.Connection, layout: _Layout, records: Sequence[Any]) -> list[Any]:
        c = layout.coll
        out, rows = [], []
        for record in records:
            if getattr(record, c.id_field) is None:
                if c.id_kind == "str":
                    raise Conflict(f"{c.name}: records need an explicit {c.id_field}")
                new_id: Any = layout.next_id if c.id_kind == "int" else uuid.uuid4()
                layout.next_id += c.id_kind == "int"
                record = msgspec.structs.replace(record, **{c.id_field: new_id})
            elif c.id_kind == "int":
                layout.next_id = max(layout.next_id, getattr(record, c.id_field) + 1)
            out.append(record)
            if c.id_kind == "int":
                rows.append((getattr(record, c.id_field), record))
            else:
                rows.append((layout.next_rid, record))
                layout.next_rid += 1
        if rows:
            layout.changed |= min(rid for rid, _ in rows) <= layout.top_rid
            layout.top_rid = max(layout.top_rid, max(rid for rid, _ in rows))
        try:
            conn.executemany(layout.insert, [self._row(layout, r, rid) for rid, r in rows])
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"{c.name}: a record with one of these {c.id_field}s exists already ({exc})"
            ) from None
        return out

    def _rids(self, conn: sqlite3.Connection, layout: _Layout, ids: Sequence[Any]) -> dict[Any, int]:
        c = layout.coll
        kind = c.fields[c.id_field].kind
        found: dict[Any, int] = {}
        for i in ids:
            row = conn.execute(
                f'SELECT _rid FROM "{c.name}" WHERE {id_column(c)} = ?', [to_column(kind, i)]
            ).fetchone()
            if row is not None:
                found[i] = row[0]
        return found

    def _replace(
        self, conn: sqlite3.Connection, layout: _Layout, records: Sequence[Any], *, create: bool
    ) -> list[bool]:
        c = layout.coll
        rids = self._rids(conn, layout, [getattr(r, c.id_field) for r in records])
        missing = [getattr(r, c.id_field) for r in records if getattr(r, c.id_field) not in rids]
        if missing and not create:
            raise NotFound(f"{c.name}: no record with {c.id_field} {missing[0]}")
        created = []
        existing = [(rids[getattr(r, c.id_field)], r) for r in records if getattr(r, c.id_field) in rids]
        if existing:
            layout.changed = True
            before = self._sets_of(conn, layout, [rid for rid, _ in existing])
            conn.executemany(layout.update, [[*self._row(layout, r, rid)[1:], rid] for rid, r in existing])
            self._drop_unused(conn, layout, before)
        new = [r for r in records if getattr(r, c.id_field) not in rids]
        if new:
            self._insert(conn, layout, new)
        for r in records:
            created.append(getattr(r, c.id_field) not in rids)
        return created

    def _delete(self, conn: sqlite3.Connection, layout: _Layout, ids: Sequence[Any]) -> int:
        c = layout.coll
        rids = list(self._rids(conn, layout, ids).values())
        layout.changed |= bool(rids)
        before = self._sets_of(conn, layout, rids)
        conn.executemany(f'DELETE FROM "{c.name}" WHERE _rid = ?', [(rid,) for rid in rids])
        self._drop_unused(conn, layout, before)
        return len(rids)

    async def _write(self, fn: Callable[[sqlite3.Connection], Any], records: int) -> Any:
        """Commit `fn`'s writes as one unit (inline: small, writer idle) and return what `fn` returned."""
        if self._writer is None:
            raise StorageError(f"{self.path}: the store is closed")
        if records <= _INLINE_RECORDS and self._inline_run < _INLINE_RUN and self._take_idle_writer():
            try:
                assert self._conn is not None  # set before the first write (`_prepare`) was committed
                ((value, error),) = self._transaction(self._conn, [fn])
            finally:
                self._writing.release()
            self._inline_run += 1
            if error is not None:
                raise _caller_error(error)
            return value
        self._inline_run = 0
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._enqueue(_Write(fn, future, loop))
        return await future

    def _take_idle_writer(self) -> bool:
        """Take the writer's connection if no write is queued or being committed (then none is overtaken)."""
        with self._lock:
            return self._queued == 0 and self._writing.acquire(blocking=False)

    def _enqueue(self, write: _Write | None) -> None:
        with self._lock:
            self._queued += 1
            self._writes.put(write)

    def _write_loop(self) -> None:
        """Writer thread: take every queued write, run each in its own savepoint, commit them together."""
        conn: sqlite3.Connection | None = None
        try:
            conn = _connect(self.path, readonly=False)
            self._check_file(conn)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: index pages of bulk inserts stay in memory
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # on for the writer thread's commits only
        except sqlite3.Error as exc:
            self._fail_all(StorageError(f"cannot open {self.path}: {exc}"))
            return
        except StorageError as exc:
            conn.close()
            self._fail_all(exc)
            return
        self._conn = conn
        stop = False
        while not stop:
            batch = [self._writes.get()]
            while len(batch) < _MAX_BATCH:
                try:
                    batch.append(self._writes.get_nowait())
                except queue.Empty:
                    break
            if None in batch:
                stop = True
            self._commit(conn, batch)
        self._conn = None
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Write | None]) -> None:
        """Writer thread: commit a batch together, with SQLite's automatic checkpoint (see `_INLINE_RUN`)."""
        writes = [w for w in batch if w is not None]
        results: list[tuple[Any, BaseException | None]] = []
        if writes:
            with self._writing:
                results = self._transaction(conn, [w.fn for w in writes], checkpoint=True)
        with self._lock:
            self._queued -= len(batch)
        for write, (value, error) in zip(writes, results, strict=True):
            write.loop.call_soon_threadsafe(_settle, write.future, value, error)

    def _transaction(
        self,
        conn: sqlite3.Connection,
        fns: list[Callable[[sqlite3.Connection], Any]],
        *,
        checkpoint: bool = False,
    ) -> list[tuple[Any, BaseException | None]]:
        """Run writes in one transaction, each of several in its own savepoint (a failing one is undone
        alone), and commit; (value, error) of each. `checkpoint`: the commit may checkpoint the WAL."""
        results: list[tuple[Any, BaseException | None]] = []
        try:
            if checkpoint:
                conn.execute(f"PRAGMA wal_autocheckpoint = {_CHECKPOINT_PAGES}")
            conn.execute("BEGIN IMMEDIATE")
            if len(fns) == 1:  # alone in its transaction: no savepoint needed to fail alone
                try:
                    results.append((fns[0](conn), None))
                except _WRITE_ERRORS as exc:
                    conn.execute("ROLLBACK")
                    self._forget_value_sets()
                    results.append((None, _write_error(exc)))
            else:
                for fn in fns:
                    conn.execute("SAVEPOINT w")
                    try:
                        results.append((fn(conn), None))
                        conn.execute("RELEASE w")
                    except _WRITE_ERRORS as exc:  # this write fails alone: the writer goes on
                        conn.execute("ROLLBACK TO w")
                        conn.execute("RELEASE w")
                        self._forget_value_sets()
                        results.append((None, _write_error(exc)))
            if conn.in_transaction:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:  # the commit failed (disk full, corrupt file): nothing was written
            self._forget_value_sets()
            results = [(None, self._storage_error(exc)) for _ in fns]
        finally:
            if conn.in_transaction:  # the commit failed, or a bug's exception escaped: undo it all
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                self._forget_value_sets()
            if checkpoint:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_autocheckpoint = 0")
            for layout in self._layouts.values():
                if layout.changed:
                    layout.changes += 1
                    layout.changed = False
        return results

    def _forget_value_sets(self) -> None:
        """After a rollback: value sets created since the last commit are gone, and so must their ids be."""
        for layout in self._layouts.values():
            for sets in layout.value_sets.values():
                sets.forget()

    def _storage_error(self, exc: BaseException) -> StationError:
        if isinstance(exc, StationError):
            return exc
        return StorageError(f"{self.path}: {exc}")

    def _fail_all(self, error: StationError) -> None:
        while True:
            try:
                write = self._writes.get_nowait()
            except queue.Empty:
                return
            if write is not None:
                write.loop.call_soon_threadsafe(_settle, write.future, None, error)

    # -- internals: reading ----------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path, readonly=True)
            with self._lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        def run() -> Any:
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._readers, run)


def _same(value: Any) -> Any:
    return value


_WRITE_ERRORS = (
    StationError,
    sqlite3.Error,
    msgspec.ValidationError,
    msgspec.EncodeError,
    TypeError,
    ValueError,
    OverflowError,
    NotImplementedError,  # the codec's enc_hook for a type it does not know (msgspec passes it on)
)
"""What one write may raise without it being the writer's fault: before, an encoding error escaped, ended the
writer thread and left every later write waiting."""


def _write_error(exc: Exception) -> Exception:
    """What a failed write raises to its caller: the store's own errors as they are, others (a value the
    encoder does not know) as a `StorageError` naming them."""
    if isinstance(exc, (StationError, sqlite3.Error, msgspec.ValidationError)):
        return exc
    return StorageError(f"the write failed: {type(exc).__name__}: {exc}")


def _caller_error(error: BaseException) -> BaseException:
    """What the caller of a failed write gets: a `StationError` as it is, anything else as `StorageError`."""
    return error if isinstance(error, StationError) else StorageError(str(error))


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(_caller_error(error))
    else:
        future.set_result(value)

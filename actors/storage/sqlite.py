"""The embedded backend: one SQLite file per store, WAL, a writer thread that commits queued writes together,
and reader threads for queries (one thread hop per call, never per row). The layout is described in `sql.py`.

A small write made while the writer thread is idle is committed at once on the caller's thread (the event
loop) through the same connection: for a few rows, the hop to the writer thread and back costs more than the
commit itself and wakes two threads. The commit still happens before the call returns (an acknowledged write
survives kill -9), and it never overtakes a queued write.

Bulk inserts: the writer thread encodes a write's rows (column by column, see `_columns`) before it begins
the transaction, while a checkpointer thread copies the WAL of the previous one into the file (see
`_Checkpointer`); writes committed together run without savepoints unless one of them fails.

Counts are cached: a query's count is kept with the collection's change counter and highest row key, and
while only rows were appended since, the next count of the same query adds what the new rows contribute
(one index range) instead of counting every match again."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import operator
import queue
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import msgspec

from stationd.actors.base import checkpoint
from stationd.protocol.codec import dec_hook, msgpack_decoder, msgpack_encoder
from stationd.protocol.errors import Conflict, NotFound, StationError, StorageError

from .collection import Collection
from .fields import EPOCH, MICROSECOND, Kind, column_converter, to_column
from .query import Query
from .sql import Select, column_type, id_column, members_table, select, sets_table

__all__ = ["SCHEMA_VERSION", "Op", "SQLiteStore"]

SCHEMA_VERSION = 3
"""Layout version written to `PRAGMA user_version`; a file with a higher one is refused, never rewritten.
1 -> 2: array fields moved from per-item side tables `c__<field>(value, rid)` to value sets (migrated).
2 -> 3: `doc` of a new row is an array of the values, not a map (half the size): column `_doc_fields` names
the list of fields in `_DOC_FIELDS` (NULL: a map, as older rows keep)."""
_DOC_FIELDS = "_stationd_doc_fields"
"""Table (coll, n, names): the field lists of the collections' array docs, as JSON arrays of names. A list
never changes, a new one is added when the record type's fields do (added, removed, reordered): an array doc
is read by the list it was written with."""
APPLICATION_ID = 0x53544E44  # "STND": marks the file as a stationd store
_MAX_BATCH = 512
"""Most write calls committed in one transaction."""
_INLINE_RECORDS = 32
"""Most records of a write committed on the caller's thread (a bigger one would hold the event loop)."""
_CHECKPOINT_ROWS = 4_000
"""Rows written (inserted, changed or deleted) since the last checkpoint from which a commit asks for the next
one: about the 1,000 pages of SQLite's automatic checkpoint, with rows the size of observations."""
_CHECKPOINT_COMMITS = 250
"""Commits since the last checkpoint from which one asks for the next (a small one writes a few pages)."""
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
    prepare: Callable[[], None] | None = None
    """Python work to do before the transaction (see `_Prepared`)."""


class _Prepared:
    """A write in two steps: `prepare` (Python only: encoding the rows) runs before the writer begins the
    transaction, while the checkpointer copies the WAL of the previous one; then the write itself (`apply`
    with what `prepare` returned) runs in the transaction. An error of `prepare` is raised by the write, so
    that it fails alone, as if raised in the transaction."""

    __slots__ = ("_apply", "_build", "_built", "_error")

    def __init__(self, build: Callable[[], Any], apply: Callable[[sqlite3.Connection, Any], Any]) -> None:
        self._build, self._apply = build, apply
        self._built: Any = None
        self._error: Exception | None = None

    def prepare(self) -> None:
        try:
            self._built = self._build()
        except Exception as exc:  # raised in the transaction, where a write's errors are handled
            self._error = exc

    def __call__(self, conn: sqlite3.Connection) -> Any:
        if self._error is not None:
            raise self._error
        return self._apply(conn, self._built)


class _Checkpointer:
    """Copies the WAL into the database file on a thread and connection of its own (SQLite's automatic
    checkpoint is off): the copy and its fsyncs, C code that releases the GIL, overlap the writer encoding its
    next rows instead of lengthening its commits. The WAL starts over only when a write transaction begins
    after a checkpoint copied all of it, so the writer thread waits for a running one before it begins
    (`wait`); inline writes on the event loop never wait, they only delay that to the next checkpoint."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self._conn = _connect(path, readonly=False)
        self._conn.execute(f"PRAGMA synchronous = {synchronous}")  # how a checkpoint syncs the files
        self._cond = threading.Condition()
        self._wanted = self._running = self._stopping = False
        self._thread = threading.Thread(target=self._loop, name=f"sqlite-checkpoint-{path.stem}", daemon=True)
        self._thread.start()

    def request(self) -> None:
        with self._cond:
            self._wanted = True
            self._cond.notify_all()

    def wait(self) -> None:
        """Until no checkpoint is asked for or running (or the thread is gone: it never fails silently, but
        a writer waiting for nothing would hang every write)."""
        with self._cond:
            while (self._wanted or self._running) and self._thread.is_alive():
                self._cond.wait(timeout=1.0)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()
        self._conn.close()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._wanted or self._stopping):
                    self._cond.wait()
                if self._stopping:  # the writer's connection checkpoints what is left when it closes
                    self._wanted = False
                    self._cond.notify_all()
                    return
                self._wanted, self._running = False, True
            try:
                with contextlib.suppress(sqlite3.Error):  # busy or failing: the next request tries again
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()


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
    by_array: dict[bytes, int] = field(default_factory=dict)
    """By the array as it was given, msgpack-encoded (bytes are no objects the garbage collector tracks)."""
    by_key: dict[bytes, int] = field(default_factory=dict)

    def forget(self) -> None:
        self.by_array.clear()
        self.by_key.clear()


@dataclass(slots=True)
class _Rows:
    """Records to insert, as `SQLiteStore._insert_rows` prepared them."""

    records: list[Any]
    """With their ids."""
    rids: list[int]
    columns: list[list[Any]]
    """See `SQLiteStore._columns` (array fields still encoded arrays)."""


@dataclass(slots=True)
class _Layout:
    """Per-collection statements and counters, prepared once."""

    coll: Collection
    columns: list[str]
    insert: str
    update: str
    value_sets: dict[str, _ValueSets]
    get_id: Callable[[Any], Any]
    column_values: list[tuple[Callable[[Any], Any], Callable[[list[Any]], list[Any]] | None]]
    """Per column of `columns`: (record -> raw value, raw values -> SQL values, or None when stored as they
    are); for array fields, the arrays encoded, which the transaction turns into value set ids."""
    set_columns: list[tuple[int, _ValueSets]]
    """(position in `SQLiteStore._columns`, value sets) of the array fields."""
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
    """Of `doc` maps (layout 2)."""
    doc_fields: int = 0
    """The field list of the array docs written (see `_DOC_FIELDS`)."""
    array_decoders: dict[int, Any] = field(default_factory=dict)
    """Of `doc` arrays, by field list."""

    def decode(self, doc: bytes, fields: int | None) -> Any:
        """A stored record, from `doc` and `_doc_fields`."""
        if fields is None:
            return self.decoder.decode(doc)
        values = self.array_decoders[fields].decode(doc)
        return msgspec.convert(values, self.coll.record, from_attributes=True, dec_hook=_as_decoded)


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
        self._checkpointer: _Checkpointer | None = None
        """Started by the writer thread once the file is known to be a store (see `_Checkpointer`)."""
        self._since_checkpoint = (0, 0)
        """(rows written, commits) when a checkpoint was last asked for (rows: `total_changes`)."""
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
        write = _Prepared(
            lambda: self._insert_rows(layout, records),
            lambda conn, rows: self._write_rows(conn, layout, rows),
        )
        return await self._write(write, len(records), write.prepare)

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
        kind = layout.coll.fields[layout.coll.id_field].kind
        keys = [to_column(kind, i) for i in ids]

        def read(conn: sqlite3.Connection) -> list[Any]:
            found = {k: (doc, n) for k, doc, n in _by_id_column(conn, layout, "doc, _doc_fields", keys)}
            return [layout.decode(*found[k]) for k in keys if k in found]

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
        return [layout.decode(doc, n) for doc, n in docs], count

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
        names = ", ".join(f'"{n}"' for n in ["_rid", "doc", "_doc_fields", *columns])
        insert = f'INSERT INTO "{coll.name}" ({names}) VALUES ({",".join("?" * (len(columns) + 3))})'
        update = (
            f'UPDATE "{coll.name}" SET '
            + ", ".join(f'"{n}" = ?' for n in ["doc", "_doc_fields", *columns])
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
        return _Layout(
            coll,
            columns,
            insert,
            update,
            value_sets,
            operator.attrgetter(coll.id_field),
            [
                (operator.attrgetter(n), _array_keys if n in value_sets else _COLUMN_VALUES.get(f.kind))
                for n, f in coll.fields.items()
            ],
            [(columns.index(n) + 2, sets) for n, sets in value_sets.items()],
            decoder=msgpack_decoder(coll.record),
        )

    def _set_ids(
        self, conn: sqlite3.Connection, sets: _ValueSets, keys: list[bytes], records: Sequence[Any]
    ) -> list[int]:
        """The value set ids of the records' arrays (`keys`: each encoded), new sets created."""
        ids = list(map(sets.by_array.get, keys))  # mostly found in memory: no Python call per row
        if None in ids:
            ids = [
                self._value_set(conn, sets, k, getattr(r, sets.field)) if i is None else i
                for i, k, r in zip(ids, keys, records, strict=True)
            ]
        return ids

    def _value_set(self, conn: sqlite3.Connection, sets: _ValueSets, key: bytes, items: Sequence[Any]) -> int:
        """The id of the value set of `items` (`key`: as `by_array` keeps it), created when new."""
        found = sets.by_array.get(key)
        if found is not None:
            return found
        members = self._members(sets, items)
        # a digest, so that long arrays do not make long keys; 128 bits: no collision in any real store
        digest = hashlib.blake2b(msgspec.msgpack.encode(members), digest_size=16).digest()
        found = sets.by_key.get(digest)
        if found is None:
            row = conn.execute(sets.find, (digest,)).fetchone()
            if row is not None:
                found = row[0]
            else:
                found = conn.execute(sets.create, (digest,)).lastrowid
                conn.executemany(sets.add_member, [(m, found) for m in members])
            if len(sets.by_key) >= _MAX_CACHED:
                sets.forget()
            sets.by_key[digest] = found
        if len(items) <= _CACHED_LEN:
            if len(sets.by_array) >= _MAX_CACHED:
                sets.by_array.clear()
            sets.by_array[key] = found
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
            *ids, doc, n = conn.execute(
                f'SELECT {columns}, doc, _doc_fields FROM "{layout.coll.name}" WHERE _rid = ?', (rid,)
            ).fetchone()
            record = layout.decode(doc, n)
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
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{c.name}" '
            "(_rid INTEGER PRIMARY KEY, doc BLOB NOT NULL, _doc_fields INTEGER)"
        )
        present = {row[1] for row in conn.execute(f'PRAGMA table_info("{c.name}")')}
        if "_doc_fields" not in present:  # layout 2: every doc is a map
            conn.execute(f'ALTER TABLE "{c.name}" ADD COLUMN _doc_fields INTEGER')
        self._doc_fields(conn, layout)
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

    def _doc_fields(self, conn: sqlite3.Connection, layout: _Layout) -> None:
        """The collection's field lists of array docs (see `_DOC_FIELDS`); a new one if its fields changed."""
        c = layout.coll
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_DOC_FIELDS} "
            "(coll TEXT NOT NULL, n INTEGER NOT NULL, names TEXT NOT NULL, PRIMARY KEY (coll, n))"
        )
        lists = {
            n: json.loads(names)
            for n, names in conn.execute(f"SELECT n, names FROM {_DOC_FIELDS} WHERE coll = ?", (c.name,))
        }
        current = list(c.record.__struct_fields__)  # the order of `msgspec.structs.astuple`
        if not lists or lists[max(lists)] != current:
            lists[n := max(lists, default=0) + 1] = current
            conn.execute(f"INSERT INTO {_DOC_FIELDS} VALUES (?, ?, ?)", (c.name, n, json.dumps(current)))
        layout.doc_fields = max(lists)
        types = {f.name: f.type for f in msgspec.structs.fields(c.record)}
        layout.array_decoders = {
            n: msgpack_decoder(
                msgspec.defstruct(
                    f"{c.record.__name__}Doc{n}", [(f, types.get(f, Any)) for f in names], array_like=True
                )
            )
            for n, names in lists.items()
        }

    def _backfill(self, conn: sqlite3.Connection, layout: _Layout, columns: list[str]) -> None:
        c = layout.coll
        sets = ", ".join(f'"{n}" = ?' for n in columns)
        positions = [layout.columns.index(n) + 2 for n in columns]  # in `_columns`: doc, _doc_fields, …
        rows = conn.execute(f'SELECT _rid, doc, _doc_fields FROM "{c.name}"').fetchall()
        for start in range(0, len(rows), 10_000):
            chunk = rows[start : start + 10_000]
            values = self._columns(conn, layout, [layout.decode(doc, n) for _, doc, n in chunk])
            added = [values[i] for i in positions]
            update = f'UPDATE "{c.name}" SET {sets} WHERE _rid = ?'
            conn.executemany(update, zip(*added, [rid for rid, _, _ in chunk], strict=True))

    # -- internals: writing ----------------------------------------------------------------------------------
    def _columns(
        self, conn: sqlite3.Connection | None, layout: _Layout, records: Sequence[Any]
    ) -> list[list[Any]]:
        """The SQL values of `records` column by column: doc, _doc_fields, then `columns`. Built a column at a
        time with `map`, so that most values need no Python call of their own and no row is an object the
        garbage collector tracks. Array fields hold their arrays encoded until `conn` (the writer's
        connection, in the transaction) turns them into value set ids (`_resolve_sets`)."""
        # bytearray, not bytes: sqlite3 binds it as it is, where it looks for an adapter of bytes first
        docs = list(map(bytearray, map(layout.encode, map(msgspec.structs.astuple, records))))
        out: list[list[Any]] = [docs, [layout.doc_fields] * len(docs)]
        converted: dict[Any, tuple[list[Any], list[Any]]] = {}  # convert -> (raw values, SQL values)
        for get, convert in layout.column_values:
            values = list(map(get, records))
            if convert is None:
                out.append(values)
                continue
            # the very objects of the previous column converted alike (a new record's created and modified
            # times) are converted once
            raw, done = converted.get(convert, ((), ()))
            if len(raw) != len(values) or not all(map(operator.is_, raw, values)):
                done = convert(values)
                converted[convert] = (values, done)
            out.append(done)
        return out if conn is None else self._resolve_sets(conn, layout, out, records)

    def _resolve_sets(
        self, conn: sqlite3.Connection, layout: _Layout, columns: list[list[Any]], records: Sequence[Any]
    ) -> list[list[Any]]:
        """`_columns` (of `records`) with the encoded arrays turned into value set ids, as a new list: a write
        may run again after a rollback (see `_transaction`), from its encoded arrays again."""
        columns = list(columns)
        for position, sets in layout.set_columns:
            columns[position] = self._set_ids(conn, sets, columns[position], records)
        return columns

    def _insert(self, conn: sqlite3.Connection, layout: _Layout, records: Sequence[Any]) -> list[Any]:
        return self._write_rows(conn, layout, self._insert_rows(layout, records))

    def _insert_rows(self, layout: _Layout, records: Sequence[Any]) -> _Rows:
        """The records to insert with their ids (assigned where missing), row keys and column values: the
        Python part of an insert, which needs no connection (the writer thread, or an inline write)."""
        c = layout.coll
        ids = list(map(layout.get_id, records))
        if None in ids:
            records, ids = self._with_new_ids(layout, records, ids)
        elif c.id_kind == "int" and ids:
            layout.next_id = max(layout.next_id, max(ids) + 1)
        if c.id_kind == "int":  # the id is the row key
            rids = ids
        else:
            rids = list(range(layout.next_rid, layout.next_rid + len(ids)))
            layout.next_rid += len(ids)
        if rids:
            layout.changed |= min(rids) <= layout.top_rid
            layout.top_rid = max(layout.top_rid, max(rids))
        return _Rows(list(records), rids, self._columns(None, layout, records))

    def _with_new_ids(
        self, layout: _Layout, records: Sequence[Any], ids: list[Any]
    ) -> tuple[list[Any], list[Any]]:
        """(records, ids) with an id assigned where it is missing: integer ones count up from the highest so
        far (in order: a given one moves the count past it), else a uuid4; string ids must be given."""
        c = layout.coll
        if c.id_kind == "str":
            raise Conflict(f"{c.name}: records need an explicit {c.id_field}")
        if c.id_kind == "int" and ids.count(None) == len(ids):  # the usual bulk insert: one run of new ids
            new_ids: list[Any] = list(range(layout.next_id, layout.next_id + len(ids)))
            layout.next_id += len(ids)
        else:
            new_ids = []
            for given in ids:
                if given is None:
                    new_ids.append(layout.next_id if c.id_kind == "int" else uuid.uuid4())
                    layout.next_id += c.id_kind == "int"
                else:
                    new_ids.append(given)
                    if c.id_kind == "int":
                        layout.next_id = max(layout.next_id, given + 1)
        replace, name = msgspec.structs.replace, c.id_field
        pairs = zip(records, ids, new_ids, strict=True)
        return [r if old is not None else replace(r, **{name: i}) for r, old, i in pairs], new_ids

    def _write_rows(self, conn: sqlite3.Connection, layout: _Layout, rows: _Rows) -> list[Any]:
        """Insert what `_insert_rows` built (in the transaction); the records with their ids."""
        columns = self._resolve_sets(conn, layout, rows.columns, rows.records)
        try:
            conn.executemany(layout.insert, zip(rows.rids, *columns, strict=True))
        except sqlite3.IntegrityError as exc:
            c = layout.coll
            raise Conflict(
                f"{c.name}: a record with one of these {c.id_field}s exists already ({exc})"
            ) from None
        return rows.records

    def _rids(self, conn: sqlite3.Connection, layout: _Layout, ids: Sequence[Any]) -> dict[Any, int]:
        """id -> row key of the ids that exist (in the order of `ids`), looked up 500 at a time."""
        kind = layout.coll.fields[layout.coll.id_field].kind
        ids_by_key = {to_column(kind, i): i for i in ids}
        rid_by_key = dict(_by_id_column(conn, layout, "_rid", list(ids_by_key)))
        return {i: rid_by_key[k] for k, i in ids_by_key.items() if k in rid_by_key}

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
            columns = self._columns(conn, layout, [r for _, r in existing])
            conn.executemany(layout.update, zip(*columns, [rid for rid, _ in existing], strict=True))
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

    async def _write(
        self, fn: Callable[[sqlite3.Connection], Any], records: int, prepare: Callable[[], None] | None = None
    ) -> Any:
        """Commit `fn`'s writes as one unit (inline: small, writer idle) and return what `fn` returned;
        `prepare` (see `_Prepared`) runs first, outside the transaction."""
        if self._writer is None:
            raise StorageError(f"{self.path}: the store is closed")
        checkpoint()  # an inline transaction holds the loop: what waits for it goes first
        if records <= _INLINE_RECORDS and self._take_idle_writer():
            try:
                assert self._conn is not None  # set before the first write (`_prepare`) was committed
                if prepare is not None:
                    prepare()
                ((value, error),) = self._transaction(self._conn, [fn])
            finally:
                self._writing.release()
            if error is not None:
                raise _caller_error(error)
            return value
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._enqueue(_Write(fn, future, loop, prepare))
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
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointer's thread does it
            checkpointer = _Checkpointer(self.path, self._synchronous)
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()
            self._fail_all(StorageError(f"cannot open {self.path}: {exc}"))
            return
        except StorageError as exc:
            conn.close()
            self._fail_all(exc)
            return
        self._conn, self._checkpointer = conn, checkpointer
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
            for write in batch:
                if write is not None and write.prepare is not None:
                    write.prepare()
            checkpointer.wait()  # so that the WAL can start over (see `_Checkpointer`)
            self._commit(conn, batch)
        checkpointer.close()  # before the writer's connection: the last one checkpoints and removes the WAL
        self._conn = self._checkpointer = None
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Write | None]) -> None:
        """Writer thread: commit a batch together."""
        writes = [w for w in batch if w is not None]
        results: list[tuple[Any, BaseException | None]] = []
        if writes:
            with self._writing:
                results = self._transaction(conn, [w.fn for w in writes])
        with self._lock:
            self._queued -= len(batch)
        for write, (value, error) in zip(writes, results, strict=True):
            write.loop.call_soon_threadsafe(_settle, write.future, value, error)

    def _transaction(
        self, conn: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[tuple[Any, BaseException | None]]:
        """Run writes in one transaction and commit; (value, error) of each. A failing write fails alone:
        when one of several fails, the transaction is rolled back and run again with each write in its own
        savepoint. Not with savepoints from the start: a savepoint makes SQLite copy each page a write changes
        first, which costs bulk inserts ~7%."""
        results: list[tuple[Any, BaseException | None]] | None = []
        try:
            results = self._run_writes(conn, fns, savepoints=False)
            if results is None:
                results = self._run_writes(conn, fns, savepoints=True)
            if conn.in_transaction:
                conn.execute("COMMIT")
                self._after_commit(conn)
        except sqlite3.Error as exc:  # the commit failed (disk full, corrupt file): nothing was written
            self._forget_value_sets()
            results = [(None, self._storage_error(exc)) for _ in fns]
        finally:
            assert results is not None
            if conn.in_transaction:  # the commit failed, or a bug's exception escaped: undo it all
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                self._forget_value_sets()
            for layout in self._layouts.values():
                if layout.changed:
                    layout.changes += 1
                    layout.changed = False
        return results

    def _run_writes(
        self, conn: sqlite3.Connection, fns: list[Callable[[sqlite3.Connection], Any]], *, savepoints: bool
    ) -> list[tuple[Any, BaseException | None]] | None:
        """Begin a transaction and run the writes in it; (value, error) of each. Without `savepoints`, a
        failing write rolls the transaction back, and None says to run them again with savepoints (unless it
        was alone: then it failed alone)."""
        results: list[tuple[Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        for fn in fns:
            if savepoints:
                conn.execute("SAVEPOINT w")
            try:
                results.append((fn(conn), None))
            except _WRITE_ERRORS as exc:  # this write fails alone: the writer goes on
                if savepoints:
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                elif conn.in_transaction:  # (an I/O error may have rolled it back already)
                    conn.execute("ROLLBACK")
                self._forget_value_sets()
                if not savepoints and len(fns) > 1:
                    return None
                results.append((None, _write_error(exc)))
            else:
                if savepoints:
                    conn.execute("RELEASE w")
        return results

    def _after_commit(self, conn: sqlite3.Connection) -> None:
        """Ask for a checkpoint once enough was written since the last one (see `_CHECKPOINT_ROWS`)."""
        rows, commits = self._since_checkpoint
        rows_now = conn.total_changes
        if rows_now - rows >= _CHECKPOINT_ROWS or commits + 1 >= _CHECKPOINT_COMMITS:
            assert self._checkpointer is not None  # started before the first transaction
            self._checkpointer.request()
            self._since_checkpoint = (rows_now, 0)
        else:
            self._since_checkpoint = (rows, commits + 1)

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


def _by_id_column(
    conn: sqlite3.Connection, layout: _Layout, columns: str, keys: list[Any]
) -> Iterator[tuple[Any, ...]]:
    """(id column, *`columns`) of the rows whose id column is among `keys` (SQL values), 500 keys a query."""
    c = layout.coll
    key = id_column(c)
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        yield from conn.execute(
            f'SELECT {key}, {columns} FROM "{c.name}" WHERE {key} IN ({",".join("?" * len(chunk))})', chunk
        )


def _as_decoded(type_: Any, value: Any) -> Any:
    """`dec_hook` of an array doc's values turned into the record: they were decoded already (a numpy array,
    a complex number)."""
    return value if isinstance(value, type_) else dec_hook(type_, value)


# -- column values: `to_column` over a whole column (see `SQLiteStore._columns`) -------------------------
def _array_keys(arrays: list[Any]) -> list[bytes]:
    """Arrays as the keys of `_ValueSets.by_array`."""
    return list(map(_ENCODE_ARRAY, arrays))


def _micros(values: list[Any]) -> list[Any]:
    """Times as integer microseconds since the epoch (naive ones taken as UTC)."""
    try:  # aware times, the usual case: no Python call per value
        return list(map(operator.floordiv, map(operator.sub, values, repeat(EPOCH)), repeat(MICROSECOND)))
    except TypeError:  # None or naive times among them
        return [to_column(Kind.DATETIME, v) for v in values]


def _bools(values: list[Any]) -> list[Any]:
    """Bools as integers (bound as it is, a bool costs sqlite3 a lookup for an adapter); other values (None)
    as they are."""
    if set(map(type, values)) <= {bool}:
        return list(map(int, values))
    return values


def _json(values: list[Any]) -> list[Any]:
    if None in values:
        return [to_column(Kind.JSON, v) for v in values]
    return list(map(bytes.decode, map(msgspec.json.encode, values)))


_COLUMN_VALUES: dict[Kind, Callable[[list[Any]], list[Any]]] = {
    Kind.DATETIME: _micros,
    Kind.BOOL: _bools,
    Kind.UUID: lambda values: [None if v is None else str(v) for v in values],
    Kind.JSON: _json,
    Kind.ANY: lambda values: [None if v is None else 1 for v in values],  # only whether it is null is asked
}
_ENCODE_ARRAY = msgpack_encoder().encode


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

"""Translation of a validated `Query` into SQLite SQL over the layout `SQLiteStore` creates.

Layout per collection `c`: table `c` with `_rid` (row key), `doc` (the record, msgpack: the array of its
values, `_doc_fields` naming their fields, see `sqlite.py`), one typed column per scalar field (times as
integer microseconds, UUIDs as text), one JSON text column per mapping field (queried with `json_extract`),
and one integer column per array field holding the id of the row's *value set*: the distinct values of the
array, stored once in `c__<field>__sets(id, key)` with one row per member in `c__<field>__members(value,
set_id)`. Rows share few value sets (tags, labels), so `overlap` and `contains` first find the matching sets
in the small members table, then the rows by an index on the set column:
one B-tree entry per row instead of one per array item, and counts read from that index alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .collection import Collection
from .fields import Kind, to_column
from .query import Filter, Query

__all__ = ["Select", "column_type", "id_column", "json_path", "members_table", "select", "sets_table"]

SELECT_COUNT = "SELECT count(*) FROM ({})"
RECORD = "t.doc, t._doc_fields"
"""What a page selects of a row: its record (see `SQLiteStore` for `_doc_fields`)."""


@dataclass(frozen=True, slots=True)
class Select:
    """The statements of one query."""

    page: str
    """Selects `doc` and `_doc_fields` of the page's rows."""
    page_params: list[Any]
    count: str
    count_params: list[Any]
    count_after: str | None
    """Counts the matching rows with `_rid` above one more parameter (appended to `count_params`): what
    appending rows added to a count; None for `latest` queries, whose groups a new row can replace."""


def id_column(coll: Collection) -> str:
    """The column holding the record id: for integer ids the row key itself (one B-tree less, rowid order)."""
    return "_rid" if coll.id_kind == "int" else f'"{coll.id_field}"'


def column_type(kind: Kind) -> str:
    return {Kind.STR: "TEXT", Kind.UUID: "TEXT", Kind.FLOAT: "REAL", Kind.JSON: "TEXT"}.get(kind, "INTEGER")


def sets_table(coll: Collection, field: str) -> str:
    return f'"{coll.name}__{field}__sets"'


def members_table(coll: Collection, field: str) -> str:
    return f'"{coll.name}__{field}__members"'


def json_path(path: tuple[str, ...]) -> str:
    return "$" + "".join('."' + p.replace('"', '""') + '"' for p in path)


def _encode(f: Filter, value: Any) -> Any:
    if f.kind == Kind.JSON:
        return int(value) if isinstance(value, bool) else value
    return to_column(f.kind, value)


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _condition(coll: Collection, f: Filter, params: list[Any], unindexed: bool = False) -> str:
    """SQL of one filter; `unindexed` keeps the planner from using an index for array filters."""
    if coll.fields[f.field].kind == Kind.ARRAY:
        return _array_condition(coll, f, params, f'{"+" if unindexed else ""}t."{f.field}"')
    if f.lookup == "in" and not f.value:
        return "0"  # nothing to look for: no row matches
    if f.path:  # the path is a quoted literal, not a parameter: `col` may appear twice in one condition
        literal = json_path(f.path).replace("'", "''")
        col = f"json_extract(t.\"{f.field}\", '{literal}')"
    else:
        col = f't."{f.field}"'
    match f.lookup:
        case "isnull":
            return f"{col} IS {'' if f.value else 'NOT '}NULL"
        case "exact" if f.value is None:
            return f"{col} IS NULL"
        case "exact":
            params.append(_encode(f, f.value))
            return f"{col} = ?"
        case "in":
            params.extend(_encode(f, v) for v in f.value)
            return f"{col} IN ({_placeholders(len(f.value))})"
        case "range":
            if isinstance(f.value[0], str) != isinstance(f.value[1], str):
                return "0"  # nothing lies between a number and a string (SQLite orders every number first)
            params.extend(_encode(f, v) for v in f.value)
            return f"{col} BETWEEN ? AND ?"
        case "contains":
            params.append(f.value)
            return f"(typeof({col}) = 'text' AND instr({col}, ?) > 0)"
        case "icontains":
            params.append(f.value)
            return f"(typeof({col}) = 'text' AND stationd_icontains({col}, ?))"
        case _:
            raise AssertionError(f.lookup)


def _array_condition(coll: Collection, f: Filter, params: list[Any], column: str) -> str:
    members = members_table(coll, f.field)
    values = list(dict.fromkeys(_encode(f, v) for v in f.value)) if f.lookup != "isnull" else []
    match f.lookup:
        case "isnull":
            return "0" if f.value else "1"  # array fields are never null
        case "overlap":
            if not values:
                return "0"
            params.extend(values)
            return f"{column} IN (SELECT set_id FROM {members} WHERE value IN ({_placeholders(len(values))}))"
        case "contains":
            if not values:
                return "1"
            params.extend(values)
            wanted = _placeholders(len(values))
            return (
                f"{column} IN (SELECT set_id FROM {members} WHERE value IN ({wanted}) "
                f"GROUP BY set_id HAVING count(*) = {len(values)})"
            )
        case _:
            raise AssertionError(f.lookup)


def select(coll: Collection, q: Query) -> Select:
    """The page and count statements of `q`."""
    params: list[Any] = []
    where = " AND ".join(_condition(coll, f, params) for f in q.filters) or "1"
    table = f'"{coll.name}"'
    count_after = None
    if q.latest is not None:
        # The newest row per value of `latest` (latest creation time, then highest id). Not a window function,
        # which sorts every matching row in full: one pass finds each group's latest creation time (from the
        # index alone when one leads with the filtered fields, `latest` and the creation time), then one seek
        # per group picks its row. In that seek array filters are unindexed, so that the planner does not
        # probe their index once per matching value set. `IS` matches a NULL group or time, as the window did.
        key, created = f't."{q.latest}"', f't."{coll.created_field}"'
        groups = f"SELECT {key} AS k, max({created}) AS c FROM {table} AS t WHERE {where} GROUP BY {key}"
        pick_params: list[Any] = []
        again = " AND ".join(_condition(coll, f, pick_params, unindexed=True) for f in q.filters) or "1"
        pick = (
            f"SELECT t._rid FROM {table} AS t WHERE {again} AND {key} IS g.k AND {created} IS g.c "
            f"ORDER BY t.{id_column(coll)} DESC LIMIT 1"
        )
        source = f"({groups}) AS g JOIN {table} AS t ON t._rid = ({pick})"
        page_params = params + pick_params
        count = SELECT_COUNT.format(f"SELECT 1 FROM {table} AS t WHERE {where} GROUP BY {key}")
    else:
        source = f"{table} AS t WHERE {where}"
        page_params = list(params)
        count = SELECT_COUNT.format(f"SELECT 1 FROM {source}")
        count_after = SELECT_COUNT.format(f"SELECT 1 FROM {table} AS t WHERE ({where}) AND t._rid > ?")
    order = [f't."{o.field}" {"DESC" if o.descending else "ASC"}' for o in q.order_by]
    order.append(f"t.{id_column(coll)} ASC")
    ordered = f"FROM {source} ORDER BY {', '.join(order)}"
    if q.limit > 0 or q.offset:
        # the page's row keys first (from an index alone, where one covers the filters), then their records:
        # sorting many matches for a small page then moves row keys, not records
        keys = f"SELECT t._rid {ordered} LIMIT ? OFFSET ?"
        page = f"SELECT {RECORD} FROM {table} AS t WHERE t._rid IN ({keys}) ORDER BY {', '.join(order)}"
        page_params += [q.limit if q.limit > 0 else -1, q.offset]
    else:
        page = f"SELECT {RECORD} {ordered}"
    return Select(page, page_params, count, params, count_after)

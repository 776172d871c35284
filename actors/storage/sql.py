"""Translation of a validated `Query` into SQLite SQL over the layout `SQLiteStore` creates.

Layout per collection `c`: table `c` with `_rid` (row key), `doc` (the record, msgpack), one typed column
per scalar field (times as integer microseconds, UUIDs as text), one JSON text column per mapping field
(queried with `json_extract`), and a side table `c__<field>(value, rid)` per array field, indexed both ways,
so `overlap` and `contains` use an index instead of scanning JSON.
"""

from __future__ import annotations

from typing import Any

from .collection import Collection
from .fields import Kind, to_column
from .query import Filter, Query

__all__ = ["SELECT_COUNT", "column_type", "id_column", "json_path", "select", "side_table"]

SELECT_COUNT = "SELECT count(*) FROM ({})"


def id_column(coll: Collection) -> str:
    """The column holding the record id: for integer ids the row key itself (one B-tree less, rowid order)."""
    return "_rid" if coll.id_kind == "int" else f'"{coll.id_field}"'


def column_type(kind: Kind) -> str:
    return {Kind.STR: "TEXT", Kind.UUID: "TEXT", Kind.FLOAT: "REAL", Kind.JSON: "TEXT"}.get(kind, "INTEGER")


def side_table(coll: Collection, field: str) -> str:
    return f'"{coll.name}__{field}"'


def json_path(path: tuple[str, ...]) -> str:
    return "$" + "".join('."' + p.replace('"', '""') + '"' for p in path)


def _encode(f: Filter, value: Any) -> Any:
    if f.kind == Kind.JSON:
        return int(value) if isinstance(value, bool) else value
    return to_column(f.kind, value)


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _condition(coll: Collection, f: Filter, params: list[Any], rid: str = "t._rid") -> str:
    if coll.fields[f.field].kind == Kind.ARRAY:
        return _array_condition(coll, f, params, rid)
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


def _array_condition(coll: Collection, f: Filter, params: list[Any], rid: str) -> str:
    side = side_table(coll, f.field)
    values = list(dict.fromkeys(_encode(f, v) for v in f.value)) if f.lookup != "isnull" else []
    match f.lookup:
        case "isnull":
            return "0" if f.value else "1"  # array fields are never null
        case "overlap":
            if not values:
                return "0"
            params.extend(values)
            return f"{rid} IN (SELECT rid FROM {side} WHERE value IN ({_placeholders(len(values))}))"
        case "contains":
            if not values:
                return "1"
            params.extend(values)
            wanted = _placeholders(len(values))
            return f"(SELECT count(*) FROM {side} WHERE rid = {rid} AND value IN ({wanted})) = {len(values)}"
        case _:
            raise AssertionError(f.lookup)


def select(coll: Collection, q: Query) -> tuple[str, str, list[Any], list[Any]]:
    """(page SQL, count SQL, page params, count params); the page selects `doc`."""
    params: list[Any] = []
    where = " AND ".join(_condition(coll, f, params) for f in q.filters) or "1"
    table = f'"{coll.name}"'
    if q.latest is not None:
        # The newest row per value of `latest` (latest creation time, then highest id). Not a window function,
        # which sorts every matching row in full: one pass finds each group's latest creation time (from the
        # index alone when one leads with the filtered fields, `latest` and the creation time), then one seek
        # per group picks its row. In that seek array filters test `+t._rid`, so that the planner does not
        # probe the index once per rid of their list. `IS` matches a NULL group or time, as the window did.
        key, created = f't."{q.latest}"', f't."{coll.created_field}"'
        groups = f"SELECT {key} AS k, max({created}) AS c FROM {table} AS t WHERE {where} GROUP BY {key}"
        pick_params: list[Any] = []
        again = " AND ".join(_condition(coll, f, pick_params, rid="+t._rid") for f in q.filters) or "1"
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
    order = [f't."{o.field}" {"DESC" if o.descending else "ASC"}' for o in q.order_by]
    order.append(f"t.{id_column(coll)} ASC")
    page = f"SELECT t.doc FROM {source} ORDER BY {', '.join(order)}"
    if q.limit > 0 or q.offset:
        page += " LIMIT ? OFFSET ?"
        page_params += [q.limit if q.limit > 0 else -1, q.offset]
    return page, count, page_params, params

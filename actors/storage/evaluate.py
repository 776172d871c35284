"""The query semantics in plain Python: the reference every backend is tested against, and the in-memory
implementation of small collections."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from .collection import Collection
from .fields import Kind, to_column
from .query import Filter, Query

__all__ = ["evaluate", "matches"]

_MISSING = object()


def _get(record: msgspec.Struct, f: Filter) -> Any:
    value = getattr(record, f.field)
    for key in f.path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _norm(kind: Kind, value: Any) -> Any:
    """Compare values as the SQL backend stores them (times as microseconds, UUIDs as text)."""
    if kind == Kind.JSON:
        return int(value) if isinstance(value, bool) else value  # JSON true is 1 to SQLite's json_extract
    return to_column(kind, value)


def _comparable(a: Any, b: Any) -> bool:
    return isinstance(a, str) == isinstance(b, str)


def matches(record: msgspec.Struct, f: Filter) -> bool:
    """Does `record` satisfy `f`?"""
    value = _get(record, f)
    if f.lookup == "isnull":
        return (value is None) == f.value
    if f.kind == Kind.JSON and isinstance(value, (dict, list)):
        value = msgspec.json.encode(value).decode()  # json_extract returns containers as JSON text
    match f.lookup:
        case "exact":
            if f.value is None:
                return value is None
            return (
                value is not None
                and _comparable(value, f.value)
                and _norm(f.kind, value) == _norm(f.kind, f.value)
            )
        case "in":
            v = _norm(f.kind, value)
            return value is not None and any(_comparable(value, x) and v == _norm(f.kind, x) for x in f.value)
        case "range":
            low, high = f.value
            if value is None or not (_comparable(value, low) and _comparable(value, high)):
                return False
            return _norm(f.kind, low) <= _norm(f.kind, value) <= _norm(f.kind, high)
        case "contains" if isinstance(value, (list, tuple)):
            have = {_norm(f.kind, v) for v in value}
            return all(_norm(f.kind, x) in have for x in f.value)
        case "contains":
            return isinstance(value, str) and f.value in value
        case "icontains":
            return isinstance(value, str) and f.value.casefold() in value.casefold()
        case "overlap":
            have = {_norm(f.kind, v) for v in value or ()}
            return any(_norm(f.kind, x) in have for x in f.value)
        case _:
            raise AssertionError(f.lookup)


def _sort_key(coll: Collection, name: str, record: msgspec.Struct) -> Any:
    value = to_column(coll.fields[name].kind, getattr(record, name))
    return (value is not None, value)  # NULLs first, as SQL orders them ascending


def evaluate(coll: Collection, records: Iterable[msgspec.Struct], q: Query) -> tuple[list[Any], int]:
    """(the page of records, how many matched in all) for `q` over `records`."""
    rows = [r for r in records if all(matches(r, f) for f in q.filters)]
    key_id = coll.id_field
    if q.latest is not None:
        assert coll.created_field is not None
        newest: dict[Any, msgspec.Struct] = {}
        for r in rows:
            group = _sort_key(coll, q.latest, r)
            mine = (_sort_key(coll, coll.created_field, r), _sort_key(coll, key_id, r))
            best = newest.get(group)
            if best is None or mine > (
                _sort_key(coll, coll.created_field, best),
                _sort_key(coll, key_id, best),
            ):
                newest[group] = r
        rows = list(newest.values())
    rows.sort(key=lambda r: _sort_key(coll, key_id, r))
    for order in reversed(q.order_by):
        rows.sort(key=lambda r, o=order: _sort_key(coll, o.field, r), reverse=order.descending)
    return _page(rows, q), len(rows)


def _page(rows: Sequence[Any], q: Query) -> list[Any]:
    end = q.offset + q.limit if q.limit > 0 else None
    return list(rows[q.offset : end])

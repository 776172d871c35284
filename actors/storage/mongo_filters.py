"""MongoDB filters for validated lookups, and the stored form of values they run against (see mongo.py's
layout): the same answers as the Python reference, on MongoDB and on stand-ins such as nx-27017."""

from __future__ import annotations

import enum
import re
from typing import Any

import msgspec

from .collection import Collection
from .fields import Kind, to_column
from .query import Filter

__all__ = ["FOLDED", "NOTHING", "RESERVED", "TEXT", "all_of", "column", "condition", "mirror"]

TEXT = "%"
"""Key of a nested mapping's JSON text in the stored mirror of a mapping field."""
FOLDED = "_cf"
"""Field holding the case-folded copies used by `icontains`."""
RESERVED = ("_id", "doc", FOLDED)
"""Field names the layout uses itself."""
_INT64 = range(-(2**63), 2**63)
NOTHING: dict[str, Any] = {"_id": {"$in": []}}
"""A condition no document meets."""


def _escape(key: str) -> str:
    """A mapping key as a field name that Mongo neither splits (`.`) nor takes as an operator (`$`)."""
    return key.replace("%", "%25").replace(".", "%2E").replace("$", "%24").replace("\x00", "%00")


def _json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def mirror(value: Any, *, fold: bool, root: bool = False) -> Any:
    """The queryable form of a decoded JSON value (see the module docstring); `fold`: only its strings,
    case-folded."""
    if isinstance(value, dict):
        out: dict[str, Any] = {} if root else {TEXT: _fold(_json_text(value), fold)}
        for key, item in value.items():
            mirrored = mirror(item, fold=fold)
            if not fold or isinstance(mirrored, (str, dict)):
                out[_escape(str(key))] = mirrored
        return out
    if isinstance(value, list):
        return _fold(_json_text(value), fold)
    if isinstance(value, str):
        return _fold(value, fold)
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return float(value)  # BSON has no bigger integers; SQLite's JSON reads them as REAL too
    return value


def _fold(text: str, fold: bool) -> str:
    return text.casefold() if fold else text


def column(kind: Kind, value: Any) -> Any:
    """A scalar as stored and compared: `to_column`, but booleans stay booleans."""
    if value is None:
        return None
    if kind == Kind.BOOL:
        return bool(value)
    if kind == Kind.STR and isinstance(value, enum.Enum):
        value = value.value
    return to_column(kind, value)


def all_of(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    if not conditions:
        return {}
    return conditions[0] if len(conditions) == 1 else {"$and": conditions}


def _any(conditions: list[dict[str, Any]]) -> dict[str, Any]:
    if not conditions:
        return NOTHING
    return conditions[0] if len(conditions) == 1 else {"$or": conditions}


def _null(path: str) -> dict[str, Any]:
    """`path` is missing or null. (Not `{path: null}`: nx-27017 counts and groups that one wrongly.)"""
    return {"$or": [{path: {"$exists": False}}, {path: {"$type": "null"}}]}


def _not_null(path: str) -> dict[str, Any]:
    """`path` holds a value. (Not `{$ne: null}` alone: nx-27017 lets a missing nested field through.)"""
    return {path: {"$exists": True, "$ne": None}}


def _substring(text: str) -> dict[str, Any]:
    return {"$type": "string", "$regex": re.escape(text)}


def condition(coll: Collection, f: Filter) -> dict[str, Any]:
    """The MongoDB filter of one lookup."""
    kind = coll.fields[f.field].kind
    if kind == Kind.ARRAY:
        return _array_condition(f)
    if f.path:
        return _json_condition(f)
    name = f.field
    match f.lookup:
        case "isnull":
            return _null(name) if f.value else _not_null(name)
        case "exact" if f.value is None:
            return _null(name)
        case "exact":
            return {name: column(f.kind, f.value)}
        case "in":
            return {name: {"$in": [column(f.kind, v) for v in f.value]}} if f.value else NOTHING
        case "range":
            low, high = (column(f.kind, v) for v in f.value)
            return {name: {"$gte": low, "$lte": high}}
        case "contains":
            return {name: _substring(f.value)}
        case "icontains":
            return {f"{FOLDED}.{name}": _substring(f.value.casefold())}
        case _:
            raise AssertionError(f.lookup)


def _array_condition(f: Filter) -> dict[str, Any]:
    name = f.field
    if f.lookup == "isnull":
        return _null(name) if f.value else _not_null(name)
    values = list(dict.fromkeys(column(f.kind, v) for v in f.value))
    match f.lookup:
        case "overlap":
            return {name: {"$in": values}} if values else NOTHING
        case "contains":  # an empty `$all` matches nothing on MongoDB: containing nothing is being there
            return {name: {"$all": values}} if values else _not_null(name)
        case _:
            raise AssertionError(f.lookup)


def _json_condition(f: Filter) -> dict[str, Any]:
    """A lookup on a path inside a mapping, as the reference evaluates it: JSON booleans are the numbers 1 and
    0, containers compare as their JSON text, strings never compare with numbers. Every comparison names the
    type it applies to (`$type`), so none reaches into another type or a sub-document."""
    path = ".".join([f.field, *(_escape(p) for p in f.path)])
    text = f"{path}.{TEXT}"  # a nested mapping's JSON text
    match f.lookup:
        case "isnull":
            return _null(path) if f.value else _not_null(path)
        case "exact" if f.value is None:
            return _null(path)
        case "exact" | "in":
            values = [f.value] if f.lookup == "exact" else list(f.value)
            strings = [v for v in values if isinstance(v, str)]
            numbers = [int(v) if isinstance(v, bool) else v for v in values if not isinstance(v, str)]
            booleans = [b for b in (False, True) if any(n == b for n in numbers)]
            clauses: list[dict[str, Any]] = []
            if strings:
                clauses += [{path: {"$in": strings, "$type": "string"}}, {text: {"$in": strings}}]
            if numbers:
                clauses.append({path: {"$in": numbers, "$type": "number"}})
            if booleans:
                clauses.append({path: {"$in": booleans, "$type": "bool"}})
            return _any(clauses)
        case "range":
            low, high = f.value
            if isinstance(low, str) != isinstance(high, str):
                return NOTHING  # no value lies between a number and a string
            if isinstance(low, str):
                between = {"$gte": low, "$lte": high}
                return _any([{path: {**between, "$type": "string"}}, {text: between}])
            low, high = (
                int(low) if isinstance(low, bool) else low,
                int(high) if isinstance(high, bool) else high,
            )
            clauses = [{path: {"$gte": low, "$lte": high, "$type": "number"}}]
            booleans = [b for b in (False, True) if low <= b <= high]
            if booleans:
                clauses.append({path: {"$in": booleans, "$type": "bool"}})
            return _any(clauses)
        case "contains":
            return _any([{path: _substring(f.value)}, {text: _substring(f.value)}])
        case "icontains":
            folded = f"{FOLDED}.{path}"
            needle = f.value.casefold()
            return _any([{folded: _substring(needle)}, {f"{folded}.{TEXT}": _substring(needle)}])
        case _:
            raise AssertionError(f.lookup)

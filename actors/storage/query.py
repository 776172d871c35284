"""Django-style lookups (`field__lookup=value`, nested `source__run_id__in=[…]`) parsed into a typed query.

Parsing checks everything up front: unknown fields, unknown lookups, lookups that do not apply to a field's
kind, values of the wrong type, `range` without exactly two bounds. All problems are reported together, each
naming the parameter, so nothing half-valid reaches a backend.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from stationd.protocol.errors import InvalidQuery

from .collection import Collection
from .fields import SCALARS, Field, Kind

__all__ = ["DEFAULT_LIMIT", "LOOKUPS", "Filter", "Order", "Query", "parse_query"]

LOOKUPS = ("exact", "in", "range", "contains", "icontains", "overlap", "isnull")
DEFAULT_LIMIT = 20
RESERVED = ("latest", "order_by", "limit", "offset")

_ALLOWED: dict[Kind, tuple[str, ...]] = {
    Kind.STR: ("exact", "in", "range", "contains", "icontains", "isnull"),
    Kind.INT: ("exact", "in", "range", "isnull"),
    Kind.FLOAT: ("exact", "in", "range", "isnull"),
    Kind.DATETIME: ("exact", "in", "range", "isnull"),
    Kind.UUID: ("exact", "in", "range", "isnull"),
    Kind.BOOL: ("exact", "in", "isnull"),
    Kind.ARRAY: ("contains", "overlap", "isnull"),
    Kind.JSON: ("isnull",),
    Kind.ANY: ("isnull",),
}
_NESTED = ("exact", "in", "range", "contains", "icontains", "isnull")
JsonScalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Filter:
    """One condition: `field[path…]__lookup = value`, value already converted to the field's type."""

    field: str
    path: tuple[str, ...]
    lookup: str
    value: Any
    kind: Kind
    """Kind of what is compared: the field's, its items' for arrays, JSON scalar for nested paths."""


@dataclass(frozen=True, slots=True)
class Order:
    field: str
    descending: bool


@dataclass(frozen=True, slots=True)
class Query:
    """A validated query: every filter must hold; then `latest`, ordering and paging."""

    filters: tuple[Filter, ...] = ()
    latest: str | None = None
    order_by: tuple[Order, ...] = ()
    limit: int = DEFAULT_LIMIT
    """0 or negative: no paging."""
    offset: int = 0


def _utc(value: Any) -> Any:
    if isinstance(value, datetime.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=datetime.UTC)  # stationd's timestamps are UTC; naive input means UTC
    return value


def _convert(value: Any, type_: Any, key: str) -> Any:
    try:
        return _utc(msgspec.convert(value, type_, strict=False))
    except msgspec.ValidationError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str) and "," in value:
        return value.split(",")  # CLI form: tags__overlap=a,b
    return [value]


def _value(f: Field, kind: Kind, lookup: str, raw: Any, key: str) -> Any:
    if lookup == "isnull":
        return _convert(raw, bool, key)
    type_ = JsonScalar if kind == Kind.JSON else f.py_type
    match lookup:
        case "in" | "overlap":
            return tuple(_convert(v, type_, key) for v in _as_list(raw))  # null is refused: use __isnull
        case "contains" if f.kind == Kind.ARRAY:
            return tuple(_convert(v, type_, key) for v in _as_list(raw))
        case "contains" | "icontains":
            return _convert(raw, str, key)
        case "range":
            bounds = raw if isinstance(raw, (list, tuple)) else _as_list(raw)
            if len(bounds) != 2:
                raise ValueError(f"{key}: a range needs exactly two bounds [low, high], got {len(bounds)}")
            return tuple(_convert(v, type_, key) for v in bounds)
        case _:  # exact
            return None if raw is None else _convert(raw, type_, key)


def _parse_filter(coll: Collection, key: str, raw: Any) -> Filter:
    parts = key.split("__")
    lookup = parts.pop() if len(parts) > 1 and parts[-1] in LOOKUPS else "exact"
    name, path = parts[0], tuple(parts[1:])
    f = coll.fields.get(name)
    if f is None:
        raise ValueError(f"{key}: {coll.name} has no field {name!r}")
    if path and f.kind != Kind.JSON:
        if len(path) == 1:
            raise ValueError(f"{key}: unknown lookup {path[0]!r} (lookups: {', '.join(LOOKUPS)})")
        raise ValueError(f"{key}: {name!r} has no sub-fields")
    if any(not p for p in path):
        raise ValueError(f"{key}: empty path element")
    allowed = _NESTED if path else _ALLOWED[f.kind]
    if lookup not in allowed:
        raise ValueError(f"{key}: lookup {lookup!r} does not apply to {name!r} (use {', '.join(allowed)})")
    kind = Kind.JSON if path else (f.item_kind or f.kind) if f.kind == Kind.ARRAY else f.kind
    return Filter(name, path, lookup, _value(f, Kind.JSON if path else f.kind, lookup, raw, key), kind)


def _parse_order(coll: Collection, raw: Any, errors: list[str]) -> tuple[Order, ...]:
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    out = []
    for item in items:
        text = str(item).strip()
        name = text.removeprefix("-")
        f = coll.fields.get(name)
        if f is None or f.kind not in SCALARS:
            errors.append(f"order_by: cannot order {coll.name} by {name!r}")
            continue
        out.append(Order(name, text.startswith("-")))
    return tuple(out)


def parse_query(coll: Collection, params: Mapping[str, Any]) -> Query:
    """Validate `params` (lookups plus latest/order_by/limit/offset) for `coll`; raise `InvalidQuery` naming
    every bad parameter."""
    errors: list[str] = []
    filters = []
    for key, raw in params.items():
        if key in RESERVED:
            continue
        try:
            filters.append(_parse_filter(coll, key, raw))
        except ValueError as exc:
            errors.append(str(exc))
    latest = params.get("latest")
    if latest is not None:
        f = coll.fields.get(latest) if isinstance(latest, str) else None
        if f is None or f.kind not in SCALARS:
            errors.append(f"latest: cannot pick the latest {coll.name} by {latest!r}")
        elif coll.created_field is None:
            errors.append(f"latest: {coll.name} has no creation time")
    order_by = _parse_order(coll, params["order_by"], errors) if params.get("order_by") else ()
    paging = {}
    for name, default in (("limit", DEFAULT_LIMIT), ("offset", 0)):
        try:
            paging[name] = default if params.get(name) is None else _convert(params[name], int, name)
        except ValueError as exc:
            errors.append(str(exc))
    if paging.get("offset", 0) < 0:
        errors.append("offset: must be 0 or more")
    if errors:
        raise InvalidQuery("; ".join(errors))
    return Query(tuple(filters), latest, order_by, paging["limit"], paging["offset"])

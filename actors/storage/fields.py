"""What a collection's fields are, derived from its record type (a msgspec Struct)."""

from __future__ import annotations

import datetime
import functools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import msgspec
from msgspec import inspect as mi

__all__ = ["EPOCH", "MICROSECOND", "Field", "Kind", "column_converter", "fields_of", "to_column"]


class Kind(StrEnum):
    """How a field is stored and which lookups apply to it."""

    STR = "str"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    DATETIME = "datetime"
    UUID = "uuid"
    ARRAY = "array"
    """A list of scalars: `contains`, `overlap`."""
    JSON = "json"
    """A mapping: queried by nested path (`source__type`)."""
    ANY = "any"
    """Anything else (an observation's value): stored, not queried."""


SCALARS = frozenset({Kind.STR, Kind.INT, Kind.FLOAT, Kind.BOOL, Kind.DATETIME, Kind.UUID})

_SIMPLE: dict[type, Kind] = {
    mi.StrType: Kind.STR,
    mi.IntType: Kind.INT,
    mi.FloatType: Kind.FLOAT,
    mi.BoolType: Kind.BOOL,
    mi.DateTimeType: Kind.DATETIME,
    mi.UUIDType: Kind.UUID,
    mi.DictType: Kind.JSON,
}
_PY_TYPE: dict[Kind, Any] = {
    Kind.STR: str,
    Kind.INT: int,
    Kind.FLOAT: float,
    Kind.BOOL: bool,
    Kind.DATETIME: datetime.datetime,
    Kind.UUID: uuid.UUID,
}


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a record type."""

    name: str
    kind: Kind
    nullable: bool = False
    item_kind: Kind | None = None
    """For arrays: the kind of the items."""

    @property
    def py_type(self) -> Any:
        """Type that query values of this field are converted to."""
        return _PY_TYPE[self.item_kind if self.kind == Kind.ARRAY and self.item_kind else self.kind]


def _kind(t: mi.Type) -> tuple[Kind, bool, Kind | None]:
    if isinstance(t, mi.UnionType):
        others = [m for m in t.types if not isinstance(m, mi.NoneType)]
        nullable = len(others) < len(t.types)
        if len(others) == 1:
            kind, _, item = _kind(others[0])
            return kind, nullable, item
        return Kind.ANY, nullable, None
    if isinstance(t, (mi.LiteralType, mi.EnumType)):
        values = t.values if isinstance(t, mi.LiteralType) else [m.value for m in t.cls]
        return (Kind.STR if all(isinstance(v, str) for v in values) else Kind.ANY), False, None
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        item, _, _ = _kind(t.item_type)
        return (Kind.ARRAY, False, item) if item in SCALARS else (Kind.ANY, False, None)
    if isinstance(t, mi.StructType):
        return Kind.JSON, False, None
    return _SIMPLE.get(type(t), Kind.ANY), False, None


def fields_of(record: type[msgspec.Struct]) -> dict[str, Field]:
    """Every field of `record`, keyed by name, in declaration order."""
    info = mi.type_info(record)
    assert isinstance(info, mi.StructType)
    out = {}
    for f in info.fields:
        kind, nullable, item = _kind(f.type)
        out[f.name] = Field(f.name, kind, nullable, item)
    return out


def to_column(kind: Kind, value: Any) -> Any:
    """A field value as an SQL column value: times as integer microseconds (exact, ordered), UUIDs as text."""
    if value is None:
        return None
    match kind:
        case Kind.DATETIME:
            if value.tzinfo is None:
                value = value.replace(tzinfo=datetime.UTC)
            return (value - EPOCH) // MICROSECOND
        case Kind.UUID:
            return str(value)
        case Kind.BOOL:
            return int(value)
        case Kind.JSON:
            return msgspec.json.encode(value).decode()
        case Kind.ANY:
            return 1  # only whether it is null can be asked; the value itself lives in the record
        case _:
            return value


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
MICROSECOND = datetime.timedelta(microseconds=1)
"""A time column holds (time - EPOCH) // MICROSECOND."""


def column_converter(kind: Kind) -> Callable[[Any], Any] | None:
    """`to_column` for one kind without the dispatch per value (the bulk-insert path); None when values are
    stored as they are (SQLite stores a bool as the integer it is)."""
    if kind in (Kind.STR, Kind.INT, Kind.FLOAT, Kind.BOOL):
        return None
    return _CONVERTERS.get(kind) or functools.partial(to_column, kind)


def _micros(value: datetime.datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return (value - EPOCH) // MICROSECOND


def _present(value: Any) -> int | None:
    return None if value is None else 1


_CONVERTERS: dict[Kind, Callable[[Any], Any]] = {Kind.DATETIME: _micros, Kind.ANY: _present}

"""A collection: a named set of records of one msgspec Struct type, with its id and hot fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import msgspec

from .fields import SCALARS, Field, Kind, fields_of

__all__ = ["Collection"]


@dataclass(frozen=True)
class Collection:
    """Declares how records of `record` are stored. Fields and their kinds come from the Struct itself."""

    name: str
    record: type[msgspec.Struct]
    id_field: str
    id_kind: Literal["int", "uuid", "str"] = "int"
    """`int`: assigned 1, 2, 3… on insert; `uuid`: a uuid4 when missing; `str`: given by the caller."""
    created_field: str | None = "created_timestamp"
    """Field that orders rows for `latest=` (newest wins), or None."""
    indexes: tuple[tuple[str, ...], ...] = ()
    """Extra indexes on scalar and array fields (the id and array fields are always indexed)."""
    unindexed: tuple[str, ...] = ()
    """Array fields that are kept but never queried (no index to maintain on every insert)."""
    fields: dict[str, Field] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", fields_of(self.record))
        if not self.name.isidentifier():
            raise ValueError(f"collection name {self.name!r} must be an identifier")
        if self.id_field not in self.fields:
            raise ValueError(f"{self.name}: no id field {self.id_field!r} in {self.record.__name__}")
        for index in self.indexes:
            for name in index:
                f = self.fields.get(name)
                if f is None or (f.kind not in SCALARS and f.kind != Kind.ARRAY):
                    raise ValueError(f"{self.name}: cannot index {name!r} (not a scalar or array field)")
        for name in self.unindexed:
            if name not in self.fields or self.fields[name].kind != Kind.ARRAY:
                raise ValueError(f"{self.name}: {name!r} in `unindexed` is not an array field")

    @property
    def array_fields(self) -> list[Field]:
        return [f for f in self.fields.values() if f.kind == Kind.ARRAY]

    @property
    def indexed(self) -> list[tuple[str, ...]]:
        """Every index but the id's and the creation time's: the declared ones, then one per array field
        that no declared index leads with (unless `unindexed`)."""
        leading = {index[0] for index in self.indexes}
        arrays = [f.name for f in self.array_fields if f.name not in leading | set(self.unindexed)]
        return [*self.indexes, *((name,) for name in arrays)]

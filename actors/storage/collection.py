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
    """Extra indexes on scalar fields (the id and array fields are always indexed)."""
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
                if f is None or f.kind not in SCALARS:
                    raise ValueError(f"{self.name}: cannot index {name!r} (not a scalar field)")

    @property
    def array_fields(self) -> list[Field]:
        return [f for f in self.fields.values() if f.kind == Kind.ARRAY]

    @property
    def column_fields(self) -> list[Field]:
        """Fields with a column of their own: scalars, mappings (JSON text), others (a not-null marker)."""
        return [f for f in self.fields.values() if f.kind != Kind.ARRAY]

"""A record type exercising every field kind the storage layer knows."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import msgspec

from stationd.actors.storage import Collection


class Rec(msgspec.Struct, frozen=True, kw_only=True):
    rec_id: int | None = None
    name: str
    kind: str | None = None
    n: int | None = None
    x: float = 0.0
    flag: bool = False
    at: datetime.datetime
    uid: uuid.UUID | None = None
    tags: list[str] = []
    meta: dict[str, Any] = {}
    payload: Any = None
    created_timestamp: datetime.datetime


RECS = Collection("recs", Rec, "rec_id", indexes=(("name",), ("kind", "at")))
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def rec(name: str, **kw: Any) -> Rec:
    """A record with the required times filled in."""
    return Rec(name=name, at=kw.pop("at", T0), created_timestamp=kw.pop("created_timestamp", T0), **kw)

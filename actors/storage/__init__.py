"""The storage layer (a library for actors, not an actor): typed collections with Django-style lookups.

`Collection` declares a record type; `parse_query` validates lookups into a `Query`; `SQLiteStore` is the
embedded backend, `MongoStore` the MongoDB one; `evaluate` is the same semantics in plain Python, the
reference both backends are tested against.
"""

from .collection import Collection
from .evaluate import evaluate
from .fields import Field, Kind
from .mongo import MongoStore
from .query import DEFAULT_LIMIT, Filter, Order, Query, parse_query
from .sqlite import SQLiteStore

__all__ = [
    "DEFAULT_LIMIT",
    "Collection",
    "Field",
    "Filter",
    "Kind",
    "MongoStore",
    "Order",
    "Query",
    "SQLiteStore",
    "evaluate",
    "parse_query",
]

"""Storage backends for the tests: SQLite in a temporary folder, MongoDB on an nx-27017 server started for the
session (or the real MongoDB named by STATIOND_TEST_MONGODB_URI), a fresh database per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pymongo
import pytest

from stationd.actors.storage import Collection, MongoStore, SQLiteStore
from stationd.actors.storage.store import Store
from tests.actors.storage.records import RECS
from tests.support.mongo import NxServer, free_port  # noqa: F401  # re-exported for the storage tests


@pytest.fixture(scope="session")
def mongo_admin(mongo_uri: str) -> Iterator[pymongo.MongoClient]:
    with pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=5000) as client:
        yield client


@dataclass
class Backend:
    """Makes stores of one backend; the same `name` is the same storage (a file, a database)."""

    kind: str
    _make: Callable[[str, Sequence[Collection]], Store]
    _discard: Callable[[str], None]
    names: set[str] = field(default_factory=set)

    def store(self, collections: Sequence[Collection] = (RECS,), name: str = "main") -> Store:
        self.names.add(name)
        return self._make(name, collections)

    def discard(self, name: str) -> None:
        """Remove the storage `name` (after its store is closed)."""
        self.names.discard(name)
        self._discard(name)

    def discard_all(self) -> None:
        for name in list(self.names):
            self.discard(name)


def sqlite_backend(folder: Path) -> Backend:
    def discard(name: str) -> None:
        for path in folder.glob(f"{name}.sqlite*"):
            path.unlink()

    return Backend("sqlite", lambda name, colls: SQLiteStore(folder / f"{name}.sqlite", colls), discard)


def mongo_backend(uri: str, admin: pymongo.MongoClient) -> Backend:
    prefix = f"stationd_test_{uuid.uuid4().hex[:12]}"
    return Backend(
        "mongo",
        lambda name, colls: MongoStore(uri, f"{prefix}_{name}", colls),
        lambda name: admin.drop_database(f"{prefix}_{name}"),
    )


@pytest.fixture(params=["sqlite", "mongo"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each storage test runs on both backends, on storage of its own."""
    if request.param == "sqlite":
        b = sqlite_backend(tmp_path)
    else:
        b = mongo_backend(request.getfixturevalue("mongo_uri"), request.getfixturevalue("mongo_admin"))
    yield b
    b.discard_all()


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Store]:
    s = backend.store()
    await s.open()
    yield s
    await s.close()

"""A MongoDB server for tests: nx-27017 (a MongoDB wire-protocol server on SQLite) started on loopback, or
the real MongoDB named by $STATIOND_TEST_MONGODB_URI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pymongo
import pytest
from pymongo.errors import PyMongoError

from tests.support.daemon import free_port

NX = Path(sys.executable).parent / "nx-27017"  # installed with the test extra, next to this Python
READY_WITHIN = 20.0


@dataclass
class NxServer:
    """An nx-27017 process (a MongoDB wire-protocol server on SQLite) on a loopback port."""

    folder: Path
    port: int = field(default_factory=free_port)
    db: str = "memory"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "nx.out", "ab") as out:
            files = ["--log-file", str(self.folder / "nx.log"), "--pid-file", str(self.folder / "nx.pid")]
            self.proc = subprocess.Popen(
                [str(NX), "--db", self.db, "--host", "127.0.0.1", "-p", str(self.port), *files],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until_ready(self.uri, self.proc, self.folder / "nx.out")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_until_ready(uri: str, proc: subprocess.Popen[bytes], output: Path) -> None:
    """Ping until the server answers (each ping waits up to 250 ms for it), or fail with its output."""
    deadline = time.monotonic() + READY_WITHIN
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250) as client:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nx-27017 exited with {proc.returncode}:\n{output.read_text()}")
            try:
                client.admin.command("ping")
                return
            except PyMongoError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nx-27017 did not answer within {READY_WITHIN} s:\n{output.read_text()}")


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB server for the session: $STATIOND_TEST_MONGODB_URI, or an in-memory nx-27017."""
    real = os.environ.get("STATIOND_TEST_MONGODB_URI")
    if real:
        yield real
        return
    server = NxServer(tmp_path_factory.mktemp("nx-27017"))
    server.start()
    try:
        yield server.uri
    finally:
        server.kill()

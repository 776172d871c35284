"""What the DAQ coordinator persists: each DAQ's context (status, sources, keywords, state history) in the
storage layer, and, once acquisition stopped, what each source delivered, as files in the DAQ's workspace so
that a merge interrupted by a restart can run again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgspec

from stationd.actors.storage.collection import Collection
from stationd.protocol.codec import msgpack_decoder, msgpack_encoder
from stationd.protocol.daq import DaqStatus, SourceResult

__all__ = ["DAQS", "DaqRecord", "Workspace", "sync_directory"]


class DaqRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A DAQ's persisted context (OCM's `DaqContext`); `state`/`substate` are copied out to be queried."""

    id: str
    state: str
    substate: str
    status: DaqStatus
    file_prefix: str = ""
    await_interval: float
    source_timeout: float


DAQS = Collection("daqs", DaqRecord, "id", id_kind="str", created_field=None, indexes=(("state",),))


class Workspace:
    """`<root>/<daq id>/`: the source results of a stopped DAQ (`<source>.msgpack`) and its product while it
    is merged. Runs in worker threads (it does file I/O)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._encoder = msgpack_encoder()
        self._decoder = msgpack_decoder(SourceResult)

    def folder(self, daq_id: str) -> Path:
        return self.root / _safe(daq_id)

    def save_results(self, daq_id: str, results: dict[str, SourceResult]) -> None:
        """Write every result durably (fsync) before the DAQ is reported Stopped."""
        folder = self.folder(daq_id)
        folder.mkdir(parents=True, exist_ok=True)
        for name, result in results.items():
            path = folder / f"{_safe(name)}.msgpack"
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(self._encoder.encode(result))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        sync_directory(folder)

    def load_results(self, daq_id: str, names: list[str]) -> dict[str, SourceResult]:
        """The saved results of the named sources (those without a file delivered nothing)."""
        out = {}
        for name in names:
            path = self.folder(daq_id) / f"{_safe(name)}.msgpack"
            if path.exists():
                out[name] = self._decoder.decode(path.read_bytes())
        return out

    def discard(self, daq_id: str) -> None:
        shutil.rmtree(self.folder(daq_id), ignore_errors=True)


def _safe(name: str) -> str:
    """A file name for an id or source name (ids follow OCM's file-prefix rule, names are free text)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def sync_directory(path: Path) -> None:
    """Make the renames in a folder durable (Linux: fsync on the directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""One DAQ while the coordinator holds it: its status (what is persisted and reported), its sources, the
clients awaiting a state, its background tasks and file jobs, and the lock that makes its commands run one
at a time. What the sources delivered is not kept here: it goes to the workspace as soon as it arrives."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from stationd.protocol.daq import DaqStatus, SourceState, SourceStatus

from . import states
from .records import DaqRecord
from .sources import Source, SourceAddress

__all__ = ["Daq"]


class Daq:
    """A DAQ's context and runtime parts. The coordinator changes it; nothing else does."""

    def __init__(
        self,
        status: DaqStatus,
        *,
        file_prefix: str,
        await_interval: float,
        source_timeout: float,
    ) -> None:
        self.status = status
        self.file_prefix = file_prefix
        self.await_interval = await_interval
        self.source_timeout = source_timeout
        self.lock = asyncio.Lock()
        """Held by each command and by each step of the merge, so they never interleave on one DAQ."""
        self.sources: dict[str, Source] = {}
        """Opened sources by name (opened on first use: after a restart, only when a command needs them)."""
        self.waiters: dict[asyncio.Future[None], states.Phase] = {}
        """Pending `daq_await_state` requests: each one's future and the phase it awaits."""
        self.watcher: asyncio.Task[None] | None = None
        """Waits for the primary sources to end their recording by themselves (automatic stop)."""
        self.pipeline: asyncio.Task[None] | None = None
        """Schedules, merges and releases the data product once the DAQ stopped."""
        self.jobs: set[asyncio.Future[Any]] = set()
        """File work running in worker threads (results, merge, release): a cancelled caller does not stop a
        thread, so an abort or a shutdown awaits these before it touches the same files."""

    @classmethod
    def from_record(cls, record: DaqRecord) -> Daq:
        return cls(
            record.status,
            file_prefix=record.file_prefix,
            await_interval=record.await_interval,
            source_timeout=record.source_timeout,
        )

    def record(self) -> DaqRecord:
        return DaqRecord(
            id=self.id,
            state=self.status.state.value,
            substate=self.status.substate.value,
            status=self.status,
            file_prefix=self.file_prefix,
            await_interval=self.await_interval,
            source_timeout=self.source_timeout,
        )

    @property
    def id(self) -> str:
        return self.status.id

    @property
    def phase(self) -> states.Phase:
        return (self.status.state, self.status.substate)

    # -- sources -------------------------------------------------------------------------------------------
    def addresses(self, kind: str | None = None) -> list[SourceAddress]:
        return [SourceAddress(s.name, s.uri, s.kind) for s in self.status.sources if kind in (None, s.kind)]

    def source_status(self, name: str) -> SourceStatus:
        return next(s for s in self.status.sources if s.name == name)

    def source(self, address: SourceAddress, opener: Callable[[SourceAddress, str], Source]) -> Source:
        found = self.sources.get(address.name)
        if found is None:
            found = self.sources[address.name] = opener(address, self.id)
        return found

    def in_state(self, kind: str, *source_states: SourceState) -> list[SourceAddress]:
        """Addresses of the sources of `kind` whose state is one of `source_states`."""
        return [a for a in self.addresses(kind) if self.source_status(a.name).state in source_states]

    async def close_sources(self) -> None:
        sources, self.sources = list(self.sources.values()), {}
        for source in sources:
            await source.close()

    # -- awaiting --------------------------------------------------------------------------------------------
    def wake_waiters(self) -> None:
        """Resolve every await whose condition now holds (reached, or no longer reachable)."""
        for future, target in list(self.waiters.items()):
            if future.done():
                del self.waiters[future]
            elif states.await_fulfilled(self.phase, target):
                future.set_result(None)
                del self.waiters[future]

    def add_waiter(self, target: states.Phase) -> asyncio.Future[None]:
        """A future resolved once `target` holds or can no longer be reached; `remove_waiter` it when the
        await ends another way (timeout, cancellation)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[future] = target
        return future

    def remove_waiter(self, future: asyncio.Future[None]) -> None:
        self.waiters.pop(future, None)

    def stop_tasks(self) -> list[asyncio.Task[Any]]:
        """Cancel the background tasks; returns them so the caller can await their end."""
        tasks = [t for t in (self.watcher, self.pipeline) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        return tasks

    async def jobs_done(self) -> None:
        """Wait until no worker thread works on this DAQ's files (their errors were handled by their callers,
        or are moot once those were cancelled)."""
        while self.jobs:
            await asyncio.gather(*self.jobs, return_exceptions=True)

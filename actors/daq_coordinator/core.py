"""The DAQ coordinator's state and the helpers its handlers share: options, transitions (checked against the
table, persisted, published, waking awaits) and source requests bounded by the per-request timeout."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
import zmq.asyncio
from msgspec import Meta

from stationd.actors.base import ActorContext
from stationd.actors.storage.sqlite import SQLiteStore
from stationd.protocol.daq import DaqStateChanged, DaqTransition, SourceState
from stationd.protocol.errors import NotFound

from . import states
from .daq import Daq
from .records import DAQS, Workspace
from .sources import Source, SourceAddress, SourceFailed, open_source

__all__ = ["CoordinatorCore", "DaqCoordinatorOptions", "Failed", "describe", "failures"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Failed:
    """A source request that failed or timed out."""

    error: str


class DaqCoordinatorOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of the DAQ coordinator (`[daq_coordinator]` in the daemon config)."""

    source_timeout: Annotated[
        float,
        Meta(gt=0, description="Seconds each request to a source may take (a DAQ may set `sourceTimeout`)."),
    ] = 10.0
    data_dir: Annotated[
        str, Meta(description="Where data products are released; empty: `<state_dir>/data`.")
    ] = ""
    instrument_id: Annotated[
        str,
        Meta(
            pattern=r"^[-a-zA-Z0-9_\.]+$", description="Prefix of file ids (ARCFILE) and generated DAQ ids."
        ),
    ] = "STATIOND"
    merge_concurrency: Annotated[int, Meta(ge=1, description="Data products merged at the same time.")] = 1
    keep_finished: Annotated[
        int, Meta(ge=0, description="Finished DAQs kept in memory (older ones are read from the store).")
    ] = 1000


class CoordinatorCore:
    """What every group of handlers uses; `acquisition.py` and `pipeline.py` hold the handlers."""

    ctx: ActorContext
    options: DaqCoordinatorOptions

    def _init_core(self) -> None:
        daq_dir = self.ctx.state_dir / "daq"
        self.store = SQLiteStore(daq_dir / "daqs.sqlite", [DAQS])
        self.workspace = Workspace(daq_dir / "workspace")
        self.data_dir = Path(self.options.data_dir).expanduser() if self.options.data_dir else None
        self.daqs: dict[str, Daq] = {}
        """Active DAQs (not in StateCompleted)."""
        self.finished: OrderedDict[str, Daq] = OrderedDict()
        """The most recent finished DAQs (older ones come from the store)."""
        self.zctx = zmq.asyncio.Context.instance()
        self.merge_slots = asyncio.Semaphore(self.options.merge_concurrency)
        self._last_file_ms = 0
        self._astropy: asyncio.Future[None] | None = None

    async def keywords_ready(self) -> None:
        """Import astropy (the keyword checks use it) in a thread at the first DAQ command that needs it:
        not on the loop (it takes a while), not at start (a station without DAQs does not pay its memory)."""
        if self._astropy is None:
            self._astropy = asyncio.ensure_future(asyncio.to_thread(_import_astropy))
        await self._astropy

    @property
    def product_dir(self) -> Path:
        return self.data_dir or self.ctx.state_dir / "data"

    # -- lookup ----------------------------------------------------------------------------------------------
    def active(self, daq_id: str) -> Daq:
        """The DAQ with this id if the coordinator holds it (active or recently finished)."""
        found = self.daqs.get(daq_id) or self.finished.get(daq_id)
        if found is None:
            raise NotFound(f"no DAQ with id {daq_id!r}", id=daq_id)
        return found

    async def lookup(self, daq_id: str) -> Daq:
        """Any DAQ, finished ones read back from the store."""
        if daq_id in self.daqs or daq_id in self.finished:
            return self.active(daq_id)
        record = await self.store.get(DAQS.name, daq_id)
        if record is None:
            raise NotFound(f"no DAQ with id {daq_id!r}", id=daq_id)
        return Daq.from_record(record)

    async def exists(self, daq_id: str) -> bool:
        return (
            daq_id in self.daqs
            or daq_id in self.finished
            or await self.store.get(DAQS.name, daq_id) is not None
        )

    # -- transitions -----------------------------------------------------------------------------------------
    async def move(
        self, daq: Daq, new: states.Phase, *, message: str | None = None, error: bool | None = None
    ) -> None:
        """Take one step of the table: persist it, publish `state_changed`, wake the awaits it fulfils."""
        old = daq.phase
        states.check_transition(old, new, daq.id)
        now = time.time()
        s = daq.status
        s.state, s.substate, s.timestamp = new[0], new[1], now
        if message is not None:
            s.message = message
        if error is not None:
            s.error = error
        s.history.append(DaqTransition(new[0], new[1], now))
        await self.save(daq)
        self.ctx.publish(
            "state_changed",
            DaqStateChanged(
                id=daq.id,
                old_state=old[0],
                old_substate=old[1],
                state=new[0],
                substate=new[1],
                error=s.error,
                message=s.message,
                timestamp=now,
            ),
        )
        if states.is_final(new):
            self._retire(daq)
        daq.wake_waiters()

    async def save(self, daq: Daq) -> None:
        """Persist the DAQ's context (acknowledged only once it is on disk)."""
        await self.store.upsert(DAQS.name, [daq.record()])

    def _retire(self, daq: Daq) -> None:
        self.daqs.pop(daq.id, None)
        if self.options.keep_finished:
            self.finished[daq.id] = daq
            while len(self.finished) > self.options.keep_finished:
                self.finished.popitem(last=False)

    # -- background work -------------------------------------------------------------------------------------
    def background(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `work` as a task of its own (automatic stop, merge pipeline); a bug that ends it is logged,
        not lost in a task nobody awaits."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        task.add_done_callback(self._log_crash)
        return task

    def _log_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.ctx.log.error("daq_task_crashed", task=task.get_name(), error=repr(exc), exc_info=exc)

    async def in_thread(self, daq: Daq, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread, registered in `daq.jobs` until the thread ends. Cancelling the
        caller does not stop a thread: the job stays registered, so that an abort or a shutdown can wait for
        it before touching the same files."""
        job = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        daq.jobs.add(job)

        def done(finished: asyncio.Future[T]) -> None:
            daq.jobs.discard(finished)
            if not finished.cancelled():
                finished.exception()  # the caller gets it through the shield; if it was cancelled, moot

        job.add_done_callback(done)
        return await asyncio.shield(job)

    # -- sources ---------------------------------------------------------------------------------------------
    def open(self, address: SourceAddress, daq_id: str) -> Source:
        return open_source(address, daq_id, ask=self.ctx.ask, zctx=self.zctx)

    async def call(
        self,
        daq: Daq,
        address: SourceAddress,
        what: str,
        request: Callable[[Source], Awaitable[T]],
        *,
        timeout: float | None = None,
    ) -> T | Failed:
        """One request to one source, bounded by the DAQ's source timeout; returns the reply, or `Failed`
        (its text also recorded as the source's last error) when it failed or timed out."""
        limit = daq.source_timeout if timeout is None else timeout
        try:
            source = daq.source(address, self.open)
            async with asyncio.timeout(limit):
                return await request(source)
        except TimeoutError:
            error = f"{what} timed out after {limit:g} s"
        except SourceFailed as exc:
            error = f"{what} failed: {exc}"
        self.ctx.log.warning("source_request_failed", daq=daq.id, source=address.name, error=error)
        daq.source_status(address.name).error = error
        return Failed(error)

    async def call_all(
        self,
        daq: Daq,
        addresses: list[SourceAddress],
        what: str,
        request: Callable[[Source], Awaitable[Any]],
        *,
        during: SourceState,
        done: SourceState,
    ) -> dict[str, Any]:
        """The same request to several sources at once; each source moves to `during`, then to `done` or
        `Failed`. Returns each source's reply (or `Failed`) by name."""
        for a in addresses:
            daq.source_status(a.name).state = during
        replies = await asyncio.gather(*(self.call(daq, a, what, request) for a in addresses))
        out = {}
        for a, reply in zip(addresses, replies, strict=True):
            failed = isinstance(reply, Failed)
            daq.source_status(a.name).state = SourceState.FAILED if failed else done
            out[a.name] = reply
        return out


def failures(replies: dict[str, Any]) -> dict[str, str]:
    """The error texts among the replies of `call_all`, by source name."""
    return {name: r.error for name, r in replies.items() if isinstance(r, Failed)}


def describe(errors: dict[str, str]) -> str:
    return "; ".join(f"source {name}: {text}" for name, text in errors.items())


def _import_astropy() -> None:
    from astropy.io import fits  # noqa: F401

"""The DAQ coordinator actor: ESO OCM's `daqif.OcmDaqControl` (start, stop, abort, keywords, await-state,
status) over the front door, with the data product merged in-process (OCM's DPM), DAQ contexts persisted,
and recovery after a restart.

Commands that talk to sources and awaits reply later (`Deferred`), so a slow source or a long await never
holds up another request; the commands on one DAQ run one at a time (its lock).

| module | what |
|---|---|
| `states.py` | the life-cycle table, the commands each phase accepts, the await rule |
| `core.py` | options, transitions (persisted, published), source requests with their timeout |
| `acquisition.py` | start, stop, abort, keywords with OCM's fail-fast and fail-slow rules; automatic stop |
| `pipeline.py` | NotScheduled -> Scheduled -> Merging -> Releasing -> Completed |
| `keywords.py`, `product.py` | OCM's keyword JSON, the FITS product (astropy) |
| `sources/` | the source protocol: `sim://`, `tcp://` (external processes), `actor://` (device pollers) |
| `records.py` | the persisted context and the workspace of source results |
"""

from __future__ import annotations

import asyncio
from typing import Any, assert_never

from stationd.actors.base import Actor, ActorContext, Deferred
from stationd.actors.storage.query import parse_query
from stationd.protocol import daq as d
from stationd.protocol.daq import SourceState

from . import states
from .acquisition import AcquisitionHandlers
from .core import DaqCoordinatorOptions
from .daq import Daq
from .records import DAQS

__all__ = ["DaqCoordinator", "DaqCoordinatorOptions"]

Inbox = (
    d.DaqStart
    | d.DaqStop
    | d.DaqForceStop
    | d.DaqAbort
    | d.DaqForceAbort
    | d.DaqUpdateKeywords
    | d.DaqAwaitState
    | d.DaqStatusGet
    | d.DaqActiveList
)

RESTARTED_MSG = (
    "the daemon restarted while the DAQ was {substate}: what its sources recorded since is unknown; "
    "stop, force-stop or abort it"
)
RESTARTED_ABORTING_MSG = (
    "the daemon restarted while the DAQ was Aborting: whether its sources aborted is unknown; "
    "abort or force-abort it"
)


class DaqCoordinator(AcquisitionHandlers, Actor):
    """Runs OCM-style data acquisitions and merges their FITS data products."""

    inbox = Inbox
    Options = DaqCoordinatorOptions

    def __init__(self, ctx: ActorContext, options: DaqCoordinatorOptions) -> None:
        super().__init__(ctx, options)
        self._init_core()

    async def on_start(self) -> None:
        await self.store.open()
        await self._recover()

    async def on_stop(self) -> None:
        await self._shutdown()

    async def on_failure(self, exc: BaseException) -> None:
        await self._shutdown()

    async def handle(self, msg: Inbox) -> Any:
        match msg:
            case d.DaqStart():
                return Deferred(self.start(await self.create(msg)))
            case d.DaqStop(id=daq_id):
                return Deferred(self.stop(await self.lookup(daq_id), force=False))
            case d.DaqForceStop(id=daq_id):
                return Deferred(self.stop(await self.lookup(daq_id), force=True))
            case d.DaqAbort(id=daq_id):
                return Deferred(self.abort(await self.lookup(daq_id), force=False))
            case d.DaqForceAbort(id=daq_id):
                return Deferred(self.abort(await self.lookup(daq_id), force=True))
            case d.DaqUpdateKeywords(id=daq_id):
                return Deferred(self.update_keywords(await self.lookup(daq_id), msg.keywords))
            case d.DaqAwaitState():
                return await self._await_state(msg)
            case d.DaqStatusGet(id=daq_id):
                return d.DaqStatusReply(status=(await self.lookup(daq_id)).status)
            case d.DaqActiveList():
                return d.DaqActiveListReply(daqs=[daq.status for daq in self.daqs.values()])
            case _:
                assert_never(msg)

    # -- await-state -----------------------------------------------------------------------------------------
    async def _await_state(self, msg: d.DaqAwaitState) -> d.AwaitDaqReply | Deferred:
        daq = await self.lookup(msg.id)
        target = states.parse_phase(msg.state, msg.substate, msg.id)
        if states.await_fulfilled(daq.phase, target):
            return d.AwaitDaqReply(timeout=False, status=daq.status)
        return Deferred(self._wait(daq, target, msg.timeout))

    async def _wait(self, daq: Daq, target: states.Phase, timeout: float) -> d.AwaitDaqReply:
        fulfilled = daq.add_waiter(target)
        try:
            await asyncio.wait_for(fulfilled, timeout)
        except TimeoutError:
            return d.AwaitDaqReply(timeout=True, status=daq.status)
        finally:
            daq.remove_waiter(fulfilled)  # timed out or cancelled: a DAQ that never moves must not pile them
        return d.AwaitDaqReply(timeout=False, status=daq.status)

    # -- restart ---------------------------------------------------------------------------------------------
    async def _recover(self) -> None:
        """Take back the DAQs that were not finished: a DAQ that was Stopped or merging is merged again (the
        results are in the workspace); one that was acquiring is flagged, since its sources went on without
        us, and waits for a stop or an abort; one that was aborting (in either state) is flagged and waits
        for an abort."""
        query = parse_query(
            DAQS, {"state__in": [d.DaqState.ACQUIRING.value, d.DaqState.MERGING.value], "limit": 0}
        )
        records, _ = await self.store.query(DAQS.name, query)
        for record in sorted(records, key=lambda r: r.status.created):
            daq = Daq.from_record(record)
            self.daqs[daq.id] = daq
            aborting = daq.phase[1] == d.DaqSubState.ABORTING
            if not aborting and (daq.phase[0] == d.DaqState.MERGING or daq.phase == states.STOPPED):
                self.schedule_merge(daq)
                self.ctx.log.info("daq_merge_resumed", daq=daq.id, substate=daq.phase[1].value)
                continue
            daq.status.error = True
            daq.status.message = (
                RESTARTED_ABORTING_MSG if aborting else RESTARTED_MSG.format(substate=daq.phase[1].value)
            )
            for source in daq.status.sources:
                if source.state in (SourceState.STARTING, SourceState.STOPPING, SourceState.ABORTING):
                    source.state = SourceState.FAILED
                    source.error = "interrupted by the daemon's restart"
            await self.save(daq)
            self.ctx.log.warning("daq_recovered", daq=daq.id, substate=daq.phase[1].value)

    async def _shutdown(self) -> None:
        """Cancel the automatic stops and merges, let the worker threads writing files end (the next
        incarnation merges again from the workspace and must not meet a half-done write), close."""
        tasks = [t for daq in self.daqs.values() for t in daq.stop_tasks()]
        await asyncio.gather(*tasks, return_exceptions=True)
        for daq in [*self.daqs.values(), *self.finished.values()]:
            await daq.jobs_done()
        for daq in self.daqs.values():
            await daq.close_sources()
        await self.store.close()

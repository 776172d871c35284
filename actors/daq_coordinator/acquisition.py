"""The acquisition commands (OCM's StartDaq, StopDaq, ForceStopDaq, AbortDaq, ForceAbortDaq, UpdateKeywords)
with OCM's fail-fast / fail-slow rules, and the automatic stop when every primary source ended its recording.

Metadata sources start before primary sources and stop after them; the sources of one group are asked at
the same time. Every request is bounded by the DAQ's source timeout (OCM has none and hangs).
"""

from __future__ import annotations

import asyncio
import datetime
import time

from stationd.protocol import daq as d
from stationd.protocol.daq import SourceState as Src
from stationd.protocol.errors import Conflict, DaqFailed

from . import states
from .core import describe, failures
from .daq import Daq
from .keywords import merge_keywords, parse_keywords, parse_properties
from .pipeline import PipelineHandlers
from .sources import check_address, parse_daq_sources

__all__ = ["AcquisitionHandlers"]

_RUNNING = (Src.STARTING, Src.ACQUIRING, Src.STOPPING, Src.FAILED)
"""Sources that may be recording: what an abort must reach (a failed request may have half happened)."""


class AcquisitionHandlers(PipelineHandlers):
    """Start, stop, abort and keywords; they build on the pipeline, which a stop hands the DAQ to."""

    # -- start -----------------------------------------------------------------------------------------------
    async def create(self, msg: d.DaqStart) -> Daq:
        """Validate a StartDaq and register the DAQ (NotStarted), before any source is asked anything."""
        await self.keywords_ready()
        properties = parse_properties(msg.properties)
        addresses = parse_daq_sources(msg.prim_sources, msg.meta_sources)
        for address in addresses:
            check_address(address)
        daq_id = msg.id or await self._new_id(msg.file_prefix)
        if await self.exists(daq_id):
            raise Conflict(f"a DAQ with id {daq_id!r} exists already", id=daq_id)
        now = time.time()
        status = d.DaqStatus(
            id=daq_id,
            file_id=self._file_id(now),
            state=d.DaqState.ACQUIRING,
            substate=d.DaqSubState.NOT_STARTED,
            timestamp=now,
            created=now,
            sources=[d.SourceStatus(name=a.name, uri=a.uri, kind=a.kind) for a in addresses],
            keywords=properties.keywords,
            history=[d.DaqTransition(d.DaqState.ACQUIRING, d.DaqSubState.NOT_STARTED, now)],
        )
        daq = Daq(
            status,
            file_prefix=msg.file_prefix,
            await_interval=properties.awaitInterval,
            source_timeout=properties.sourceTimeout or self.options.source_timeout,
        )
        self.daqs[daq_id] = daq
        await self.save(daq)
        return daq

    async def start(self, daq: Daq) -> d.DaqReply:
        """Fail-fast: any source failing to start aborts the DAQ (the only abort OCM makes on its own)."""
        async with daq.lock:
            await self.move(daq, states.STARTING)
            for kind in ("metadata", "primary"):
                replies = await self.call_all(
                    daq,
                    daq.addresses(kind),
                    "start",
                    lambda s: s.start(),
                    during=Src.STARTING,
                    done=Src.ACQUIRING,
                )
                if errors := failures(replies):
                    await self._abort_after_failed_start(daq, describe(errors))
            await self.move(daq, states.ACQUIRING)
            if daq.addresses("primary"):  # only primary sources report the end of their recording
                daq.watcher = self.background(self._watch_end(daq), name=f"daq-end:{daq.id}")
        return d.DaqReply(id=daq.id)

    async def _abort_after_failed_start(self, daq: Daq, why: str) -> None:
        message = f"start failed: {why}"
        await self.move(daq, states.ABORTING_ACQUIRING, message=message, error=True)
        replies = await self.call_all(
            daq, daq.in_state("metadata", *_RUNNING) + daq.in_state("primary", *_RUNNING), "abort",
            lambda s: s.abort(), during=Src.ABORTING, done=Src.ABORTED,
        )  # fmt: skip
        if errors := failures(replies):
            message += f"; and the abort of the started sources failed: {describe(errors)}"
        await self.move(daq, states.ABORTED, message=message)
        await daq.close_sources()
        raise DaqFailed(f"DAQ {daq.id!r} was aborted: {message}", id=daq.id)

    # -- stop ------------------------------------------------------------------------------------------------
    async def stop(self, daq: Daq, *, force: bool, automatic: bool = False) -> d.DaqReply:
        """StopDaq fails only when every source fails; a partial failure is `error: true` and the DAQ stays
        Stopping (a repeated stop retries the rest). ForceStopDaq marks it Stopped despite failures."""
        async with daq.lock:
            if automatic and daq.phase != states.ACQUIRING:
                return d.DaqReply(id=daq.id)  # a command got there first
            states.check_command("force_stop" if force else "stop", daq.phase, daq.id)
            if not automatic and daq.watcher is not None:
                daq.watcher.cancel()
            if daq.phase != states.STOPPING:
                await self.move(daq, states.STOPPING, message="recording ended" if automatic else None)
            errors: dict[str, str] = {}
            delivered: dict[str, d.SourceResult] = {}
            for kind in ("primary", "metadata"):
                pending = daq.in_state(kind, Src.ACQUIRING, Src.STOPPING, Src.FAILED)
                replies = await self.call_all(
                    daq, pending, "stop", lambda s: s.stop(), during=Src.STOPPING, done=Src.STOPPED
                )
                errors |= failures(replies)
                delivered |= {n: r for n, r in replies.items() if n not in errors}
            for name, result in delivered.items():
                daq.source_status(name).rows = _rows(result)
            # on disk at once, also after a partial failure: a repeated or forced stop (after a restart, too)
            # asks only the other sources, and the merge reads every result from the workspace
            if delivered:
                await self.in_thread(daq, self.workspace.save_results, daq.id, delivered)
            if errors and not force:
                stopped_any = any(s.state == Src.STOPPED for s in daq.status.sources)
                daq.status.error, daq.status.message = True, f"stop failed: {describe(errors)}"
                await self.save(daq)
                if not stopped_any:
                    raise DaqFailed(
                        f"DAQ {daq.id!r}: every source failed to stop: {describe(errors)}", id=daq.id
                    )
                return d.DaqReply(id=daq.id, error=True)
            message = f"stopped despite errors: {describe(errors)}" if errors else daq.status.message
            await self.move(daq, states.STOPPED, message=message, error=bool(errors) or daq.status.error)
            await daq.close_sources()
            self.schedule_merge(daq)
            return d.DaqReply(id=daq.id, error=bool(errors))

    async def _watch_end(self, daq: Daq) -> None:
        """OCM's automatic stop: wait (each request at most `awaitInterval`) until every primary source
        reports the end of its recording, then stop the DAQ. A stop or abort command cancels it (the lock
        keeps it from cutting into one); a DAQ without primary sources has none."""
        interval = max(daq.await_interval, 0.05)  # 0 would ask again and again without waiting
        pending = daq.addresses("primary")
        while pending:
            replies = await asyncio.gather(
                *(
                    self.call(
                        daq,
                        a,
                        "wait for the end",
                        lambda s: s.wait_end(interval),
                        timeout=interval + daq.source_timeout,
                    )
                    for a in pending
                )
            )
            pending = [a for a, ended in zip(pending, replies, strict=True) if ended is not True]
            if any(r is not True and r is not False for r in replies):
                await asyncio.sleep(interval)  # a failing source: ask again after one interval, not in a loop
        try:
            reply = await self.stop(daq, force=False, automatic=True)
        except DaqFailed as exc:  # every source failed to stop: the DAQ stays Stopping, flagged (saved)
            self.ctx.log.warning("automatic_stop_failed", daq=daq.id, message=exc.msg)
            return
        if reply.error:
            self.ctx.log.warning("automatic_stop_partly_failed", daq=daq.id, message=daq.status.message)

    # -- abort -----------------------------------------------------------------------------------------------
    async def abort(self, daq: Daq, *, force: bool) -> d.DaqReply:
        """AbortDaq fails fast, leaving the DAQ Aborting; ForceAbortDaq marks it Aborted despite failures."""
        async with daq.lock:
            states.check_command("force_abort" if force else "abort", daq.phase, daq.id)
            await asyncio.gather(*daq.stop_tasks(), return_exceptions=True)
            await daq.jobs_done()  # a merge or release thread still writing: let it end before discarding
            if daq.phase[1] != d.DaqSubState.ABORTING:
                aborting = (
                    states.ABORTING_MERGING
                    if daq.phase[0] == d.DaqState.MERGING
                    else states.ABORTING_ACQUIRING
                )
                await self.move(daq, aborting, message="aborted by request")
            errors: dict[str, str] = {}
            if daq.phase == states.ABORTING_ACQUIRING:
                running = daq.in_state("primary", *_RUNNING) + daq.in_state("metadata", *_RUNNING)
                replies = await self.call_all(
                    daq, running, "abort", lambda s: s.abort(), during=Src.ABORTING, done=Src.ABORTED
                )
                errors = failures(replies)
            if errors and not force:
                daq.status.error, daq.status.message = True, f"abort failed: {describe(errors)}"
                await self.save(daq)
                raise DaqFailed(f"DAQ {daq.id!r} stays Aborting: {describe(errors)}", id=daq.id)
            message = f"aborted despite errors: {describe(errors)}" if errors else "aborted by request"
            await self.move(daq, states.ABORTED, message=message, error=bool(errors) or daq.status.error)
            await daq.close_sources()
            await self.in_thread(daq, self.discard, daq)
            return d.DaqReply(id=daq.id, error=bool(errors))

    # -- keywords --------------------------------------------------------------------------------------------
    async def update_keywords(self, daq: Daq, raw: str | list) -> d.DaqReply:
        """Add or replace user keywords (fail-fast; refused from NotScheduled on)."""
        await self.keywords_ready()
        updates = parse_keywords(raw)
        async with daq.lock:
            states.check_command("update_keywords", daq.phase, daq.id)
            daq.status.keywords = merge_keywords(daq.status.keywords, updates)
            await self.save(daq)
        return d.DaqReply(id=daq.id)

    # -- ids -------------------------------------------------------------------------------------------------
    async def _new_id(self, file_prefix: str) -> str:
        """`<prefix>.<UTC time with ms>` as OCM generates them, made unique among every DAQ this coordinator
        knows (the store too: finished DAQs leave memory, and a clock set back may repeat a time)."""
        base = f"{file_prefix or self.options.instrument_id}.{_iso_ms(time.time())}"
        candidate, n = base, 1
        while await self.exists(candidate):
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def _file_id(self, now: float) -> str:
        """The data product's file id (ARCFILE without `.fits`): instrument id and UTC time with ms, one ms
        later than the previous one when DAQs start within the same millisecond (file ids are unique)."""
        ms = max(int(now * 1000), self._last_file_ms + 1)
        self._last_file_ms = ms
        return f"{self.options.instrument_id}.{_iso_ms(ms / 1000)}"


def _iso_ms(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def _rows(result: d.SourceResult) -> int:
    return len(next(iter(result.columns.values()))) if result.columns else 0

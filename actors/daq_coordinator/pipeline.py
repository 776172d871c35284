"""After a DAQ stopped: OCM's hand-over to DPM, here in-process. NotScheduled -> Scheduled (in the merge
backlog) -> Merging (the FITS product is written in a worker thread) -> Releasing (moved into the data
directory) -> Completed. Each step can run again after a restart: the sources' results are in the workspace
and the product is written atomically."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from . import states
from .core import CoordinatorCore
from .daq import Daq
from .product import ProductError, ProductInfo, write_product
from .records import sync_directory

__all__ = ["PipelineHandlers"]


class PipelineHandlers(CoordinatorCore):
    """Schedules, merges and releases data products (one background task per stopped DAQ)."""

    def schedule_merge(self, daq: Daq) -> None:
        """Run (or resume, after a restart) the pipeline of a DAQ that is Stopped or further."""
        daq.pipeline = self.background(self._pipeline(daq), name=f"daq-merge:{daq.id}")

    async def _pipeline(self, daq: Daq) -> None:
        try:
            await self._step(daq, states.STOPPED, states.NOT_SCHEDULED)
            await self._step(daq, states.NOT_SCHEDULED, states.SCHEDULED)
            async with self.merge_slots:
                await self._step(daq, states.SCHEDULED, states.MERGING)
                if daq.phase == states.MERGING:
                    info = await self.in_thread(daq, self._merge, daq)
                    if info.skipped:
                        daq.status.message = "left out of the product: " + "; ".join(info.skipped)
                    await self._step(daq, states.MERGING, states.RELEASING)
            if daq.phase == states.RELEASING:
                product = await self.in_thread(daq, self._release, daq)
                async with daq.lock:
                    if daq.phase == states.RELEASING:
                        daq.status.result = str(product)
                        await self.move(daq, states.COMPLETED)
        except (ProductError, OSError) as exc:
            # OCM never aborts a DAQ on its own once it started: the DAQ stays where it is, flagged, until
            # someone aborts it (the sources' results stay in the workspace for a later look, and a restart
            # tries again)
            async with daq.lock:
                daq.status.error, daq.status.message = True, f"merge failed: {exc}"
                await self.save(daq)
            self.ctx.log.error("merge_failed", daq=daq.id, error=f"{type(exc).__name__}: {exc}")

    async def _step(self, daq: Daq, expected: states.Phase, new: states.Phase) -> None:
        async with daq.lock:
            if daq.phase == expected:
                await self.move(daq, new)

    # -- in worker threads -----------------------------------------------------------------------------------
    def discard(self, daq: Daq) -> None:
        """What an abort throws away: the workspace (source results, a product being merged) and a product
        that reached the data directory without the DAQ being reported Completed (an abort cut in between)."""
        self.workspace.discard(daq.id)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            self._release_path(daq).unlink()

    def _work_path(self, daq: Daq) -> Path:
        return self.workspace.folder(daq.id) / f"{daq.status.file_id}.fits"

    def _release_path(self, daq: Daq) -> Path:
        return self.product_dir / f"{daq.status.file_id}.fits"

    def _merge(self, daq: Daq) -> ProductInfo:
        names = [s.name for s in daq.status.sources]
        results = self.workspace.load_results(daq.id, names)
        # no folder when no source delivered anything (a forced stop after they all failed): make it
        self._work_path(daq).parent.mkdir(parents=True, exist_ok=True)
        kinds = {s.name: s.kind for s in daq.status.sources}
        return write_product(
            self._work_path(daq),
            file_id=daq.status.file_id,
            orig_file=f"{_with_prefix(daq.file_prefix, daq.id)}.fits",
            user_keywords=daq.status.keywords,
            primary=[(n, r) for n, r in results.items() if kinds[n] == "primary"],
            metadata=[(n, r) for n, r in results.items() if kinds[n] == "metadata"],
        )

    def _release(self, daq: Daq) -> Path:
        """Move the product into the data directory and drop the workspace (again after a restart: whatever
        step was reached)."""
        work, final = self._work_path(daq), self._release_path(daq)
        if not work.exists():
            if final.exists():
                return final  # released before the restart
            self._merge(daq)  # the restart came between the merge and its file: merge again
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(work, final)  # a rename within one file system, a copy across
        sync_directory(final.parent)
        self.workspace.discard(daq.id)  # the product is safe: the sources' results are no longer needed
        return final


def _with_prefix(prefix: str, daq_id: str) -> str:
    """OCM's file prefix in front of the DAQ id, once (a generated id starts with it already)."""
    return daq_id if daq_id.startswith(prefix) else f"{prefix}{daq_id}"

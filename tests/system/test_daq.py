"""Data acquisitions in the real daemon: the Python clients end to end, the FITS product read back with
astropy, and recovery after `kill -9` of the daemon while acquiring and while merging."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from astropy.io import fits

from stationd.protocol.client import AsyncClient, Client
from stationd.protocol.daq import DaqState, DaqSubState
from stationd.protocol.daq_client import AsyncDaqClient, DaqClient
from stationd.protocol.errors import DaqFailed, InvalidState
from tests.support.daemon import DaemonProcess, start_daemon

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "daq_source.py"
COMPLETED = (DaqState.COMPLETED, DaqSubState.COMPLETED)
KEYWORDS = [
    {"type": "valueKeyword", "name": "OBJECT", "value": "NGC 253", "comment": "target"},
    {"type": "esoKeyword", "name": "OBS TPLNO", "value": 2},
]


def _kill(d: DaemonProcess) -> None:
    """The first daemon of a restart test is gone by now, or the test failed before killing it: kill it."""
    if d.proc.poll() is None:
        d.proc.kill()
    d.proc.wait(10)
    d.notify.close()


def daq_client(d: DaemonProcess, timeout: float = 10.0) -> DaqClient:
    return DaqClient(client=Client(d.control_addr, timeout=timeout))


@pytest.fixture
def external_source(tmp_path: Path) -> Iterator[str]:
    """`examples/daq_source.py` as its own process (it outlives daemon restarts, as a real detector does)."""
    log = (tmp_path / "daq_source.log").open("wb")
    cmd = [sys.executable, str(EXAMPLE), "--bind", "tcp://127.0.0.1:*", "--rate", "1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    log.close()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on "), (tmp_path / "daq_source.log").read_text()
        yield line.split()[-1]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_whole_acquisition_from_the_python_client_makes_a_fits_product(daemon: DaemonProcess) -> None:
    with daemon.subscriber("event.daq_coordinator.state_changed") as events, daq_client(daemon) as daq:
        started = daq.start_daq(
            "OBS-1",
            prim_sources="cam@sim://cam?rate=1000 spec@sim://spec?rate=100",
            meta_sources="tcs@sim://tcs",
            properties=json.dumps({"keywords": KEYWORDS}),  # a JSON string, as OCM sends it
        )
        assert (started.id, started.error) == ("OBS-1", False)
        assert daq.get_daq_status("OBS-1").substate == DaqSubState.ACQUIRING
        assert [s.id for s in daq.get_active_list()] == ["OBS-1"]
        daq.update_keywords("OBS-1", [{"type": "valueKeyword", "name": "OBJECT", "value": "M 31"}])
        assert daq.stop_daq("OBS-1").error is False
        done = daq.await_daq_state("OBS-1", *COMPLETED, timeout=30)
        assert not done.timeout and not done.status.error
        with pytest.raises(InvalidState, match="OBS-1"):
            daq.stop_daq("OBS-1")
        steps = []
        while len(steps) < 9:
            data = events.recv(timeout=5).payload["data"]
            steps.append((data["old_substate"], data["substate"]))
    assert steps == [
        ("NotStarted", "Starting"),
        ("Starting", "Acquiring"),
        ("Acquiring", "Stopping"),
        ("Stopping", "Stopped"),
        ("Stopped", "NotScheduled"),
        ("NotScheduled", "Scheduled"),
        ("Scheduled", "Merging"),
        ("Merging", "Releasing"),
        ("Releasing", "Completed"),
    ]
    status = done.status
    product = Path(status.result)
    assert product.parent == daemon.state_dir / "data" and product.name == f"{status.file_id}.fits"
    rows = {s.name: s.rows for s in status.sources}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checksum that does not verify is a warning in astropy
        with fits.open(product, checksum=True) as hdul:
            hdul.verify("exception")
            header = hdul[0].header
            assert header["OBJECT"] == "M 31"  # updated in place
            assert header["HIERARCH ESO OBS TPLNO"] == 2
            assert header["ARCFILE"] == product.name
            assert "HIERARCH ESO INS SIM VALUE" in header  # from the metadata source
            assert [h.name for h in hdul[1:]] == ["CAM", "SPEC"]
            assert len(hdul["CAM"].data) == rows["cam"] > 0
            assert hdul["CAM"].columns.names == ["TIME", "COUNTER", "VALUE"]


async def test_many_async_awaits_wake_together_and_never_hold_up_other_requests(
    daemon: DaemonProcess,
) -> None:
    async with AsyncDaqClient(client=AsyncClient(daemon.control_addr, timeout=10)) as daq:
        await daq.start_daq("D", prim_sources="cam@sim://cam")
        waiters = [
            asyncio.ensure_future(
                daq.await_daq_state("D", DaqState.ACQUIRING, DaqSubState.STOPPED, timeout=30)
            )
            for _ in range(20)
        ]
        for _ in range(5):  # the daemon answers while twenty awaits are pending
            assert (await daq.get_daq_status("D")).substate == DaqSubState.ACQUIRING
        assert not any(w.done() for w in waiters)
        short = await daq.await_daq_state("D", *COMPLETED, timeout=0.1)
        assert short.timeout and short.status.substate == DaqSubState.ACQUIRING
        await daq.stop_daq("D")
        replies = await asyncio.gather(*waiters)
    assert all(not r.timeout for r in replies)
    # each reports where the DAQ was when the await was answered: Stopped, or later if it moved on meanwhile
    assert {r.status.state for r in replies} <= {DaqState.ACQUIRING, DaqState.MERGING, DaqState.COMPLETED}


def test_a_failed_start_is_a_daq_failed_reply_naming_the_daq_and_the_daq_ends_aborted(
    daemon: DaemonProcess,
) -> None:
    with daemon.client() as client:
        reply = client.request_raw("daq_start", {"id": "BAD", "prim_sources": "cam@sim://cam?fail=start"})
    assert (reply["success"], reply["error_code"], reply["id"]) == (False, "daq_failed", "BAD")
    assert "simulated failure on start" in reply["msg"]
    with daq_client(daemon) as daq, pytest.raises(DaqFailed) as info:
        daq.start_daq("BAD2", prim_sources="cam@sim://cam?fail=start")
    assert info.value.id == "BAD2"
    with daq_client(daemon) as daq:
        assert daq.get_daq_status("BAD").substate == DaqSubState.ABORTED


def test_after_kill_9_of_the_daemon_every_daq_is_back_and_each_can_be_ended(
    tmp_path: Path, external_source: str
) -> None:
    d = start_daemon(tmp_path)
    try:
        with daq_client(d) as daq:
            daq.start_daq("DONE", prim_sources="cam@sim://cam")
            daq.stop_daq("DONE")
            daq.await_daq_state("DONE", *COMPLETED, timeout=30)
            daq.start_daq("GONE", prim_sources="cam@sim://cam")
            daq.abort_daq("GONE")
            daq.start_daq("STUCK", prim_sources="cam@sim://cam?fail=abort")
            with pytest.raises(DaqFailed):
                daq.abort_daq("STUCK")  # fail-fast: it stays Aborting
            daq.start_daq("LIVE", prim_sources=f"cam@{external_source}")
            daq.start_daq("SIM", prim_sources="cam@sim://cam")
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait(10)
    finally:
        _kill(d)
    again = start_daemon(tmp_path)
    try:
        with daq_client(again) as daq:
            live = daq.get_daq_status("LIVE")
            assert (live.substate, live.error) == (DaqSubState.ACQUIRING, True)
            assert "daemon restarted" in live.message
            assert {s.id for s in daq.get_active_list()} == {"LIVE", "SIM", "STUCK"}
            assert daq.get_daq_status("DONE").substate == DaqSubState.COMPLETED
            assert Path(daq.get_daq_status("DONE").result).exists()
            assert daq.get_daq_status("GONE").substate == DaqSubState.ABORTED
            stuck = daq.get_daq_status("STUCK")
            assert (stuck.substate, stuck.error) == (DaqSubState.ABORTING, True)
            assert daq.force_abort_daq("STUCK").error is True  # its source still fails to abort: forced
            assert daq.get_daq_status("STUCK").substate == DaqSubState.ABORTED
            # the external source kept recording: the stop collects its data into the product
            assert daq.stop_daq("LIVE").error is False
            done = daq.await_daq_state("LIVE", *COMPLETED, timeout=30)
            assert done.status.substate == DaqSubState.COMPLETED
            with fits.open(done.status.result) as hdul:
                assert len(hdul["CAM"].data) > 0
            # the simulated source lived in the killed daemon: its data is gone, an abort ends the DAQ
            assert daq.abort_daq("SIM").error is False
            assert daq.get_daq_status("SIM").substate == DaqSubState.ABORTED
            assert daq.get_active_list() == []
    finally:
        again.stop()


def test_a_daq_merging_when_the_daemon_is_killed_is_merged_again_after_the_restart(tmp_path: Path) -> None:
    d = start_daemon(tmp_path)
    sources = " ".join(f"cam{i}@sim://cam{i}?rate=100000&duration=1" for i in range(8))
    try:
        with d.subscriber("event.daq_coordinator.state_changed") as events, daq_client(d, 30) as daq:
            daq.start_daq("BIG", prim_sources=sources)  # 8 x 100,000 rows: a merge of ~20 MB
            while events.recv(timeout=30).payload["data"]["substate"] != "Merging":
                pass
            os.kill(d.proc.pid, signal.SIGKILL)  # while the product is being written
        d.proc.wait(10)
    finally:
        _kill(d)
    again = start_daemon(tmp_path)
    try:
        with daq_client(again, 30) as daq:
            done = daq.await_daq_state("BIG", *COMPLETED, timeout=60)
        assert done.status.substate == DaqSubState.COMPLETED, done.status.message
        assert '"event":"daq_merge_resumed"' in again.log()
        with fits.open(done.status.result, checksum=True) as hdul:
            assert [len(h.data) for h in hdul[1:]] == [100_000] * 8
        products = list((again.state_dir / "data").iterdir())
        assert products == [Path(done.status.result)]  # one product, no half-written leftovers
        assert not any((again.state_dir / "daq" / "workspace").iterdir())
    finally:
        again.stop()


def test_an_actor_of_the_daemon_serves_as_a_metadata_source(tmp_path: Path) -> None:
    config = """
[[supervisor.children]]
kind = "actor"
name = "cryostat"
actor = "tests.support.actors:InstrumentSource"
"""
    d = start_daemon(tmp_path, config=config)
    try:
        with daq_client(d) as daq:
            daq.start_daq("T", prim_sources="cam@sim://cam", meta_sources="cryo@actor://cryostat")
            daq.stop_daq("T")
            done = daq.await_daq_state("T", *COMPLETED, timeout=30).status
            with fits.open(done.result) as hdul:
                assert hdul[0].header["HIERARCH ESO INS TEMP1 VAL"] == 4.2
            with pytest.raises(DaqFailed, match="no actor named 'nobody'"):
                daq.start_daq("U", prim_sources="cam@sim://cam", meta_sources="x@actor://nobody")
    finally:
        d.stop()

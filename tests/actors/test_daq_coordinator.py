"""The DAQ coordinator actor on the real runtime: OCM's commands with their fail-fast / fail-slow rules,
await-state, the automatic stop, the FITS product, events, and recovery after a restart. Sources are
`sim://` (failing or hanging on demand) and, for a few tests, the example external source as a subprocess."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from stationd.actors.daq_coordinator import states
from stationd.daemon.requests import RequestDecoder
from stationd.protocol import daq as d
from stationd.protocol.codec import Encoding
from stationd.protocol.daq import SourceState as Src
from stationd.protocol.errors import Conflict, DaqFailed, InvalidParams, InvalidState, NotFound, StationError
from stationd.protocol.methods import METHODS
from tests.support.daq import COORDINATOR, Coordinator, Stopwatch, start_example_source, stop_process
from tests.support.harness import Harness

S = d.DaqSubState
FAST = {"sourceTimeout": 0.2}
"""Properties for a DAQ whose hanging source must time out quickly."""
KEYWORDS = [
    {"type": "valueKeyword", "name": "OBJECT", "value": "SKY", "comment": "target"},
    {"type": "esoKeyword", "name": "OBS TPLNO", "value": 2},
]
LATE = [{"type": "valueKeyword", "name": "LATE", "value": 1}]
LIFE_CYCLE = [
    states.NOT_STARTED,
    states.STARTING,
    states.ACQUIRING,
    states.STOPPING,
    states.STOPPED,
    states.NOT_SCHEDULED,
    states.SCHEDULED,
    states.MERGING,
    states.RELEASING,
    states.COMPLETED,
]


@pytest.fixture
async def daq(harness: Harness, tmp_path: Path) -> Coordinator:
    coordinator = Coordinator(harness, data_dir=str(tmp_path / "data"))
    await coordinator.start_actor()
    return coordinator


def phase(status: d.DaqStatus) -> states.Phase:
    return (status.state, status.substate)


def sources(status: d.DaqStatus) -> dict[str, Src]:
    return {s.name: s.state for s in status.sources}


def source(status: d.DaqStatus, name: str) -> d.SourceStatus:
    return next(s for s in status.sources if s.name == name)


async def acquire_for(seconds: float) -> None:
    """Let simulated detectors record for a while: rows accumulate with time (not a synchronisation)."""
    await asyncio.sleep(seconds)


# -- start -------------------------------------------------------------------------------------------------
async def test_start_replies_with_the_given_id_once_every_source_acquires(daq: Coordinator) -> None:
    daq_id = await daq.start("cam@sim://cam", "tcs@sim://tcs", id="obs-1")
    assert daq_id == "obs-1"
    status = await daq.status("obs-1")
    assert phase(status) == states.ACQUIRING and not status.error
    assert sources(status) == {"cam": Src.ACQUIRING, "tcs": Src.ACQUIRING}
    assert [s.id for s in (await daq.ask(d.DaqActiveList())).daqs] == ["obs-1"]


async def test_start_without_id_generates_prefix_dot_utc_time_with_milliseconds(daq: Coordinator) -> None:
    first = await daq.start("cam@sim://cam")
    second = await daq.start("cam@sim://cam")
    prefixed = await daq.start("cam@sim://cam", file_prefix="TEST")
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}"
    assert re.fullmatch(rf"STATIOND\.{stamp}(-\d+)?", first), first
    assert re.fullmatch(rf"STATIOND\.{stamp}(-\d+)?", second) and second != first
    assert re.fullmatch(rf"TEST\.{stamp}(-\d+)?", prefixed), prefixed
    assert {phase(await daq.status(i)) for i in (first, second, prefixed)} == {states.ACQUIRING}


async def test_start_with_an_id_in_use_is_refused_as_a_conflict_naming_the_id(daq: Coordinator) -> None:
    await daq.start("cam@sim://cam", id="dup")
    with pytest.raises(Conflict, match="'dup' exists already") as info:
        await daq.start("cam@sim://other", id="dup")
    assert info.value.id == "dup"
    await daq.abort("dup")
    with pytest.raises(Conflict):  # a finished DAQ keeps its id
        await daq.start("cam@sim://cam", id="dup")


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"properties": "{not json"}, "properties: invalid JSON"),
        ({"properties": '{"awaitInterval": -1}'}, "awaitInterval"),
        ({"properties": '{"colour": "blue"}'}, "colour"),
        (
            {"properties": {"keywords": [{"type": "valueKeyword", "name": "WAYTOOLONG", "value": 1}]}},
            "keywords",
        ),
        ({"properties": {"keywords": [{"type": "fancyKeyword", "value": 1}]}}, "keywords"),
        ({"prim_sources": "", "meta_sources": ""}, "at least one source"),
        ({"prim_sources": "cam@http://example.org"}, "unknown scheme 'http'"),
        ({"prim_sources": "cam@sim://cam?speed=3"}, "unknown parameter 'speed'"),
        ({"prim_sources": "cam"}, "expected <name>@<uri>"),
        ({"prim_sources": "cam@sim://a", "meta_sources": "cam@sim://b"}, "used twice"),
    ],
    ids=[
        "bad-json",
        "negative-await-interval",
        "unknown-property",
        "keyword-name-too-long",
        "unknown-keyword-type",
        "no-sources",
        "unknown-uri-scheme",
        "bad-sim-parameter",
        "entry-without-uri",
        "name-used-twice",
    ],
)
async def test_start_with_bad_parameters_is_invalid_params_and_registers_nothing(
    daq: Coordinator, params: dict[str, Any], problem: str
) -> None:
    params = {"prim_sources": "cam@sim://cam"} | params
    with pytest.raises(InvalidParams, match=re.escape(problem)):
        await daq.ask(d.DaqStart(id="refused", **params))
    assert (await daq.ask(d.DaqActiveList())).daqs == []
    with pytest.raises(NotFound):
        await daq.status("refused")
    assert not (daq.h.settings.state_dir / "daq" / "workspace" / "refused").exists()
    assert daq.h.events.named(COORDINATOR, "state_changed") == []


async def test_start_with_a_bad_file_prefix_is_refused_and_registers_nothing(daq: Coordinator) -> None:
    """OCM's `file_prefix` rule is part of the message type (`DaqStart.file_prefix`'s pattern), so the
    coordinator never sees a bad one: the front door's decoder answers `invalid_params`, and an in-daemon ask
    is refused by the actor's decoder as `unsupported_message` (daemon/cell.py)."""
    params = {"id": "p", "prim_sources": "cam@sim://cam", "file_prefix": "a/b"}
    request = {"method": "daq_start", "params": params}
    decoder = RequestDecoder(METHODS, max_request_bytes=4096)
    with pytest.raises(InvalidParams, match="file_prefix"):
        decoder.decode(decoder.codecs[Encoding.JSON], json.dumps(request).encode())
    with pytest.raises(StationError, match="file_prefix") as info:
        await daq.ask(d.DaqStart(id="p", prim_sources="cam@sim://cam", file_prefix="a/b"))
    assert info.value.code == "unsupported_message"
    with pytest.raises(NotFound):
        await daq.status("p")


async def test_a_source_failing_to_start_fails_the_start_and_aborts_the_started_sources(
    daq: Coordinator,
) -> None:
    since = daq.h.events.mark()
    with pytest.raises(DaqFailed, match=r"source bad: start failed: simulated failure on start") as info:
        await daq.start("good@sim://good bad@sim://bad?fail=start", "tcs@sim://tcs", id="f1")
    assert info.value.id == "f1"
    status = await daq.status("f1")
    assert phase(status) == states.ABORTED and status.error
    assert "start failed" in status.message
    # metadata first (started, then aborted); both primaries were asked together; all started ones aborted
    assert sources(status) == {"good": Src.ABORTED, "bad": Src.ABORTED, "tcs": Src.ABORTED}
    assert "simulated failure on start" in source(status, "bad").error
    assert [new for _, new in daq.transitions("f1", since)] == [
        states.STARTING,
        states.ABORTING_ACQUIRING,
        states.ABORTED,
    ]
    assert (await daq.ask(d.DaqActiveList())).daqs == []


async def test_a_metadata_source_failing_to_start_means_no_primary_source_is_started(
    daq: Coordinator,
) -> None:
    with pytest.raises(DaqFailed, match="source tcs") as info:
        await daq.start("cam@sim://cam cam2@sim://cam2", "tcs@sim://tcs?fail=start ok@sim://ok", id="f2")
    assert info.value.id == "f2"
    status = await daq.status("f2")
    assert phase(status) == states.ABORTED
    assert sources(status) == {
        "cam": Src.NOT_STARTED,
        "cam2": Src.NOT_STARTED,
        "tcs": Src.ABORTED,
        "ok": Src.ABORTED,
    }


# -- stop and the product ------------------------------------------------------------------------------------
async def test_stop_merges_a_fits_product_with_a_table_per_primary_source_and_the_keywords(
    daq: Coordinator, tmp_path: Path
) -> None:
    daq_id = await daq.start(
        "cam@sim://cam?rate=1000 spec@sim://spec?rate=500",
        "tcs@sim://tcs",
        id="full",
        properties=json.dumps({"keywords": KEYWORDS}),
    )
    await acquire_for(0.05)
    update = [{"type": "esoKeyword", "name": "DET DIT", "value": 1.5}]
    await daq.ask(d.DaqUpdateKeywords(id=daq_id, keywords=json.dumps(update)))
    reply = await daq.stop(daq_id)
    assert reply == d.DaqReply(id=daq_id, error=False)
    status = await daq.finish(daq_id, states.COMPLETED)
    assert phase(status) == states.COMPLETED and not status.error
    product = Path(status.result)
    assert product == tmp_path / "data" / f"{status.file_id}.fits"
    rows = {s.name: s.rows for s in status.sources}
    assert rows["cam"] >= 50 and rows["spec"] >= 25 and rows["tcs"] == 0
    with fits.open(product, checksum=True) as hdul:
        assert [h.name for h in hdul[1:]] == ["CAM", "SPEC"]
        for hdu, name in zip(hdul[1:], ("cam", "spec"), strict=True):
            assert isinstance(hdu, fits.BinTableHDU) and hdu.header["EXTNAME"] == name.upper()
            assert len(hdu.data) == rows[name]
            np.testing.assert_array_equal(hdu.data["COUNTER"], np.arange(rows[name]))
        head = hdul[0].header
        assert head["OBJECT"] == "SKY" and head.comments["OBJECT"] == "target"
        assert head["HIERARCH ESO OBS TPLNO"] == 2 and head["HIERARCH ESO DET DIT"] == 1.5
        assert head["HIERARCH ESO INS SIM NAME"] == "tcs"  # from the metadata source
        assert head["ARCFILE"] == f"{status.file_id}.fits"
        assert list(head)[-2:] == ["CHECKSUM", "DATASUM"]
        for hdu in hdul:
            assert hdu.verify_checksum() == 1 and hdu.verify_datasum() == 1
    assert not (tmp_path / "daq" / "workspace" / daq_id).exists()
    assert (await daq.ask(d.DaqActiveList())).daqs == []


async def test_a_stop_that_fails_for_one_source_replies_error_and_leaves_the_daq_stopping(
    daq: Coordinator,
) -> None:
    await daq.start("ok@sim://ok bad@sim://bad?fail=stop", id="p1")
    reply = await daq.stop("p1")
    assert reply == d.DaqReply(id="p1", error=True)
    status = await daq.status("p1")
    assert phase(status) == states.STOPPING and status.error
    assert "source bad: stop failed: simulated failure on stop" in status.message
    assert sources(status) == {"ok": Src.STOPPED, "bad": Src.FAILED}


async def test_a_repeated_stop_retries_only_the_source_that_failed(daq: Coordinator) -> None:
    """A retried stopped sim source would refuse ("already stopped"): only `bad` may be asked again."""
    await daq.start("ok@sim://ok bad@sim://bad?fail=stop", id="p2")
    await daq.stop("p2")
    reply = await daq.stop("p2")
    assert reply.error
    status = await daq.status("p2")
    assert phase(status) == states.STOPPING
    assert status.message == "stop failed: source bad: stop failed: simulated failure on stop"
    assert sources(status) == {"ok": Src.STOPPED, "bad": Src.FAILED}
    assert source(status, "ok").error == ""


async def test_force_stop_after_a_partial_failure_merges_what_the_stopped_sources_delivered(
    daq: Coordinator,
) -> None:
    await daq.start("ok@sim://ok?rate=1000 bad@sim://bad?fail=stop", id="p3")
    await acquire_for(0.02)
    assert (await daq.stop("p3")).error
    reply = await daq.force_stop("p3")
    assert reply == d.DaqReply(id="p3", error=True)
    status = await daq.finish("p3", states.COMPLETED)
    assert phase(status) == states.COMPLETED and status.error
    assert "stopped despite errors" in status.message and "source bad" in status.message
    assert states.STOPPED in [(t.state, t.substate) for t in status.history]
    with fits.open(status.result) as hdul:
        assert [h.name for h in hdul[1:]] == ["OK"]
        assert len(hdul["OK"].data) == source(status, "ok").rows > 0


async def test_force_stop_from_acquiring_marks_the_daq_stopped_despite_a_failing_source(
    daq: Coordinator,
) -> None:
    await daq.start("ok@sim://ok bad@sim://bad?fail=stop", id="p4")
    assert (await daq.force_stop("p4")).error
    status = await daq.finish("p4", states.COMPLETED)
    assert status.error and sources(status) == {"ok": Src.STOPPED, "bad": Src.FAILED}


async def test_a_stop_that_fails_for_every_source_fails_and_the_daq_stays_stopping(daq: Coordinator) -> None:
    await daq.start("a@sim://a?fail=stop", "m@sim://m?fail=stop", id="p5")
    with pytest.raises(DaqFailed, match="every source failed to stop") as info:
        await daq.stop("p5")
    assert info.value.id == "p5"
    status = await daq.status("p5")
    assert phase(status) == states.STOPPING and status.error
    assert sources(status) == {"a": Src.FAILED, "m": Src.FAILED}
    assert (await daq.abort("p5")) == d.DaqReply(id="p5")  # still ends: the failed sources are aborted
    assert phase(await daq.status("p5")) == states.ABORTED


# -- abort ---------------------------------------------------------------------------------------------------
async def test_an_abort_that_fails_leaves_the_daq_aborting_with_its_error(daq: Coordinator) -> None:
    await daq.start("ok@sim://ok bad@sim://bad?fail=abort", id="a1")
    with pytest.raises(DaqFailed, match="stays Aborting: source bad: abort failed") as info:
        await daq.abort("a1")
    assert info.value.id == "a1"
    status = await daq.status("a1")
    assert phase(status) == states.ABORTING_ACQUIRING and status.error
    assert sources(status) == {"ok": Src.ABORTED, "bad": Src.FAILED}
    assert status.id in [s.id for s in (await daq.ask(d.DaqActiveList())).daqs]


async def test_force_abort_marks_the_daq_aborted_despite_a_failing_source(daq: Coordinator) -> None:
    await daq.start("ok@sim://ok bad@sim://bad?fail=abort", id="a2")
    with pytest.raises(DaqFailed):
        await daq.abort("a2")
    reply = await daq.force_abort("a2")
    assert reply == d.DaqReply(id="a2", error=True)
    status = await daq.status("a2")
    assert phase(status) == states.ABORTED and status.error
    assert "aborted despite errors: source bad" in status.message


async def test_abort_while_acquiring_discards_the_recording(daq: Coordinator, tmp_path: Path) -> None:
    await daq.start("cam@sim://cam", "tcs@sim://tcs", id="a3")
    assert (await daq.abort("a3")) == d.DaqReply(id="a3", error=False)
    status = await daq.status("a3")
    assert phase(status) == states.ABORTED and not status.error
    assert sources(status) == {"cam": Src.ABORTED, "tcs": Src.ABORTED}
    assert status.result == "" and not list((tmp_path / "data").glob("*.fits"))


async def test_abort_while_stopping_aborts_the_sources_that_did_not_stop(daq: Coordinator) -> None:
    await daq.start("ok@sim://ok bad@sim://bad?fail=stop", id="a4")
    await daq.stop("a4")
    assert (await daq.abort("a4")) == d.DaqReply(id="a4", error=False)
    status = await daq.status("a4")
    assert phase(status) == states.ABORTED
    assert sources(status) == {"ok": Src.STOPPED, "bad": Src.ABORTED}


async def test_abort_while_merging_ends_the_daq_aborted_without_a_product(
    daq: Coordinator, tmp_path: Path
) -> None:
    """A DAQ is held in StateMerging for real by a data directory that cannot be created (the release
    fails: the DAQ stays in Releasing, flagged, as OCM never aborts a started DAQ on its own)."""
    (tmp_path / "not-a-dir").write_text("")
    await daq.restart(data_dir=str(tmp_path / "not-a-dir" / "data"))
    await daq.start("cam@sim://cam", id="a5")
    await daq.stop("a5")
    await daq.logged("merge_failed", daq="a5")
    status = await daq.status("a5")
    assert phase(status) == states.RELEASING and "merge failed" in status.message
    since = daq.h.events.mark()
    assert (await daq.abort("a5")) == d.DaqReply(id="a5", error=False)
    assert daq.transitions("a5", since) == [
        (states.RELEASING, states.ABORTING_MERGING),
        (states.ABORTING_MERGING, states.ABORTED),
    ]
    assert not (tmp_path / "daq" / "workspace" / "a5").exists()


@pytest.mark.parametrize("substate", [S.MERGING, S.RELEASING])
async def test_an_abort_sent_as_the_product_is_written_ends_aborted_without_files_or_completed_with_them(
    daq: Coordinator, tmp_path: Path, substate: d.DaqSubState
) -> None:
    """The abort is sent the moment the DAQ enters `substate`, while the worker thread writes (Merging) or
    moves (Releasing) the product. Which wins is a race; either outcome must be whole: Aborted with nothing
    left in the workspace or the data directory, or Completed (the abort refused) with its product."""
    aborts: list[asyncio.Task[d.DaqReply]] = []

    def on_event(topic: str, msg: Any) -> None:
        if topic.endswith(".state_changed") and msg.data.id == "race" and msg.data.substate == substate:
            aborts.append(asyncio.get_running_loop().create_task(daq.abort("race")))

    daq.h.publisher.add_listener("", on_event)
    await daq.start("cam@sim://cam?rate=100000", id="race")
    await acquire_for(0.05)
    await daq.stop("race")
    status = await daq.finish("race", states.COMPLETED)
    try:
        await aborts[0]
    except InvalidState:
        assert phase(await daq.status("race")) == states.COMPLETED
        assert [p.name for p in (tmp_path / "data").iterdir()] == [f"{status.file_id}.fits"]
    else:
        status = await daq.status("race")
        assert phase(status) == states.ABORTED and status.result == ""
        assert not list((tmp_path / "data").glob("*.fits"))
    assert not (tmp_path / "daq" / "workspace" / "race").exists()


async def test_a_stop_and_an_abort_sent_together_run_one_after_the_other(daq: Coordinator) -> None:
    daq_id = await daq.start("cam@sim://cam")
    stop, abort = await asyncio.gather(daq.stop(daq_id), daq.abort(daq_id), return_exceptions=True)
    assert stop == d.DaqReply(id=daq_id) and abort == d.DaqReply(id=daq_id)
    status = await daq.status(daq_id)
    assert phase(status) == states.ABORTED
    assert [(t.state, t.substate) for t in status.history][:5] == LIFE_CYCLE[:5]


async def test_two_starts_with_the_same_id_at_once_create_one_daq(daq: Coordinator) -> None:
    first, second = await asyncio.gather(
        daq.start("cam@sim://a", id="twin"), daq.start("cam@sim://b", id="twin"), return_exceptions=True
    )
    assert first == "twin" and isinstance(second, Conflict)
    assert source(await daq.status("twin"), "cam").uri == "sim://a"


@pytest.mark.parametrize(
    ("command", "finished"),
    [
        (d.DaqStop, "completed"),
        (d.DaqForceStop, "completed"),
        (d.DaqAbort, "completed"),
        (d.DaqForceAbort, "aborted"),
        (d.DaqStop, "aborted"),
    ],
    ids=["stop-completed", "force-stop-completed", "abort-completed", "force-abort-aborted", "stop-aborted"],
)
async def test_a_command_on_a_finished_daq_is_invalid_state_naming_the_daq(
    daq: Coordinator, command: type, finished: str
) -> None:
    await daq.start("cam@sim://cam", id="done")
    if finished == "completed":
        await daq.stop("done")
        await daq.finish("done", states.COMPLETED)
    else:
        await daq.abort("done")
    with pytest.raises(InvalidState, match="DAQ 'done' is StateCompleted/") as info:
        await daq.ask(command(id="done"))
    assert info.value.id == "done"


async def test_commands_on_an_unknown_daq_are_not_found(daq: Coordinator) -> None:
    for msg in (
        d.DaqStop(id="nope"),
        d.DaqAbort(id="nope"),
        d.DaqStatusGet(id="nope"),
        d.DaqUpdateKeywords(id="nope", keywords="[]"),
        d.DaqAwaitState(id="nope", state=d.DaqState.COMPLETED, substate=S.COMPLETED, timeout=1),
    ):
        with pytest.raises(NotFound, match="'nope'") as info:
            await daq.ask(msg)
        assert info.value.id == "nope"


# -- automatic stop ------------------------------------------------------------------------------------------
async def test_acquisition_stops_by_itself_when_every_primary_source_ended(daq: Coordinator) -> None:
    daq_id = await daq.start(
        "a@sim://a?rate=1000&duration=0.05 b@sim://b?rate=1000&duration=0.1",
        "tcs@sim://tcs",
        properties={"awaitInterval": 1},
    )
    clock = Stopwatch()
    status = await daq.finish(daq_id, states.COMPLETED)
    assert clock() < 1.0  # the end is reported when it happens, not at the end of an awaitInterval
    assert phase(status) == states.COMPLETED and not status.error
    assert status.message == "recording ended"
    assert {s.name: s.rows for s in status.sources} == {"a": 50, "b": 100, "tcs": 0}
    assert [(t.state, t.substate) for t in status.history] == LIFE_CYCLE


async def test_acquisition_goes_on_while_one_primary_source_still_records(daq: Coordinator) -> None:
    daq_id = await daq.start("a@sim://a?duration=0.02 b@sim://b", properties={"awaitInterval": 0.05})
    reply = await daq.await_state(daq_id, states.STOPPING, timeout=0.3)
    assert reply.timeout and phase(reply.status) == states.ACQUIRING
    assert (await daq.stop(daq_id)) == d.DaqReply(id=daq_id)
    assert phase(await daq.finish(daq_id, states.COMPLETED)) == states.COMPLETED


async def test_a_daq_of_metadata_sources_only_acquires_until_stopped(daq: Coordinator) -> None:
    """No primary source can report the end of its recording: there is no automatic stop."""
    daq_id = await daq.start("", "tcs@sim://tcs", properties={"awaitInterval": 0.01})
    reply = await daq.await_state(daq_id, states.STOPPING, timeout=0.2)
    assert reply.timeout and phase(reply.status) == states.ACQUIRING
    await daq.stop(daq_id)
    status = await daq.finish(daq_id, states.COMPLETED)
    with fits.open(status.result) as hdul:
        assert len(hdul) == 1 and hdul[0].header["HIERARCH ESO INS SIM NAME"] == "tcs"


async def test_an_automatic_stop_that_fails_for_every_source_leaves_the_daq_stopping_flagged(
    daq: Coordinator,
) -> None:
    daq_id = await daq.start("a@sim://a?duration=0&fail=stop", properties={"awaitInterval": 0.05})
    await daq.logged("automatic_stop_failed", daq=daq_id)
    status = await daq.status(daq_id)
    assert phase(status) == states.STOPPING and status.error
    assert status.message == "stop failed: source a: stop failed: simulated failure on stop"
    assert (await daq.force_stop(daq_id)).error
    assert phase(await daq.finish(daq_id, states.COMPLETED)) == states.COMPLETED


# -- keywords ------------------------------------------------------------------------------------------------
async def test_update_keywords_replaces_a_keyword_of_the_same_kind_and_name_and_appends_the_others(
    daq: Coordinator,
) -> None:
    daq_id = await daq.start("cam@sim://cam", properties={"keywords": KEYWORDS})
    update = [
        {"type": "valueKeyword", "name": "OBJECT", "value": "DARK"},
        {"type": "esoKeyword", "name": "OBJECT", "value": "not the same keyword"},
        {"type": "literalKeyword", "value": "COMMENT added later"},
    ]
    reply = await daq.ask(d.DaqUpdateKeywords(id=daq_id, keywords=json.dumps(update)))
    assert reply == d.DaqReply(id=daq_id)
    status = await daq.status(daq_id)
    assert status.keywords == [
        d.ValueKeyword("OBJECT", "DARK"),
        d.EsoKeyword("OBS TPLNO", 2),
        d.EsoKeyword("OBJECT", "not the same keyword"),
        d.LiteralKeyword("COMMENT added later"),
    ]
    await daq.stop(daq_id)
    status = await daq.finish(daq_id, states.COMPLETED)
    with fits.open(status.result) as hdul:
        head = hdul[0].header
        assert head["OBJECT"] == "DARK" and head["HIERARCH ESO OBJECT"] == "not the same keyword"
        assert "added later" in str(head["COMMENT"])


@pytest.mark.parametrize(
    "keywords",
    [
        '[{"type": "valueKeyword", "name": "OBJECT"}]',
        "{not json",
        '[{"type": "valueKeyword", "name": "AB CD", "value": 1}]',
    ],
    ids=["missing-value", "bad-json", "bad-name"],
)
async def test_update_keywords_with_bad_keywords_is_invalid_params_and_changes_nothing(
    daq: Coordinator, keywords: str
) -> None:
    daq_id = await daq.start("cam@sim://cam", properties={"keywords": KEYWORDS})
    with pytest.raises(InvalidParams, match="keywords"):
        await daq.ask(d.DaqUpdateKeywords(id=daq_id, keywords=keywords))
    assert len((await daq.status(daq_id)).keywords) == 2


async def test_update_keywords_is_refused_from_not_scheduled_on(daq: Coordinator) -> None:
    daq_id = await daq.start("cam@sim://cam")
    await daq.stop(daq_id)
    await daq.finish(daq_id, states.NOT_SCHEDULED)  # reached, or passed already: refused either way
    update = d.DaqUpdateKeywords(id=daq_id, keywords=LATE)
    with pytest.raises(InvalidState, match="update_keywords is accepted only in") as info:
        await daq.ask(update)
    assert info.value.id == daq_id
    status = await daq.finish(daq_id, states.COMPLETED)
    with pytest.raises(InvalidState):
        await daq.ask(update)
    with fits.open(status.result) as hdul:
        assert "LATE" not in hdul[0].header


async def test_update_keywords_is_accepted_while_a_partly_failed_stop_waits(daq: Coordinator) -> None:
    daq_id = await daq.start("ok@sim://ok bad@sim://bad?fail=stop")
    await daq.stop(daq_id)
    await daq.ask(d.DaqUpdateKeywords(id=daq_id, keywords=LATE))
    await daq.force_stop(daq_id)
    status = await daq.finish(daq_id, states.COMPLETED)
    with fits.open(status.result) as hdul:
        assert hdul[0].header["LATE"] == 1


# -- await-state ---------------------------------------------------------------------------------------------
async def test_await_state_already_reached_replies_at_once(daq: Coordinator) -> None:
    daq_id = await daq.start("cam@sim://cam")
    clock = Stopwatch()
    reply = await daq.await_state(daq_id, states.ACQUIRING, timeout=30)
    assert not reply.timeout and phase(reply.status) == states.ACQUIRING
    reply = await daq.await_state(daq_id, states.STARTING, timeout=30)  # passed: no longer reachable
    assert not reply.timeout and phase(reply.status) == states.ACQUIRING
    assert clock() < 1.0


async def test_await_state_reached_later_wakes_within_milliseconds_of_the_transition(
    daq: Coordinator,
) -> None:
    """Measured on the step to Stopping of a DAQ whose source then hangs: nothing else runs meanwhile (a merge
    thread holding the GIL would measure Python's thread switch interval, not the await). A first DAQ runs
    to Completed so that astropy's import (a warm-up thread at start) is over."""
    warm = await daq.start("cam@sim://cam")
    await daq.stop(warm)
    await daq.finish(warm, states.COMPLETED)
    daq_id = await daq.start("ok@sim://ok cam@sim://cam?hang=stop", properties={"sourceTimeout": 0.3})
    seen: dict[str, float] = {}

    def on_event(topic: str, msg: Any) -> None:
        if topic.endswith(".state_changed") and msg.data.id == daq_id and msg.data.substate == S.STOPPING:
            seen.setdefault("published", time.perf_counter())

    daq.h.publisher.add_listener("", on_event)
    waiting = asyncio.create_task(daq.await_state(daq_id, states.STOPPING, timeout=30))
    waiting.add_done_callback(lambda _: seen.setdefault("woke", time.perf_counter()))
    still = await daq.await_state(daq_id, states.STOPPING, timeout=0.05)  # the first one is pending by now
    assert still.timeout and not waiting.done()
    stopping = asyncio.create_task(daq.stop(daq_id))
    reply = await waiting
    assert not reply.timeout and phase(reply.status) == states.STOPPING
    assert seen["woke"] - seen["published"] < 0.02  # a few ms: event-driven, not a poll
    assert not stopping.done()  # the stop still waits for its source
    assert (await stopping).error  # partly failed: the hanging source timed out


async def test_await_state_that_can_no_longer_be_reached_replies_once_the_daq_aborts(
    daq: Coordinator,
) -> None:
    """Scheduled, Merging and Completed can no longer be reached from Aborting: the awaits are fulfilled
    there (OCM: "reached or no longer reachable"), so the status they carry is Aborting or, when the reply
    left after the abort's last step, Aborted."""
    daq_id = await daq.start("cam@sim://cam")
    pending = [
        asyncio.create_task(daq.await_state(daq_id, target, timeout=30))
        for target in (states.SCHEDULED, states.MERGING, states.COMPLETED)
    ]
    await daq.await_state(daq_id, states.COMPLETED, timeout=0.05)  # they are all pending now
    assert not any(t.done() for t in pending)
    await daq.abort(daq_id)
    for reply in await asyncio.gather(*pending):
        assert not reply.timeout and phase(reply.status) in (states.ABORTING_ACQUIRING, states.ABORTED)
    for target in (states.ACQUIRING, states.STOPPING, states.MERGING):  # afterwards: at once
        reply = await daq.await_state(daq_id, target, timeout=30)
        assert not reply.timeout and phase(reply.status) == states.ABORTED


async def test_await_state_timeout_is_not_an_error_and_carries_the_current_status(daq: Coordinator) -> None:
    daq_id = await daq.start("cam@sim://cam")
    clock = Stopwatch()
    reply = await daq.await_state(daq_id, states.STOPPED, timeout=0.1)
    assert 0.09 <= clock() < 2.0
    assert reply.success and reply.timeout
    assert reply.status.id == daq_id and phase(reply.status) == states.ACQUIRING


async def test_fifty_clients_awaiting_one_daq_all_wake(daq: Coordinator) -> None:
    daq_id = await daq.start("cam@sim://cam")
    waiting = [asyncio.create_task(daq.await_state(daq_id, states.COMPLETED, timeout=30)) for _ in range(50)]
    await daq.await_state(daq_id, states.COMPLETED, timeout=0.05)
    assert not any(t.done() for t in waiting)
    await daq.stop(daq_id)
    replies = await asyncio.gather(*waiting)
    assert all(not r.timeout and phase(r.status) == states.COMPLETED for r in replies)


async def test_a_pending_await_never_holds_up_other_requests(daq: Coordinator) -> None:
    daq_id = await daq.start("cam@sim://cam")
    waiting = asyncio.create_task(daq.await_state(daq_id, states.COMPLETED, timeout=30))
    clock = Stopwatch()
    assert phase(await daq.status(daq_id)) == states.ACQUIRING
    other = await daq.start("cam@sim://cam")
    await daq.ask(d.DaqUpdateKeywords(id=daq_id, keywords=KEYWORDS))
    assert len((await daq.ask(d.DaqActiveList())).daqs) == 2
    assert clock() < 2.0 and not waiting.done()
    await daq.stop(daq_id)
    assert not (await waiting).timeout
    await daq.abort(other)


async def test_timed_out_awaits_leave_nothing_behind_in_the_daq(daq: Coordinator) -> None:
    """White-box: an await that timed out must not stay in the DAQ's list of waiters (a client polling
    with short timeouts on a long acquisition would grow it without bound)."""
    daq_id = await daq.start("cam@sim://cam")
    await asyncio.gather(*(daq.await_state(daq_id, states.STOPPED, timeout=0.01) for _ in range(20)))
    assert not daq.actor().daqs[daq_id].waiters


@pytest.mark.parametrize(
    ("state", "substate"),
    [
        (d.DaqState.COMPLETED, S.ACQUIRING),
        (d.DaqState.ACQUIRING, S.MERGING),
        (d.DaqState.MERGING, S.STOPPED),
        (d.DaqState.UNDEFINED, S.COMPLETED),
    ],
)
async def test_await_state_with_a_substate_that_does_not_exist_in_the_state_is_invalid_params(
    daq: Coordinator, state: d.DaqState, substate: d.DaqSubState
) -> None:
    daq_id = await daq.start("cam@sim://cam")
    with pytest.raises(InvalidParams, match=f"substate {substate.value} does not exist in {state.value}"):
        await daq.ask(d.DaqAwaitState(id=daq_id, state=state, substate=substate, timeout=1))


# -- timeouts on hanging sources -----------------------------------------------------------------------------
async def test_a_source_hanging_on_start_times_out_and_the_daq_is_aborted_meanwhile_requests_are_answered(
    daq: Coordinator,
) -> None:
    other = await daq.start("cam@sim://cam")
    clock = Stopwatch()
    starting = asyncio.create_task(
        daq.start("ok@sim://ok hung@sim://hung?hang=start", id="h1", properties=FAST)
    )
    await daq.h.events.wait_event(COORDINATOR, "state_changed", id="h1", substate=S.STARTING)
    assert phase(await daq.status(other)) == states.ACQUIRING  # answered while the start hangs
    assert not starting.done()
    with pytest.raises(DaqFailed, match=r"source hung: start timed out after 0.2 s") as info:
        await starting
    assert 0.2 <= clock() < 2.0
    assert info.value.id == "h1"
    status = await daq.status("h1")
    assert phase(status) == states.ABORTED and status.error
    assert sources(status) == {"ok": Src.ABORTED, "hung": Src.ABORTED}


async def test_a_source_hanging_on_stop_fails_the_stop_within_the_source_timeout(daq: Coordinator) -> None:
    await daq.start("ok@sim://ok hung@sim://hung?hang=stop", id="h2", properties=FAST)
    clock = Stopwatch()
    assert (await daq.stop("h2")) == d.DaqReply(id="h2", error=True)
    assert 0.2 <= clock() < 2.0
    status = await daq.status("h2")
    assert phase(status) == states.STOPPING
    assert "source hung: stop timed out after 0.2 s" in status.message
    await daq.start("lonely@sim://lonely?hang=stop", id="h3", properties=FAST)
    with pytest.raises(DaqFailed, match="every source failed to stop: source lonely: stop timed out"):
        await daq.stop("h3")
    assert (await daq.force_abort("h3")) == d.DaqReply(id="h3")  # a hang on stop, not on abort


async def test_a_source_hanging_on_abort_fails_the_abort_and_force_abort_ends_the_daq(
    daq: Coordinator,
) -> None:
    await daq.start("hung@sim://hung?hang=abort", id="h4", properties=FAST)
    with pytest.raises(DaqFailed, match=r"abort timed out after 0\.2 s"):
        await daq.abort("h4")
    assert phase(await daq.status("h4")) == states.ABORTING_ACQUIRING
    assert (await daq.force_abort("h4")).error
    assert phase(await daq.status("h4")) == states.ABORTED


# -- events --------------------------------------------------------------------------------------------------
async def test_every_transition_publishes_state_changed_with_old_and_new_state_in_order(
    daq: Coordinator,
) -> None:
    since = daq.h.events.mark()
    daq_id = await daq.start("cam@sim://cam", "tcs@sim://tcs")
    await daq.stop(daq_id)
    status = await daq.finish(daq_id, states.COMPLETED)
    assert daq.transitions(daq_id, since) == list(itertools.pairwise(LIFE_CYCLE))
    assert [(t.state, t.substate) for t in status.history] == LIFE_CYCLE
    events = [e for e in daq.h.events.named(COORDINATOR, "state_changed") if e.id == daq_id]
    assert [e.timestamp for e in events] == [t.timestamp for t in status.history[1:]]
    aborted = await daq.start("cam@sim://cam")
    await daq.abort(aborted)
    assert daq.transitions(aborted, since) == [
        (states.NOT_STARTED, states.STARTING),
        (states.STARTING, states.ACQUIRING),
        (states.ACQUIRING, states.ABORTING_ACQUIRING),
        (states.ABORTING_ACQUIRING, states.ABORTED),
    ]


# -- restart -------------------------------------------------------------------------------------------------
async def test_finished_daqs_forgotten_by_memory_are_read_back_from_the_store(daq: Coordinator) -> None:
    await daq.restart(keep_finished=0)
    daq_id = await daq.start("cam@sim://cam", "tcs@sim://tcs")
    await daq.stop(daq_id)
    status = await daq.finish(daq_id, states.COMPLETED)
    assert await daq.status(daq_id) == status
    reply = await daq.await_state(daq_id, states.MERGING, timeout=30)
    assert not reply.timeout and reply.status == status
    with pytest.raises(InvalidState):
        await daq.stop(daq_id)
    with pytest.raises(Conflict):
        await daq.start("cam@sim://cam", id=daq_id)


async def test_finished_daqs_are_still_queryable_after_a_restart(daq: Coordinator) -> None:
    done = await daq.start("cam@sim://cam", id="done")
    await daq.stop(done)
    completed = await daq.finish(done, states.COMPLETED)
    await daq.start("cam@sim://cam", id="gone")
    await daq.abort("gone")
    await daq.restart()
    assert await daq.status("done") == completed
    assert phase(await daq.status("gone")) == states.ABORTED
    assert (await daq.ask(d.DaqActiveList())).daqs == []
    reply = await daq.await_state("done", states.ACQUIRING, timeout=30)
    assert not reply.timeout and phase(reply.status) == states.COMPLETED
    with pytest.raises(Conflict):
        await daq.start("cam@sim://cam", id="gone")


async def test_a_daq_acquiring_at_a_restart_comes_back_flagged_and_can_be_force_stopped(
    daq: Coordinator,
) -> None:
    """The simulated sources live in the coordinator: after its restart they no longer record, so the stop
    fails for every source (as it would for a real detector whose recording was lost) and only a force-stop
    (or an abort) ends the DAQ."""
    await daq.start("cam@sim://cam", "tcs@sim://tcs", id="r1")
    await daq.restart()
    status = await daq.status("r1")
    assert phase(status) == states.ACQUIRING and status.error
    assert "restarted while the DAQ was Acquiring" in status.message
    assert [s.id for s in (await daq.ask(d.DaqActiveList())).daqs] == ["r1"]
    with pytest.raises(DaqFailed, match="every source failed to stop"):
        await daq.stop("r1")
    assert (await daq.force_stop("r1")).error
    status = await daq.finish("r1", states.COMPLETED)
    assert status.error
    with fits.open(status.result) as hdul:  # the sources' recordings were lost: no tables
        assert len(hdul) == 1


async def test_a_daq_acquiring_at_a_restart_can_be_aborted(daq: Coordinator) -> None:
    await daq.start("cam@sim://cam", id="r2")
    await daq.restart()
    assert (await daq.abort("r2")) == d.DaqReply(id="r2")
    assert phase(await daq.status("r2")) == states.ABORTED


async def test_a_daq_left_aborting_at_a_restart_comes_back_flagged_and_can_be_force_aborted(
    daq: Coordinator,
) -> None:
    await daq.start("bad@sim://bad?fail=abort", id="r3")
    with pytest.raises(DaqFailed):
        await daq.abort("r3")
    await daq.restart()
    status = await daq.status("r3")
    assert phase(status) == states.ABORTING_ACQUIRING and status.error
    assert "restarted while the DAQ was Aborting" in status.message
    assert (await daq.force_abort("r3")).error
    assert phase(await daq.status("r3")) == states.ABORTED


async def test_a_partly_failed_stop_keeps_the_data_of_the_stopped_sources_across_a_restart(
    daq: Coordinator,
) -> None:
    await daq.start("ok@sim://ok?rate=1000 bad@sim://bad?fail=stop", "tcs@sim://tcs", id="r6")
    await acquire_for(0.02)
    assert (await daq.stop("r6")).error
    rows = source(await daq.status("r6"), "ok").rows
    await daq.restart()
    status = await daq.status("r6")
    assert phase(status) == states.STOPPING and status.error
    assert "restarted while the DAQ was Stopping" in status.message
    assert sources(status) == {"ok": Src.STOPPED, "bad": Src.FAILED, "tcs": Src.STOPPED}
    assert (await daq.force_stop("r6")).error
    status = await daq.finish("r6", states.COMPLETED)
    with fits.open(status.result, checksum=True) as hdul:
        assert [h.name for h in hdul[1:]] == ["OK"] and len(hdul["OK"].data) == rows > 0
        assert hdul[0].header["HIERARCH ESO INS SIM NAME"] == "tcs"


async def test_a_daq_whose_release_failed_is_merged_again_after_a_restart(
    daq: Coordinator, tmp_path: Path
) -> None:
    """The DAQ is held in StateMerging/Releasing for real by a data directory that cannot be created."""
    (tmp_path / "blocked").write_text("")
    await daq.restart(data_dir=str(tmp_path / "blocked" / "data"))
    await daq.start("cam@sim://cam?rate=1000", id="r4", properties={"keywords": KEYWORDS})
    await acquire_for(0.02)
    await daq.stop("r4")
    await daq.logged("merge_failed", daq="r4")
    status = await daq.status("r4")
    assert phase(status) == states.RELEASING and "merge failed" in status.message
    rows = source(status, "cam").rows
    await daq.restart(data_dir=str(tmp_path / "data"))
    status = await daq.finish("r4", states.COMPLETED)
    assert Path(status.result) == tmp_path / "data" / f"{status.file_id}.fits"
    with fits.open(status.result, checksum=True) as hdul:
        assert len(hdul["CAM"].data) == rows > 0 and hdul[0].header["OBJECT"] == "SKY"


async def test_a_daq_stopped_when_the_coordinator_stops_is_merged_by_the_next_incarnation(
    daq: Coordinator, tmp_path: Path
) -> None:
    """The coordinator is told to stop the moment it publishes Stopped; it still takes a merge step or two
    before it goes (in practice it is cut in Merging: the stop cancels the merge and waits for its thread),
    and whatever step it was at, the next incarnation merges the product from the results saved in the
    workspace. A DAQ persisted exactly in Stopped cannot be produced in-process for certain (the pipeline
    starts as the stop command ends); the system tests kill the daemon at each stage."""
    stopping: list[asyncio.Task[None]] = []

    def on_event(topic: str, msg: Any) -> None:
        if topic.endswith(".state_changed") and msg.data.id == "r5" and msg.data.substate == S.STOPPED:
            stopping.append(asyncio.get_running_loop().create_task(daq.stop_actor()))

    daq.h.publisher.add_listener("", on_event)
    await daq.start("cam@sim://cam?rate=1000", "tcs@sim://tcs", id="r5")
    await acquire_for(0.02)
    try:
        await daq.stop("r5")
    except StationError as exc:  # the stop itself may be cut short: its reply is then actor_stopped
        assert exc.code == "actor_stopped"
    await stopping[0]
    workspace = tmp_path / "daq" / "workspace"
    assert not [p.name for p in workspace.rglob("*.part")]  # no merge thread outlives the coordinator
    since = daq.h.events.mark()
    await daq.start_actor()
    status = await daq.finish("r5", states.COMPLETED)
    assert phase(status) == states.COMPLETED and not status.error
    resumed_from = daq.transitions("r5", since)[0][0]
    assert resumed_from in LIFE_CYCLE[4:9], resumed_from
    with fits.open(status.result, checksum=True) as hdul:
        assert len(hdul["CAM"].data) == source(status, "cam").rows
    assert list((tmp_path / "data").iterdir()) == [Path(status.result)]


# -- external source and load --------------------------------------------------------------------------------
async def test_a_daq_records_from_the_example_external_source_into_its_product(
    daq: Coordinator, tmp_path: Path
) -> None:
    ext = await start_example_source(tmp_path, "--rate", "1000", "--name", "det7")
    try:
        daq_id = await daq.start(f"det@{ext.addr}", "tcs@sim://tcs")
        await acquire_for(0.05)
        assert (await daq.stop(daq_id)) == d.DaqReply(id=daq_id)
        status = await daq.finish(daq_id, states.COMPLETED)
        rows = source(status, "det").rows
        assert rows >= 50
        with fits.open(status.result, checksum=True) as hdul:
            assert len(hdul["DET"].data) == rows
            np.testing.assert_array_equal(hdul["DET"].data["COUNTER"], np.arange(rows))
    finally:
        await stop_process(ext.proc)


async def test_the_example_external_source_ending_its_recording_stops_the_daq_by_itself(
    daq: Coordinator, tmp_path: Path
) -> None:
    ext = await start_example_source(tmp_path, "--rate", "1000", "--duration", "0.1")
    try:
        daq_id = await daq.start(f"det@{ext.addr}", properties={"awaitInterval": 1})
        status = await daq.finish(daq_id, states.COMPLETED)
        assert status.message == "recording ended" and 90 <= source(status, "det").rows <= 100
    finally:
        await stop_process(ext.proc)


async def test_an_external_source_that_died_fails_the_stop_by_the_timeout_and_force_abort_ends_the_daq(
    daq: Coordinator, tmp_path: Path
) -> None:
    ext = await start_example_source(tmp_path)
    try:
        daq_id = await daq.start(f"det@{ext.addr}", properties=FAST)
    finally:
        await stop_process(ext.proc)
    clock = Stopwatch()
    with pytest.raises(DaqFailed, match=r"stop timed out after 0\.2 s"):
        await daq.stop(daq_id)
    assert clock() < 2.0
    with pytest.raises(DaqFailed, match="abort timed out"):
        await daq.abort(daq_id)
    assert (await daq.force_abort(daq_id)).error
    assert phase(await daq.status(daq_id)) == states.ABORTED


async def test_a_hundred_concurrent_daqs_start_and_stop_without_errors(daq: Coordinator) -> None:
    ids = await asyncio.gather(*(daq.start(f"cam@sim://cam{i} m@sim://m", id=f"c{i}") for i in range(100)))
    assert sorted(ids) == sorted(f"c{i}" for i in range(100))
    replies = await asyncio.gather(*(daq.stop(i) for i in ids))
    assert all(not r.error for r in replies)
    done = await asyncio.gather(*(daq.finish(i, states.COMPLETED, timeout=30) for i in ids))
    assert all(phase(s) == states.COMPLETED and not s.error for s in done)
    assert len({s.result for s in done}) == 100

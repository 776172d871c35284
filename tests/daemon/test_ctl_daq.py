"""`stationctl daq …` against the real daemon: OCM's daqOcmCtl commands with readable output and `--json`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.daemon.test_ctl import ctl
from tests.support.daemon import DaemonProcess

KEYWORDS = '[{"type": "valueKeyword", "name": "OBJECT", "value": "NGC 253"}]'


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("STATIOND_")] + ["FORCE_COLOR"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture
def at(daemon: DaemonProcess, monkeypatch: pytest.MonkeyPatch) -> DaemonProcess:
    monkeypatch.setenv("STATIOND_CONTROL_ADDR", daemon.control_addr)
    monkeypatch.setenv("STATIOND_INFO_ADDR", daemon.info_addr)
    return daemon


def test_an_acquisition_from_start_to_product_with_stationctl(
    at: DaemonProcess, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    properties = tmp_path / "start.json"
    properties.write_text(json.dumps({"keywords": json.loads(KEYWORDS)}))
    code, out, err = ctl(
        capsys, "daq", "start", "cam@sim://cam?rate=200", "tcs@sim://tcs", "--id", "OBS1",
        "--properties", f"@{properties}",
    )  # fmt: skip
    assert (code, out.strip(), err) == (0, "started OBS1", "")
    code, out, _ = ctl(capsys, "daq", "list")
    assert code == 0 and "1 active DAQ" in out
    assert re.search(r"OBS1\s+│\s+StateAcquiring / Acquiring", out)
    code, out, _ = ctl(
        capsys, "daq", "keywords", "OBS1", '[{"type": "esoKeyword", "name": "DET DIT", "value": 1.5}]'
    )
    assert (code, out.strip()) == (0, "keywords updated for OBS1")
    assert ctl(capsys, "daq", "stop", "OBS1")[:2] == (0, "stopped OBS1\n")
    code, out, _ = ctl(capsys, "daq", "await", "OBS1", "completed", "Completed", "--wait-timeout", "30")
    assert (code, out.strip()) == (0, "OBS1: StateCompleted / Completed")
    code, out, _ = ctl(capsys, "daq", "status", "OBS1")
    assert code == 0
    assert re.search(r"^product\s+\S+\.fits$", out, re.M)
    assert re.search(r"cam\s+│\s+primary\s+│\s+sim://cam\?rate=200\s+│\s+Stopped", out)
    assert "DET DIT" in out and "NGC 253" in out
    assert out.index("Merging") < out.index("Releasing")  # the history, in order
    code, out, _ = ctl(capsys, "daq", "status", "OBS1", "--json")
    status = json.loads(out)
    assert (code, status["substate"], Path(status["result"]).exists()) == (0, "Completed", True)
    assert ctl(capsys, "daq", "list", "--json")[1].strip() == "[]"


def test_failures_are_one_red_line_with_the_code_and_a_non_zero_exit(
    at: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = ctl(capsys, "daq", "start", "cam@sim://cam?fail=start", "--id", "F1")
    assert code == 1
    assert err.startswith("error [daq_failed]: DAQ 'F1' was aborted: start failed: source cam")
    code, _, err = ctl(capsys, "daq", "status", "nope")
    assert (code, err.strip()) == (1, "error [not_found]: no DAQ with id 'nope'")
    code, _, err = ctl(capsys, "daq", "start", "cam@sim://cam", "--properties", "{bad json")
    assert code == 1 and err.startswith("error [invalid_params]: properties")
    code, _, err = ctl(capsys, "daq", "await", "F1", "StateAcquiring", "Bogus")
    assert code == 2 and "unknown substate 'Bogus'" in err  # argparse refuses it before asking


def test_await_says_when_it_timed_out_and_exits_one(
    at: DaemonProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ctl(capsys, "daq", "start", "cam@sim://cam", "--id", "W")[0] == 0
    code, out, _ = ctl(capsys, "daq", "await", "W", "StateCompleted", "Completed", "--wait-timeout", "0.1")
    assert (code, out.strip()) == (1, "timed out after 0.1 s: StateAcquiring / Acquiring")
    code, out, _ = ctl(capsys, "daq", "abort", "W", "--force")
    assert (code, out.strip()) == (0, "aborted W")
    code, out, _ = ctl(capsys, "daq", "await", "W", "StateMerging", "Scheduled", "--wait-timeout", "5")
    assert (code, out.strip()) == (0, "W: StateCompleted / Aborted")  # no longer reachable: answered at once

"""Every example script runs against a real daemon."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.daemon import DaemonProcess

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(daemon: DaemonProcess, *args: str) -> str:
    env = dict(os.environ, STATIOND_CONTROL_ADDR=daemon.control_addr, STATIOND_INFO_ADDR=daemon.info_addr)
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_status_example_prints_the_tree(daemon: DaemonProcess) -> None:
    out = run_example(daemon, str(EXAMPLES / "status.py"))
    assert "stationd" in out and "supervisor" in out and "running" in out
    assert str(daemon.state_dir) in out


def test_watch_info_example_follows_the_status_stream(daemon: DaemonProcess) -> None:
    out = run_example(daemon, str(EXAMPLES / "watch_info.py"), "2")
    assert len(re.findall(r"status: running, \d+ actors", out)) == 2


def test_every_example_script_has_a_test() -> None:
    # daq_source.py is run by tests/actors/test_daq_sources.py
    tested = {"status.py", "watch_info.py", "daq_source.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested

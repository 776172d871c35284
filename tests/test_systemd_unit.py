"""systemd/stationd.service passes `systemd-analyze verify` without a single warning."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "stationd.service"
INSTALLED_PATH = "/usr/local/bin/stationd"


def _stationd_script() -> str:
    """The script `pip install` made for this interpreter (the venv's), else the one on $PATH."""
    beside = Path(sys.executable).with_name("stationd")
    found = str(beside) if beside.is_file() else shutil.which("stationd")
    assert found is not None, f"no stationd script next to {sys.executable} (pip install -e .)"
    return str(Path(found).resolve())


def _copy(tmp_path: Path, *, replace: tuple[str, str] | None = None) -> Path:
    """The unit, with ExecStart pointing at this environment's `stationd` script.

    `systemd-analyze verify` fails (`is not executable`) when the ExecStart binary does not exist on the
    checking machine, and /usr/local/bin/stationd usually does not exist where the tests run: only that
    path is replaced, everything else is checked as shipped.
    """
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_PATH} serve" in text
    text = text.replace(f"ExecStart={INSTALLED_PATH} ", f"ExecStart={_stationd_script()} ", 1)
    if replace is not None:
        old, new = replace
        assert old in text
        text = text.replace(old, new, 1)
    copy = tmp_path / "stationd.service"  # verify wants a unit name ending in .service
    copy.write_text(text)
    return copy


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("systemd-analyze")
    assert exe is not None, "systemd-analyze is missing: `make system-deps` installs it"
    return subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True, timeout=60)


def test_unit_verifies_without_warnings(tmp_path: Path) -> None:
    result = _verify(_copy(tmp_path))
    # Unknown keys and unparsable values are only warnings (exit 0) on stderr: fail on any stderr.
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("Restart=on-failure", "Restrat=on-failure", "Unknown key 'Restrat'"),
        ("WatchdogSec=30", "WatchdogSec=thirty", "thirty"),
        ("Type=notify", "Type=notifyy", "notifyy"),
    ],
)
def test_broken_unit_is_caught(tmp_path: Path, old: str, new: str, complaint: str) -> None:
    """The check can fail: typos systemd would ignore (exit code 0 all the same) show up on stderr."""
    result = _verify(_copy(tmp_path, replace=(f"\n{old}\n", f"\n{new}\n")))
    assert complaint in result.stderr


def test_unit_settings() -> None:
    text = UNIT.read_text()
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m.group(1)
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(f"{section}.{key}", []).append(value)
    expected = {
        "Service.Type": "notify",
        "Service.NotifyAccess": "main",
        "Service.WatchdogSec": "30",
        "Service.Restart": "on-failure",
        "Service.StateDirectory": "stationd",
        "Service.RuntimeDirectory": "stationd",
        "Service.KillMode": "mixed",
        "Service.ExecReload": "/bin/kill -HUP $MAINPID",
        "Service.DynamicUser": "yes",
        "Service.CapabilityBoundingSet": "",
        "Unit.StartLimitIntervalSec": "120",
        "Unit.StartLimitBurst": "5",
        "Install.WantedBy": "multi-user.target",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    # The daemon's own graceful stop (shutdown_timeout, 30 s by default) must fit in systemd's.
    assert int(settings["Service.TimeoutStopSec"][0]) > 30
    # ctypes/cffi need writable+executable memory.
    assert "Service.MemoryDenyWriteExecute" not in settings

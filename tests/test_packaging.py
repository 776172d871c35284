"""The three code folders install as stationd.daemon, .actors and .protocol from a wheel too."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_holds_the_three_packages_and_runs_from_its_own_files(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            str(ROOT),
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("stationd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("daemon", "actors", "protocol"):
        sources = {p.relative_to(ROOT / folder).as_posix() for p in (ROOT / folder).rglob("*.py")}
        prefix = f"stationd/{folder}/"
        packaged = {n.removeprefix(prefix) for n in names if n.startswith(prefix) and n.endswith(".py")}
        assert packaged == sources, folder
    assert "stationd/protocol/schema.json" in names
    assert not any(n.startswith(("daemon/", "actors/", "protocol/", "tests/")) for n in names)

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        f"import sys; sys.path.insert(0, {str(target)!r}); "
        "import stationd.daemon.cli, stationd.actors.supervisor, stationd.protocol.schema as s; "
        "print(stationd.daemon.cli.__file__); print(len(s.protocol_schema()['methods']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, check=True, capture_output=True, text=True
    ).stdout.split()
    assert out[0].startswith(str(target))
    assert int(out[1]) >= 3

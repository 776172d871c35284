"""Shared fixtures: the real daemon as a subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, start_daemon
from tests.support.mongo import mongo_uri  # noqa: F401  # the session MongoDB server fixture


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A running daemon with the default tree on free loopback ports."""
    d = start_daemon(tmp_path)
    yield d
    if d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()
    d.notify.close()

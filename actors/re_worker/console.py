"""The worker's console: what user code, plans and the RunEngine print goes to `QS_Console` as well.

`sys.stdout`/`sys.stderr` are process-global, so replacing them captures the output of every thread (plans,
tasks, the RunEngine's own loop). Text still reaches the original streams (the daemon's journal).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from stationd.protocol.pubsub import CONSOLE

__all__ = ["ConsoleCapture"]


class _Tee:
    """A text stream that writes to the original stream and hands every chunk to the capture."""

    def __init__(self, original: TextIO, capture: ConsoleCapture) -> None:
        self._original = original
        self._capture = capture

    def write(self, text: str) -> int:
        n = self._original.write(text)
        if text:
            self._capture.add(text)
        return n

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._original.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding... as the original stream has them
        return getattr(self._original, name)


class ConsoleCapture:
    """Publishes captured text on `QS_Console` from the actor loop, one message per loop turn.

    Writes may come from any thread; chunks written between two turns of the loop are joined into one
    message (bluesky-queueserver sends one per `write`, so a printed line arrives as the text then "\\n").
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, publish_topic: Callable[[str, Any], None]) -> None:
        self._loop = loop
        self._publish_topic = publish_topic
        self._lock = threading.Lock()
        self._chunks: list[str] = []
        self._originals: tuple[TextIO, TextIO] | None = None

    def install(self) -> None:
        """Replace sys.stdout and sys.stderr (idempotent)."""
        if self._originals is None:
            self._originals = (sys.stdout, sys.stderr)
            sys.stdout = _Tee(sys.stdout, self)  # type: ignore[assignment]
            sys.stderr = _Tee(sys.stderr, self)  # type: ignore[assignment]

    def uninstall(self) -> None:
        """Put the original streams back and publish what is still buffered."""
        if self._originals is not None:
            sys.stdout, sys.stderr = self._originals
            self._originals = None
            self._flush()

    def add(self, text: str) -> None:
        with self._lock:
            self._chunks.append(text)
            if len(self._chunks) > 1:
                return  # a flush is already scheduled
        try:
            self._loop.call_soon_threadsafe(self._flush)
        except RuntimeError:
            pass  # the loop is closed (the process is exiting): the original stream got the text

    def _flush(self) -> None:
        with self._lock:
            text, self._chunks = "".join(self._chunks), []
        if text:
            self._publish_topic(CONSOLE, {"time": time.time(), "msg": text})

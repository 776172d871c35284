"""Busy polling of the daemon's event loop for a moment after a client's request.

A client that sends its requests one after the other (a script adding items, a GUI refreshing several views)
sends the next one a fraction of a millisecond after each reply. If the loop's thread has gone to sleep in
`epoll_wait` by then, waking it costs more than the rest of the request on a virtual machine (measured on
the 2-core CI machine: `queue_item_add` round trips ~280 µs with the thread sleeping, ~185 µs with it
polling; a busy neighbour on the other core has the same effect). So after each request the loop polls
without sleeping for `[runtime] busy_poll` seconds (0.3 ms by default) before it waits as usual. Only client
requests start the window: an idle daemon, or one whose only activity is its actors', never spins.
"""

from __future__ import annotations

import os
import selectors
import time
from typing import Any

__all__ = ["BusyPollSelector", "after_request"]

_active: BusyPollSelector | None = None


def after_request() -> None:
    """A client request was handled: keep the loop polling for a moment (no-op without a busy-poll loop)."""
    if _active is not None:
        _active.poll_busily()


class BusyPollSelector(selectors.EpollSelector):
    """The loop's selector: `select` polls without sleeping until `window` seconds after the last request."""

    def __init__(self, window: float) -> None:
        global _active
        super().__init__()
        self._window = window
        self._until = 0.0
        _active = self

    def poll_busily(self) -> None:
        self._until = time.monotonic() + self._window

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, Any]]:
        now = time.monotonic()
        if (timeout is not None and timeout <= 0) or now >= self._until:
            return super().select(timeout)
        end = self._until if timeout is None else min(self._until, now + timeout)
        start = now
        while now < end:
            ready = super().select(0)
            if ready:
                return ready
            os.sched_yield()  # a thread woken on this CPU (the ZMQ I/O thread, a client's) runs first
            now = time.monotonic()
        if timeout is not None:
            timeout = max(0.0, timeout - (now - start))  # a timer is due: the loop runs it, then polls on
        return super().select(timeout)

    def close(self) -> None:
        global _active
        if _active is self:
            _active = None
        super().close()

"""The daemon loop's selector that keeps polling for a moment after a client's request (see busy_poll.py):
it returns what is ready at once, never holds a timer past its deadline, and asyncio runs on it."""

from __future__ import annotations

import asyncio
import selectors
import socket
import time

from stationd.daemon.busy_poll import BusyPollSelector, after_request


def test_what_is_ready_is_returned_while_the_loop_polls() -> None:
    selector = BusyPollSelector(window=10.0)
    a, b = socket.socketpair()
    try:
        selector.register(a, selectors.EVENT_READ)
        after_request()  # the window opens on the selector in use
        b.send(b"x")
        ready = selector.select(timeout=None)
        assert [key.fileobj for key, _ in ready] == [a]
    finally:
        selector.close()
        a.close()
        b.close()


def test_polling_ends_at_the_callers_timeout_so_that_timers_still_run() -> None:
    selector = BusyPollSelector(window=60.0)
    a, b = socket.socketpair()
    try:
        selector.register(a, selectors.EVENT_READ)
        selector.poll_busily()
        started = time.monotonic()
        assert selector.select(timeout=0.01) == []
        assert time.monotonic() - started < 30  # the timeout, not the 60 s window
    finally:
        selector.close()
        a.close()
        b.close()


def test_an_event_loop_runs_on_it() -> None:
    async def main() -> float:
        after_request()
        await asyncio.sleep(0.001)  # a timer inside the window
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        loop.call_soon(fut.set_result, 42.0)
        return await fut

    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(BusyPollSelector(0.0003))) as runner:
        assert runner.run(main()) == 42.0

"""The two kinds of children the runtime runs: on the daemon's loop, or in a spawned process.

Both expose `start`, `stop(timeout)`, `exit` (a future of the `ExitReason`), `pid` and `set_log_level`.
A process child is watched through its exit (noticed at once) and its heartbeats (a silent child is killed
after `heartbeat_timeout`), and reports why it stopped before it exits.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from stationd.actors.specs import ActorSpec
from stationd.protocol.envelope import RUNTIME, Envelope, Kind
from stationd.protocol.errors import ActorFailed
from stationd.protocol.runtime import ActorExited, SetLogLevel, StopActor

from .bus import Bus
from .cell import ActorCell, ExitReason
from .child import ChildLaunch
from .mailbox import encode_body

if TYPE_CHECKING:
    from .runtime import RuntimeSettings

__all__ = ["Child", "InprocChild", "ProcessChild"]


class InprocChild:
    """A child running on the daemon's event loop."""

    def __init__(self, cell: ActorCell) -> None:
        self.cell = cell
        self.exit = cell.exit
        self.pid: int | None = None

    async def start(self) -> None:
        await self.cell.start()

    async def stop(self, timeout: float) -> ExitReason:
        return await self.cell.stop(timeout)

    def set_log_level(self, level: str) -> None:
        self.cell.set_log_level(level)


class ProcessChild:
    """A child running in its own spawned process, watched through its exit and its heartbeats."""

    def __init__(self, spec: ActorSpec, level: str, settings: RuntimeSettings, bus: Bus, log: Any) -> None:
        self._settings = settings
        self._bus = bus
        self._log = log
        self.spec = spec
        self.level = level
        self.exit: asyncio.Future[ExitReason] = asyncio.get_running_loop().create_future()
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._last_words: ActorExited | None = None
        self._kill_reason: ExitReason | None = None
        self._last_beat = 0.0
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> int:
        settings = self._settings
        launch = ChildLaunch(
            spec=self.spec,
            bus_addr=settings.ipc_addr,
            state_dir=str(settings.state_dir),
            log_level=self.level,
            log_format=settings.log_format,
            # a longer timeout needs fewer beats (an idle worker then wakes once a second, not ten times)
            heartbeat_interval=max(settings.heartbeat_interval, (self.spec.heartbeat_timeout or 0) / 10),
            ask_timeout=settings.ask_timeout,
            sys_path=list(sys.path),
            parent_pid=os.getpid(),
        )
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "stationd.daemon.child", self.spec.name, stdin=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            raise ActorFailed(f"{self.spec.name} failed to start: cannot spawn a process: {exc}") from exc
        self.pid = self._proc.pid
        assert self._proc.stdin is not None
        self._proc.stdin.write(msgspec.json.encode(launch))
        await self._proc.stdin.drain()
        self._proc.stdin.close()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._watch_exit(), name=f"exit:{self.spec.name}"))
        try:
            async with asyncio.timeout(settings.start_timeout):
                await asyncio.wait([self.ready, self.exit], return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            self.kill(ExitReason(f"did not start within {settings.start_timeout:g} s", True))
            await asyncio.shield(self.exit)
        except asyncio.CancelledError:  # the parent gave up on it (it is stopping): no orphan is left
            self.kill(ExitReason("start cancelled", False))
            await asyncio.shield(self.exit)
            raise
        if not self.ready.done() or self.exit.done():
            reason = self.exit.result().reason if self.exit.done() else "did not start"
            raise ActorFailed(f"{self.spec.name} failed to start: {reason}")
        self._last_beat = loop.time()
        self._tasks.append(loop.create_task(self._watch_heartbeats(), name=f"heartbeat:{self.spec.name}"))
        return self.pid

    def beat(self) -> None:
        self._last_beat = asyncio.get_running_loop().time()

    def last_words(self, msg: ActorExited) -> None:
        self._last_words = msg

    def kill(self, reason: ExitReason) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._kill_reason = self._kill_reason or reason
            self._proc.kill()

    async def stop(self, timeout: float) -> ExitReason:
        if not self.exit.done():
            # If it is not connected (any more), the kill after the timeout ends it.
            self._bus.send(self.spec.name, Envelope(Kind.CONTROL, RUNTIME, body=encode_body(StopActor())))
            try:
                return await asyncio.wait_for(asyncio.shield(self.exit), timeout)
            except TimeoutError:
                self.kill(ExitReason(f"killed after shutdown timeout {timeout:g} s", False))
        return await asyncio.shield(self.exit)

    def set_log_level(self, level: str) -> None:
        self._bus.send(self.spec.name, Envelope(Kind.CONTROL, RUNTIME, body=encode_body(SetLogLevel(level))))

    async def _watch_exit(self) -> None:
        assert self._proc is not None
        rc = await self._proc.wait()
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.exit.set_result(self._exit_reason(rc))

    def _exit_reason(self, rc: int) -> ExitReason:
        if self._kill_reason is not None:
            return self._kill_reason
        if self._last_words is not None:
            return ExitReason(self._last_words.reason, self._last_words.abnormal or rc != 0)
        if rc < 0:
            return ExitReason(f"killed by {signal.Signals(-rc).name}", True)
        return ExitReason("stopped" if rc == 0 else f"exited with code {rc}", rc != 0)

    async def _watch_heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.spec.heartbeat_timeout or self._settings.heartbeat_timeout
        while True:
            remaining = self._last_beat + timeout - loop.time()
            if remaining <= 0:
                self._log.warning("heartbeat_missed", actor=self.spec.name, timeout=timeout)
                self.kill(ExitReason(f"hung: no heartbeat for {timeout:g} s, killed", True))
                return
            await asyncio.sleep(remaining)


Child = InprocChild | ProcessChild

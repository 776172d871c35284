"""The DAQ coordinator in-process for tests: start it (and start it again on the same state directory), drive
DAQs through real asks, and run the example external source (`examples/daq_source.py`) as a subprocess."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stationd.actors.daq_coordinator.sources import SourceAddress
from stationd.actors.specs import ActorSpec
from stationd.protocol import daq as d
from stationd.protocol.pubsub import LOG, LogMessage

from .harness import Harness

COORDINATOR = d.DAQ_COORDINATOR
COORDINATOR_CLASS = "stationd.actors.daq_coordinator:DaqCoordinator"
EXAMPLE_SOURCE = Path(__file__).resolve().parents[2] / "examples" / "daq_source.py"
EXAMPLE_START_TIMEOUT = 20.0
"""The example imports numpy and pyzmq; a loaded CI machine is slow."""

Phase = tuple[d.DaqState, d.DaqSubState]


class Coordinator:
    """The coordinator actor on a `Harness`, with one-line helpers for its commands."""

    def __init__(self, harness: Harness, **options: Any) -> None:
        self.h = harness
        self.options = options

    async def start_actor(self, **options: Any) -> None:
        """Start the coordinator (again, after `stop_actor`: a new incarnation on the same state dir)."""
        self.options |= options
        spec = ActorSpec(name=COORDINATOR, actor=COORDINATOR_CLASS, options=self.options)
        await self.h.start_tree(spec)

    async def stop_actor(self) -> None:
        await self.h.runtime.stop_root(10.0)

    async def restart(self, **options: Any) -> None:
        await self.stop_actor()
        await self.start_actor(**options)

    def actor(self) -> Any:
        """The running actor object, for the few white-box checks (e.g. what a DAQ keeps in memory)."""
        return self.h.runtime._running[COORDINATOR].child.cell.actor  # a test-only peek

    async def ask(self, msg: Any, timeout: float = 10.0) -> Any:
        return await self.h.ask(COORDINATOR, msg, timeout=timeout)

    async def start(self, prim: str = "", meta: str = "", *, id: str = "", **kw: Any) -> str:
        reply = await self.ask(d.DaqStart(id=id, prim_sources=prim, meta_sources=meta, **kw))
        return reply.id

    async def stop(self, daq_id: str) -> d.DaqReply:
        return await self.ask(d.DaqStop(id=daq_id))

    async def force_stop(self, daq_id: str) -> d.DaqReply:
        return await self.ask(d.DaqForceStop(id=daq_id))

    async def abort(self, daq_id: str) -> d.DaqReply:
        return await self.ask(d.DaqAbort(id=daq_id))

    async def force_abort(self, daq_id: str) -> d.DaqReply:
        return await self.ask(d.DaqForceAbort(id=daq_id))

    async def status(self, daq_id: str) -> d.DaqStatus:
        return (await self.ask(d.DaqStatusGet(id=daq_id))).status

    async def await_state(self, daq_id: str, phase: Phase, timeout: float = 10.0) -> d.AwaitDaqReply:
        msg = d.DaqAwaitState(id=daq_id, state=phase[0], substate=phase[1], timeout=timeout)
        return await self.ask(msg, timeout=timeout + 10.0)

    async def finish(self, daq_id: str, phase: Phase, timeout: float = 10.0) -> d.DaqStatus:
        """Await `phase` (or one it can no longer come back from) and return the status; fail on a timeout."""
        reply = await self.await_state(daq_id, phase, timeout)
        assert not reply.timeout, reply.status
        return reply.status

    async def logged(self, event: str, *, since: int = 0, timeout: float = 5.0, **fields: Any) -> LogMessage:
        """Await the coordinator's log event `event` whose fields include `fields` (what a step without a
        transition, such as a failed merge, leaves behind)."""

        def match(topic: str, msg: Any) -> bool:
            return (
                topic == LOG
                and isinstance(msg, LogMessage)
                and msg.actor == COORDINATOR
                and msg.event == event
                and all(msg.fields.get(k) == v for k, v in fields.items())
            )

        return await self.h.events.wait_for(match, since=since, timeout=timeout)

    def transitions(self, daq_id: str, since: int = 0) -> list[tuple[Phase, Phase]]:
        """`(old, new)` of every `state_changed` event published for the DAQ (since an `events.mark()`)."""
        topic = f"event.{COORDINATOR}.state_changed"
        return [
            ((m.data.old_state, m.data.old_substate), (m.data.state, m.data.substate))
            for t, m in self.h.events.items[since:]
            if t == topic and m.data.id == daq_id
        ]


# -- the example external source -----------------------------------------------------------------------------
@dataclass
class ExternalSource:
    """`examples/daq_source.py` running as a subprocess; `addr` is the ZMQ address it listens on."""

    proc: asyncio.subprocess.Process
    addr: str

    def address(self, name: str = "cam") -> SourceAddress:
        """This source as a primary source of a DAQ."""
        return SourceAddress(name, self.addr, "primary")


async def start_example_source(log_dir: Path, *args: str) -> ExternalSource:
    """Start the example source on a free loopback port and wait for its `listening on` line."""
    log = log_dir / "daq_source.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLE_SOURCE),
            "--bind",
            "tcp://127.0.0.1:*",  # the example reports the port it got: no free-port race
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), EXAMPLE_START_TIMEOUT)).decode()
    except BaseException:
        await stop_process(proc)
        raise
    if not line.startswith("listening on tcp://127.0.0.1:"):
        await stop_process(proc)
        raise AssertionError(f"the example source did not start: {line!r}\n{log.read_text()}")
    return ExternalSource(proc, line.split()[-1])


async def stop_process(proc: asyncio.subprocess.Process) -> int:
    """SIGTERM by pid, then SIGKILL if it has not exited within 10 s; the exit code."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode


class Stopwatch:
    """Monotonic seconds since creation."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def __call__(self) -> float:
        return time.monotonic() - self.t0

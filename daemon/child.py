"""Entry point of a process actor: `python -m stationd.daemon.child <name>`, launch data on stdin.

The process dies with the daemon (parent-death signal), connects its mailbox to the daemon's ipc bus, runs the
actor with the same cell as in-process actors, heartbeats, and sends its exit reason before it exits.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time
from typing import Any

import msgspec
import zmq.asyncio

from stationd.actors.specs import ActorSpec
from stationd.protocol.envelope import RUNTIME
from stationd.protocol.pubsub import LOG, EventMessage, LogMessage, event_topic
from stationd.protocol.runtime import ActorExited, Heartbeat, NodeReady, PublishBatch, PublishRequest

__all__ = ["ChildLaunch", "main"]

_PR_SET_PDEATHSIG = 1


class ChildLaunch(msgspec.Struct, frozen=True):
    """Everything a process actor needs to start, sent by the daemon on the child's stdin."""

    spec: ActorSpec
    bus_addr: str
    state_dir: str
    log_level: str
    log_format: str
    heartbeat_interval: float
    ask_timeout: float
    sys_path: list[str]
    parent_pid: int


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL us when the daemon dies, even by SIGKILL; exit if it already died."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(1)  # the daemon died between fork and prctl


async def _run(launch: ChildLaunch, zctx: zmq.asyncio.Context) -> int:
    from pathlib import Path

    from . import logs
    from .cell import ActorCell, ExitReason, load_actor_class
    from .mailbox import Mailbox

    name = launch.spec.name
    cell: ActorCell | None = None

    def send(msg: Any) -> None:
        if cell is not None and not cell.mailbox.closed:
            cell.mailbox.control(RUNTIME, msg)

    def forward_log(msg: LogMessage) -> None:
        send(PublishRequest(LOG, msg))

    def publish_event(actor: str, event: str, data: Any) -> None:
        send(
            PublishRequest(
                event_topic(actor, event), EventMessage(time=time.time(), actor=actor, name=event, data=data)
            )
        )

    def publish_topic(topic: str, payload: Any) -> None:
        send(PublishRequest(topic, payload))

    def publish_topics(items: list[tuple[str, Any]]) -> None:
        send(PublishBatch([PublishRequest(topic, payload) for topic, payload in items]))

    def last_words(outcome: ExitReason) -> None:
        send(ActorExited(name, outcome.reason, outcome.abnormal))

    logs.configure(launch.log_level, launch.log_format, forward=forward_log)
    try:
        cell = ActorCell(
            name=name,
            actor_cls=load_actor_class(launch.spec.actor),
            options=launch.spec.options,
            zctx=zctx,
            bus_addr=launch.bus_addr,
            state_dir=Path(launch.state_dir),
            log_level=launch.log_level,
            publish_event=publish_event,
            publish_topic=publish_topic,
            publish_topics=publish_topics,
            ask_timeout=launch.ask_timeout,
            linger_ms=2000,
            before_close=last_words,
        )
        await cell.start()
    except Exception as exc:  # the process boundary: report why the start failed, then exit non-zero
        if cell is None:  # no mailbox yet (the class could not be loaded): report through a throwaway one
            reason = f"failed to start: {type(exc).__name__}: {exc}"
            print(f"stationd child {name}: {reason}", file=sys.stderr, flush=True)
            reporter = Mailbox(zctx, launch.bus_addr, name, on_request=lambda _r: None, linger_ms=2000)
            reporter.control(RUNTIME, ActorExited(name, reason, True))
            await reporter.close()
        return 1
    send(NodeReady(name, os.getpid()))

    async def heartbeat() -> None:
        while True:
            send(Heartbeat(name))
            await asyncio.sleep(launch.heartbeat_interval)

    beating = asyncio.get_running_loop().create_task(heartbeat())
    outcome = await cell.exit
    beating.cancel()
    return 1 if outcome.abnormal else 0


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the daemon stops its children in order instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    launch = msgspec.json.decode(sys.stdin.buffer.read(), type=ChildLaunch)
    _die_with_parent(launch.parent_pid)
    sys.path[:0] = [p for p in launch.sys_path if p not in sys.path]
    zctx = zmq.asyncio.Context()
    code = asyncio.run(_run(launch, zctx))
    zctx.term()  # blocks (up to each socket's linger) until the last words reached the daemon
    sys.exit(code)


if __name__ == "__main__":
    main()

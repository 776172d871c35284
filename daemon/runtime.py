"""Daemon side of the actor system: runs children in-process or in spawned processes, watches their exits and
heartbeats, and tells their supervisor when one stops without being asked to."""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import zmq.asyncio

from stationd.actors.specs import ActorSpec, ChildSpec, Mode, SupervisorSpec
from stationd.actors.supervisor import Supervisor
from stationd.protocol.codec import msgpack_decoder
from stationd.protocol.envelope import RUNTIME, Envelope, Kind
from stationd.protocol.errors import ActorFailed, ActorStopped, UnsupportedMessage
from stationd.protocol.pubsub import EVENT_PREFIX, LOG, EventMessage, LogMessage
from stationd.protocol.runtime import (
    ActorExited,
    BusPing,
    Heartbeat,
    NodeReady,
    PublishBatch,
    PublishRequest,
)
from stationd.protocol.supervision import ActorInfo, ActorState, ChildExited

from .bus import Bus
from .cell import ActorCell, CellContext, ExitReason, load_actor_class
from .children import Child, InprocChild, ProcessChild
from .mailbox import Mailbox, encode_body
from .publisher import Publisher

__all__ = ["Runtime", "RuntimeSettings"]

# with the codec's hooks: what a child publishes may hold numpy arrays (images in bluesky documents)
_CONTROL_DECODER = msgpack_decoder(
    Heartbeat | NodeReady | ActorExited | PublishRequest | PublishBatch | BusPing
)


@dataclass(slots=True)
class RuntimeSettings:
    """What the runtime needs to know (taken from the daemon config)."""

    state_dir: Path
    inproc_addr: str
    ipc_addr: str
    heartbeat_interval: float = 0.1
    heartbeat_timeout: float = 0.45
    start_timeout: float = 10.0
    ask_timeout: float = 10.0
    log_level: str = "info"
    log_format: str = "json"
    actor_log_levels: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Running:
    spec: ChildSpec
    parent: str | None
    incarnation: int
    child: Child
    stopping: bool = False


class _SupervisorContext(CellContext):
    """Context of a supervisor cell: it may start and stop its own children."""

    def __init__(self, cell: ActorCell, runtime: Runtime) -> None:
        super().__init__(cell, runtime.settings.state_dir, runtime.settings.ask_timeout)
        self._runtime = runtime

    async def start_child(self, spec: ChildSpec, incarnation: int) -> int | None:
        return await self._runtime.start_child(spec, parent=self.name, incarnation=incarnation)

    async def stop_child(self, name: str, timeout: float) -> str:
        return (await self._runtime.stop_child(name, timeout)).reason


class Runtime:
    """Owns the bus and every running child of the tree."""

    def __init__(
        self, zctx: zmq.asyncio.Context, settings: RuntimeSettings, publisher: Publisher, log: Any
    ) -> None:
        self.zctx = zctx
        self.settings = settings
        self.publisher = publisher
        self.log = log
        self._running: dict[str, _Running] = {}
        self._started_names: set[str] = set()
        self.bus = Bus(
            zctx,
            [settings.inproc_addr, settings.ipc_addr],
            on_runtime=self._on_runtime_message,
            was_started=self._started_names.__contains__,
        )
        self._mailboxes: list[Mailbox] = []
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._ping_tokens = itertools.count(1)
        self.root_exit: asyncio.Future[ExitReason] = asyncio.get_running_loop().create_future()
        self._root: str | None = None

    # -- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.bus.start()

    async def start_root(self, spec: SupervisorSpec) -> None:
        """Start the root supervisor (and so the whole tree); raise `ActorFailed` if it fails to start."""
        self._root = spec.name
        self._publish_root(spec, ActorState.STARTING)
        await self.start_child(spec, parent=None, incarnation=1)
        self._publish_root(spec, ActorState.RUNNING)

    async def stop_root(self, timeout: float) -> ExitReason | None:
        if self._root is None or self._root not in self._running:
            return None
        spec = self._running[self._root].spec
        self._publish_root(spec, ActorState.STOPPING)
        reason = await self.stop_child(self._root, timeout)
        self._publish_root(spec, ActorState.STOPPED, last_exit=reason.reason)
        return reason

    async def close(self) -> None:
        """Stop whatever is still running (briefly: the graceful stop already had its time), close the bus."""
        for running in reversed(list(self._running.values())):
            running.stopping = True
            await running.child.stop(1.0)
        self.bus.close()

    def kill_processes(self, why: str) -> None:
        """SIGKILL every process child now (a forced stop); `close` then reaps them."""
        for running in self._running.values():
            if isinstance(running.child, ProcessChild):
                running.stopping = True
                running.child.kill(ExitReason(f"killed: {why}", False))

    def register_mailbox(self, mailbox: Mailbox) -> None:
        """A daemon component's mailbox: its asks to an actor that stops fail at once."""
        self._mailboxes.append(mailbox)

    # -- children ------------------------------------------------------------------------------------------
    async def start_child(self, spec: ChildSpec, *, parent: str | None, incarnation: int) -> int | None:
        if spec.name in self._running:
            raise ActorFailed(f"an actor named {spec.name!r} is already running")
        level = self._level_for(spec)
        child: Child
        if isinstance(spec, SupervisorSpec) or spec.mode == Mode.INPROC:
            child = InprocChild(self._make_cell(spec, level))
        else:
            child = ProcessChild(spec, level, self.settings, self.bus, self.log)
        self._started_names.add(spec.name)
        self._running[spec.name] = _Running(spec, parent, incarnation, child)
        try:
            await child.start()
        except BaseException:
            self._running.pop(spec.name, None)
            raise
        child.exit.add_done_callback(
            lambda fut, n=spec.name, i=incarnation: self._on_exit(n, i, fut.result())
        )
        return child.pid

    async def stop_child(self, name: str, timeout: float) -> ExitReason:
        running = self._running.get(name)
        if running is None:
            return ExitReason("not running", False)
        running.stopping = True
        return await running.child.stop(timeout)

    def set_log_levels(self, default: str, per_actor: dict[str, str]) -> None:
        """Apply reloaded log levels to every running actor (SIGHUP)."""
        self.settings.actor_log_levels.clear()
        self.settings.actor_log_levels.update(per_actor)
        self.settings.log_level = default
        for name, running in self._running.items():
            running.child.set_log_level(self._level_for(running.spec))
            self.log.debug("log_level_set", target=name)

    def running_pids(self) -> dict[str, int]:
        return {n: r.child.pid for n, r in self._running.items() if r.child.pid is not None}

    async def bus_round_trip(self, timeout: float) -> bool:
        """Send a ping through the router and await it: proves the bus routes messages."""
        token = next(self._ping_tokens)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[token] = fut
        probe = Mailbox(self.zctx, self.settings.inproc_addr, f"_ping{token}", on_request=lambda _r: None)
        try:
            probe.control(RUNTIME, BusPing(token))
            async with asyncio.timeout(timeout):
                await fut
            return True
        except TimeoutError:
            return False
        finally:
            self._pings.pop(token, None)
            await probe.close()

    # -- internals -----------------------------------------------------------------------------------------
    def _level_for(self, spec: ChildSpec) -> str:
        per_actor = self.settings.actor_log_levels.get(spec.name)
        own = spec.log_level if isinstance(spec, ActorSpec) else None
        return per_actor or own or self.settings.log_level

    def _make_cell(self, spec: ChildSpec, level: str) -> ActorCell:
        factory: Callable[[ActorCell], CellContext] | None = None
        if isinstance(spec, SupervisorSpec):
            actor_cls: type = Supervisor
            options: Any = spec
            factory = functools.partial(_SupervisorContext, runtime=self)
        else:
            try:
                actor_cls, options = load_actor_class(spec.actor), spec.options
            except (ImportError, ValueError) as exc:
                raise ActorFailed(f"{spec.name}: cannot load {spec.actor!r}: {exc}") from exc
            if getattr(actor_cls, "supervises_children", False):  # e.g. the queue manager and its worker
                factory = functools.partial(_SupervisorContext, runtime=self)
        return ActorCell(
            name=spec.name,
            actor_cls=actor_cls,
            options=options,
            zctx=self.zctx,
            bus_addr=self.settings.inproc_addr,
            state_dir=self.settings.state_dir,
            log_level=level,
            publish_event=self.publisher.publish_event,
            publish_topic=self.publisher.publish_mapping,
            ask_timeout=self.settings.ask_timeout,
            context_factory=factory,
        )

    def _on_exit(self, name: str, incarnation: int, reason: ExitReason) -> None:
        running = self._running.get(name)
        if running is None or running.incarnation != incarnation:
            return
        del self._running[name]
        stopped = ActorStopped(f"{name} stopped: {reason.reason}")
        for mailbox in self._mailboxes:
            mailbox.fail_pending(name, stopped)
        for other in self._running.values():
            if isinstance(other.child, InprocChild):
                other.child.cell.mailbox.fail_pending(name, stopped)
        if running.stopping:
            return
        if running.parent is None:
            if not self.root_exit.done():
                self.root_exit.set_result(reason)
            return
        msg = ChildExited(child=name, incarnation=incarnation, reason=reason.reason, abnormal=reason.abnormal)
        self.bus.send(running.parent, Envelope(Kind.TELL, RUNTIME, body=encode_body(msg)))

    def _on_runtime_message(self, sender: bytes, env: Envelope) -> None:
        if env.kind != Kind.CONTROL:
            if env.kind == Kind.ASK:
                self.bus.reply_error(sender, env.corr, UnsupportedMessage("the runtime answers no asks"))
            return
        try:
            msg = _CONTROL_DECODER.decode(env.body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # A child process speaking another protocol version must not take the bus down with it.
            self.log.error("bad_control_message", sender=sender.decode(errors="replace"), error=str(exc))
            return
        match msg:
            case Heartbeat(actor=actor):
                child = self._process_child(actor)
                if child is not None:
                    child.beat()
            case NodeReady(actor=actor, pid=pid):
                child = self._process_child(actor)
                if child is not None and not child.ready.done():
                    child.ready.set_result(pid)
            case ActorExited(actor=actor):
                child = self._process_child(actor)
                if child is not None:
                    child.last_words(msg)
            case PublishRequest():
                self._publish(msg)
            case PublishBatch(items=items):
                for item in items:
                    self._publish(item)
            case BusPing(token=token):
                fut = self._pings.get(token)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    def _publish(self, req: PublishRequest) -> None:
        """Publish what a child process asked to (re-typed here, so that in-process listeners such as the
        status board see the same types either way)."""
        topic, payload = req.topic, req.payload
        try:
            if topic == LOG:
                self.publisher.publish_log(msgspec.convert(payload, LogMessage))
            elif topic.startswith(EVENT_PREFIX):
                event = msgspec.convert(payload, EventMessage)
                self.publisher.publish_event(event.actor, event.name, event.data, at=event.time)
            else:
                self.publisher.publish_mapping(topic, payload)
        except msgspec.ValidationError as exc:
            self.log.error("bad_publish_request", topic=topic, error=str(exc))

    def _process_child(self, name: str) -> ProcessChild | None:
        running = self._running.get(name)
        if running is not None and isinstance(running.child, ProcessChild):
            return running.child
        return None

    def _publish_root(self, spec: SupervisorSpec, state: ActorState, last_exit: str | None = None) -> None:
        info = ActorInfo(
            name=spec.name,
            parent=None,
            kind="supervisor",
            mode=Mode.INPROC,
            state=state,
            pid=os.getpid(),
            restart_type=spec.restart,
            last_exit=last_exit,
            since=time.time(),
        )
        self.publisher.publish_event("daemon", "child_state", info)

"""An actor cell: runs one actor instance on its mailbox, one message at a time, and reports how it ended.

Failure rule (pykka/OTP): an exception while answering an ask goes back to the asker as a typed error and the
actor lives on; an exception in `on_start`, in a tell or in the receive loop crashes the actor. When the actor
stops, every ask it had not handled yet is answered with `actor_stopped`.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import zmq.asyncio

from stationd.actors.base import Actor, Deferred, checkpoint
from stationd.protocol.codec import msgpack_decoder
from stationd.protocol.envelope import Kind
from stationd.protocol.errors import ActorFailed, ActorStopped, StationError, UnsupportedMessage
from stationd.protocol.runtime import SetLogLevel, StopActor

from . import logs
from .mailbox import Mailbox, Request

__all__ = ["ActorCell", "Caller", "CellContext", "ExitReason", "load_actor_class"]


def load_actor_class(path: str) -> type[Actor]:
    """Import `package.module:Class` and check that it is an Actor."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"actor class {path!r} must be written as 'package.module:Class'")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Actor)):
        raise ValueError(f"{path!r} is not an Actor class")
    return cls


@dataclass(frozen=True, slots=True)
class ExitReason:
    """How an actor ended: `abnormal` exits (crash, kill, missed heartbeat) count for restarts."""

    reason: str
    abnormal: bool


@dataclass(frozen=True, slots=True)
class Caller:
    """Authenticated identity of the client on whose behalf the current message was sent."""

    user: str
    user_group: str


class CellContext:
    """The `ActorContext` an actor gets from its cell."""

    def __init__(self, cell: ActorCell, state_dir: Path, ask_timeout: float) -> None:
        self._cell = cell
        self.name = cell.name
        self.state_dir = state_dir
        self.log = cell.log
        self.caller: Caller | None = None
        """Identity attached to the message being handled (None when it came from inside the daemon)."""
        self._ask_timeout = ask_timeout

    def tell(self, to: str, msg: msgspec.Struct) -> None:
        self._cell.mailbox.tell(to, msg)

    async def ask(self, to: str, msg: msgspec.Struct, *, timeout: float | None = None) -> Any:
        return await self._cell.mailbox.ask(to, msg, timeout=timeout or self._ask_timeout)

    def publish(self, event: str, data: Any) -> None:
        self._cell.publish_event(self.name, event, data)

    def publish_topic(self, topic: str, payload: Any) -> None:
        self._cell.publish_topic(topic, payload)

    def publish_topics(self, items: list[tuple[str, Any]]) -> None:
        self._cell.publish_topics(items)

    def stop(self) -> None:
        self._cell.request_stop()


class ActorCell:
    """Owns an actor instance, its mailbox and its handling task."""

    def __init__(
        self,
        *,
        name: str,
        actor_cls: type[Actor],
        options: Any,
        zctx: zmq.asyncio.Context,
        bus_addr: str,
        state_dir: Path,
        log_level: str,
        publish_event: Callable[[str, str, Any], None],
        publish_topic: Callable[[str, Any], None],
        publish_topics: Callable[[list[tuple[str, Any]]], None] | None = None,
        ask_timeout: float = 10.0,
        linger_ms: int = 100,
        context_factory: Callable[[ActorCell], CellContext] | None = None,
        before_close: Callable[[ExitReason], None] | None = None,
    ) -> None:
        self.name = name
        self.log = logs.actor_logger(name, log_level)
        self._before_close = before_close
        self.publish_event = publish_event
        self.publish_topic = publish_topic
        self.publish_topics = publish_topics or self._publish_each
        self.mailbox = Mailbox(
            zctx, bus_addr, name, on_request=self._enqueue, on_control=self._on_control, linger_ms=linger_ms
        )
        self.ctx = context_factory(self) if context_factory else CellContext(self, state_dir, ask_timeout)
        self._decoder = msgpack_decoder(actor_cls.inbox) if actor_cls.inbox is not None else None
        self._actor_cls = actor_cls
        self._options = options
        self._actor: Actor | None = None
        self._queue: deque[Request] = deque()
        self._wakeup = asyncio.Event()
        self._stop_requested = False
        self._mailbox_error: BaseException | None = None
        self._killed: ExitReason | None = None
        self._task: asyncio.Task[None] | None = None
        self._deferred: dict[asyncio.Task[Any], Request] = {}
        self.exit: asyncio.Future[ExitReason] = asyncio.get_running_loop().create_future()

    @property
    def actor(self) -> Actor | None:
        """The actor instance (None until `start` built it)."""
        return self._actor

    async def start(self) -> None:
        """Build the actor from its options, run `on_start`, then handle messages in a task.

        Raises `ActorFailed` naming the cause when the options are invalid or `on_start` fails.
        """
        self.mailbox.start()
        try:
            self._actor = self._actor_cls(self.ctx, msgspec.convert(self._options, self._actor_cls.Options))
            await self._actor.on_start()
        except Exception as exc:
            self.log.error("start_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            await self._finish(ExitReason(f"failed to start: {type(exc).__name__}: {exc}", True), exc)
            raise ActorFailed(f"{self.name} failed to start: {type(exc).__name__}: {exc}") from exc
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"actor:{self.name}")
        assert self.mailbox.task is not None
        self.mailbox.task.add_done_callback(self._mailbox_done)

    def request_stop(self) -> None:
        """Stop after the message being handled (at once if idle)."""
        self._stop_requested = True
        self._wakeup.set()

    async def stop(self, timeout: float) -> ExitReason:
        """Stop gracefully; cancel the actor if it does not finish within `timeout`."""
        if self._task is None:
            return await asyncio.shield(self.exit)
        self.request_stop()
        try:
            return await asyncio.wait_for(asyncio.shield(self.exit), timeout)
        except TimeoutError:
            self.log.warning("stop_timeout", timeout=timeout)
            self._killed = ExitReason(f"killed after shutdown timeout {timeout:g} s", False)
            self._task.cancel()
            return await asyncio.shield(self.exit)

    def _publish_each(self, items: list[tuple[str, Any]]) -> None:
        for topic, payload in items:
            self.publish_topic(topic, payload)

    def set_log_level(self, level: str) -> None:
        self.log = self.ctx.log = logs.actor_logger(self.name, level)

    # -- internals -----------------------------------------------------------------------------------------
    def _enqueue(self, req: Request) -> None:
        self._queue.append(req)
        self._wakeup.set()

    def _on_control(self, msg: Any) -> None:
        match msg:
            case StopActor():
                self.request_stop()
            case SetLogLevel(level=level):
                self.set_log_level(level)
            case _:
                self.log.warning("unexpected_control_message", message=type(msg).__name__)

    def _mailbox_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._task is not None:
            self._mailbox_error = task.exception()
            self._task.cancel()

    async def _run(self) -> None:
        outcome, error = ExitReason("stopped", False), None
        try:
            await self._serve()
        except asyncio.CancelledError:
            if self._killed is not None:
                outcome = self._killed  # OTP's brutal kill: no stop hook, it would not finish either
            elif self._mailbox_error is not None:
                error = self._mailbox_error
                outcome = ExitReason(f"crashed: mailbox: {type(error).__name__}: {error}", True)
            elif not self._stop_requested:
                outcome = ExitReason("cancelled", True)
        except Exception as exc:
            error = exc
            outcome = ExitReason(f"crashed: {type(exc).__name__}: {exc}", True)
            self.log.error("actor_crashed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        await self._finish(outcome, error)

    async def _serve(self) -> None:
        while not self._stop_requested:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            checkpoint()  # a request that came while the previous message was handled goes first
            await self._dispatch(self._queue.popleft())

    async def _dispatch(self, req: Request) -> None:
        env = req.envelope
        is_ask = env.kind == Kind.ASK
        if env.deadline and time.time() > env.deadline:
            self.log.debug("expired_message_dropped", sender=env.sender)
            return
        try:
            msg = self._decoder.decode(env.body) if self._decoder is not None else None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            err = UnsupportedMessage(f"{self.name} does not accept this message: {exc}")
            if is_ask:
                self.mailbox.reply_error(req, err)
            else:
                self.log.warning("unsupported_tell", sender=env.sender, error=str(exc))
            return
        self.ctx.caller = Caller(env.user, env.user_group) if env.user else None
        assert self._actor is not None  # messages are handled only after start built it
        if not is_ask:
            await self._actor.handle(msg)  # an exception here crashes the actor
            return
        try:
            result = await self._actor.handle(msg)
        except Exception as exc:
            self._reply_failure(req, type(msg).__name__, exc)
            return
        if isinstance(result, Deferred):
            task = asyncio.get_running_loop().create_task(result.work, name=f"deferred:{self.name}")
            self._deferred[task] = req
            task.add_done_callback(functools.partial(self._deferred_done, what=type(msg).__name__))
        else:
            self.mailbox.reply(req, result)

    def _reply_failure(self, req: Request, what: str, exc: Exception) -> None:
        if isinstance(exc, StationError):
            self.mailbox.reply_error(req, exc)
        else:  # the actor boundary: a bug in a handler goes back to the asker, typed
            self.log.error("ask_failed", message=what, exc_info=exc)
            self.mailbox.reply_error(req, ActorFailed(f"{self.name}: {type(exc).__name__}: {exc}"))

    def _deferred_done(self, task: asyncio.Task[Any], what: str) -> None:
        req = self._deferred.pop(task, None)
        if req is None or task.cancelled():
            return  # cancelled by _finish, which answered the asker
        exc = task.exception()
        if exc is None:
            self.mailbox.reply(req, task.result())
        elif isinstance(exc, Exception):
            self._reply_failure(req, what, exc)
        else:
            raise exc

    async def _finish(self, outcome: ExitReason, error: BaseException | None) -> None:
        """Run the stop hook, answer what is left with actor_stopped, close the mailbox, report the exit.

        Always completes: a hook that fails or is cancelled (killed after the shutdown timeout) is logged and
        the rest still happens, so the exit is always reported.
        """
        deferred = list(self._deferred.items())
        self._deferred.clear()
        for task, _ in deferred:
            task.cancel()
        try:
            await asyncio.gather(*(task for task, _ in deferred), return_exceptions=True)
            if self._killed is None and self._actor is not None:
                await (self._actor.on_stop() if error is None else self._actor.on_failure(error))
        except asyncio.CancelledError:
            self.log.warning("stop_hook_cancelled", reason=outcome.reason)
        except Exception as exc:  # a failing hook must not keep the mailbox open
            self.log.error("stop_hook_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        try:
            stopped = ActorStopped(f"{self.name} stopped before handling the message ({outcome.reason})")
            pending = [*(req for _, req in deferred), *self._queue, *self.mailbox.drain()]
            self._queue.clear()
            for req in pending:
                if req.envelope.kind == Kind.ASK:
                    self.mailbox.reply_error(req, stopped)
            if self._before_close is not None:
                self._before_close(outcome)
            await asyncio.shield(self.mailbox.close())
        except asyncio.CancelledError:
            self.log.warning("close_cancelled", reason=outcome.reason)
        finally:
            if not self.exit.done():
                self.exit.set_result(outcome)

"""Actor base class and the context through which an actor talks to the rest of the system.

An actor owns its state and is driven by its runtime cell: `on_start`, then `handle` once per message, one at
a time, then `on_stop` (requested stop) or `on_failure` (crash). All hooks run on the actor's event loop
thread: the daemon's loop for `inproc` actors, the child process's loop for `process` actors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ClassVar, Protocol

import msgspec

from .specs import ChildSpec

__all__ = [
    "Actor",
    "ActorContext",
    "Deferred",
    "NoOptions",
    "SupervisorContext",
    "checkpoint",
    "set_checkpoint",
]

_checkpoint: Callable[[], None] | None = None


def checkpoint() -> None:
    """A point between two pieces of an actor's work (messages, store transactions) where the runtime may
    serve what cannot wait: the daemon reads the requests that reached its front door meanwhile (answering
    `status` at once, queueing the others), so that a long plan-end step does not hold a client up for its
    whole length. Runs no actor code; a no-op where nothing is set (child processes)."""
    if _checkpoint is not None:
        _checkpoint()


def set_checkpoint(fn: Callable[[], None] | None) -> None:
    """What `checkpoint` does in this process (the daemon sets its front door's read; None: nothing)."""
    global _checkpoint
    _checkpoint = fn


class NoOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Options of an actor that takes none."""


class Deferred:
    """What `handle` returns for an ask whose answer takes time (waiting for a state, for a slow peer).

    The cell goes on with the next message at once and sends the reply when `work` finishes: its result is
    the reply, a `StationError` it raises is the asker's typed error. Work still running when the actor stops
    is cancelled before `on_stop` runs and its asker gets `actor_stopped`. The work runs on the actor's loop
    between messages, so it must not assume that the actor's state stays as it was across an `await`.
    """

    __slots__ = ("work",)

    def __init__(self, work: Coroutine[Any, Any, Any]) -> None:
        self.work = work


class ActorContext(Protocol):
    """What the runtime gives an actor: its name, logger and the messaging verbs."""

    name: str
    log: Any
    """structlog logger bound with `actor=<name>`; its level follows the config (reloaded on SIGHUP)."""
    state_dir: Path

    def tell(self, to: str, msg: msgspec.Struct) -> None:
        """Send a message that expects no reply."""
        ...

    async def ask(self, to: str, msg: msgspec.Struct, *, timeout: float | None = None) -> Any:
        """Send a request and await its reply (decoded as `type(msg).reply_type` when it has one).

        Raises the recipient's typed error, `DeadlineExceeded` when `timeout` passes, `ActorStopped` or
        `UnknownActor` when nobody can answer.
        """
        ...

    def publish(self, event: str, data: Any) -> None:
        """Publish `data` on the info stream as `event.<actor>.<event>`."""
        ...

    def publish_topic(self, topic: str, payload: Any) -> None:
        """Publish a mapping on an arbitrary info-stream topic (a `seq` field is added)."""
        ...

    def publish_topics(self, items: list[tuple[str, Any]]) -> None:
        """`publish_topic` for each (topic, payload), in order; from a child process in one message."""
        ...

    def stop(self) -> None:
        """Stop this actor after the current message: a normal exit (a `transient` child is not restarted)."""
        ...


class SupervisorContext(ActorContext, Protocol):
    """The extra verbs a supervisor gets: starting and stopping its children."""

    async def start_child(self, spec: ChildSpec, incarnation: int) -> int | None:
        """Start a child and wait until its `on_start` finished; return its pid (None when in-process).

        Raises `ActorFailed` when the child fails to start.
        """
        ...

    async def stop_child(self, name: str, timeout: float) -> str:
        """Stop a child gracefully, killing it after `timeout`; return the exit reason."""
        ...


class Actor(ABC):
    """Base of every actor. Subclasses set `inbox` (a tagged Struct union) and implement `handle`."""

    inbox: ClassVar[Any] = None
    """Union of the message types this actor accepts; anything else is refused with `unsupported_message`."""
    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    """Type of the `options` table of this actor's spec."""
    supervises_children: ClassVar[bool] = False
    """True: the context is a `SupervisorContext` (the actor starts and stops children of its own, and
    receives `ChildExited` when one stops unasked; it must stop them in `on_stop` and `on_failure`)."""

    def __init__(self, ctx: ActorContext, options: Any) -> None:
        self.ctx = ctx
        self.options = options

    async def on_start(self) -> None:
        """Runs once before the first message; an exception here fails the start."""

    @abstractmethod
    async def handle(self, msg: Any) -> Any:
        """Handle one message; for an ask, the return value is the reply (or a `Deferred` reply)."""

    async def on_stop(self) -> None:
        """Runs once after a requested stop, when no more messages will be handled."""

    async def on_failure(self, exc: BaseException) -> None:
        """Runs once after the actor crashed (an exception in `on_start`, a tell, or the loop)."""

"""The supervisor actor: starts its children in order, restarts them by strategy, gives up past its intensity.

Erlang/OTP semantics: `one_for_one`, `one_for_all`, `rest_for_one`; `permanent`, `transient` and `temporary`
children; more than `intensity` restarts within `period` seconds and the supervisor stops all its children in
reverse order and crashes, which hands the decision to its own supervisor (for the root: the daemon exits
non-zero and systemd decides).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, assert_never

from stationd.protocol.errors import ActorFailed
from stationd.protocol.supervision import (
    ActorInfo,
    ActorState,
    ChildExited,
    ChildRestarted,
    GetTree,
    SupervisorEscalated,
    TreeSnapshot,
)

from .base import Actor, SupervisorContext
from .specs import ActorSpec, ChildSpec, Mode, RestartType, Strategy, SupervisorSpec

__all__ = ["Supervisor", "SupervisorEscalation"]


class SupervisorEscalation(Exception):
    """Raised by a supervisor that exceeded its restart intensity; it crashes the supervisor on purpose."""


@dataclass(slots=True)
class _Child:
    spec: ChildSpec
    state: ActorState = ActorState.STOPPED
    incarnation: int = 0
    restarts: int = 0
    pid: int | None = None
    last_exit: str | None = None
    since: float = 0.0


class Supervisor(Actor):
    """Supervises the children of a `SupervisorSpec`."""

    inbox = ChildExited | GetTree
    Options = SupervisorSpec
    ctx: SupervisorContext

    def __init__(self, ctx: SupervisorContext, options: SupervisorSpec) -> None:
        super().__init__(ctx, options)
        self.spec = options
        self._children: dict[str, _Child] = {spec.name: _Child(spec) for spec in options.children}
        self._restart_times: deque[float] = deque()

    # -- hooks ---------------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        for child in list(self._children.values()):
            try:
                await self._start(child)
            except ActorFailed:
                await self._stop_all()
                raise

    async def handle(self, msg: ChildExited | GetTree) -> Any:
        match msg:
            case ChildExited():
                await self._on_child_exited(msg)
                return None
            case GetTree():
                return TreeSnapshot(
                    self.ctx.name, self.spec.strategy, [self._info(c) for c in self._children.values()]
                )
            case _:
                assert_never(msg)

    async def on_stop(self) -> None:
        await self._stop_all()

    async def on_failure(self, exc: BaseException) -> None:
        await self._stop_all()

    # -- restarts ------------------------------------------------------------------------------------------
    async def _on_child_exited(self, msg: ChildExited) -> None:
        child = self._children.get(msg.child)
        if child is None or child.incarnation != msg.incarnation or child.state != ActorState.RUNNING:
            return  # an exit we caused, or news of an earlier incarnation
        child.pid = None
        self._set_state(child, ActorState.FAILED if msg.abnormal else ActorState.STOPPED, msg.reason)
        log = self.ctx.log.warning if msg.abnormal else self.ctx.log.info
        log("child_exited", child=msg.child, reason=msg.reason, abnormal=msg.abnormal)
        if not _should_restart(child.spec.restart, msg.abnormal):
            if child.spec.restart == RestartType.TEMPORARY:
                del self._children[child.spec.name]
            return
        cause = f"{msg.child} exited: {msg.reason}"
        names = list(self._children)
        match self.spec.strategy:
            case Strategy.ONE_FOR_ONE:
                group = [child]
            case Strategy.ONE_FOR_ALL:
                group = list(self._children.values())
            case Strategy.REST_FOR_ONE:
                group = [self._children[n] for n in names[names.index(child.spec.name) :]]
            case _:
                assert_never(self.spec.strategy)
        await self._restart_group(group, cause)

    async def _restart_group(self, group: list[_Child], cause: str) -> None:
        """Stop the running members in reverse order, then start them again in order."""
        self._count_restart(cause)
        for member in reversed(group):
            if member.state == ActorState.RUNNING:
                await self._stop(member)
                if member.spec.restart == RestartType.TEMPORARY:
                    del self._children[member.spec.name]  # OTP: a temporary child is never restarted
        for member in group:
            if member.spec.name not in self._children:
                continue
            while True:
                member.restarts += 1
                self._set_state(member, ActorState.RESTARTING, member.last_exit)
                try:
                    await self._start(member)
                except ActorFailed as exc:
                    self.ctx.log.error("restart_failed", child=member.spec.name, error=exc.msg)
                    member.last_exit = exc.msg
                    self._count_restart(f"{member.spec.name} failed to restart: {exc.msg}")
                    continue
                break
            self.ctx.publish(
                "child_restarted",
                ChildRestarted(member.spec.name, member.restarts, cause, self.spec.strategy),
            )
            self.ctx.log.info(
                "child_restarted", child=member.spec.name, restarts=member.restarts, cause=cause
            )

    def _count_restart(self, cause: str) -> None:
        """Record one restart; past `intensity` within `period`, stop everything and escalate."""
        now = time.monotonic()
        window = self._restart_times
        window.append(now)
        while window and window[0] < now - self.spec.period:
            window.popleft()
        if len(window) > self.spec.intensity:
            reason = (
                f"more than {self.spec.intensity} restarts within {self.spec.period:g} s; last cause: {cause}"
            )
            self.ctx.log.error("escalated", reason=reason)
            self.ctx.publish(
                "escalated", SupervisorEscalated(self.ctx.name, reason, self.spec.intensity, self.spec.period)
            )
            raise SupervisorEscalation(reason)

    # -- starting and stopping -----------------------------------------------------------------------------
    async def _start(self, child: _Child) -> None:
        child.incarnation += 1
        self._set_state(child, ActorState.STARTING, child.last_exit)
        try:
            child.pid = await self.ctx.start_child(child.spec, child.incarnation)
        except ActorFailed as exc:
            self._set_state(child, ActorState.FAILED, exc.msg)
            raise
        self._set_state(child, ActorState.RUNNING, child.last_exit)

    async def _stop(self, child: _Child) -> None:
        self._set_state(child, ActorState.STOPPING, child.last_exit)
        reason = await self.ctx.stop_child(child.spec.name, child.spec.shutdown_timeout)
        child.pid = None
        self._set_state(child, ActorState.STOPPED, reason)

    async def _stop_all(self) -> None:
        for child in reversed(list(self._children.values())):
            if child.state in (ActorState.RUNNING, ActorState.STARTING, ActorState.RESTARTING):
                await self._stop(child)

    def _set_state(self, child: _Child, state: ActorState, last_exit: str | None) -> None:
        child.state, child.last_exit, child.since = state, last_exit, time.time()
        self.ctx.publish("child_state", self._info(child))

    def _info(self, child: _Child) -> ActorInfo:
        spec = child.spec
        is_actor = isinstance(spec, ActorSpec)
        return ActorInfo(
            name=spec.name,
            parent=self.ctx.name,
            kind="actor" if is_actor else "supervisor",
            mode=spec.mode if is_actor else Mode.INPROC,
            state=child.state,
            restarts=child.restarts,
            pid=child.pid,
            restart_type=spec.restart,
            last_exit=child.last_exit,
            since=child.since,
        )


def _should_restart(restart: RestartType, abnormal: bool) -> bool:
    match restart:
        case RestartType.PERMANENT:
            return True
        case RestartType.TRANSIENT:
            return abnormal
        case RestartType.TEMPORARY:
            return False
        case _:
            assert_never(restart)

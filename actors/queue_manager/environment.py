"""Handlers of the environment and the worker process: open (in a warm spare), close, destroy, and what
happens when the worker exits."""

from __future__ import annotations

import time

import msgspec

from stationd.actors.specs import ActorSpec, Mode, RestartType
from stationd.protocol import queue as q
from stationd.protocol import worker as w
from stationd.protocol.documents import CloseOpenRuns
from stationd.protocol.errors import InvalidState, StationError
from stationd.protocol.methods import OBSERVATION_STORE
from stationd.protocol.pubsub import CONSOLE
from stationd.protocol.supervision import ActorInfo, ActorState, ChildExited

from .core import DESTROYED_MSG, new_uid
from .execution import ExecutionHandlers

__all__ = ["EnvironmentClosed", "EnvironmentHandlers", "EnvironmentOpened", "WorkerStarted", "worker_spec"]

WORKER_HEARTBEAT_TIMEOUT = 10.0
"""User code may hold the GIL in a long C call (a big numpy operation); a hung plan is what
`environment_destroy` is for, so the worker is not killed for a silence of half a second."""


def worker_spec(
    log_level: str | None = None, heartbeat_timeout: float | None = WORKER_HEARTBEAT_TIMEOUT
) -> ActorSpec:
    """The RunEngine worker child: its own process, never restarted by the runtime (the queue manager
    decides); `heartbeat_timeout` None: the runtime's default."""
    return ActorSpec(
        name=w.RE_WORKER,
        actor="stationd.actors.re_worker:RunEngineWorker",
        mode=Mode.PROCESS,
        restart=RestartType.TEMPORARY,
        log_level=log_level,
        heartbeat_timeout=heartbeat_timeout,
    )


class WorkerStarted(msgspec.Struct, frozen=True, tag="_qm_worker_started"):
    """Outcome of starting a worker process (the queue manager tells it to itself)."""

    incarnation: int
    pid: int | None = None
    error: str = ""


class EnvironmentOpened(msgspec.Struct, frozen=True, tag="_qm_environment_opened"):
    """Outcome of opening the environment in the worker (told to itself)."""

    incarnation: int
    info: w.EnvironmentInfo | None = None
    error: str = ""


class EnvironmentClosed(msgspec.Struct, frozen=True, tag="_qm_environment_closed"):
    """Outcome of closing the environment (told to itself)."""

    incarnation: int
    error: str = ""


class EnvironmentHandlers(ExecutionHandlers):
    """Handlers of the environment and the worker process: open (in a warm spare), close, destroy, and what"""

    async def _environment_open(self, msg: q.EnvironmentOpen) -> q.Reply:
        if self.worker.state == "open":
            raise InvalidState("RE Worker environment already exists.")
        if self.status.manager_state == "creating_environment":
            raise InvalidState("Manager is already in the process of creating the RE Worker environment.")
        if self.status.manager_state != "idle":
            raise InvalidState(f"Manager state is not idle. Current state: {self.status.manager_state}")
        self.status.manager_state = "creating_environment"
        self.status.worker_environment_state = "initializing"
        self._publish_status()
        if self.worker.state == "spare":
            self._open_in_spare()
        elif self.worker.state == "none":
            self._spawn_worker()  # opened when it is up (`_on_worker_started`)
        return q.Reply()

    async def _environment_close(self, msg: q.EnvironmentClose) -> q.Reply:
        state = self.status.manager_state
        if self.worker.state == "closing":
            raise InvalidState("Manager is already in the process of closing the RE Worker environment.")
        if self.worker.state != "open":
            raise InvalidState("RE Worker environment does not exist.")
        if state in ("executing_queue", "starting_queue", "paused"):
            raise InvalidState("Queue execution is in progress.")
        if state == "executing_task":
            raise InvalidState("Foreground task execution is in progress.")
        if state != "idle":
            raise InvalidState(f"Manager state is not idle. Current state: {state}")
        self.status.manager_state = "closing_environment"
        self.status.worker_environment_state = "closing"
        self.worker.state = "closing"
        self._publish_status()
        self._start_job(self._close_worker(self.worker.incarnation))
        return q.Reply()

    async def _environment_destroy(self, msg: q.EnvironmentDestroy) -> q.Reply:
        if self.worker.state not in ("open", "opening", "closing"):
            raise InvalidState("RE environment does not exist")
        self.worker.state = "destroying"
        self.status.manager_state = "destroying_environment"
        self._publish_status()
        await self.ctx.stop_child(w.RE_WORKER, 0.1)  # a hung plan ignores a graceful stop: killed after 0.1 s
        await self._worker_gone(DESTROYED_MSG)
        return q.Reply()

    def _open_in_spare(self) -> None:
        self.worker.state = "opening"
        self._start_job(self._open_environment(self.worker.incarnation))

    async def _open_environment(self, incarnation: int) -> None:
        o = self.options
        request = w.OpenEnvironment(
            startup_dir=o.startup_dir,
            startup_script=o.startup_script,
            startup_module=o.startup_module,
            device_max_depth=o.device_max_depth,
            cpu_policy=o.worker_cpu_policy,
        )
        try:
            info = await self.ctx.ask(w.RE_WORKER, request, timeout=o.environment_open_timeout)
        except StationError as exc:
            self._tell_self(EnvironmentOpened(incarnation, error=exc.msg))
        else:
            self._tell_self(EnvironmentOpened(incarnation, info=info))

    async def _on_environment_opened(self, msg: EnvironmentOpened) -> None:
        if msg.incarnation != self.worker.incarnation or self.worker.state != "opening":
            return  # destroyed meanwhile
        if msg.info is None:
            self.ctx.log.error("environment_open_failed", error=msg.error)
            # where qserver users look for it (the incumbent prints the startup code's traceback there)
            self.ctx.publish_topic(
                CONSOLE, {"time": time.time(), "msg": f"Failed to open the environment: {msg.error}\n"}
            )
            self.worker.state = "destroying"
            await self.ctx.stop_child(w.RE_WORKER, 1.0)
            await self._worker_gone(f"Failed to open the environment: {msg.error}")
            return
        self.worker.state = "open"
        self.status.worker_environment_exists = True
        self.status.worker_environment_state = "idle"
        self.status.re_state = msg.info.re_state
        if (msg.info.existing_plans, msg.info.existing_devices) != (
            self.existing_plans,
            self.existing_devices,
        ):
            self._set_existing({"plans": msg.info.existing_plans, "devices": msg.info.existing_devices})
            await self.records.save_settings(existing=self._existing())
        self._set_idle()
        await self._maybe_autostart()

    async def _close_worker(self, incarnation: int) -> None:
        error = ""
        try:
            await self.ctx.ask(w.RE_WORKER, w.CloseEnvironment(), timeout=10.0)
        except StationError as exc:
            error = exc.msg
        else:
            await self.ctx.stop_child(w.RE_WORKER, 5.0)  # it is exiting: this waits for the exit
        self._tell_self(EnvironmentClosed(incarnation, error=error))

    async def _on_environment_closed(self, msg: EnvironmentClosed) -> None:
        if msg.incarnation != self.worker.incarnation or self.worker.state != "closing":
            return
        if msg.error:
            self.ctx.log.error("environment_close_failed", error=msg.error)
            self.worker.state = "open"
            self.status.worker_environment_state = "idle"
            self._set_idle()
            return
        await self._worker_gone("RE Worker environment was closed")

    async def _on_child_exited(self, msg: ChildExited) -> None:
        if msg.child != w.RE_WORKER or msg.incarnation != self.worker.incarnation:
            return
        state = self.worker.state
        self.ctx.log.warning("worker_exited", reason=msg.reason, worker_state=state)
        if state == "closing":
            await self._worker_gone("RE Worker environment was closed")
        elif state in ("open", "opening"):
            await self._worker_gone(f"RE Worker process exited unexpectedly: {msg.reason}")
        elif state in ("spare", "spawning"):
            self.worker.state = "none"
            self._publish_worker(ActorState.FAILED, last_exit=msg.reason)
            self._quick_deaths += 1
            if self._quick_deaths <= 3:  # a spare that keeps dying is not restarted in a loop
                self._spawn_worker()

    async def _worker_gone(self, reason: str) -> None:
        """The worker process is gone: a running plan goes to history as failed (with `reason`) and back to
        the front of the queue; running tasks fail; the environment is closed; a fresh spare is started."""
        self.worker.state = "none"
        self._publish_worker(ActorState.STOPPED, last_exit=reason)
        if self.pq.running_item is not None:
            finished = self.pq.requeue_running_failed(reason)
            self.status.queue_autostart_enabled = False
            self.status.queue_stop_pending = False
            await self._persist(finished.changes, settings=self._flags())
        if self.tasks.fail_running(reason):
            self.status.task_results_uid = new_uid()
        self.foreground_task = None
        open_runs = [r["uid"] for r in self.run_list if r["is_open"]]
        if open_runs:  # the RunEngine could not close them: the store records them as failed
            self._start_job(self._close_runs(open_runs, reason))
        if self.run_list:
            self.run_list = []
            self.status.run_list_uid = new_uid()
        self.status.worker_environment_exists = False
        self.status.worker_environment_state = "closed"
        self.status.re_state = None
        self.status.pause_pending = False
        self._set_idle()
        if self.options.spare_worker:
            self._spawn_worker()

    async def _close_runs(self, run_uids: list[str], reason: str) -> None:
        try:
            request = CloseOpenRuns(run_uids=run_uids, reason=reason)
            await self.ctx.ask(OBSERVATION_STORE, request, timeout=10.0)
        except StationError as exc:
            self.ctx.log.error("runs_not_closed", run_uids=run_uids, error=exc.msg)

    def _spawn_worker(self) -> None:
        """Start a warm spare worker (bluesky and ophyd imported, no environment yet)."""
        self.worker.incarnation += 1
        self.worker.state = "spawning"
        self._start_job(self._start_worker(self.worker.incarnation))

    async def _start_worker(self, incarnation: int) -> None:
        try:
            pid = await self.ctx.start_child(worker_spec(self.options.worker_log_level), incarnation)
        except StationError as exc:  # ActorFailed: the process could not be spawned or did not start
            self._tell_self(WorkerStarted(incarnation, error=exc.msg))
        else:
            self._tell_self(WorkerStarted(incarnation, pid=pid))

    async def _on_worker_started(self, msg: WorkerStarted) -> None:
        if msg.incarnation != self.worker.incarnation or self.worker.state != "spawning":
            return
        if msg.error:
            self.ctx.log.error("worker_start_failed", error=msg.error)
            self.worker.state = "none"
            if self.status.manager_state == "creating_environment":
                self.status.worker_environment_state = "closed"
                self._set_idle()
            return
        self.worker.state = "spare"
        self.worker.pid = msg.pid
        self._quick_deaths = 0
        self._publish_worker(ActorState.RUNNING)
        if self.status.manager_state == "creating_environment":
            self._open_in_spare()

    def _publish_worker(self, state: ActorState, last_exit: str | None = None) -> None:
        """The worker in the daemon's actor tree (`status`), as a supervisor shows its children."""
        info = ActorInfo(
            name=w.RE_WORKER,
            parent=self.ctx.name,
            kind="actor",
            mode=Mode.PROCESS,
            state=state,
            restarts=self.worker.incarnation - 1,
            pid=self.worker.pid if state == ActorState.RUNNING else None,
            restart_type=RestartType.TEMPORARY,
            last_exit=last_exit,
            since=time.time(),
        )
        self.ctx.publish("child_state", info)

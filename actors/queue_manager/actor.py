"""The queue manager: bluesky-queueserver's RE Manager as an actor.

Owns the queue, the running item, the history, modes, locks and permissions (persisted in
`<state_dir>/queue.sqlite`, every operation one transaction), and its RunEngine worker: a process child it
starts itself, one process per environment, with a warm spare spawned ahead so that `environment_open` only
runs the profile. Nothing slow runs in a handler: opening and closing an environment run in tasks whose
outcome comes back to this actor as a message, and a plan's end comes as the worker's tell the moment the
RunEngine returns (no polling).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, Union

import msgspec

from stationd.actors.base import Actor, SupervisorContext
from stationd.protocol import queue as q
from stationd.protocol import worker as w
from stationd.protocol.errors import InvalidParams, StationError
from stationd.protocol.supervision import ActorState, ChildExited

from . import locks
from .admin import AdminHandlers
from .contents import ContentsHandlers
from .core import CRASH_MSG, RESTART_MSG, Crash, QueueManagerOptions, default_existing, new_uid
from .environment import EnvironmentClosed, EnvironmentHandlers, EnvironmentOpened, WorkerStarted
from .permissions import warm_up

__all__ = ["QueueManager", "QueueManagerOptions"]

_PROCESS_TOKEN = uuid.uuid4().hex
"""Identifies this daemon process: settings saved with it survive an actor restart, not a daemon launch."""

_WORKER_TELLS = (
    w.PlanEnded,
    w.PlanPaused,
    w.RunsChanged,
    w.ReStateChanged,
    w.TaskEnded,
    w.ExistingChanged,
)
_OWN = (WorkerStarted, EnvironmentOpened, EnvironmentClosed, Crash, ChildExited)

_QUEUE_LOCKED = (
    q.PermissionsSet,
    q.PermissionsReload,
    q.QueueItemAdd,
    q.QueueItemAddBatch,
    q.QueueItemUpdate,
    q.QueueItemRemove,
    q.QueueItemRemoveBatch,
    q.QueueItemMove,
    q.QueueItemMoveBatch,
    q.QueueClear,
    q.QueueModeSet,
    q.HistoryClear,
)
"""Methods refused while the queue is locked unless the lock key is given (the incumbent's Q class)."""


class QueueManager(ContentsHandlers, EnvironmentHandlers, AdminHandlers, Actor):
    """bluesky-queueserver's RE Manager semantics over the storage layer and a worker process."""

    supervises_children = True
    Options = QueueManagerOptions
    inbox = Union[(*q.QUEUE_METHODS, *_WORKER_TELLS, *_OWN)]  # a tuple of types
    ctx: SupervisorContext

    async def on_start(self) -> None:
        self._dispatch = self._handlers()
        await self.records.open()
        self.pq, settings = await self.records.load()
        self.lock = msgspec.convert(settings.get("lock", {}), locks.LockState)
        self.status.lock = {"environment": self.lock.environment, "queue": self.lock.queue}
        same_process = settings.get("process") == _PROCESS_TOKEN  # an actor restart, not a daemon launch
        self.status.queue_autostart_enabled = same_process and bool(settings.get("autostart"))
        self.status.queue_stop_pending = same_process and bool(settings.get("stop_pending"))
        for name in ("run_list_uid", "task_results_uid", "lock_info_uid"):
            setattr(self.status, name, new_uid())
        if self.pq.running_item is not None:  # the daemon (or this actor) stopped while a plan ran
            reason = CRASH_MSG if same_process else RESTART_MSG
            await self._persist(self.pq.recover_interrupted(reason).changes)
            self.ctx.log.warning("interrupted_plan_requeued", item_uid=self.pq.items[0]["item_uid"])
        await self.records.save_settings(process=_PROCESS_TOKEN)
        self._publish_status()  # "initializing" until the descriptions are loaded
        self._start_job(self._load_descriptions(settings))
        if self.options.spare_worker:
            self._spawn_worker()

    async def _load_descriptions(self, settings: dict[str, Any]) -> None:
        """Permissions and plan/device descriptions, loaded in a thread (bluesky-queueserver's tools take
        ~0.5 s to import and run, their first validation over a second more), so that the daemon answers at
        once; requests wait for them."""

        def load() -> tuple[dict[str, Any], str, dict[str, Any]]:
            permissions, error = settings.get("permissions") or {}, ""
            if not permissions:
                try:
                    permissions = self._permissions_from_file()
                except InvalidParams as exc:
                    error = exc.msg
            existing = settings.get("existing") or default_existing(self.options)
            warm_up(existing.get("plans", {}), existing.get("devices", {}))  # imports here, not on the loop
            return permissions, error, existing

        permissions, error, existing = await asyncio.to_thread(load)
        if error:
            self.ctx.log.error("permissions_invalid", error=error)
        self.permissions, self.permissions_error = permissions, error
        self._set_existing(existing)
        self._loaded.set()
        self._set_idle()

    async def on_stop(self) -> None:
        """An orderly stop (SIGTERM, `manager_stop`): a running plan is stopped (RunEngine stop), recorded
        and put back at the front of the queue; the environment is closed in order."""
        for job in list(self._jobs):
            job.cancel()
        if self.worker.state == "open" and await self._stop_plan_for_shutdown():
            try:
                await self.ctx.ask(w.RE_WORKER, w.CloseEnvironment(), timeout=5.0)
            except StationError as exc:
                self.ctx.log.warning("environment_close_failed", error=exc.msg)
        await self.ctx.stop_child(w.RE_WORKER, 2.0)
        self._publish_worker(ActorState.STOPPED, last_exit="stopped with the queue manager")
        await self.records.close()

    async def on_failure(self, exc: BaseException) -> None:
        for job in list(self._jobs):
            job.cancel()
        await self.ctx.stop_child(w.RE_WORKER, 0.2)
        self._publish_worker(ActorState.STOPPED, last_exit="stopped: the queue manager failed")
        await self.records.close()

    async def _stop_plan_for_shutdown(self) -> bool:
        """Stop the running plan and record it; False if the worker could not (a hung plan: the item stays
        in the running slot and is recovered as interrupted on the next start)."""
        if self.pq.running_item is None:
            return True
        try:
            stopped = await self.ctx.ask(w.RE_WORKER, w.StopPlanForShutdown(), timeout=5.0)
        except StationError as exc:
            self.ctx.log.error("plan_stop_failed", error=exc.msg)
            return False
        result = {"exit_status": "unknown", "msg": "Plan exit status was lost: no plan ran in the worker"}
        if stopped.result is not None:
            result = msgspec.to_builtins(stopped.result)
            result["msg"] = result["msg"] or "Plan stopped: the daemon is shutting down"
        await self._persist(self.pq.requeue_running(result).changes)
        return True

    async def handle(self, msg: Any) -> Any:
        handler = self._dispatch.get(type(msg))
        if handler is None:
            raise InvalidParams(f"the queue manager does not handle {type(msg).__name__}")
        if not self._loaded.is_set() and isinstance(msg, q._Params):
            await self._loaded.wait()
        if isinstance(msg, _QUEUE_LOCKED):
            self._check_lock(msg.lock_key, queue=True)
        elif isinstance(msg, q._Locked):
            self._check_lock(msg.lock_key, environment=True)
        return await handler(msg)

    def _handlers(self) -> dict[type, Callable[[Any], Coroutine[Any, Any, Any]]]:
        return {
            q.PlansAllowed: self._plans_allowed,
            q.PlansExisting: self._plans_existing,
            q.DevicesAllowed: self._devices_allowed,
            q.DevicesExisting: self._devices_existing,
            q.PermissionsGet: self._permissions_get,
            q.PermissionsSet: self._permissions_set,
            q.PermissionsReload: self._permissions_reload,
            q.ReRuns: self._re_runs,
            q.ReMetadata: self._re_metadata,
            q.QueueGet: self._queue_get,
            q.QueueItemAdd: self._queue_item_add,
            q.QueueItemAddBatch: self._queue_item_add_batch,
            q.QueueItemUpdate: self._queue_item_update,
            q.QueueItemGet: self._queue_item_get,
            q.QueueItemRemove: self._queue_item_remove,
            q.QueueItemRemoveBatch: self._queue_item_remove_batch,
            q.QueueItemMove: self._queue_item_move,
            q.QueueItemMoveBatch: self._queue_item_move_batch,
            q.QueueItemExecute: self._queue_item_execute,
            q.QueueClear: self._queue_clear,
            q.QueueModeSet: self._queue_mode_set,
            q.QueueStart: self._queue_start,
            q.QueueStop: self._queue_stop,
            q.QueueStopCancel: self._queue_stop_cancel,
            q.QueueAutostart: self._queue_autostart,
            q.HistoryGet: self._history_get,
            q.HistoryClear: self._history_clear,
            q.EnvironmentOpen: self._environment_open,
            q.EnvironmentClose: self._environment_close,
            q.EnvironmentDestroy: self._environment_destroy,
            q.EnvironmentUpdate: self._environment_update,
            q.ScriptUpload: self._script_upload,
            q.FunctionExecute: self._function_execute,
            q.TaskStatus: self._task_status,
            q.TaskResult: self._task_result,
            q.RePause: self._re_pause,
            q.ReResume: self._re_control,
            q.ReStop: self._re_control,
            q.ReAbort: self._re_control,
            q.ReHalt: self._re_control,
            q.Lock: self._lock,
            q.LockInfo: self._lock_info,
            q.Unlock: self._unlock,
            q.ManagerStop: self._manager_stop,
            q.ManagerKill: self._manager_kill,
            w.PlanEnded: self._on_plan_ended,
            w.PlanPaused: self._on_plan_paused,
            w.RunsChanged: self._on_runs_changed,
            w.ReStateChanged: self._on_re_state,
            w.TaskEnded: self._on_task_ended,
            w.ExistingChanged: self._on_existing_changed,
            WorkerStarted: self._on_worker_started,
            EnvironmentOpened: self._on_environment_opened,
            EnvironmentClosed: self._on_environment_closed,
            ChildExited: self._on_child_exited,
            Crash: self._on_crash,
        }

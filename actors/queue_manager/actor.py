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
import os
import signal
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Union

import msgspec
from msgspec import Meta

from stationd.actors.base import Actor, SupervisorContext
from stationd.actors.specs import ActorSpec, Mode, RestartType
from stationd.protocol import queue as q
from stationd.protocol import worker as w
from stationd.protocol.errors import InvalidParams, InvalidState, PermissionDenied, StationError
from stationd.protocol.supervision import ActorInfo, ActorState, ChildExited

from . import locks
from .permissions import (
    ItemValidator,
    PermissionsError,
    allowed_lists,
    default_permissions_path,
    load_permissions,
    validate_permissions,
)
from .plan_queue import Changes, PlanQueue, QueueError, StartKind
from .records import QueueRecords
from .tasks import TaskResults

__all__ = ["QueueManager", "QueueManagerOptions"]

_PROCESS_TOKEN = uuid.uuid4().hex
"""Identifies this daemon process: settings saved with it survive an actor restart, not a daemon launch."""
RESTART_MSG = "Plan exit status was lost: the daemon restarted while the plan was running"
DESTROYED_MSG = "RE Worker environment was destroyed"


class QueueManagerOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of the queue manager (`[queue_manager]` in the daemon config)."""

    startup_dir: Annotated[str, Meta(description="Profile folder: every *.py in name order.")] = ""
    startup_script: Annotated[str, Meta(description="A startup script.")] = ""
    startup_module: Annotated[str, Meta(description="A startup module (importable name).")] = ""
    user_group_permissions: Annotated[
        str, Meta(description="Permissions YAML (bluesky-queueserver's format); empty: its default file.")
    ] = ""
    emergency_lock_key: Annotated[
        str, Meta(description="Key `unlock` always accepts; also QSERVER_EMERGENCY_LOCK_KEY_FOR_SERVER.")
    ] = ""
    device_max_depth: Annotated[int, Meta(ge=0, description="Depth of device descriptions (0: all).")] = 0
    environment_open_timeout: Annotated[float, Meta(gt=0, description="Seconds to load the profile.")] = 120.0
    spare_worker: Annotated[
        bool, Meta(description="Start a worker ahead, so that environment_open only runs the profile.")
    ] = True
    worker_log_level: Annotated[str | None, Meta(description="Log level of the worker process.")] = None


# -- messages this actor sends itself (outcomes of background work) ----------------------------------------
class _WorkerStarted(msgspec.Struct, frozen=True, tag="_qm_worker_started"):
    incarnation: int
    pid: int | None = None
    error: str = ""


class _EnvironmentOpened(msgspec.Struct, frozen=True, tag="_qm_environment_opened"):
    incarnation: int
    info: w.EnvironmentInfo | None = None
    error: str = ""


class _EnvironmentClosed(msgspec.Struct, frozen=True, tag="_qm_environment_closed"):
    incarnation: int
    error: str = ""


class _Crash(msgspec.Struct, frozen=True, tag="_qm_crash"):
    reason: str


_WORKER_TELLS = (
    w.PlanEnded,
    w.PlanPaused,
    w.RunsChanged,
    w.ReStateChanged,
    w.TaskEnded,
    w.ExistingChanged,
)
_OWN = (_WorkerStarted, _EnvironmentOpened, _EnvironmentClosed, _Crash, ChildExited)

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


class Worker:
    """The worker slot: which incarnation of the `re_worker` child is current, and what it is doing."""

    def __init__(self) -> None:
        self.incarnation = 0
        self.state = "none"  # none | spawning | spare | opening | open | closing | destroying
        self.pid: int | None = None


class QueueManager(Actor):
    """bluesky-queueserver's RE Manager semantics over the storage layer and a worker process."""

    supervises_children = True
    Options = QueueManagerOptions
    inbox = Union[(*q.QUEUE_METHODS, *_WORKER_TELLS, *_OWN)]  # a tuple of types
    ctx: SupervisorContext

    def __init__(self, ctx: SupervisorContext, options: QueueManagerOptions) -> None:
        super().__init__(ctx, options)
        self.options = options
        self.records = QueueRecords(ctx.state_dir / "queue.sqlite")
        self.pq = PlanQueue()
        self.status = q.QueueStatus(manager_state="initializing", ip_kernel_state="disabled")
        self.lock = locks.LockState()
        self.permissions: dict[str, Any] = {}
        self.existing_plans: dict[str, Any] = {}
        self.existing_devices: dict[str, Any] = {}
        self.validator = ItemValidator({}, {})
        self.run_list: list[dict[str, Any]] = []
        self.tasks = TaskResults()
        self.foreground_task: str | None = None
        self.worker = Worker()
        self._jobs: set[asyncio.Task[None]] = set()
        self._quick_deaths = 0
        self._emergency_key = options.emergency_lock_key or os.environ.get(
            "QSERVER_EMERGENCY_LOCK_KEY_FOR_SERVER", ""
        )

    # -- life cycle ---------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        await self.records.open()
        self.pq, settings = await self.records.load()
        self.permissions = settings.get("permissions") or self._permissions_from_file()
        self.lock = msgspec.convert(settings.get("lock", {}), locks.LockState)
        self.status.lock = {"environment": self.lock.environment, "queue": self.lock.queue}
        self._set_existing(settings.get("existing") or _default_existing(self._uses_builtin_profile()))
        same_process = settings.get("process") == _PROCESS_TOKEN  # an actor restart, not a daemon launch
        self.status.queue_autostart_enabled = same_process and bool(settings.get("autostart"))
        self.status.queue_stop_pending = same_process and bool(settings.get("stop_pending"))
        for name in ("run_list_uid", "task_results_uid", "lock_info_uid"):
            setattr(self.status, name, _uid())
        if self.pq.running_item is not None:  # the daemon (or this actor) stopped while a plan ran
            await self._persist(self.pq.recover_interrupted(RESTART_MSG).changes)
            self.ctx.log.warning("interrupted_plan_requeued", item_uid=self.pq.items[0]["item_uid"])
        await self.records.save_settings(process=_PROCESS_TOKEN)
        self.status.manager_state = "idle"
        self._publish_status()
        if self.options.spare_worker:
            self._spawn_worker()

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
        result = {"exit_status": "unknown", "msg": RESTART_MSG}
        if stopped.result is not None:
            result = msgspec.to_builtins(stopped.result)
            result["msg"] = result["msg"] or "Plan stopped: the daemon is shutting down"
        await self._persist(self.pq.requeue_running(result).changes)
        return True

    # -- dispatch -------------------------------------------------------------------------------------------
    async def handle(self, msg: Any) -> Any:
        handler = self._handlers().get(type(msg))
        if handler is None:
            raise InvalidParams(f"the queue manager does not handle {type(msg).__name__}")
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
            _WorkerStarted: self._on_worker_started,
            _EnvironmentOpened: self._on_environment_opened,
            _EnvironmentClosed: self._on_environment_closed,
            ChildExited: self._on_child_exited,
            _Crash: self._on_crash,
        }

    # -- introspection --------------------------------------------------------------------------------------
    async def _plans_allowed(self, msg: q.PlansAllowed) -> q.PlansAllowedReply:
        group = self._known_group(msg.user_group)
        return q.PlansAllowedReply(
            plans_allowed=self.validator.allowed_plans[group], plans_allowed_uid=self.status.plans_allowed_uid
        )

    async def _devices_allowed(self, msg: q.DevicesAllowed) -> q.DevicesAllowedReply:
        group = self._known_group(msg.user_group)
        return q.DevicesAllowedReply(
            devices_allowed=self.validator.allowed_devices[group],
            devices_allowed_uid=self.status.devices_allowed_uid,
        )

    async def _plans_existing(self, msg: q.PlansExisting) -> q.PlansExistingReply:
        return q.PlansExistingReply(
            plans_existing=self.existing_plans, plans_existing_uid=self.status.plans_existing_uid
        )

    async def _devices_existing(self, msg: q.DevicesExisting) -> q.DevicesExistingReply:
        return q.DevicesExistingReply(
            devices_existing=self.existing_devices, devices_existing_uid=self.status.devices_existing_uid
        )

    async def _permissions_get(self, msg: q.PermissionsGet) -> q.PermissionsReply:
        return q.PermissionsReply(user_group_permissions=self.permissions)

    async def _permissions_set(self, msg: q.PermissionsSet) -> q.Reply:
        try:
            permissions = validate_permissions(msg.user_group_permissions)
        except PermissionsError as exc:
            raise InvalidParams(f"Error: {exc}") from exc
        await self._set_permissions(permissions)
        return q.Reply()

    async def _permissions_reload(self, msg: q.PermissionsReload) -> q.Reply:
        if msg.restore_plans_devices:
            settings = await self.records.load_settings()
            self._set_existing(settings.get("existing") or _default_existing(self._uses_builtin_profile()))
        permissions = self._permissions_from_file() if msg.restore_permissions else self.permissions
        await self._set_permissions(permissions)
        return q.Reply()

    async def _re_runs(self, msg: q.ReRuns) -> q.RunsReply:
        runs = self.run_list
        if msg.option == "open":
            runs = [r for r in runs if r["is_open"]]
        elif msg.option == "closed":
            runs = [r for r in runs if not r["is_open"]]
        return q.RunsReply(run_list=runs, run_list_uid=self.status.run_list_uid)

    async def _re_metadata(self, msg: q.ReMetadata) -> q.ReMetadataReply:
        if self.worker.state != "open":
            raise InvalidState("Environment does not exist. Cannot retrieve RE metadata.")
        reply = await self.ctx.ask(w.RE_WORKER, w.GetReMetadata())
        return q.ReMetadataReply(re_metadata=reply.re_metadata)

    # -- queue contents -------------------------------------------------------------------------------------
    async def _queue_get(self, msg: q.QueueGet) -> q.QueueGetReply:
        items = self.pq.items
        stop = None if msg.limit is None else msg.offset + max(msg.limit, 0)
        return q.QueueGetReply(
            items=items[max(msg.offset, 0) : stop],
            running_item=self.pq.running_item or {},
            plan_queue_uid=self.pq.plan_queue_uid,
        )

    async def _queue_item_add(self, msg: q.QueueItemAdd) -> q.ItemReply:
        try:
            item = self._prepared(msg.item, msg.user, msg.user_group)
            added, changes = self.pq.add_item(
                item, pos=msg.pos, before_uid=msg.before_uid, after_uid=msg.after_uid
            )
        except (QueueError, PermissionsError, InvalidParams) as exc:
            return q.ItemReply(
                success=False,
                msg=f"Failed to add an item: {_text(exc)}",
                item=_echo(msg.item),
                error_code=InvalidParams.code,
            )
        await self._persist(changes)
        await self._maybe_autostart()
        return q.ItemReply(item=added, qsize=self.pq.queue_size)

    async def _queue_item_add_batch(self, msg: q.QueueItemAddBatch) -> q.BatchAddReply:
        items = msg.items
        if not isinstance(items, list):
            raise InvalidParams(
                f"Failed to add a batch of items: 'items' must be a list, not {type(items).__name__}"
            )
        prepared, results = [], []
        for item in items:
            try:
                prepared.append(self._prepared(item, msg.user, msg.user_group))
                results.append({"success": True, "msg": ""})
            except (PermissionsError, InvalidParams, QueueError) as exc:
                results.append({"success": False, "msg": f"Failed to add a plan: {_text(exc)}"})
        failed = sum(1 for r in results if not r["success"])
        if failed:
            return q.BatchAddReply(
                success=False,
                msg=f"Failed to add all items: validation of {failed} out of {len(items)} "
                "submitted items failed",
                items=items,
                results=results,
                error_code=InvalidParams.code,
            )
        try:
            added, changes = self.pq.add_batch(
                prepared, pos=msg.pos, before_uid=msg.before_uid, after_uid=msg.after_uid
            )
        except QueueError as exc:
            text = f"Failed to add item to queue: {exc}"
            return q.BatchAddReply(
                success=False,
                msg=f"Failed to add all items: {text}",
                items=items,
                results=[{"success": False, "msg": text} for _ in items],
                error_code=InvalidParams.code,
            )
        await self._persist(changes)
        await self._maybe_autostart()
        return q.BatchAddReply(items=added, results=results, qsize=self.pq.queue_size)

    async def _queue_item_update(self, msg: q.QueueItemUpdate) -> q.ItemReply:
        try:
            item = self._prepared(msg.item, msg.user, msg.user_group)
            item["item_uid"] = msg.item.get("item_uid")  # _prepared dropped it; update needs it
            if item["item_uid"] is None:
                del item["item_uid"]
            updated, changes = self.pq.replace_item(item, replace=msg.replace)
        except (QueueError, PermissionsError, InvalidParams) as exc:
            return q.ItemReply(
                success=False,
                msg=f"Failed to update an item: {_text(exc)}",
                item=_echo(msg.item),
                error_code=InvalidParams.code,
            )
        await self._persist(changes)
        return q.ItemReply(item=updated, qsize=self.pq.queue_size)

    async def _queue_item_get(self, msg: q.QueueItemGet) -> q.ItemReply:
        item = self._queue_op("Failed to get an item", lambda: self.pq.get_item(pos=msg.pos, uid=msg.uid))
        return q.ItemReply(item=item)

    async def _queue_item_remove(self, msg: q.QueueItemRemove) -> q.ItemReply:
        item, changes = self._queue_op(
            "Failed to remove an item", lambda: self.pq.remove_item(pos=msg.pos, uid=msg.uid)
        )
        await self._persist(changes)
        return q.ItemReply(item=item, qsize=self.pq.queue_size)

    async def _queue_item_remove_batch(self, msg: q.QueueItemRemoveBatch) -> q.ItemsReply:
        items, changes = self._queue_op(
            "Failed to remove a batch of items",
            lambda: self.pq.remove_batch(msg.uids, ignore_missing=msg.ignore_missing),
        )
        await self._persist(changes)
        return q.ItemsReply(items=items, qsize=self.pq.queue_size)

    async def _queue_item_move(self, msg: q.QueueItemMove) -> q.ItemReply:
        item, changes = self._queue_op(
            "Failed to move the item",
            lambda: self.pq.move_item(
                pos=msg.pos,
                uid=msg.uid,
                pos_dest=msg.pos_dest,
                before_uid=msg.before_uid,
                after_uid=msg.after_uid,
            ),
        )
        await self._persist(changes)
        return q.ItemReply(item=item, qsize=self.pq.queue_size)

    async def _queue_item_move_batch(self, msg: q.QueueItemMoveBatch) -> q.ItemsReply:
        items, changes = self._queue_op(
            "Failed to move the batch of items",
            lambda: self.pq.move_batch(
                msg.uids,
                pos_dest=msg.pos_dest,
                before_uid=msg.before_uid,
                after_uid=msg.after_uid,
                reorder=msg.reorder,
            ),
        )
        await self._persist(changes)
        return q.ItemsReply(items=items, qsize=self.pq.queue_size)

    async def _queue_clear(self, msg: q.QueueClear) -> q.Reply:
        await self._persist(self.pq.clear())
        return q.Reply()

    async def _queue_mode_set(self, msg: q.QueueModeSet) -> q.Reply:
        if msg.mode is None:
            raise InvalidParams("Failed to set queue mode: parameter 'mode' is required")
        changes = self._queue_op("Failed to set queue mode", lambda: self.pq.set_mode(msg.mode))
        await self._persist(changes)
        return q.Reply()

    async def _history_get(self, msg: q.HistoryGet) -> q.HistoryGetReply:
        page = self._queue_op("Error", lambda: self.pq.history_get(offset=msg.offset, limit=msg.limit))
        return q.HistoryGetReply(items=page["items"], plan_history_uid=page["plan_history_uid"])

    async def _history_clear(self, msg: q.HistoryClear) -> q.Reply:
        changes = self._queue_op("Error", lambda: self.pq.clear_history(size=msg.size, item_uid=msg.item_uid))
        await self._persist(changes)
        return q.Reply()

    # -- queue execution ------------------------------------------------------------------------------------
    async def _queue_start(self, msg: q.QueueStart) -> q.Reply:
        self._check_can_execute()
        self.status.queue_stop_pending = False
        await self._run_queue()
        return q.Reply()

    async def _queue_stop(self, msg: q.QueueStop) -> q.Reply:
        state = self.status.manager_state
        if state not in ("executing_queue", "starting_queue", "paused") or _immediate(self.pq.running_item):
            raise InvalidState(f"Failed to pause the queue. Queue is not running. Manager state: {state}")
        self.status.queue_stop_pending = True
        await self._save_flags()
        return q.Reply()

    async def _queue_stop_cancel(self, msg: q.QueueStopCancel) -> q.Reply:
        self.status.queue_stop_pending = False
        await self._save_flags()
        return q.Reply()

    async def _queue_autostart(self, msg: q.QueueAutostart) -> q.Reply:
        self.status.queue_autostart_enabled = msg.enable
        await self._save_flags()
        await self._maybe_autostart()
        return q.Reply()

    async def _queue_item_execute(self, msg: q.QueueItemExecute) -> q.ItemReply:
        try:
            self._check_can_execute()
            item = self._prepared(msg.item, msg.user, msg.user_group)
            started = self.pq.start_immediate(item)
        except (QueueError, PermissionsError, InvalidParams, InvalidState) as exc:
            return q.ItemReply(
                success=False,
                msg=f"Failed to start execution of the item: {_text(exc)}",
                item=_echo(msg.item),
                error_code=InvalidState.code if isinstance(exc, InvalidState) else InvalidParams.code,
            )
        if started.kind is StartKind.PLAN:
            self.status.manager_state = "starting_queue"
            await self._execute(started.item, started.changes)
        return q.ItemReply(item=started.item, qsize=self.pq.queue_size)

    async def _run_queue(self, changes: Changes | None = None) -> None:
        """Start the front item unless the queue must stop; persist `changes` (a finished plan) with it."""
        pending = [changes] if changes else []
        while True:
            if self.status.queue_stop_pending:
                await self._queue_stopped(pending)
                return
            started = self.pq.start_next()
            pending.append(started.changes)
            if started.kind is StartKind.EMPTY:
                await self._persist(*pending)
                self._set_idle()
                return
            if started.kind is StartKind.QUEUE_STOP:
                await self._queue_stopped(pending)
                return
            self.status.manager_state = "starting_queue"
            await self._execute(started.item, *pending)
            return

    async def _execute(self, item: dict[str, Any], *changes: Changes) -> None:
        """Persist the item's move to the running slot (with `changes`), then hand it to the worker."""
        await self._persist(*changes)
        self._publish_status()
        try:
            await self.ctx.ask(w.RE_WORKER, w.ExecutePlan(item=item))
        except StationError as exc:  # refused or no worker: the incumbent's "worker refused" outcome
            finished = self.pq.requeue_running_failed(exc.msg)
            self.status.queue_autostart_enabled = False
            await self._persist(finished.changes, settings=self._flags())
            self._set_idle()
            return
        self.status.manager_state = "executing_queue"
        self.status.worker_environment_state = "executing_plan"
        self._publish_status()

    async def _queue_stopped(self, pending: list[Changes]) -> None:
        """The queue stops on a request or an instruction: autostart goes off (as in the incumbent)."""
        self.status.queue_stop_pending = False
        self.status.queue_autostart_enabled = False
        await self._persist(*pending, settings=self._flags())
        self._set_idle()

    async def _maybe_autostart(self) -> None:
        if (
            self.status.queue_autostart_enabled
            and self.status.manager_state == "idle"
            and self.worker.state == "open"
            and self.pq.queue_size
            and self.pq.running_item is None
        ):
            self.status.queue_stop_pending = False
            await self._run_queue()

    async def _on_plan_ended(self, msg: w.PlanEnded) -> None:
        if self.pq.running_item_uid != msg.item_uid:
            self.ctx.log.warning("stale_plan_report", item_uid=msg.item_uid)
            return
        immediate = _immediate(self.pq.running_item)
        finished = self.pq.finish_running(msgspec.to_builtins(msg.result), item_uid=msg.item_uid)
        self.status.pause_pending = False
        self.status.worker_environment_state = "idle"
        if immediate:
            await self._persist(finished.changes)
            self._set_idle()
        elif finished.continues and self.status.manager_state in ("executing_queue", "starting_queue"):
            await self._run_queue(finished.changes)
        else:
            await self._queue_stopped([finished.changes])
        await self._maybe_autostart()

    async def _on_plan_paused(self, msg: w.PlanPaused) -> None:
        if self.pq.running_item_uid == msg.item_uid:
            self.status.manager_state = "paused"
            self.status.pause_pending = False
            self._publish_status()

    async def _on_runs_changed(self, msg: w.RunsChanged) -> None:
        self.run_list = [msgspec.to_builtins(r) for r in msg.run_list]
        self.status.run_list_uid = _uid()
        self._publish_status()

    async def _on_re_state(self, msg: w.ReStateChanged) -> None:
        self.status.re_state = msg.re_state
        self._publish_status()

    # -- RunEngine control ----------------------------------------------------------------------------------
    async def _re_pause(self, msg: q.RePause) -> q.Reply:
        if msg.option not in ("deferred", "immediate"):
            raise InvalidParams(
                f"Option '{msg.option}' is not supported. Available options: ('deferred', 'immediate')"
            )
        if self.worker.state != "open":
            raise InvalidState("Environment does not exist. Can not pause Run Engine.")
        await self._control(f"pause_{msg.option}")
        self.status.pause_pending = True
        self._publish_status()
        return q.Reply()

    async def _re_control(self, msg: q.ReResume | q.ReStop | q.ReAbort | q.ReHalt) -> q.Reply:
        if self.status.manager_state != "paused":
            raise InvalidState(f"RE Manager is not paused: current state is '{self.status.manager_state}'")
        action = type(msg).__struct_config__.tag.removeprefix("re_")
        await self._control(action)
        self.status.manager_state = "executing_queue"
        self._publish_status()
        return q.Reply()

    async def _control(self, action: str) -> None:
        try:
            await self.ctx.ask(w.RE_WORKER, w.ControlPlan(action=action))  # type: ignore[arg-type]
        except StationError as exc:
            raise InvalidState(f"Error: {exc.msg}") from exc

    # -- environment ----------------------------------------------------------------------------------------
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
        )
        try:
            info = await self.ctx.ask(w.RE_WORKER, request, timeout=o.environment_open_timeout)
        except StationError as exc:
            self._tell_self(_EnvironmentOpened(incarnation, error=exc.msg))
        else:
            self._tell_self(_EnvironmentOpened(incarnation, info=info))

    async def _on_environment_opened(self, msg: _EnvironmentOpened) -> None:
        if msg.incarnation != self.worker.incarnation or self.worker.state != "opening":
            return  # destroyed meanwhile
        if msg.info is None:
            self.ctx.log.error("environment_open_failed", error=msg.error)
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
        self._tell_self(_EnvironmentClosed(incarnation, error=error))

    async def _on_environment_closed(self, msg: _EnvironmentClosed) -> None:
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
        for task_uid in self.tasks.forget_running():
            self.tasks.started(task_uid, False)
            self.tasks.completed(task_uid, _failed_task(task_uid, reason))
            self.status.task_results_uid = _uid()
        self.foreground_task = None
        if self.run_list:
            self.run_list = []
            self.status.run_list_uid = _uid()
        self.status.worker_environment_exists = False
        self.status.worker_environment_state = "closed"
        self.status.re_state = None
        self.status.pause_pending = False
        self._set_idle()
        if self.options.spare_worker:
            self._spawn_worker()

    def _spawn_worker(self) -> None:
        """Start a warm spare worker (bluesky and ophyd imported, no environment yet)."""
        self.worker.incarnation += 1
        self.worker.state = "spawning"
        self._start_job(self._start_worker(self.worker.incarnation))

    async def _start_worker(self, incarnation: int) -> None:
        spec = ActorSpec(
            name=w.RE_WORKER,
            actor="stationd.actors.re_worker:RunEngineWorker",
            mode=Mode.PROCESS,
            restart=RestartType.TEMPORARY,
            log_level=self.options.worker_log_level,
            # User code may hold the GIL in a long C call (a big numpy operation); a hung plan is what
            # environment_destroy is for, so the worker is not killed for a silence of half a second.
            heartbeat_timeout=10.0,
        )
        try:
            pid = await self.ctx.start_child(spec, incarnation)
        except Exception as exc:  # any failure to start is reported, never raised into the loop
            self._tell_self(_WorkerStarted(incarnation, error=f"{type(exc).__name__}: {exc}"))
        else:
            self._tell_self(_WorkerStarted(incarnation, pid=pid))

    async def _on_worker_started(self, msg: _WorkerStarted) -> None:
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

    # -- tasks ----------------------------------------------------------------------------------------------
    async def _environment_update(self, msg: q.EnvironmentUpdate) -> q.TaskReply:
        task_uid = await self._run_task(
            kind="script", script="", update_lists=True, update_re=True, background=msg.run_in_background
        )
        return q.TaskReply(task_uid=task_uid)

    async def _script_upload(self, msg: q.ScriptUpload) -> q.TaskReply:
        if not isinstance(msg.script, str):
            raise InvalidParams(f"Error: 'script' must be a string, not {type(msg.script).__name__}")
        task_uid = await self._run_task(
            kind="script",
            script=msg.script,
            update_lists=msg.update_lists,
            update_re=msg.update_re,
            background=msg.run_in_background,
        )
        return q.TaskReply(task_uid=task_uid)

    async def _function_execute(self, msg: q.FunctionExecute) -> q.FunctionReply:
        user, group = self._user(msg.user, msg.user_group)
        item = msg.item
        if not isinstance(item, dict) or item.get("item_type") != "function" or "name" not in item:
            raise InvalidParams(f"Error: Incorrect request format: not a function item: {item!r}")
        if not isinstance(item.get("args", []), list) or not isinstance(item.get("kwargs", {}), dict):
            raise InvalidParams("Error: function 'args' must be a list and 'kwargs' a dictionary")
        if not _function_allowed(item["name"], group, self.permissions):
            raise PermissionDenied(
                f"Error: Function {item['name']!r} is not allowed for users from {group!r} group."
            )
        item = {**item, "user": user, "user_group": group, "item_uid": _uid()}
        task_uid = await self._run_task(kind="function", item=item, background=msg.run_in_background)
        return q.FunctionReply(item=item, task_uid=task_uid)

    async def _run_task(
        self, *, kind: str, background: bool, item: dict[str, Any] | None = None, **kw: Any
    ) -> str:
        if self.worker.state != "open":
            raise InvalidState("Error: RE Worker environment does not exist.")
        if not background and self.status.manager_state != "idle":
            raise InvalidState(f"Error: RE Manager is busy. Current state: {self.status.manager_state}")
        task_uid = _uid()
        request = w.ExecuteTask(
            task_uid=task_uid, kind=kind, item=item or {}, run_in_background=background, **kw
        )
        try:
            await self.ctx.ask(w.RE_WORKER, request)
        except StationError as exc:
            raise InvalidState(f"Error: {exc.msg}") from exc
        self.tasks.started(task_uid, background)
        if not background:
            self.foreground_task = task_uid
            self.status.manager_state = "executing_task"
            self.status.worker_environment_state = "executing_task"
        self.status.worker_background_tasks = self.tasks.background_count
        self._publish_status()
        return task_uid

    async def _on_task_ended(self, msg: w.TaskEnded) -> None:
        if not self.tasks.completed(msg.task_uid, msg.result):
            return
        self.status.task_results_uid = _uid()
        self.status.worker_background_tasks = self.tasks.background_count
        if self.foreground_task == msg.task_uid:
            self.foreground_task = None
            self.status.worker_environment_state = "idle"
            self._set_idle()
        else:
            self._publish_status()

    async def _on_existing_changed(self, msg: w.ExistingChanged) -> None:
        self._set_existing({"plans": msg.existing_plans, "devices": msg.existing_devices})
        await self.records.save_settings(existing=self._existing())
        self._publish_status()

    async def _task_status(self, msg: q.TaskStatus) -> q.TaskStatusReply:
        uid = msg.task_uid
        if isinstance(uid, str):
            return q.TaskStatusReply(task_uid=uid, status=self.tasks.status(uid))
        if isinstance(uid, list) and all(isinstance(u, str) for u in uid):
            return q.TaskStatusReply(task_uid=uid, status={u: self.tasks.status(u) for u in uid})
        raise InvalidParams(f"Error: 'task_uid' must be a string or a list of strings: task_uid={uid!r}")

    async def _task_result(self, msg: q.TaskResult) -> q.TaskResultReply:
        if not isinstance(msg.task_uid, str):
            raise InvalidParams(f"Error: 'task_uid' must be a string: task_uid={msg.task_uid!r}")
        status, result = self.tasks.result(msg.task_uid)
        return q.TaskResultReply(task_uid=msg.task_uid, status=status, result=result)

    # -- locks ----------------------------------------------------------------------------------------------
    def _check_lock(self, key: str | None, *, environment: bool = False, queue: bool = False) -> None:
        if key is not None and not key:
            raise InvalidParams(f"Lock key must be a non-empty string or None: lock_key = {key!r}")
        locked = (environment and self.lock.environment) or (queue and self.lock.queue)
        if locked and not locks.key_matches(self.lock, key):
            raise PermissionDenied(f"Invalid lock key: \n{self._lock_text()}")

    def _lock_text(self) -> str:
        return locks.describe(self.lock, bool(self._emergency_key))

    def _lock_reply(self) -> q.LockInfoReply:
        return q.LockInfoReply(
            lock_info=locks.lock_info(self.lock, bool(self._emergency_key)),
            lock_info_uid=self.status.lock_info_uid,
        )

    async def _lock(self, msg: q.Lock) -> q.LockInfoReply:
        caller = getattr(self.ctx, "caller", None)
        user = caller.user if caller is not None else msg.user
        if not user:
            raise InvalidParams(f"Error: User name must be a non-empty string: user = {msg.user!r}")
        if not msg.lock_key:
            raise InvalidParams(f"Error: Lock key must be a non-empty string: lock_key = {msg.lock_key!r}")
        if not (msg.environment or msg.queue):
            raise InvalidParams("Error: at least one of 'environment' and 'queue' must be locked")
        if self.lock.locked and not locks.key_matches(self.lock, msg.lock_key):
            raise PermissionDenied(
                f"Error: RE Manager was locked with a different key: \n{self._lock_text()}"
            )
        self.lock = locks.new_lock(msg.lock_key, user, msg.environment, msg.queue, msg.note)
        await self._lock_changed()
        return self._lock_reply()

    async def _lock_info(self, msg: q.LockInfo) -> q.LockInfoReply:
        if msg.lock_key is not None:
            self._check_lock(msg.lock_key, environment=True, queue=True)
        return self._lock_reply()

    async def _unlock(self, msg: q.Unlock) -> q.LockInfoReply:
        if not msg.lock_key:
            raise InvalidParams(f"Error: Lock key must be a non-empty string: lock_key = {msg.lock_key!r}")
        if self.lock.locked:
            emergency = bool(self._emergency_key) and msg.lock_key == self._emergency_key
            if not (emergency or locks.key_matches(self.lock, msg.lock_key)):
                raise PermissionDenied(f"Error: Invalid lock key: \n{self._lock_text()}")
            self.lock = locks.LockState()
            await self._lock_changed()
        return self._lock_reply()

    async def _lock_changed(self) -> None:
        await self.records.save_settings(lock=msgspec.to_builtins(self.lock))
        self.status.lock_info_uid = _uid()
        self.status.lock = {"environment": self.lock.environment, "queue": self.lock.queue}
        self._publish_status()

    # -- manager --------------------------------------------------------------------------------------------
    async def _manager_stop(self, msg: q.ManagerStop) -> q.Reply:
        if msg.option not in ("safe_on", "safe_off"):
            raise InvalidParams(
                f"Error: Option '{msg.option}' is not supported. Available: ('safe_on', 'safe_off')"
            )
        state = self.status.manager_state
        if msg.option == "safe_on" and state != "idle":
            raise InvalidState(
                "Closing RE Manager with option 'safe_on' is allowed only in 'idle' state. "
                f"Current state: '{state}'"
            )
        # The daemon's orderly stop (as systemd's): this actor's on_stop stops a running plan and records it.
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
        return q.Reply()

    async def _manager_kill(self, msg: q.ManagerKill) -> q.Reply:
        self._tell_self(_Crash("manager_kill"))  # a tell's failure crashes the actor (an ask's is replied)
        return q.Reply()

    async def _on_crash(self, msg: _Crash) -> None:
        raise RuntimeError(f"queue manager crashed on purpose: {msg.reason}")

    # -- helpers --------------------------------------------------------------------------------------------
    def _user(self, user: str | None, group: str | None) -> tuple[str, str]:
        """The caller's identity: from its CurveZMQ key when the daemon knows it, else from the request."""
        caller = getattr(self.ctx, "caller", None)
        if caller is not None and caller.user:
            user, group = caller.user, caller.user_group or group
        if not group:
            raise InvalidParams("Incorrect request format: user group is not specified")
        if not user:
            raise InvalidParams("Incorrect request format: user name is not specified")
        return user, self._known_group(group)

    def _known_group(self, group: str | None) -> str:
        if group is None:
            raise InvalidParams("Incorrect request format: user group is not specified")
        if group not in self.permissions.get("user_groups", {}):
            raise InvalidParams(f"Unknown user group: '{group}'")
        return group

    def _prepared(self, item: Any, user: str | None, group: str | None) -> dict[str, Any]:
        """A validated copy of a plan or instruction item with the caller's user and group."""
        user, group = self._user(user, group)
        if not isinstance(item, dict):
            raise InvalidParams(
                f"Incorrect request format: incorrect type ('{type(item)}') of item parameter: "
                "item parameter must have type 'dict'"
            )
        item_type = item.get("item_type")
        if item_type == "plan":
            self.validator.check(item, group)
        elif item_type == "instruction":
            if item.get("name") != "queue_stop":
                raise InvalidParams(f"Unrecognized instruction: {item}")
        elif item_type is None:
            raise InvalidParams("Incorrect request format: 'item_type' key is not found")
        else:
            raise InvalidParams(
                f"Incorrect request format: unsupported 'item_type' value: '{item_type}', "
                "supported item types ('plan', 'instruction')"
            )
        return {**{k: v for k, v in item.items() if k != "item_uid"}, "user": user, "user_group": group}

    def _queue_op(self, prefix: str, op: Callable[[], Any]) -> Any:
        try:
            return op()
        except QueueError as exc:
            raise InvalidParams(f"{prefix}: {exc}") from exc

    def _check_can_execute(self) -> None:
        if self.worker.state != "open":
            raise InvalidState("RE Worker environment does not exist.")
        if self.status.manager_state != "idle" or self.pq.running_item is not None:
            raise InvalidState("RE Manager is busy.")

    def _set_idle(self) -> None:
        self.status.manager_state = "idle"
        self._publish_status()

    def _permissions_from_file(self) -> dict[str, Any]:
        path = Path(self.options.user_group_permissions or default_permissions_path())
        try:
            return load_permissions(path)
        except PermissionsError as exc:
            raise InvalidParams(f"user group permissions: {exc}") from exc

    async def _set_permissions(self, permissions: dict[str, Any]) -> None:
        self.permissions = permissions
        self._recompute_allowed()
        await self.records.save_settings(permissions=permissions)
        self._publish_status()

    def _set_existing(self, existing: dict[str, Any]) -> None:
        self.existing_plans = existing.get("plans", {})
        self.existing_devices = existing.get("devices", {})
        self.status.plans_existing_uid = _uid()
        self.status.devices_existing_uid = _uid()
        self._recompute_allowed()

    def _existing(self) -> dict[str, Any]:
        return {"plans": self.existing_plans, "devices": self.existing_devices}

    def _recompute_allowed(self) -> None:
        plans, devices = allowed_lists(self.permissions, self.existing_plans, self.existing_devices)
        self.validator = ItemValidator(plans, devices)
        self.status.plans_allowed_uid = _uid()
        self.status.devices_allowed_uid = _uid()

    def _uses_builtin_profile(self) -> bool:
        o = self.options
        return not (o.startup_dir or o.startup_script or o.startup_module)

    def _flags(self) -> dict[str, Any]:
        return {
            "autostart": self.status.queue_autostart_enabled,
            "stop_pending": self.status.queue_stop_pending,
        }

    async def _save_flags(self) -> None:
        await self.records.save_settings(**self._flags())
        self._publish_status()

    async def _persist(self, *changes: Changes, settings: dict[str, Any] | None = None) -> None:
        """Persist queue changes (and settings) as one transaction, then publish the status."""
        try:
            await self.records.write(changes, settings)
        except StationError as exc:
            # Memory and store now disagree: restart from the store rather than go on with an unsaved queue.
            self.ctx.log.error("queue_persist_failed", error=exc.msg)
            self._tell_self(_Crash(f"persisting the queue failed: {exc.msg}"))
            raise
        self._publish_status()

    def _publish_status(self) -> None:
        s = self.status
        s.items_in_queue = self.pq.queue_size
        s.items_in_history = self.pq.history_size
        s.running_item_uid = self.pq.running_item_uid
        s.plan_queue_uid = self.pq.plan_queue_uid
        s.plan_history_uid = self.pq.plan_history_uid
        s.plan_queue_mode = self.pq.mode
        self.ctx.publish("status", s)

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

    def _tell_self(self, msg: msgspec.Struct) -> None:
        self.ctx.tell(self.ctx.name, msg)

    def _start_job(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)


# -- module helpers ---------------------------------------------------------------------------------------
def _uid() -> str:
    return str(uuid.uuid4())


def _text(exc: BaseException) -> str:
    return exc.msg if isinstance(exc, StationError) else str(exc)


def _echo(item: Any) -> dict[str, Any]:
    return item if isinstance(item, dict) else {}


def _immediate(item: dict[str, Any] | None) -> bool:
    return bool(item and item.get("properties", {}).get("immediate_execution"))


def _failed_task(task_uid: str, reason: str) -> dict[str, Any]:
    now = time.time()
    return {
        "task_uid": task_uid,
        "success": False,
        "msg": reason,
        "traceback": "",
        "return_value": None,
        "time_start": now,
        "time_stop": now,
    }


def _function_allowed(name: str, group: str, permissions: dict[str, Any]) -> bool:
    from bluesky_queueserver.manager.profile_ops import check_if_function_allowed

    return bool(check_if_function_allowed(name, group_name=group, user_group_permissions=permissions))


def _default_existing(builtin_profile: bool) -> dict[str, Any]:
    """Before the first environment opens: for the built-in profile, bluesky-queueserver's cached
    descriptions of its simulated profile (as the incumbent does), so that items can be queued at once."""
    if not builtin_profile:
        return {}
    from bluesky_queueserver.manager import profile_ops

    path = Path(profile_ops.get_default_startup_dir()) / "existing_plans_and_devices.yaml"
    plans, devices = profile_ops.load_existing_plans_and_devices(str(path))
    return {"plans": plans, "devices": devices}

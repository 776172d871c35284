"""Front-door methods of the queue manager: bluesky-queueserver's 0MQ API (method names, params, replies).

Items are bluesky-queueserver's plain dicts (`item_type`, `name`, `args`, `kwargs`, `meta`, `user`,
`user_group`, `item_uid`); they are validated by the queue manager, not by the params types. Positions are
`"front"`, `"back"` or an int. Beyond the incumbent: `queue_get` and `history_get` take optional paging.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

__all__ = [
    "QUEUE_METHODS",
    "ManagerState",
    "QueueStatus",
]

Pos = Literal["front", "back"] | int
Item = dict[str, Any]


class QueueStatus(msgspec.Struct, kw_only=True):
    """The queue manager's part of `status` (bluesky-queueserver's status fields)."""

    items_in_queue: int = 0
    items_in_history: int = 0
    running_item_uid: str | None = None
    manager_state: str = "initializing"
    queue_stop_pending: bool = False
    queue_autostart_enabled: bool = False
    worker_environment_exists: bool = False
    worker_environment_state: str = "closed"
    worker_background_tasks: int = 0
    re_state: str | None = None
    ip_kernel_state: str | None = None
    ip_kernel_captured: bool | None = None
    pause_pending: bool = False
    run_list_uid: str = ""
    plan_queue_uid: str = ""
    plan_history_uid: str = ""
    devices_existing_uid: str = ""
    plans_existing_uid: str = ""
    devices_allowed_uid: str = ""
    plans_allowed_uid: str = ""
    plan_queue_mode: dict[str, bool] = msgspec.field(
        default_factory=lambda: {"loop": False, "ignore_failures": False}
    )
    task_results_uid: str = ""
    lock_info_uid: str = ""
    lock: dict[str, bool] = msgspec.field(default_factory=lambda: {"environment": False, "queue": False})


ManagerState = Literal[
    "initializing",
    "idle",
    "paused",
    "creating_environment",
    "starting_queue",
    "executing_queue",
    "executing_task",
    "closing_environment",
    "destroying_environment",
]


# -- replies ------------------------------------------------------------------------------------------------
class Reply(msgspec.Struct, kw_only=True):
    """`{"success": true, "msg": ""}`: methods with nothing else to say."""

    success: bool = True
    msg: str = ""
    error_code: str | msgspec.UnsetType = msgspec.UNSET
    """On failure, the stable code (as in every stationd error reply); absent on success."""


class ItemReply(Reply, kw_only=True):
    item: Item
    qsize: int | None = None


class ItemsReply(Reply, kw_only=True):
    items: list[Item]
    qsize: int | None = None


class BatchAddReply(Reply, kw_only=True):
    items: list[Item]
    qsize: int | None = None
    results: list[dict[str, Any]]


class QueueGetReply(Reply, kw_only=True):
    items: list[Item]
    running_item: Item
    plan_queue_uid: str


class HistoryGetReply(Reply, kw_only=True):
    items: list[Item]
    plan_history_uid: str


class PlansAllowedReply(Reply, kw_only=True):
    plans_allowed: dict[str, Any]
    plans_allowed_uid: str


class PlansExistingReply(Reply, kw_only=True):
    plans_existing: dict[str, Any]
    plans_existing_uid: str


class DevicesAllowedReply(Reply, kw_only=True):
    devices_allowed: dict[str, Any]
    devices_allowed_uid: str


class DevicesExistingReply(Reply, kw_only=True):
    devices_existing: dict[str, Any]
    devices_existing_uid: str


class PermissionsReply(Reply, kw_only=True):
    user_group_permissions: dict[str, Any]


class RunsReply(Reply, kw_only=True):
    run_list: list[dict[str, Any]]
    run_list_uid: str


class ReMetadataReply(Reply, kw_only=True):
    re_metadata: dict[str, Any]


class TaskReply(Reply, kw_only=True):
    task_uid: str


class FunctionReply(Reply, kw_only=True):
    item: Item
    task_uid: str


class TaskStatusReply(Reply, kw_only=True):
    task_uid: str | list[str]
    status: str | dict[str, str]


class TaskResultReply(Reply, kw_only=True):
    task_uid: str
    status: str
    result: dict[str, Any]


class LockInfoReply(Reply, kw_only=True):
    lock_info: dict[str, Any]
    lock_info_uid: str


# -- params -------------------------------------------------------------------------------------------------
class _Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    reply_type: ClassVar[type] = Reply


class _Locked(_Params, frozen=True, kw_only=True):
    lock_key: str | None = None
    """Needed while the queue or environment is locked (see `lock`)."""


class PlansAllowed(_Params, frozen=True, kw_only=True, tag="plans_allowed"):
    """The plans a user group may queue, with their descriptions."""

    user_group: str | None = None
    reply_type: ClassVar[type] = PlansAllowedReply


class PlansExisting(_Params, frozen=True, kw_only=True, tag="plans_existing"):
    """Every plan in the worker namespace, with its description."""

    reply_type: ClassVar[type] = PlansExistingReply


class DevicesAllowed(_Params, frozen=True, kw_only=True, tag="devices_allowed"):
    """The devices a user group may use, with their descriptions."""

    user_group: str | None = None
    reply_type: ClassVar[type] = DevicesAllowedReply


class DevicesExisting(_Params, frozen=True, kw_only=True, tag="devices_existing"):
    """Every device in the worker namespace, with its description."""

    reply_type: ClassVar[type] = DevicesExistingReply


class PermissionsGet(_Params, frozen=True, kw_only=True, tag="permissions_get"):
    """The user group permissions."""

    reply_type: ClassVar[type] = PermissionsReply


class PermissionsSet(_Locked, frozen=True, kw_only=True, tag="permissions_set"):
    """Replace the user group permissions (validated; saved)."""

    user_group_permissions: dict[str, Any]


class PermissionsReload(_Locked, frozen=True, kw_only=True, tag="permissions_reload"):
    """Re-read the permissions file and/or the cached plan and device descriptions."""

    restore_plans_devices: bool = False
    restore_permissions: bool = True


class ReRuns(_Params, frozen=True, kw_only=True, tag="re_runs"):
    """The runs of the plan being executed."""

    option: Literal["active", "open", "closed"] = "active"
    reply_type: ClassVar[type] = RunsReply


class ReMetadata(_Params, frozen=True, kw_only=True, tag="re_metadata"):
    """The RunEngine metadata (`RE.md`) of the open environment."""

    reply_type: ClassVar[type] = ReMetadataReply


class QueueGet(_Params, frozen=True, kw_only=True, tag="queue_get"):
    """The queue and the running item; `offset`/`limit` page the queue (a stationd extension)."""

    offset: int = 0
    limit: int | None = None
    reply_type: ClassVar[type] = QueueGetReply


class QueueItemAdd(_Locked, frozen=True, kw_only=True, tag="queue_item_add"):
    """Validate an item and add it to the queue (a new `item_uid` is always assigned)."""

    item: Any = None
    user: str | None = None
    user_group: str | None = None
    pos: Pos | None = None
    before_uid: str | None = None
    after_uid: str | None = None
    reply_type: ClassVar[type] = ItemReply


class QueueItemAddBatch(_Locked, frozen=True, kw_only=True, tag="queue_item_add_batch"):
    """Add several items: all of them or, if one fails validation, none."""

    items: Any = None
    user: str | None = None
    user_group: str | None = None
    pos: Pos | None = None
    before_uid: str | None = None
    after_uid: str | None = None
    reply_type: ClassVar[type] = BatchAddReply


class QueueItemUpdate(_Locked, frozen=True, kw_only=True, tag="queue_item_update"):
    """Replace the queued item with the same `item_uid` (`replace`: give it a new uid)."""

    item: Any = None
    user: str | None = None
    user_group: str | None = None
    replace: bool = False
    reply_type: ClassVar[type] = ItemReply


class QueueItemGet(_Params, frozen=True, kw_only=True, tag="queue_item_get"):
    """One queued item by position (default: the back) or uid."""

    pos: Pos | None = None
    uid: str | None = None
    reply_type: ClassVar[type] = ItemReply


class QueueItemRemove(_Locked, frozen=True, kw_only=True, tag="queue_item_remove"):
    """Remove one queued item by position (default: the back) or uid."""

    pos: Pos | None = None
    uid: str | None = None
    reply_type: ClassVar[type] = ItemReply


class QueueItemRemoveBatch(_Locked, frozen=True, kw_only=True, tag="queue_item_remove_batch"):
    """Remove queued items by uid (`ignore_missing=False`: all must exist, or nothing is removed)."""

    uids: list[str]
    ignore_missing: bool = True
    reply_type: ClassVar[type] = ItemsReply


class QueueItemMove(_Locked, frozen=True, kw_only=True, tag="queue_item_move"):
    """Move one item (by `pos` or `uid`) to `pos_dest`, or before/after another item."""

    pos: Pos | None = None
    uid: str | None = None
    pos_dest: Pos | None = None
    before_uid: str | None = None
    after_uid: str | None = None
    reply_type: ClassVar[type] = ItemReply


class QueueItemMoveBatch(_Locked, frozen=True, kw_only=True, tag="queue_item_move_batch"):
    """Move items to the front/back or before/after another item (`reorder`: keep their queue order)."""

    uids: list[str]
    pos_dest: Literal["front", "back"] | None = None
    before_uid: str | None = None
    after_uid: str | None = None
    reorder: bool = False
    reply_type: ClassVar[type] = ItemsReply


class QueueItemExecute(_Locked, frozen=True, kw_only=True, tag="queue_item_execute"):
    """Run one item now, bypassing the queue (never re-queued)."""

    item: Any = None
    user: str | None = None
    user_group: str | None = None
    reply_type: ClassVar[type] = ItemReply


class QueueClear(_Locked, frozen=True, kw_only=True, tag="queue_clear"):
    """Remove every queued item (not the running one)."""


class QueueModeSet(_Locked, frozen=True, kw_only=True, tag="queue_mode_set"):
    """Set `loop`/`ignore_failures` (a partial dict), or `"default"`."""

    mode: Any = None


class QueueStart(_Locked, frozen=True, kw_only=True, tag="queue_start"):
    """Start executing the queue."""


class QueueStop(_Locked, frozen=True, kw_only=True, tag="queue_stop"):
    """Stop the queue after the running plan."""


class QueueStopCancel(_Locked, frozen=True, kw_only=True, tag="queue_stop_cancel"):
    """Cancel a pending `queue_stop`."""


class QueueAutostart(_Locked, frozen=True, kw_only=True, tag="queue_autostart"):
    """Start the queue by itself whenever it has items and the manager is idle."""

    enable: bool


class HistoryGet(_Params, frozen=True, kw_only=True, tag="history_get"):
    """The plan history, oldest first; `offset`/`limit` page it (a stationd extension)."""

    offset: int = 0
    limit: int | None = None
    reply_type: ClassVar[type] = HistoryGetReply


class HistoryClear(_Locked, frozen=True, kw_only=True, tag="history_clear"):
    """Clear the history: all, all but the newest `size`, or `item_uid` and everything older."""

    size: int | None = None
    item_uid: str | None = None


class EnvironmentOpen(_Locked, frozen=True, kw_only=True, tag="environment_open"):
    """Open the RunEngine environment (returns at once; watch `manager_state`)."""


class EnvironmentClose(_Locked, frozen=True, kw_only=True, tag="environment_close"):
    """Close the environment in order (only when idle)."""


class EnvironmentDestroy(_Locked, frozen=True, kw_only=True, tag="environment_destroy"):
    """Kill the worker process now; a running plan goes to history as failed and back to the queue."""


class RePause(_Locked, frozen=True, kw_only=True, tag="re_pause"):
    """Pause the running plan: `deferred` (next checkpoint) or `immediate`."""

    option: str = "deferred"


class ReResume(_Locked, frozen=True, kw_only=True, tag="re_resume"):
    """Resume the paused plan."""


class ReStop(_Locked, frozen=True, kw_only=True, tag="re_stop"):
    """End the paused plan (exit status `stopped`, a success)."""


class ReAbort(_Locked, frozen=True, kw_only=True, tag="re_abort"):
    """End the paused plan (exit status `aborted`)."""


class ReHalt(_Locked, frozen=True, kw_only=True, tag="re_halt"):
    """End the paused plan without cleanup (exit status `halted`)."""


class EnvironmentUpdate(_Locked, frozen=True, kw_only=True, tag="environment_update"):
    """Rebuild the plan and device descriptions (and pick up a replaced `RE`) from the worker namespace."""

    run_in_background: bool = False
    reply_type: ClassVar[type] = TaskReply


class ScriptUpload(_Locked, frozen=True, kw_only=True, tag="script_upload"):
    """Run Python text in the worker namespace (returns at once; see `task_result`)."""

    script: Any = None
    update_lists: bool = True
    update_re: bool = False
    run_in_background: bool = False
    reply_type: ClassVar[type] = TaskReply


class FunctionExecute(_Locked, frozen=True, kw_only=True, tag="function_execute"):
    """Call a function of the worker namespace (`{"item_type": "function", "name", "args", "kwargs"}`)."""

    item: Any = None
    user: str | None = None
    user_group: str | None = None
    run_in_background: bool = False
    reply_type: ClassVar[type] = FunctionReply


class TaskStatus(_Params, frozen=True, kw_only=True, tag="task_status"):
    """`running`, `completed` or `not_found` for a task uid (or a `{uid: status}` map for a list)."""

    task_uid: Any = None
    reply_type: ClassVar[type] = TaskStatusReply


class TaskResult(_Params, frozen=True, kw_only=True, tag="task_result"):
    """A task's status and result (completed results are kept 120 s)."""

    task_uid: Any = None
    reply_type: ClassVar[type] = TaskResultReply


class Lock(_Params, frozen=True, kw_only=True, tag="lock"):
    """Lock the environment and/or the queue with a key (stored hashed)."""

    lock_key: str | None = None
    user: str | None = None
    environment: bool = False
    queue: bool = False
    note: str | None = None
    reply_type: ClassVar[type] = LockInfoReply


class LockInfo(_Params, frozen=True, kw_only=True, tag="lock_info"):
    """Who locked what; with `lock_key`: fails unless the key matches."""

    lock_key: str | None = None
    reply_type: ClassVar[type] = LockInfoReply


class Unlock(_Params, frozen=True, kw_only=True, tag="unlock"):
    """Unlock with the lock key or the emergency key."""

    lock_key: str | None = None
    reply_type: ClassVar[type] = LockInfoReply


class ManagerStop(_Params, frozen=True, kw_only=True, tag="manager_stop"):
    """Stop the daemon: `safe_on` only when idle, `safe_off` at once (a running plan is stopped)."""

    option: str = "safe_on"


class ManagerKill(_Params, frozen=True, kw_only=True, tag="manager_kill"):
    """Testing: crash the queue manager actor (the supervisor restarts it from its persisted state)."""


QUEUE_METHODS: list[type[_Params]] = [
    PlansAllowed,
    PlansExisting,
    DevicesAllowed,
    DevicesExisting,
    PermissionsGet,
    PermissionsSet,
    PermissionsReload,
    ReRuns,
    ReMetadata,
    QueueGet,
    QueueItemAdd,
    QueueItemAddBatch,
    QueueItemUpdate,
    QueueItemGet,
    QueueItemRemove,
    QueueItemRemoveBatch,
    QueueItemMove,
    QueueItemMoveBatch,
    QueueItemExecute,
    QueueClear,
    QueueModeSet,
    QueueStart,
    QueueStop,
    QueueStopCancel,
    QueueAutostart,
    HistoryGet,
    HistoryClear,
    EnvironmentOpen,
    EnvironmentClose,
    EnvironmentDestroy,
    RePause,
    ReResume,
    ReStop,
    ReAbort,
    ReHalt,
    EnvironmentUpdate,
    ScriptUpload,
    FunctionExecute,
    TaskStatus,
    TaskResult,
    Lock,
    LockInfo,
    Unlock,
    ManagerStop,
    ManagerKill,
]
"""Every method of the queue manager, in the order of `stationctl methods`."""

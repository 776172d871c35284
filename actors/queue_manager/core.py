"""The queue manager's state and the helpers its handlers share (see `actor.py` for the whole picture)."""

from __future__ import annotations

import asyncio
import copy
import os
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta

from stationd.actors.base import SupervisorContext
from stationd.protocol import queue as q
from stationd.protocol.errors import InvalidParams, InvalidState, StationError

from . import locks
from .permissions import (
    ItemValidator,
    PermissionsError,
    allowed_lists,
    default_permissions_path,
    load_permissions,
)
from .plan_queue import Changes, PlanQueue, QueueError
from .records import QueueRecords
from .tasks import TaskResults

__all__ = ["ManagerCore", "QueueManagerOptions"]

RESTART_MSG = "Plan exit status was lost: the daemon restarted while the plan was running"
CRASH_MSG = "Plan exit status was lost: the queue manager crashed and restarted while the plan was running"
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
    worker_cpu_policy: Annotated[
        Literal["auto", "normal", "idle"],
        Meta(
            description='How the worker process shares the CPU. "idle" (Linux SCHED_IDLE): it gives way at '
            "once to the daemon and every other process, which keeps `status` and the other requests fast "
            "while plans run on a small machine, but starves plans while other work keeps every core busy. "
            '"auto": "idle", switched to "normal" for 30 s whenever the worker waits for a CPU more than '
            "4/5 of the time it wants one for 1 s (needs CAP_SYS_NICE or RLIMIT_NICE >= 20 to switch back: "
            'without, "normal"). "normal": as any process.'
        ),
    ] = "auto"


class Crash(msgspec.Struct, frozen=True, tag="_qm_crash"):
    """Sent to itself to crash on purpose (`manager_kill`, or a store that failed a write)."""

    reason: str


class Worker:
    """The worker slot: which incarnation of the `re_worker` child is current, and what it is doing."""

    def __init__(self) -> None:
        self.incarnation = 0
        self.state = "none"  # none | spawning | spare | opening | open | closing | destroying
        self.pid: int | None = None


class ManagerCore:
    """The state of the queue manager and what every group of handlers uses; the handlers live in
    `contents.py`, `execution.py`, `environment.py` and `admin.py` (the contents and environment handlers
    build on the execution handlers: adding items and opening the environment may start the queue)."""

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
        self._loaded = asyncio.Event()
        """Set once the permissions and descriptions are loaded (in a thread: they take ~0.5 s)."""
        self.permissions_error = ""
        self._status_scheduled = False
        self._quick_deaths = 0
        self._emergency_key = options.emergency_lock_key or os.environ.get(
            "QSERVER_EMERGENCY_LOCK_KEY_FOR_SERVER", ""
        )

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
        if self.permissions_error:
            raise InvalidState(f"User group permissions are not valid: {self.permissions_error}")
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
        self.permissions, self.permissions_error = permissions, ""
        self._recompute_allowed()
        await self.records.save_settings(permissions=permissions)
        self._publish_status()

    def _set_existing(self, existing: dict[str, Any]) -> None:
        self.existing_plans = existing.get("plans", {})
        self.existing_devices = existing.get("devices", {})
        self.status.plans_existing_uid = new_uid()
        self.status.devices_existing_uid = new_uid()
        self._recompute_allowed()

    def _existing(self) -> dict[str, Any]:
        return {"plans": self.existing_plans, "devices": self.existing_devices}

    def _recompute_allowed(self) -> None:
        plans, devices = {}, {}
        if not self.permissions_error:
            plans, devices = allowed_lists(self.permissions, self.existing_plans, self.existing_devices)
        self.validator = ItemValidator(plans, devices)
        self.status.plans_allowed_uid = new_uid()
        self.status.devices_allowed_uid = new_uid()

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
            self._tell_self(Crash(f"persisting the queue failed: {exc.msg}"))
            raise
        self._publish_status()

    def _publish_status(self) -> None:
        """Publish the status once the current step is done: a plan's end changes it several times in a
        row (history, queue, RunEngine state, runs), and the daemon's status follows every publication.

        Two callbacks later, so that the reply to the request being handled goes out first: the reply wakes
        its asker (the front door) in the next callback. A `status` asked after that reply still sees the
        change, since the request is read only after the callbacks scheduled before it."""
        if not self._status_scheduled:
            self._status_scheduled = True
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._publish_status_now)

    def _publish_status_now(self) -> None:
        self._status_scheduled = False
        s = self.status
        s.items_in_queue = self.pq.queue_size
        s.items_in_history = self.pq.history_size
        s.running_item_uid = self.pq.running_item_uid
        s.plan_queue_uid = self.pq.plan_queue_uid
        s.plan_history_uid = self.pq.plan_history_uid
        s.plan_queue_mode = self.pq.mode
        # a copy: the daemon's status board keeps what it is given, and handlers change `self.status` before
        # it is published (a `status` answered in between must not mix old and new fields)
        self.ctx.publish("status", copy.copy(s))

    def _tell_self(self, msg: msgspec.Struct) -> None:
        self.ctx.tell(self.ctx.name, msg)

    def _start_job(self, coro: Coroutine[Any, Any, None]) -> None:
        job = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)


# -- module helpers ---------------------------------------------------------------------------------------
def new_uid() -> str:
    return str(uuid.uuid4())


def error_text(exc: BaseException) -> str:
    return exc.msg if isinstance(exc, StationError) else str(exc)


def echo_item(item: Any) -> dict[str, Any]:
    return item if isinstance(item, dict) else {}


def is_immediate(item: dict[str, Any] | None) -> bool:
    return bool(item and item.get("properties", {}).get("immediate_execution"))


def default_existing(options: QueueManagerOptions) -> dict[str, Any]:
    """The plan and device descriptions before the first environment opens, so that items can be queued at
    once (as the incumbent does): `existing_plans_and_devices.yaml` of the startup folder if it has one; for
    the built-in profile, bluesky-queueserver's file describing its simulated profile."""
    if options.startup_dir or options.startup_script or options.startup_module:
        folder = options.startup_dir or (
            str(Path(options.startup_script).parent) if options.startup_script else ""
        )
        path = Path(folder) / "existing_plans_and_devices.yaml" if folder else None
    else:
        from bluesky_queueserver.manager import profile_ops

        path = Path(profile_ops.get_default_startup_dir()) / "existing_plans_and_devices.yaml"
    try:
        # libyaml's safe loader: the incumbent's pure-Python loader takes 0.4 s for its simulated profile
        document = yaml.load(path.read_text(), Loader=yaml.CSafeLoader) if path is not None else None
    except (OSError, yaml.YAMLError):  # unreadable is as good as none: the first environment_open describes
        document = None
    if not isinstance(document, dict):
        return {}
    return {"plans": document.get("existing_plans", {}), "devices": document.get("existing_devices", {})}

"""The queue manager: bluesky-queueserver's RE Manager as an actor (WORK IN PROGRESS, not in the tree yet).

Owns the queue, the running item, the history, modes, locks and permissions (persisted in
`<state_dir>/queue.sqlite`), and its RunEngine worker: a process child it starts itself, one process per
environment, with a warm spare spawned ahead so that `environment_open` only runs the profile. Long work
(opening an environment, a plan) never blocks the handler: it runs in a task whose outcome comes back to
this actor as a message, or as the worker's tell.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from stationd.actors.base import Actor, SupervisorContext
from stationd.actors.specs import ActorSpec, Mode, RestartType
from stationd.actors.storage.sqlite import Op, SQLiteStore
from stationd.protocol import queue as q
from stationd.protocol import worker as w
from stationd.protocol.errors import InvalidParams, StationError
from stationd.protocol.supervision import ChildExited

from . import locks
from .permissions import PermissionsError, allowed_lists, default_permissions_path, load_permissions
from .records import ALL, HISTORY, QUEUE, RUNNING, SETTINGS, HistoryEntry, QueuedItem, Setting

__all__ = ["QueueManager", "QueueManagerOptions"]


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


class _EnvironmentOpened(msgspec.Struct, frozen=True, tag="_qm_environment_opened"):
    info: w.EnvironmentInfo | None
    error: str = ""


Inbox = Any  # the front-door params of protocol/queue.py, the worker's tells, and the messages above


class QueueManager(Actor):
    """bluesky-queueserver's RE Manager semantics over the storage layer and a worker process."""

    supervises_children = True
    Options = QueueManagerOptions
    ctx: SupervisorContext

    def __init__(self, ctx: SupervisorContext, options: QueueManagerOptions) -> None:
        super().__init__(ctx, options)
        self.options = options
        self.store = SQLiteStore(ctx.state_dir / "queue.sqlite", ALL)
        self.status = q.QueueStatus(manager_state="initializing")
        self.lock = locks.LockState()
        self.permissions: dict[str, Any] = {}
        self.existing_plans: dict[str, Any] = {}
        self.existing_devices: dict[str, Any] = {}
        self.allowed_plans: dict[str, Any] = {}
        self.allowed_devices: dict[str, Any] = {}
        self.run_list: list[dict[str, Any]] = []
        self._worker_incarnation = 0
        self._spare: asyncio.Task[None] | None = None
        self._emergency_key = options.emergency_lock_key or os.environ.get(
            "QSERVER_EMERGENCY_LOCK_KEY_FOR_SERVER", ""
        )

    # -- life cycle ---------------------------------------------------------------------------------------
    async def on_start(self) -> None:
        await self.store.open()
        self.permissions = self._load_permissions()
        settings = {s.key: s.value for s in await self._all(SETTINGS)}
        self.lock = msgspec.convert(settings.get("lock", {}), locks.LockState)
        existing = settings.get("existing", {})
        self.existing_plans = existing.get("plans", {})
        self.existing_devices = existing.get("devices", {})
        self._recompute_allowed()
        for name in ("run_list_uid", "devices_existing_uid", "plans_existing_uid", "task_results_uid"):
            setattr(self.status, name, str(uuid.uuid4()))
        self.status.lock_info_uid = str(uuid.uuid4())
        self.status.manager_state = "idle"
        self._publish_status()
        self._spare = asyncio.get_running_loop().create_task(self._spawn_worker())

    async def on_stop(self) -> None:
        await self._stop_worker(timeout=5.0)
        await self.store.close()

    async def on_failure(self, exc: BaseException) -> None:
        await self._stop_worker(timeout=0.5)
        await self.store.close()

    async def handle(self, msg: Any) -> Any:
        raise NotImplementedError  # the handlers are being written: this actor is not in the tree yet

    # -- helpers --------------------------------------------------------------------------------------------
    async def _all(self, coll: Any) -> list[Any]:
        from stationd.actors.storage.query import parse_query

        items, _ = await self.store.query(coll.name, parse_query(coll, {"limit": 0}))
        return items

    def _load_permissions(self) -> dict[str, Any]:
        path = Path(self.options.user_group_permissions or default_permissions_path())
        try:
            return load_permissions(path)
        except PermissionsError as exc:
            raise InvalidParams(f"user group permissions: {exc}") from exc

    def _recompute_allowed(self) -> None:
        self.allowed_plans, self.allowed_devices = allowed_lists(
            self.permissions, self.existing_plans, self.existing_devices
        )
        self.status.plans_allowed_uid = str(uuid.uuid4())
        self.status.devices_allowed_uid = str(uuid.uuid4())

    def _publish_status(self) -> None:
        self.ctx.publish("status", self.status)

    async def _spawn_worker(self) -> None:
        """Start a warm spare worker (bluesky and ophyd imported, no environment yet)."""
        self._worker_incarnation += 1
        spec = ActorSpec(
            name=w.RE_WORKER,
            actor="stationd.actors.re_worker:RunEngineWorker",
            mode=Mode.PROCESS,
            restart=RestartType.TEMPORARY,
        )
        await self.ctx.start_child(spec, self._worker_incarnation)

    async def _stop_worker(self, timeout: float) -> None:
        if self._spare is not None and not self._spare.done():
            self._spare.cancel()
        await self.ctx.stop_child(w.RE_WORKER, timeout)

    async def _persist(self, ops: list[Op]) -> None:
        await self.store.write_many(ops)


__unused__ = (HISTORY, QUEUE, RUNNING, HistoryEntry, QueuedItem, Setting, ChildExited, StationError)

"""Handlers of tasks (functions, scripts), permissions, locks and the manager itself (stop, kill)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import msgspec

from stationd.protocol import queue as q
from stationd.protocol import worker as w
from stationd.protocol.errors import InvalidParams, InvalidState, PermissionDenied, StationError

from . import locks
from .core import Crash, ManagerCore, default_existing, new_uid
from .permissions import PermissionsError, validate_permissions

__all__ = ["AdminHandlers"]


class AdminHandlers(ManagerCore):
    """Handlers of tasks (functions, scripts), permissions, locks and the manager itself (stop, kill)."""

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
            self._set_existing(settings.get("existing") or default_existing(self.options))
        permissions = self._permissions_from_file() if msg.restore_permissions else self.permissions
        await self._set_permissions(permissions)
        return q.Reply()

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
        item = {**item, "user": user, "user_group": group, "item_uid": new_uid()}
        task_uid = await self._run_task(kind="function", item=item, background=msg.run_in_background)
        return q.FunctionReply(item=item, task_uid=task_uid)

    async def _run_task(
        self, *, kind: str, background: bool, item: dict[str, Any] | None = None, **kw: Any
    ) -> str:
        if self.worker.state != "open":
            raise InvalidState("Error: RE Worker environment does not exist.")
        if not background and self.status.manager_state != "idle":
            raise InvalidState(f"Error: RE Manager is busy. Current state: {self.status.manager_state}")
        task_uid = new_uid()
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
        self.status.task_results_uid = new_uid()
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
        self.status.lock_info_uid = new_uid()
        self.status.lock = {"environment": self.lock.environment, "queue": self.lock.queue}
        self._publish_status()

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
        self._tell_self(Crash("manager_kill"))  # a tell's failure crashes the actor (an ask's is replied)
        return q.Reply()

    async def _on_crash(self, msg: Crash) -> None:
        raise RuntimeError(f"queue manager crashed on purpose: {msg.reason}")


def _function_allowed(name: str, group: str, permissions: dict[str, Any]) -> bool:
    from bluesky_queueserver.manager.profile_ops import check_if_function_allowed

    return bool(check_if_function_allowed(name, group_name=group, user_group_permissions=permissions))

"""Handlers that run the queue: start/stop, autostart, immediate execution, the worker's plan reports and
RunEngine control (pause, resume, stop, abort, halt)."""

from __future__ import annotations

from typing import Any

import msgspec

from stationd.protocol import queue as q
from stationd.protocol import worker as w
from stationd.protocol.errors import InvalidParams, InvalidState, StationError

from .core import ManagerCore, echo_item, error_text, is_immediate, new_uid
from .permissions import PermissionsError
from .plan_queue import Changes, QueueError, StartKind

__all__ = ["ExecutionHandlers"]


class ExecutionHandlers(ManagerCore):
    """Handlers that run the queue, and RunEngine control."""

    async def _queue_start(self, msg: q.QueueStart) -> q.Reply:
        self._check_can_execute()
        self.status.queue_stop_pending = False
        await self._run_queue()
        return q.Reply()

    async def _queue_stop(self, msg: q.QueueStop) -> q.Reply:
        state = self.status.manager_state
        if state not in ("executing_queue", "starting_queue", "paused") or is_immediate(self.pq.running_item):
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
                msg=f"Failed to start execution of the item: {error_text(exc)}",
                item=echo_item(msg.item),
                error_code=InvalidState.code if isinstance(exc, InvalidState) else InvalidParams.code,
            )
        if started.kind is StartKind.PLAN:
            self.status.manager_state = "starting_queue"
            await self._execute(started.item, started.changes)
        return q.ItemReply(item=started.item, qsize=self.pq.queue_size)

    async def _run_queue(self, changes: Changes | None = None) -> None:
        """Start the front item unless the queue must stop; persist `changes` (a finished plan) with it."""
        pending = [changes] if changes else []
        if self.status.queue_stop_pending:
            await self._queue_stopped(pending)
            return
        started = self.pq.start_next()
        pending.append(started.changes)
        if started.kind is StartKind.EMPTY:
            await self._persist(*pending)
            self._set_idle()
        elif started.kind is StartKind.QUEUE_STOP:
            await self._queue_stopped(pending)
        else:
            self.status.manager_state = "starting_queue"
            await self._execute(started.item, *pending)

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
        immediate = is_immediate(self.pq.running_item)
        finished = self.pq.finish_running(msgspec.to_builtins(msg.result), item_uid=msg.item_uid)
        if self.run_list:  # `re_runs` lists the running plan's runs only (the worker sends no RunsChanged)
            self.run_list = []
            self.status.run_list_uid = new_uid()
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
        self.status.run_list_uid = new_uid()
        self._publish_status()

    async def _on_re_state(self, msg: w.ReStateChanged) -> None:
        self.status.re_state = msg.re_state
        self._publish_status()

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

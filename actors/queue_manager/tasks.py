"""Results of function and script tasks, as bluesky-queueserver keeps them (`task_status`, `task_result`).

A running task is known by its start; a completed task's result is kept for `retention` seconds (120 s as in
the incumbent) and then forgotten (`not_found`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TaskResults"]


@dataclass(slots=True)
class _Running:
    time_start: float
    run_in_background: bool


@dataclass(slots=True)
class TaskResults:
    retention: float = 120.0
    clock: Callable[[], float] = time.time
    _running: dict[str, _Running] = field(default_factory=dict)
    _completed: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)

    def started(self, task_uid: str, run_in_background: bool) -> None:
        self._running[task_uid] = _Running(self.clock(), run_in_background)

    def completed(self, task_uid: str, result: dict[str, Any]) -> bool:
        """Record a result; False when the task is unknown (not started here: ignore the report)."""
        if self._running.pop(task_uid, None) is None:
            return False
        self._forget_old()
        self._completed[task_uid] = (self.clock(), {**result, "task_uid": task_uid})
        return True

    def fail_running(self, reason: str) -> list[str]:
        """The worker is gone: its running tasks will never report; they complete as failed with `reason`."""
        uids = list(self._running)
        now = self.clock()
        for uid in uids:
            running = self._running[uid]
            self.completed(
                uid,
                {
                    "success": False,
                    "msg": reason,
                    "traceback": "",
                    "return_value": None,
                    "time_start": running.time_start,
                    "time_stop": now,
                },
            )
        return uids

    @property
    def background_count(self) -> int:
        return sum(1 for r in self._running.values() if r.run_in_background)

    def status(self, task_uid: str) -> str:
        self._forget_old()
        if task_uid in self._running:
            return "running"
        return "completed" if task_uid in self._completed else "not_found"

    def result(self, task_uid: str) -> tuple[str, dict[str, Any]]:
        status = self.status(task_uid)
        if status == "running":
            r = self._running[task_uid]
            return status, {
                "task_uid": task_uid,
                "time_start": r.time_start,
                "run_in_background": r.run_in_background,
            }
        if status == "completed":
            return status, self._completed[task_uid][1]
        return status, {}

    def _forget_old(self) -> None:
        horizon = self.clock() - self.retention
        for uid in [u for u, (t, _) in self._completed.items() if t < horizon]:
            del self._completed[uid]

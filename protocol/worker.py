"""Messages between the queue manager and its RunEngine worker (internal: not front-door methods).

The queue manager asks, the worker answers at once; what takes time (opening the environment aside) is
reported later by a tell from the worker to the queue manager: a plan's end or pause, a task's result,
changes of the RunEngine state and of the current plan's runs. Items and results are the plain dicts of
bluesky-queueserver (`item_type`, `name`, `args`, `kwargs`, `meta`, `user`, `user_group`, `item_uid`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

__all__ = [
    "QUEUE_MANAGER",
    "RE_WORKER",
    "CloseEnvironment",
    "ControlPlan",
    "EnvironmentClosed",
    "EnvironmentInfo",
    "ExecutePlan",
    "ExecuteTask",
    "ExistingChanged",
    "GetReMetadata",
    "OpenEnvironment",
    "PlanEnded",
    "PlanPaused",
    "PlanResult",
    "PlanStopped",
    "ReMetadata",
    "ReStateChanged",
    "RunInfo",
    "RunsChanged",
    "StopPlanForShutdown",
    "TaskEnded",
    "WorkerAck",
]

QUEUE_MANAGER = "queue_manager"
RE_WORKER = "re_worker"


class _Msg(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class WorkerAck(msgspec.Struct, kw_only=True):
    """The worker accepted the request (what it started is reported later by a tell)."""

    re_state: str | None = None


class EnvironmentInfo(msgspec.Struct, kw_only=True):
    """The opened environment: the plan and device descriptions in bluesky-queueserver's format
    (`existing_plans_and_devices_from_nspace`), and the RunEngine state."""

    existing_plans: dict[str, Any]
    existing_devices: dict[str, Any]
    re_state: str | None


class ReMetadata(msgspec.Struct, kw_only=True):
    re_metadata: dict[str, Any]


class EnvironmentClosed(msgspec.Struct, kw_only=True):
    pass


# -- queue manager -> worker (asks) -------------------------------------------------------------------------
class OpenEnvironment(_Msg, tag="open_environment"):
    """Load the startup code into a fresh namespace and create the RunEngine. At most one of the three
    sources may be given; none: the built-in simulated profile (ophyd.sim devices, bluesky.plans)."""

    startup_dir: str = ""
    """Every `*.py` in the folder, in name order (bluesky-queueserver's `--startup-dir`)."""
    startup_script: str = ""
    startup_module: str = ""
    re_metadata: dict[str, Any] = {}
    """Initial `RE.md`."""
    device_max_depth: int = 0
    """Depth of the device component trees in the descriptions (0: unlimited)."""
    cpu_policy: Literal["normal", "idle", "auto"] = "normal"
    """How the worker's threads share the CPU: "idle" (Linux SCHED_IDLE) gives way at once to every other
    process (the daemon, its clients), at the risk of starving plans on a machine kept busy otherwise;
    "auto" is "idle" with a guard that switches to "normal" for a while when the worker is starved."""
    reply_type: ClassVar[type] = EnvironmentInfo


class ExecutePlan(_Msg, tag="execute_plan"):
    """Start a plan item now (the RunEngine must be idle). Its end comes as `PlanEnded` or `PlanPaused`."""

    item: dict[str, Any]
    reply_type: ClassVar[type] = WorkerAck


class ControlPlan(_Msg, tag="control_plan"):
    """Pause the running plan, or resume/stop/abort/halt the paused one. Refused with `invalid_state` when
    the RunEngine is not in a state that allows it."""

    action: Literal["pause_deferred", "pause_immediate", "resume", "stop", "abort", "halt"]
    reply_type: ClassVar[type] = WorkerAck


class ExecuteTask(_Msg, tag="execute_task"):
    """Run a function item or a script in the worker namespace; its end comes as `TaskEnded`.
    A script with `update_lists` regenerates the descriptions (then `ExistingChanged` comes first);
    `update_re` picks up a RunEngine the script replaced."""

    task_uid: str
    kind: Literal["function", "script"]
    item: dict[str, Any] = {}
    """For a function: `{"item_type": "function", "name", "args", "kwargs"}`."""
    script: str = ""
    run_in_background: bool = False
    update_lists: bool = False
    update_re: bool = False
    reply_type: ClassVar[type] = WorkerAck


class GetReMetadata(_Msg, tag="get_re_metadata"):
    """The RunEngine's metadata (`RE.md`)."""

    reply_type: ClassVar[type] = ReMetadata


class PlanStopped(msgspec.Struct, kw_only=True):
    result: PlanResult | None
    """How the plan ended; None: no plan was running or paused."""
    item_uid: str = ""


class StopPlanForShutdown(_Msg, tag="stop_plan_for_shutdown"):
    """The daemon is stopping: end the current plan with RunEngine `stop` (pausing it first if it runs) and
    reply with its result, which is not told as `PlanEnded` (the queue manager handles no more tells)."""

    reply_type: ClassVar[type] = PlanStopped


class CloseEnvironment(_Msg, tag="close_environment"):
    """Close the environment in order (the worker then stops itself: one process per environment)."""

    reply_type: ClassVar[type] = EnvironmentClosed


# -- worker -> queue manager (tells) -------------------------------------------------------------------------
class PlanResult(msgspec.Struct, kw_only=True):
    """bluesky-queueserver's history `result` block."""

    exit_status: Literal["completed", "stopped", "failed", "aborted", "halted", "unknown"]
    run_uids: list[str] = []
    scan_ids: list[int] = []
    time_start: float
    time_stop: float
    msg: str = ""
    traceback: str = ""


class PlanEnded(_Msg, tag="plan_ended"):
    """The plan item `item_uid` ended (completed, stopped, failed, aborted or halted)."""

    item_uid: str
    result: PlanResult


class PlanPaused(_Msg, tag="plan_paused"):
    """The plan item `item_uid` is paused; it waits for `ControlPlan` resume/stop/abort/halt."""

    item_uid: str


class RunInfo(msgspec.Struct, kw_only=True):
    """One run of the current plan (`re_runs`)."""

    uid: str
    scan_id: int | None
    is_open: bool
    exit_status: str | None


class RunsChanged(_Msg, tag="runs_changed"):
    """The runs of the current plan changed (a run opened or closed)."""

    run_list: list[RunInfo]


class ReStateChanged(_Msg, tag="re_state_changed"):
    re_state: str | None


class TaskEnded(_Msg, tag="task_ended"):
    """A function or script task ended; `result` is bluesky-queueserver's completed task result
    (`task_uid`, `success`, `msg`, `traceback`, `return_value`, `time_start`, `time_stop`)."""

    task_uid: str
    result: dict[str, Any]


class ExistingChanged(_Msg, tag="existing_changed"):
    """The namespace's plans or devices changed (a script with `update_lists`)."""

    existing_plans: dict[str, Any]
    existing_devices: dict[str, Any]

"""The RunEngine worker: runs the station profile, plans and tasks in its own process (one per environment).

The queue manager asks; every ask is answered at once. What takes time runs in a thread (the RunEngine's
calls block the calling thread) and its outcome comes back to the queue manager as a tell: `PlanEnded`,
`PlanPaused`, `TaskEnded`, `ExistingChanged`, and along the way `RunsChanged` and `ReStateChanged`.

Threads: the RunEngine calls its hooks (documents, state) on its own loop thread, and plans and tasks run in
worker threads; none of them touches `ctx` directly: they hand over to the actor loop with
`call_soon_threadsafe`, which is also what keeps the order of events (a run's stop document is told before
the plan's end).
"""

from __future__ import annotations

import asyncio
import importlib
import time
import traceback
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, assert_never

import msgspec

from stationd.actors.base import Actor, ActorContext
from stationd.protocol.errors import InvalidState
from stationd.protocol.worker import (
    QUEUE_MANAGER,
    CloseEnvironment,
    ControlPlan,
    EnvironmentClosed,
    EnvironmentInfo,
    ExecutePlan,
    ExecuteTask,
    ExistingChanged,
    GetReMetadata,
    OpenEnvironment,
    PlanEnded,
    PlanPaused,
    PlanResult,
    PlanStopped,
    ReMetadata,
    ReStateChanged,
    RunInfo,
    RunsChanged,
    StopPlanForShutdown,
    TaskEnded,
    WorkerAck,
)

from .console import ConsoleCapture
from .cpu_guard import CpuGuard, can_leave_idle
from .documents import DocumentSender
from .threads import run_in_thread, set_cpu_policy
from .values import json_safe

if TYPE_CHECKING:
    from bluesky import RunEngine

    from .environment import Descriptions, Environment

__all__ = ["RunEngineWorker"]

_WARM_IMPORTS = (
    "bluesky",
    "ophyd",
    "ophyd.sim",
    "bluesky_queueserver.manager.profile_ops",
    "stationd.actors.re_worker.environment",
)
ExitStatus = Literal["completed", "stopped", "failed", "aborted", "halted"]


@dataclass(slots=True)
class _ActivePlan:
    item_uid: str
    name: str
    time_start: float
    running: bool = True
    """A RunEngine call is in progress (False: the plan is paused)."""
    call: asyncio.Task[None] | None = None
    """The job running the current RunEngine call."""
    result: PlanResult | None = None
    silent: bool = False
    """Do not tell how the plan ends (the daemon is shutting down and asked for the result directly)."""


def _continuation(re: RunEngine, action: str) -> tuple[Callable[[], Any], ExitStatus]:
    """The RunEngine call that continues a paused plan, and how the plan ends when the call returns
    normally (as bluesky-queueserver reports it)."""
    match action:
        case "resume":
            return re.resume, "completed"
        case "stop":
            return re.stop, "stopped"
        case "abort":
            return re.abort, "aborted"
        case "halt":
            return re.halt, "halted"
    raise ValueError(f"not a continuation of a paused plan: {action!r}")


def _describe(item: dict[str, Any]) -> str:
    """`count(['det1'], num=3)`: an item as a call, for the console."""
    args = [repr(a) for a in item.get("args", [])]
    kwargs = [f"{k}={v!r}" for k, v in item.get("kwargs", {}).items()]
    return f"{item.get('name', '?')}({', '.join(args + kwargs)})"


def _traceback(exc: BaseException) -> str:
    return getattr(exc, "tb", None) or "".join(traceback.format_exception(exc))  # ScriptLoadingError has .tb


class RunEngineWorker(Actor):
    """Owns the worker namespace and its RunEngine; executes plans and tasks for the queue manager."""

    inbox = (
        OpenEnvironment
        | ExecutePlan
        | ControlPlan
        | ExecuteTask
        | GetReMetadata
        | StopPlanForShutdown
        | CloseEnvironment
    )

    def __init__(self, ctx: ActorContext, options: Any) -> None:
        super().__init__(ctx, options)
        self._console: ConsoleCapture | None = None
        self._env: Environment | None = None
        self._detach_re: Callable[[], None] | None = None
        self._re_state: str | None = None
        self._plan: _ActivePlan | None = None
        self._runs: list[RunInfo] = []
        self._foreground_task: str | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._documents = DocumentSender(ctx)

    # -- life cycle (on the actor loop, in the worker process) ----------------------------------------------
    async def on_start(self) -> None:
        """Import bluesky, ophyd and the profile tools now, so that a spare worker opens an environment by
        running the profile only; then capture the console."""
        for module in _WARM_IMPORTS:
            importlib.import_module(module)
        self._console = ConsoleCapture(asyncio.get_running_loop(), self.ctx.publish_topic)
        self._console.install()

    async def on_stop(self) -> None:
        self._shutdown()

    async def on_failure(self, exc: BaseException) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        self._documents.flush()
        for job in list(self._jobs):
            job.cancel()  # plan and task threads are daemon threads: they end with the process
        if self._detach_re is not None:
            self._detach_re()
        if self._console is not None:
            self._console.uninstall()

    async def handle(self, msg: Any) -> Any:
        match msg:
            case OpenEnvironment():
                return await self._open(msg)
            case ExecutePlan(item=item):
                return self._execute_plan(item)
            case ControlPlan(action=action):
                return self._control_plan(action)
            case ExecuteTask():
                return self._execute_task(msg)
            case GetReMetadata():
                return ReMetadata(re_metadata=json_safe(dict(self._require_env().re.md)))
            case StopPlanForShutdown():
                return await self._stop_for_shutdown()
            case CloseEnvironment():
                return self._close()
            case _:
                assert_never(msg)

    # -- environment -----------------------------------------------------------------------------------------
    async def _open(self, msg: OpenEnvironment) -> EnvironmentInfo:
        from .environment import open_environment

        if self._env is not None:
            raise InvalidState("The RE Worker environment is already open")
        self._set_cpu_policy(msg.cpu_policy)  # before the startup code: the threads it starts inherit it
        # The startup code may take seconds: in a thread, so that the loop keeps heartbeating.
        env = await run_in_thread(partial(open_environment, msg), name="re-open-environment")
        self._env = env
        self._attach(env.re)
        return EnvironmentInfo(
            existing_plans=env.descriptions.existing_plans,
            existing_devices=env.descriptions.existing_devices,
            re_state=self._re_state,
        )

    def _set_cpu_policy(self, policy: str) -> None:
        """`normal` leaves the process as it was started; `idle` and `auto`: see `OpenEnvironment`."""
        if policy == "idle":
            set_cpu_policy("idle")
        elif policy == "auto":
            if not can_leave_idle():  # under SCHED_IDLE for good, it could starve: the normal policy then
                self.ctx.log.info("cpu_policy_auto_unavailable", reason="no CAP_SYS_NICE, RLIMIT_NICE < 20")
                return
            guard = CpuGuard(self._cpu_policy_changed)
            guard.start()
            self._spawn(guard.run())

    def _cpu_policy_changed(self, policy: str, why: str) -> None:
        self.ctx.log.warning("cpu_policy_changed", policy=policy, reason=why)
        self.ctx.publish("cpu_policy_changed", {"policy": policy, "reason": why})

    def _close(self) -> EnvironmentClosed:
        if self._plan is not None and self._plan.running:
            raise InvalidState("Cannot close the environment: a plan is running")
        if self._foreground_task is not None:
            raise InvalidState("Cannot close the environment: a foreground task is running")
        self.ctx.stop()  # after this reply: the process exits, the queue manager starts a fresh spare
        return EnvironmentClosed()

    def _require_env(self) -> Environment:
        if self._env is None:
            raise InvalidState("The RE Worker environment is not open")
        return self._env

    def _attach(self, re: RunEngine) -> None:
        """Follow a RunEngine's documents and state: its hooks run on its own thread and hand over to the
        actor loop (called on the loop)."""
        loop = asyncio.get_running_loop()
        previous_hook = re.state_hook

        def post(fn: Callable[..., None], *args: Any) -> None:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:
                pass  # the loop is closed: the process is exiting, nobody is left to tell

        def on_state(new: str, old: str) -> None:
            if previous_hook is not None:
                previous_hook(new, old)
            post(self._on_re_state, str(new))

        token = re.subscribe(lambda name, doc: post(self._on_document, name, doc))
        re.state_hook = on_state
        self._re_state = str(re.state)

        def detach() -> None:
            re.unsubscribe(token)
            re.state_hook = previous_hook

        self._detach_re = detach

    def _on_re_state(self, state: str) -> None:
        if state != self._re_state:
            self._re_state = state
            self.ctx.tell(QUEUE_MANAGER, ReStateChanged(re_state=state))

    def _on_document(self, name: str, doc: dict[str, Any]) -> None:
        self._documents.add(name, doc)  # published, and kept by the observation store (databroker's layout)
        if name == "start":
            scan_id = doc.get("scan_id")
            scan_id = scan_id if isinstance(scan_id, int) and not isinstance(scan_id, bool) else None
            self._runs.append(RunInfo(uid=doc["uid"], scan_id=scan_id, is_open=True, exit_status=None))
        elif name == "stop":
            run = next((r for r in self._runs if r.uid == doc.get("run_start")), None)
            if run is None:
                return
            run.is_open, run.exit_status = False, doc.get("exit_status")
        else:
            return
        # after the documents: a run the queue manager learns of is in the store (a worker killed meanwhile
        # leaves it open there, and it is closed as failed); a copy, as the list changes before it is sent
        changed = RunsChanged(run_list=[msgspec.structs.replace(r) for r in self._runs])
        self._documents.then(partial(self.ctx.tell, QUEUE_MANAGER, changed))

    # -- plans -----------------------------------------------------------------------------------------------
    def _execute_plan(self, item: dict[str, Any]) -> WorkerAck:
        env = self._require_env()
        if self._plan is not None:
            state = "running" if self._plan.running else "paused"
            raise InvalidState(f"Cannot start a plan: plan {self._plan.item_uid!r} is {state}")
        if self._foreground_task is not None:
            raise InvalidState("Cannot start a plan: a foreground task is running")
        if str(env.re.state) != "idle":
            raise InvalidState(f"Cannot start a plan: the RunEngine is in {env.re.state!r} state")
        self._plan = _ActivePlan(
            item_uid=str(item.get("item_uid", "")), name=str(item.get("name")), time_start=time.time()
        )
        self._say(f"Starting the plan {_describe(item)} (item {self._plan.item_uid})")
        self._plan.call = self._spawn(self._drive(self._plan, lambda: env.plan_call(item)(), "completed"))
        return WorkerAck(re_state=self._re_state)

    def _control_plan(self, action: str) -> WorkerAck:
        env = self._require_env()
        state, plan = str(env.re.state), self._plan
        if action in ("pause_deferred", "pause_immediate"):
            if plan is None or not plan.running or state != "running":
                raise InvalidState(
                    f"Run Engine can be paused only in 'running' state. Current state: {state!r}"
                )
            # request_pause waits for the RunEngine's loop, which a stuck plan may block: not on this loop.
            pause = run_in_thread(
                partial(env.re.request_pause, defer=action == "pause_deferred"), name="re-pause"
            )
            pause.add_done_callback(self._pause_done)
            return WorkerAck(re_state=state)
        if plan is None or plan.running or state != "paused":
            raise InvalidState(f"Run Engine must be in 'paused' state to continue. The state is {state!r}")
        plan.running = True
        plan.call = self._spawn(self._drive(plan, *_continuation(env.re, action)))
        return WorkerAck(re_state=state)

    async def _stop_for_shutdown(self) -> PlanStopped:
        plan = self._plan
        if plan is None or self._env is None:
            return PlanStopped(result=None)
        plan.silent = True
        re = self._env.re
        if plan.running:
            try:
                await run_in_thread(partial(re.request_pause, defer=False), name="re-pause")
            except Exception as exc:  # the plan ended on its own meanwhile: its result is below
                self.ctx.log.info("shutdown_pause_failed", error=f"{type(exc).__name__}: {exc}")
            if plan.call is not None:
                await asyncio.gather(plan.call, return_exceptions=True)
        if self._plan is not plan:  # it ended before the pause took effect
            return PlanStopped(result=plan.result, item_uid=plan.item_uid)
        plan.running = True
        await self._drive(plan, re.stop, "stopped")
        return PlanStopped(result=plan.result, item_uid=plan.item_uid)

    def _pause_done(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and (exc := future.exception()) is not None:
            # The plan ended or paused on its own between the check and the request; its tell says so.
            self.ctx.log.warning("pause_failed", error=f"{type(exc).__name__}: {exc}")

    async def _drive(self, plan: _ActivePlan, call: Callable[[], Any], exit_status: ExitStatus) -> None:
        """Run a RunEngine call (a new plan, or resume/stop/abort/halt) and tell how the plan came out."""
        env = self._require_env()
        try:
            await run_in_thread(call, name=f"re-plan-{plan.item_uid[-12:]}")
        except Exception as exc:  # the plan boundary: whatever the plan or the RunEngine raised ends the plan
            if str(env.re.state) == "paused":
                plan.running = False
                self._documents.flush()  # as before its end: what the plan did so far is told first
                if not plan.silent:
                    self.ctx.tell(QUEUE_MANAGER, PlanPaused(item_uid=plan.item_uid))
                return
            result = self._plan_result(plan, "failed", msg=f"Plan failed: {exc}", tb=_traceback(exc))
        else:
            result = self._plan_result(plan, exit_status)
        self._plan, plan.result = None, result
        self._say(
            f"The plan {plan.name} (item {plan.item_uid}) ended: {result.exit_status}"
            + (f": {result.msg}" if result.msg else "")
        )
        self._documents.flush()  # the plan's documents reach the store before its end is told
        had_runs, self._runs = bool(self._runs), []  # the run list shows the current plan's runs only
        if not plan.silent:  # (bluesky-queueserver's `re_runs`): the queue manager empties it on PlanEnded
            self.ctx.tell(QUEUE_MANAGER, PlanEnded(item_uid=plan.item_uid, result=result))
        elif had_runs:
            self.ctx.tell(QUEUE_MANAGER, RunsChanged(run_list=[]))

    def _plan_result(
        self, plan: _ActivePlan, exit_status: ExitStatus, *, msg: str = "", tb: str = ""
    ) -> PlanResult:
        return PlanResult(
            exit_status=exit_status,
            run_uids=[r.uid for r in self._runs],
            scan_ids=[r.scan_id for r in self._runs if r.scan_id is not None],
            time_start=plan.time_start,
            time_stop=time.time(),
            msg=msg,
            traceback=tb,
        )

    # -- tasks -----------------------------------------------------------------------------------------------
    def _execute_task(self, msg: ExecuteTask) -> WorkerAck:
        env = self._require_env()
        if not msg.run_in_background:
            if self._plan is not None and self._plan.running:
                raise InvalidState("Cannot start a foreground task: a plan is running")
            if self._foreground_task is not None:
                raise InvalidState(
                    f"Cannot start a foreground task: task {self._foreground_task!r} is running"
                )
            self._foreground_task = msg.task_uid
        self._spawn(self._run_task(env, msg))
        return WorkerAck(re_state=self._re_state)

    async def _run_task(self, env: Environment, msg: ExecuteTask) -> None:
        """Run a function or a script in a thread and tell its result (bluesky-queueserver's task result)."""
        from .environment import describe

        name = "Execute function" if msg.kind == "function" else "Load script"

        def body() -> Any:
            # Functions may use asyncio (ophyd-async): give the thread the RunEngine's loop, as the incumbent.
            asyncio.set_event_loop(env.re.loop)
            if msg.kind == "function":
                return env.call_function(msg.item)
            env.run_script(msg.script, update_re=msg.update_re)
            return describe(env.nspace, env.max_depth) if msg.update_lists else None

        time_start = time.time()
        value: Any = None
        success, error, tb = True, "", ""
        try:
            value = await run_in_thread(body, name=f"re-task-{msg.task_uid[-12:]}")
        except Exception as exc:  # the task boundary: whatever user code raised is the task's failure
            success, error, tb = False, f"Error occurred while executing {name!r}: {exc}", _traceback(exc)
        finally:
            if self._foreground_task == msg.task_uid:
                self._foreground_task = None
        if success and msg.kind == "script":
            self._script_done(env, msg, value)
            value = None
        elif success:
            try:
                msgspec.json.encode(value)
            except (TypeError, OverflowError, msgspec.EncodeError) as exc:
                reason = f"Task result can not be serialized as JSON: {exc}"
                success, error, tb, value = (
                    False,
                    f"Error occurred while executing {name!r}: {reason}",
                    "",
                    None,
                )
        result = {
            "task_uid": msg.task_uid,
            "success": success,
            "msg": error,
            "traceback": tb,
            "return_value": value,
            "time_start": time_start,
            "time_stop": time.time(),
        }
        self.ctx.tell(QUEUE_MANAGER, TaskEnded(task_uid=msg.task_uid, result=result))

    def _script_done(self, env: Environment, msg: ExecuteTask, descriptions: Descriptions | None) -> None:
        """Pick up what a script changed: the `RE` (update_re) and the descriptions (update_lists)."""
        from bluesky import RunEngine

        from .environment import adopt_run_engine

        new_re = env.nspace.get("RE")
        if msg.update_re and isinstance(new_re, RunEngine) and new_re is not env.re:
            if self._detach_re is not None:
                self._detach_re()
            env.re = adopt_run_engine(new_re)
            self._attach(env.re)
            self._on_re_state(str(env.re.state))
        if descriptions is not None:
            changed = not descriptions.same_lists(env.descriptions)
            env.descriptions = descriptions  # the objects may be new even when the descriptions are the same
            if changed:
                self.ctx.tell(
                    QUEUE_MANAGER,
                    ExistingChanged(
                        existing_plans=descriptions.existing_plans,
                        existing_devices=descriptions.existing_devices,
                    ),
                )

    def _say(self, line: str) -> None:
        """A line on QS_Console, as the incumbent's manager logs plan starts and ends there."""
        if self._console is not None:
            self._console.add(f"{line}\n")

    # -- jobs ------------------------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        job = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(job)
        job.add_done_callback(self._job_done)
        return job

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        if not job.cancelled() and (exc := job.exception()) is not None:
            # A bug here would leave the queue manager waiting for a tell that never comes: end the
            # environment instead, so that it sees the worker exit.
            self.ctx.log.error("worker_job_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            self.ctx.stop()

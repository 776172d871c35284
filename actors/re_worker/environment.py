"""The worker environment: the namespace built by the startup code, its RunEngine, and the descriptions of
its plans and devices. Everything here blocks (user code runs), so the actor calls it from worker threads.

The work itself is bluesky-queueserver's (`profile_ops`), so profiles, plan parameters and descriptions
behave as they do under the incumbent.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluesky import RunEngine
from bluesky.utils import DuringTask, SigintHandler
from bluesky_queueserver.manager import profile_ops
from bluesky_queueserver.manager.profile_tools import global_user_namespace, set_re_worker_active

from stationd.protocol.errors import InvalidParams
from stationd.protocol.worker import OpenEnvironment

__all__ = [
    "SIM_PROFILE",
    "Descriptions",
    "Environment",
    "PlanPreparationError",
    "adopt_run_engine",
    "describe",
    "open_environment",
]

SIM_PROFILE = "stationd.actors.re_worker.sim_profile"
"""Startup module used when `OpenEnvironment` names no startup code."""

_ANY_GROUP = "_worker"
"""User group under which plans are prepared: permissions were checked by the queue manager at enqueue."""


class PlanPreparationError(Exception):
    """The plan item could not be turned into a plan (unknown plan, invalid parameters or metadata)."""


@dataclass(frozen=True, slots=True)
class Descriptions:
    """Plan and device descriptions (bluesky-queueserver's format) and the objects they describe."""

    existing_plans: dict[str, Any]
    existing_devices: dict[str, Any]
    plans_in_nspace: dict[str, Any]
    devices_in_nspace: dict[str, Any]

    def same_lists(self, other: Descriptions) -> bool:
        return profile_ops.compare_existing_plans_and_devices(
            existing_plans=self.existing_plans,
            existing_devices=self.existing_devices,
            existing_plans_ref=other.existing_plans,
            existing_devices_ref=other.existing_devices,
        )


def describe(nspace: dict[str, Any], max_depth: int) -> Descriptions:
    plans, devices, plans_in_nspace, devices_in_nspace = profile_ops.existing_plans_and_devices_from_nspace(
        nspace=nspace, max_depth=max_depth
    )
    return Descriptions(plans, devices, plans_in_nspace, devices_in_nspace)


@dataclass(slots=True)
class Environment:
    """One opened environment (one per worker process)."""

    nspace: dict[str, Any]
    re: RunEngine
    descriptions: Descriptions
    script_root: str | None
    """Folder for local imports of uploaded scripts (the startup folder or the script's folder)."""
    max_depth: int

    def plan_call(self, item: dict[str, Any]) -> Callable[[], Any]:
        """The call that runs the plan item on the RunEngine: names in args and kwargs become objects of the
        namespace and the item's `meta` is merged into the run metadata, as bluesky-queueserver's worker does.

        Raises `PlanPreparationError` with bluesky-queueserver's message.
        """
        group = item.get("user_group") or _ANY_GROUP
        try:
            prepared = profile_ops.prepare_plan(
                {**item, "user_group": group},
                plans_in_nspace=self.descriptions.plans_in_nspace,
                devices_in_nspace=self.descriptions.devices_in_nspace,
                allowed_plans={group: self.descriptions.existing_plans},
                allowed_devices={group: self.descriptions.existing_devices},
                nspace=self.nspace,
            )
        except Exception as exc:  # profile_ops reports every problem as some exception with a usable text
            raise PlanPreparationError(
                f"Error occurred while processing plan parameters or starting the plan: {exc}"
            ) from exc
        func, args, kwargs, meta = (
            prepared["callable"],
            prepared["args"],
            prepared["kwargs"],
            prepared["meta"],
        )
        re = self.re
        return lambda: re(func(*args, **kwargs), **meta)

    def call_function(self, item: dict[str, Any]) -> Any:
        """Call a function of the namespace as a `function` item names it (raises what it raises)."""
        prepared = profile_ops.prepare_function(
            func_info={**item, "user_group": item.get("user_group") or _ANY_GROUP}, nspace=self.nspace
        )
        return prepared["callable"](*prepared["args"], **prepared["kwargs"])

    def run_script(self, script: str, *, update_re: bool) -> None:
        """Execute a script in the namespace (raises `ScriptLoadingError` with its traceback)."""
        profile_ops.load_script_into_existing_nspace(
            script=script,
            nspace=self.nspace,
            # without a folder there are no local imports, and profile_ops would log an error saying so
            enable_local_imports=self.script_root is not None,
            script_root_path=self.script_root,
            update_re=update_re,
        )


def adopt_run_engine(re: RunEngine) -> RunEngine:
    """Make a RunEngine created by user code fit to be driven from worker threads."""
    # Its SIGINT handler cannot be installed outside the main thread (and worker processes ignore SIGINT:
    # the daemon stops them).
    re.context_managers = [cm for cm in re.context_managers if cm is not SigintHandler]
    return re


def _run_engine(nspace: dict[str, Any], md: dict[str, Any]) -> RunEngine:
    """The profile's `RE`, or a new RunEngine that the profile's later code and scripts can see as `RE`."""
    re = nspace.get("RE")
    if isinstance(re, RunEngine):
        re.md.update(md)
        return adopt_run_engine(re)
    # DuringTask: plain waiting; the default one would drive a Qt loop, which only works on the main thread.
    re = RunEngine(dict(md), context_managers=[], call_returns_result=True, during_task=DuringTask())
    nspace["RE"] = re
    return re


def open_environment(msg: OpenEnvironment) -> Environment:
    """Run the startup code in a fresh namespace, set up the RunEngine and describe plans and devices.

    Raises `InvalidParams` naming the cause (the traceback is printed, so it reaches the console).
    """
    given = [s for s in (msg.startup_dir, msg.startup_script, msg.startup_module) if s]
    if len(given) > 1:
        raise InvalidParams("Give at most one of startup_dir, startup_script and startup_module")
    startup_dir = os.path.abspath(os.path.expanduser(msg.startup_dir)) if msg.startup_dir else None
    script = os.path.abspath(os.path.expanduser(msg.startup_script)) if msg.startup_script else None
    module = msg.startup_module or (None if given else SIM_PROFILE)
    if startup_dir is not None and not Path(startup_dir).is_dir():
        raise InvalidParams(f"Startup directory {startup_dir!r} does not exist")
    if script is not None and not Path(script).is_file():
        raise InvalidParams(f"Startup script {script!r} does not exist")

    set_re_worker_active()  # profiles may ask `is_re_worker_active()`
    try:
        nspace = profile_ops.load_worker_startup_code(
            startup_dir=startup_dir, startup_module_name=module, startup_script_path=script, nspace={}
        )
        global_user_namespace.set_user_namespace(user_ns=nspace, use_ipython=False)
        re = _run_engine(nspace, msg.re_metadata)
        descriptions = describe(nspace, msg.device_max_depth)
    except Exception as exc:  # user code: any exception means the startup code is broken
        tb = getattr(exc, "tb", None) or "".join(traceback.format_exception(exc))
        print(f"Failed to open the environment:\n{tb}", file=sys.stderr, flush=True)
        raise InvalidParams(f"Failed to open the environment: {exc}") from exc
    root = startup_dir or (os.path.dirname(script) if script else None)
    return Environment(nspace, re, descriptions, root, msg.device_max_depth)

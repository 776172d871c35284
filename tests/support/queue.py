"""Queue manager tests: a real daemon driven with bluesky-queueserver-api, and waits on the status stream."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from bluesky_queueserver_api.zmq import REManagerAPI

from stationd.protocol.pubsub import INFO

from .daemon import DaemonProcess

COUNT = {"item_type": "plan", "name": "count", "args": [["det1"]], "kwargs": {"num": 1}}


def plan(name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"item_type": "plan", "name": name, "args": list(args), "kwargs": kwargs}


def long_count(seconds: float = 30.0) -> dict[str, Any]:
    """A plan that runs about `seconds` (interruptible at every point: 20 readings per second)."""
    return plan("count", ["det1"], num=int(seconds * 20), delay=0.05)


def api(d: DaemonProcess) -> REManagerAPI:
    """bluesky-queueserver-api's client, unchanged, pointed at the daemon."""
    return REManagerAPI(
        zmq_control_addr=d.control_addr,
        zmq_info_addr=d.info_addr,
        timeout_recv=5.0,
        status_expiration_period=0.02,  # its wait_for_* poll `status`; the defaults poll once a second
        status_polling_period=0.02,
    )


def wait_status(
    d: DaemonProcess, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
) -> dict[str, Any]:
    """The first status (from `status`, then from each QS_Info publication) for which `predicate` holds."""
    with d.subscriber(INFO) as sub:
        with d.client() as client:
            status = client.request("status", {})
        deadline = time.monotonic() + timeout
        while not predicate(status):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"status never satisfied the condition; last: {status}")
            status = sub.recv(timeout=remaining).payload["msg"]["status"]
        return status


def idle(status: dict[str, Any]) -> bool:
    return status["manager_state"] == "idle"


def env_open(status: dict[str, Any]) -> bool:
    return status["manager_state"] == "idle" and status["worker_environment_exists"]


def worker_pid(d: DaemonProcess) -> int:
    with d.client() as client:
        actors = client.request("status", {})["actors"]
    return next(a["pid"] for a in actors if a["name"] == "re_worker")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

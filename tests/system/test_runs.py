"""A plan's documents in a real daemon: the RunEngine worker tells them to the observation store, which
stores them, and the front door reads the run back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import DaemonProcess, start_daemon
from tests.support.queue import env_open, idle, plan, wait_status

OPEN_TIMEOUT = 30.0


@pytest.fixture
def station(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = start_daemon(tmp_path)
    yield d
    d.stop()


def test_a_plans_run_is_stored_with_the_uid_the_history_reports(station: DaemonProcess) -> None:
    with station.client() as client:
        client.request("environment_open")
    wait_status(station, env_open, timeout=OPEN_TIMEOUT)
    with station.client() as client:
        client.request(
            "queue_item_add",
            {"item": plan("count", ["det1", "det2"], num=3), "user": "u", "user_group": "primary"},
        )
        client.request("queue_start")
    wait_status(station, lambda s: idle(s) and s["items_in_queue"] == 0 and s["items_in_history"] == 1)
    with station.client() as client:
        (item,) = client.request("history_get")["items"]
        assert item["result"]["exit_status"] == "completed"
        (run_uid,) = item["result"]["run_uids"]
        # the worker told the documents before the plan's end, so the store has them by now
        run = client.request("runs_get", {"uid": run_uid})
        found = client.request("runs_query", {"plan_name": "count", "detectors__contains": ["det2"]})

    start, stop, (descriptor,) = run["start"], run["stop"], run["descriptors"]
    assert start["uid"] == run_uid and start["plan_name"] == "count" and start["num_points"] == 3
    assert start["detectors"] == ["det1", "det2"]
    assert descriptor["run_start"] == run_uid and descriptor["name"] == "primary"
    assert {"det1", "det2"} <= set(descriptor["data_keys"])
    assert [e["seq_num"] for e in run["events"]] == [1, 2, 3] and run["events_meta"]["count"] == 3
    assert all(
        e["descriptor"] == descriptor["uid"] and set(e["data"]) == {"det1", "det2"} for e in run["events"]
    )
    assert stop is not None
    assert stop["run_start"] == run_uid and stop["exit_status"] == "success"
    assert stop["num_events"] == {"primary": 3}
    assert [s["uid"] for s in found["items"]] == [run_uid] and found["meta"]["count"] == 1

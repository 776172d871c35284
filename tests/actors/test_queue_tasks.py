"""Task results as bluesky-queueserver keeps them: running, completed for 120 s, then not found."""

from __future__ import annotations

from stationd.actors.queue_manager.tasks import TaskResults


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_task_is_running_then_completed_then_forgotten_after_the_retention() -> None:
    clock = Clock()
    tasks = TaskResults(clock=clock)
    tasks.started("t1", run_in_background=True)
    assert tasks.status("t1") == "running" and tasks.background_count == 1
    assert tasks.result("t1") == (
        "running",
        {"task_uid": "t1", "time_start": 1000.0, "run_in_background": True},
    )
    clock.now += 1
    assert tasks.completed("t1", {"success": True, "return_value": 5})
    assert tasks.result("t1") == ("completed", {"success": True, "return_value": 5, "task_uid": "t1"})
    assert tasks.background_count == 0
    clock.now += 119.5
    assert tasks.status("t1") == "completed"
    clock.now += 1
    assert tasks.result("t1") == ("not_found", {})


def test_a_report_of_an_unknown_task_is_ignored() -> None:
    tasks = TaskResults()
    assert not tasks.completed("never-started", {"success": True})
    assert tasks.status("never-started") == "not_found"


def test_running_tasks_of_a_dead_worker_complete_as_failed() -> None:
    clock = Clock()
    tasks = TaskResults(clock=clock)
    tasks.started("a", run_in_background=False)
    tasks.started("b", run_in_background=True)
    clock.now += 2
    assert tasks.fail_running("the worker died") == ["a", "b"]
    status, result = tasks.result("b")
    assert status == "completed"
    assert (result["success"], result["msg"], result["time_start"], result["time_stop"]) == (
        False,
        "the worker died",
        1000.0,
        1002.0,
    )
    assert tasks.fail_running("again") == []

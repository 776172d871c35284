"""The worker's "auto" CPU policy: the guard's decisions over given CPU figures, and its figures read for
real from the kernel. (The switch under real CPU contention is in test_re_worker.py.)"""

from __future__ import annotations

import threading
import time

from stationd.actors.re_worker.cpu_guard import HOLD_S, CpuGuard, process_cpu_ns

MS = 1_000_000


class Figures:
    """The guard's inputs, set by the test: cumulative (run, wait) ns, and the clock."""

    def __init__(self) -> None:
        self.run = self.wait = 0
        self.now = 0.0
        self.applied: list[str] = []
        self.changes: list[tuple[str, str]] = []

    def period(self, ran_ms: float, waited_ms: float, seconds: float = 0.5) -> None:
        self.run += int(ran_ms * MS)
        self.wait += int(waited_ms * MS)
        self.now += seconds

    def guard(self) -> CpuGuard:
        guard = CpuGuard(
            lambda policy, why: self.changes.append((policy, why)),
            sample=lambda: (self.run, self.wait),
            apply=self.applied.append,
            clock=lambda: self.now,
        )
        guard.start()
        return guard


def test_a_worker_that_gets_the_cpu_it_wants_stays_under_sched_idle() -> None:
    f = Figures()
    guard = f.guard()
    for ran, waited in [(400, 100), (50, 150), (0, 0), (300, 190)]:  # waited at most 3/4 of the time
        f.period(ran, waited)
        guard.check()
    assert (guard.policy, f.applied, f.changes) == ("idle", ["idle"], [])


def test_short_waits_are_not_starvation_whatever_their_share() -> None:
    f = Figures()
    guard = f.guard()
    for _ in range(4):
        f.period(ran_ms=1, waited_ms=150)  # a mostly sleeping worker that waited 150 ms for its 1 ms
        guard.check()
    assert guard.policy == "idle" and f.changes == []


def test_a_burst_of_other_work_is_not_starvation() -> None:
    f = Figures()
    guard = f.guard()
    for ran, waited in [(10, 450), (300, 20), (10, 450), (300, 20)]:  # starved one period at a time
        f.period(ran, waited)
        guard.check()
    assert guard.policy == "idle" and f.changes == []


def test_a_starved_worker_goes_under_the_normal_policy_for_the_hold_then_back_to_idle() -> None:
    f = Figures()
    guard = f.guard()
    f.period(ran_ms=10, waited_ms=480)
    guard.check()
    assert guard.policy == "idle"  # one period is not enough
    f.period(ran_ms=20, waited_ms=450)
    guard.check()
    assert guard.policy == "normal" and f.applied == ["idle", "normal"]
    assert f.changes == [("normal", "waited 450 ms for a CPU while running 20 ms")]
    f.period(ran_ms=1, waited_ms=400, seconds=HOLD_S - 1)  # still within the hold, whatever it sees
    guard.check()
    assert guard.policy == "normal"
    f.period(ran_ms=400, waited_ms=10, seconds=1)
    guard.check()
    assert guard.policy == "idle" and f.applied == ["idle", "normal", "idle"]
    assert f.changes[-1] == ("idle", f"after {HOLD_S:g} s under the normal policy")


def test_the_figures_come_from_the_kernel_and_cover_every_thread_of_the_process() -> None:
    ready, stop = threading.Event(), threading.Event()

    def burn() -> None:
        t = time.thread_time_ns()
        while time.thread_time_ns() - t < 20 * MS:
            pass
        ready.set()
        stop.wait()

    run0, wait0 = process_cpu_ns()
    thread = threading.Thread(target=burn)
    thread.start()
    ready.wait()
    try:
        run1, wait1 = process_cpu_ns()
        assert run1 - run0 >= 20 * MS and wait1 >= wait0  # the other thread's CPU is counted
    finally:
        stop.set()
        thread.join()

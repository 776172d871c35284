"""The worker's "auto" CPU policy: Linux SCHED_IDLE while that costs the worker little CPU, as any process for
a while when other work keeps the cores busy.

Under SCHED_IDLE the worker gives way at once to the daemon and to every client, so `status` and the other
requests stay fast while plans run (on a 2-core machine with 1 s plans: `status` p99 0.7-0.95 ms instead of
1.2-2.2 ms). Its risk is starvation: while other processes keep every core busy, an idle-policy thread gets
almost no CPU. The guard watches how long the worker's threads wait for a CPU against how long they run
(`/proc/self/task/*/schedstat`) and puts them back under the normal policy when they are starved.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

from .threads import set_cpu_policy

__all__ = ["CpuGuard", "can_leave_idle", "process_cpu_ns"]

PERIOD_S = 0.5
HOLD_S = 30.0
"""How long the worker stays under the normal policy once it was found starved."""
STARVED = 0.8
"""Share of the time the worker's threads wanted a CPU that they spent waiting for one, above which they are
starved (they got less than a fifth of what they asked for). Beside the daemon running 130 plans/s on 2
cores, the idle-policy worker waits 0.4-0.55 of it."""
MIN_WAIT_S = 0.2
"""Waits shorter than this in a period are not starvation, whatever the share (a mostly sleeping worker)."""
STARVED_PERIODS = 2
"""Periods in a row the worker must be starved: a burst of other work (a CLI starting, ~0.3 s of CPU) is
not worth leaving SCHED_IDLE for."""
_CAP_SYS_NICE = 23


def process_cpu_ns() -> tuple[int, int]:
    """(ns on a CPU, ns waiting for one) of every thread of this process, from the kernel's schedstat."""
    run = wait = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue  # the thread ended meanwhile
        run += int(fields[0])
        wait += int(fields[1])
    return run, wait


def can_leave_idle() -> bool:
    """Whether this process may put its threads back from SCHED_IDLE under the normal policy: it needs
    CAP_SYS_NICE or an RLIMIT_NICE that allows nice 0 (systemd: `LimitNICE=+0`); without, a thread under
    SCHED_IDLE stays there."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NICE)
    if soft == resource.RLIM_INFINITY or soft >= 20:
        return True
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> _CAP_SYS_NICE & 1)
    return os.geteuid() == 0


class CpuGuard:
    """Runs the worker under SCHED_IDLE and switches it to the normal policy for `hold` seconds whenever
    `STARVED_PERIODS` periods in a row find it starved (see `STARVED`). `on_change(policy, why)` reports each
    switch."""

    def __init__(
        self,
        on_change: Callable[[str, str], None],
        *,
        period: float = PERIOD_S,
        hold: float = HOLD_S,
        sample: Callable[[], tuple[int, int]] = process_cpu_ns,
        apply: Callable[[str], None] = set_cpu_policy,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_change = on_change
        self._period, self._hold = period, hold
        self._sample, self._apply, self._clock = sample, apply, clock
        self.policy = "idle"
        self._starved = 0
        """Periods in a row found starved."""
        self._normal_until = 0.0
        self._last = sample()

    def start(self) -> None:
        """Put the process under SCHED_IDLE (the threads started later inherit it)."""
        self._apply("idle")
        self._last = self._sample()

    async def run(self) -> None:
        """Check once per period until cancelled, or until a switch is refused (the kernel decides who may
        leave SCHED_IDLE; `can_leave_idle` is checked first, so this is not expected)."""
        while True:
            await asyncio.sleep(self._period)
            try:
                self.check()
            except PermissionError as exc:
                self._on_change(self.policy, f"the policy cannot be switched: {exc}")
                return

    def check(self) -> None:
        """One period's look: switch to the normal policy when starved long enough, back to idle after the
        hold."""
        run, wait = self._sample()
        ran, waited = run - self._last[0], wait - self._last[1]
        self._last = (run, wait)
        if self.policy == "idle":
            starved = waited >= MIN_WAIT_S * 1e9 and waited > STARVED * (ran + waited)
            self._starved = self._starved + 1 if starved else 0
            if self._starved >= STARVED_PERIODS:
                why = f"waited {waited / 1e6:.0f} ms for a CPU while running {ran / 1e6:.0f} ms"
                self._switch("normal", why)
                self._starved = 0
                self._normal_until = self._clock() + self._hold
        elif self._clock() >= self._normal_until:
            self._switch("idle", f"after {self._hold:g} s under the normal policy")

    def _switch(self, policy: str, why: str) -> None:
        self._apply(policy)
        self.policy = policy
        self._on_change(policy, why)

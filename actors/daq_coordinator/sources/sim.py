"""A simulated detector (primary) or instrument (metadata) source, addressed as `sim://<device>?<params>`.

Query parameters (all optional):

- `rate`: rows per second while acquiring (default 10, at most 100 000);
- `duration`: seconds after start at which the recording ends by itself (default: never);
- `fail=<step>`: that step raises `SourceFailed("simulated failure on <step>")`;
- `hang=<step>`: that step never answers (until cancelled), so the coordinator's timeout fires.

`<step>` is `start`, `stop`, `abort` or `wait` (the end-of-recording wait).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    import numpy as np

from stationd.protocol.daq import EsoKeyword, FitsKeyword, SourceResult, ValueKeyword
from stationd.protocol.errors import InvalidParams

from .base import Source, SourceAddress, SourceFailed

__all__ = ["MAX_RATE", "MAX_ROWS", "SimConfig", "SimSource", "SimStep", "parse_sim_uri", "sim_table"]

SimStep = Literal["start", "stop", "abort", "wait"]
DEFAULT_RATE = 10.0
MAX_RATE = 100_000.0
MAX_ROWS = 10_000_000
"""The simulated buffer: rows past this many are dropped (about 240 MB of table)."""
_THREAD_ROWS = 100_000
"""Tables larger than this are built in a worker thread, so the event loop never stalls on numpy."""


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What a `sim://` URI asks for."""

    device: str
    rate: float = DEFAULT_RATE
    duration: float | None = None
    fail: SimStep | None = None
    hang: SimStep | None = None


def _number(uri: str, key: str, text: str, *, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InvalidParams(f"{uri}: {key}={text!r} is not a number") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise InvalidParams(f"{uri}: {key} must be a finite number {'> 0' if positive else '>= 0'}")
    return value


def _step(uri: str, key: str, text: str) -> SimStep:
    steps: tuple[SimStep, ...] = get_args(SimStep)
    if text not in steps:
        raise InvalidParams(f"{uri}: {key}={text!r} is not one of {', '.join(steps)}")
    return text  # type: ignore[return-value]  # checked against the Literal's values above


def parse_sim_uri(uri: str) -> SimConfig:
    """Read a `sim://` URI; raise `InvalidParams` naming the URI for anything unknown or out of range."""
    parts = urlsplit(uri)
    if parts.scheme != "sim":
        raise InvalidParams(f"{uri}: not a sim:// URI")
    if parts.path not in ("", "/") or parts.fragment:
        raise InvalidParams(f"{uri}: a sim:// URI is sim://<device>?<params>, without a path")
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise InvalidParams(f"{uri}: bad query ({exc})") from exc
    seen: set[str] = set()
    fields: dict[str, object] = {}
    for key, text in pairs:
        if key in seen:
            raise InvalidParams(f"{uri}: {key} given twice")
        seen.add(key)
        match key:
            case "rate":
                rate = _number(uri, key, text, positive=True)
                if rate > MAX_RATE:
                    raise InvalidParams(f"{uri}: rate must be at most {MAX_RATE:g} Hz")
                fields["rate"] = rate
            case "duration":
                fields["duration"] = _number(uri, key, text, positive=False)
            case "fail" | "hang":
                fields[key] = _step(uri, key, text)
            case _:
                raise InvalidParams(f"{uri}: unknown parameter {key!r} (known: rate, duration, fail, hang)")
    return SimConfig(device=parts.netloc, **fields)  # type: ignore[arg-type]  # typed by the match above


def sim_table(rows: int, rate: float, t0: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """`rows` rows sampled at `rate` from epoch time `t0`: TIME, COUNTER and VALUE (a noisy 0.5 Hz sine)."""
    import numpy as np  # here, not at the top: the daemon imports this module at start, numpy takes 0.1 s

    counter = np.arange(rows, dtype=np.int64)
    offset = counter / rate
    value = np.sin(np.pi * offset) + rng.normal(0.0, 0.05, rows)
    return {"TIME": t0 + offset, "COUNTER": counter, "VALUE": value}


class SimSource(Source):
    """A simulated source with realistic timing: rows accumulate at `rate` while acquiring and are built in
    one vectorised step at stop (no task per row); a metadata sim returns keywords only."""

    def __init__(self, address: SourceAddress, daq_id: str) -> None:
        super().__init__(address, daq_id)
        self.config = parse_sim_uri(address.uri)
        import numpy as np  # at the first DAQ, not when the daemon starts

        self._rng = np.random.default_rng()
        self._t0_epoch = 0.0
        self._t0_mono: float | None = None
        """Monotonic start time; None until started."""
        self._finished = asyncio.Event()
        """Set by stop and abort: the recording is over."""
        self._aborted = False

    @property
    def device(self) -> str:
        return self.config.device or self.address.name

    async def _inject(self, step: SimStep) -> None:
        if self.config.hang == step:
            await asyncio.Event().wait()  # never set: only the caller's cancellation ends it
        if self.config.fail == step:
            raise SourceFailed(f"simulated failure on {step}")

    def _started(self, what: str) -> float:
        """The monotonic start time, or `SourceFailed` when the recording never started."""
        if self._t0_mono is None:
            raise SourceFailed(f"cannot {what}: {self.device} is not recording for DAQ {self.daq_id!r}")
        return self._t0_mono

    def _elapsed(self, t0: float) -> float:
        """Seconds recorded since `t0`, up to `duration` (the simulated device stops by itself there)."""
        elapsed = time.monotonic() - t0
        return elapsed if self.config.duration is None else min(elapsed, self.config.duration)

    async def start(self) -> None:
        await self._inject("start")
        if self._aborted:
            raise SourceFailed(f"cannot start: DAQ {self.daq_id!r} was aborted")
        if self._t0_mono is not None:
            raise SourceFailed(f"{self.device} already recording for DAQ {self.daq_id!r}")
        self._t0_epoch, self._t0_mono = time.time(), time.monotonic()

    async def stop(self) -> SourceResult:
        await self._inject("stop")
        t0 = self._started("stop")
        if self._finished.is_set():
            state = "aborted" if self._aborted else "stopped"
            raise SourceFailed(f"cannot stop: the recording of DAQ {self.daq_id!r} was already {state}")
        elapsed = self._elapsed(t0)
        if self.address.kind == "metadata":
            self._finished.set()
            return SourceResult(keywords=self._metadata_keywords(elapsed))
        rows = min(math.floor(elapsed * self.config.rate), MAX_ROWS)
        # a generator of its own: a cancelled stop's thread may still be drawing from the previous one
        args = (rows, self.config.rate, self._t0_epoch, self._rng.spawn(1)[0])
        table = await asyncio.to_thread(sim_table, *args) if rows > _THREAD_ROWS else sim_table(*args)
        # set only once the table exists: a stop cancelled while building leaves the recording stoppable
        self._finished.set()
        return SourceResult(keywords=self._primary_keywords(rows, elapsed), columns=table)

    def _primary_keywords(self, rows: int, elapsed: float) -> list[FitsKeyword]:
        return [
            ValueKeyword("EXPTIME", round(elapsed, 6), "[s] time recorded"),
            EsoKeyword("DET SIM NAME", self.device, "simulated detector"),
            EsoKeyword("DET SIM RATE", self.config.rate, "[Hz] row rate"),
            EsoKeyword("DET SIM ROWS", rows, "rows recorded"),
        ]

    def _metadata_keywords(self, elapsed: float) -> list[FitsKeyword]:
        reading = math.sin(math.pi * elapsed) + float(self._rng.normal(0.0, 0.05))
        return [
            EsoKeyword("INS SIM NAME", self.device, "simulated instrument"),
            EsoKeyword("INS SIM VALUE", round(reading, 6), "reading at stop"),
        ]

    async def abort(self) -> None:
        """Discard the recording; aborting a source that never started or already ended does nothing."""
        await self._inject("abort")
        self._aborted = self._aborted or not self._finished.is_set()
        self._finished.set()

    async def wait_end(self, timeout: float) -> bool:
        """Return True once stopped, aborted or `duration` after start, False when `timeout` passes first."""
        await self._inject("wait")
        t0 = self._started("wait")
        ends_in = math.inf
        if self.config.duration is not None:
            ends_in = max(0.0, self.config.duration - (time.monotonic() - t0))
        try:
            async with asyncio.timeout(min(timeout, ends_in)):
                await self._finished.wait()
        except TimeoutError:
            # the loop may wake a timer up to its clock resolution early: trust the deadline chosen, not
            # a second reading of the clock
            return ends_in <= timeout
        return True

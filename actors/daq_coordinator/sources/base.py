"""The one small protocol through which the DAQ coordinator drives every source, whatever its transport."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from stationd.protocol.daq import SourceKind, SourceResult

__all__ = ["Source", "SourceAddress", "SourceFailed"]


class SourceFailed(Exception):
    """A source refused or failed a request; the message says why, in the source's words."""


@dataclass(frozen=True, slots=True)
class SourceAddress:
    """`name@uri` as OCM writes sources, with the kind the DAQ uses it as."""

    name: str
    uri: str
    kind: SourceKind


class Source(ABC):
    """One source of one DAQ. Every method may raise `SourceFailed`; none applies a timeout itself: the
    coordinator wraps each call in its per-request timeout and cancels it when the time is up, so every
    method must be cancellable (await, never block the loop)."""

    def __init__(self, address: SourceAddress, daq_id: str) -> None:
        self.address = address
        self.daq_id = daq_id

    @abstractmethod
    async def start(self) -> None:
        """Start recording for this DAQ."""

    @abstractmethod
    async def stop(self) -> SourceResult:
        """Stop recording and return the keywords and (primary sources) the table of recorded rows."""

    @abstractmethod
    async def abort(self) -> None:
        """Stop recording and discard the data."""

    @abstractmethod
    async def wait_end(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the recording to end by itself; True when it has ended."""

    async def close(self) -> None:
        """Release what the source holds (sockets); called once when the DAQ is done with it."""

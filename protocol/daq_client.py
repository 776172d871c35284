"""`DaqClient` and `AsyncDaqClient`: ESO OCM's `daqif.OcmDaqControl` commands over stationd, typed.

with DaqClient("tcp://127.0.0.1:60615") as daq:
    reply = daq.start_daq(prim_sources="cam@sim://cam?rate=100", properties={"keywords": [...]})
    daq.stop_daq(reply.id)
    done = daq.await_daq_state(reply.id, DaqState.COMPLETED, DaqSubState.COMPLETED, timeout=30)
    done.status.result          # path of the FITS data product

A failed command raises the typed `StationError` (`DaqFailed` for OCM's `DaqException`) whose `id` names the
DAQ; an await that times out is not an error: `timeout` is true in its reply.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import msgspec

from .client import AsyncClient, Client
from .daq import AwaitDaqReply, DaqReply, DaqState, DaqStatus, DaqSubState, FitsKeyword

__all__ = ["AsyncDaqClient", "DaqClient"]

RReply = TypeVar("RReply")
RAwait = TypeVar("RAwait")
RStatus = TypeVar("RStatus")
RList = TypeVar("RList")
T = TypeVar("T")

Keywords = str | list[FitsKeyword] | list[dict[str, Any]]
"""OCM's keyword list: JSON text, or the objects themselves."""


def _plain(value: Any) -> Any:
    return msgspec.to_builtins(value)


class _DaqApi(Generic[RReply, RAwait, RStatus, RList]):
    """The commands, shared by both clients; each returns the typed reply (or an awaitable of it)."""

    _call: Callable[..., Any]

    def start_daq(
        self,
        id: str = "",
        *,
        prim_sources: str = "",
        meta_sources: str = "",
        file_prefix: str = "",
        properties: str | dict[str, Any] | None = None,
    ) -> RReply:
        """Create and start a DAQ (`name@uri` sources, space-separated); returns once it is acquiring."""
        params = {
            "id": id,
            "prim_sources": prim_sources,
            "meta_sources": meta_sources,
            "file_prefix": file_prefix,
        }
        if properties is not None:
            params["properties"] = _plain(properties)
        return self._call("daq_start", params, DaqReply)

    def stop_daq(self, id: str) -> RReply:
        """Stop and keep the data; `error` true when some sources failed (the DAQ then stays Stopping)."""
        return self._call("daq_stop", {"id": id}, DaqReply)

    def force_stop_daq(self, id: str) -> RReply:
        """Stop, marking the DAQ stopped even when some sources failed."""
        return self._call("daq_force_stop", {"id": id}, DaqReply)

    def abort_daq(self, id: str) -> RReply:
        """Abort and discard the data (fails, leaving the DAQ Aborting, when a source fails)."""
        return self._call("daq_abort", {"id": id}, DaqReply)

    def force_abort_daq(self, id: str) -> RReply:
        """Abort, marking the DAQ aborted even when some sources failed."""
        return self._call("daq_force_abort", {"id": id}, DaqReply)

    def update_keywords(self, id: str, keywords: Keywords) -> RReply:
        """Add or replace user keywords (refused from NotScheduled on)."""
        return self._call("daq_update_keywords", {"id": id, "keywords": _plain(keywords)}, DaqReply)

    def await_daq_state(
        self, id: str, state: DaqState | str, substate: DaqSubState | str, timeout: float
    ) -> RAwait:
        """Wait until the DAQ reaches `state`/`substate` or can no longer reach it, or `timeout` passes."""
        params = {"id": id, "state": str(state), "substate": str(substate), "timeout": timeout}
        return self._call("daq_await_state", params, AwaitDaqReply, extra_wait=timeout)

    def get_daq_status(self, id: str) -> RStatus:
        """The status of one DAQ, active or finished."""
        return self._call("daq_status", {"id": id}, DaqStatus, field="status")

    def get_active_list(self) -> RList:
        """The DAQs not in StateCompleted."""
        return self._call("daq_active_list", {}, list[DaqStatus], field="daqs")


class DaqClient(_DaqApi[DaqReply, AwaitDaqReply, DaqStatus, list[DaqStatus]]):
    """Synchronous DAQ client."""

    def __init__(
        self, addr: str | None = None, *, client: Client | None = None, **client_options: Any
    ) -> None:
        self.client = client or Client(addr, **client_options)
        self._owned = client is None

    def _call(
        self,
        method: str,
        params: dict[str, Any],
        type_: Any,
        *,
        field: str | None = None,
        extra_wait: float = 0.0,
    ) -> Any:
        reply = self.client.request(method, params, timeout=self.client.timeout + extra_wait)
        return msgspec.convert(reply[field] if field else reply, type_)

    def close(self) -> None:
        if self._owned:
            self.client.close()

    def __enter__(self) -> DaqClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncDaqClient(
    _DaqApi[Awaitable[DaqReply], Awaitable[AwaitDaqReply], Awaitable[DaqStatus], Awaitable[list[DaqStatus]]]
):
    """asyncio DAQ client: many commands and awaits may be in flight at once."""

    def __init__(
        self, addr: str | None = None, *, client: AsyncClient | None = None, **client_options: Any
    ) -> None:
        self.client = client or AsyncClient(addr, **client_options)
        self._owned = client is None

    async def _call(
        self,
        method: str,
        params: dict[str, Any],
        type_: Any,
        *,
        field: str | None = None,
        extra_wait: float = 0.0,
    ) -> Any:
        reply = await self.client.request(method, params, timeout=self.client.timeout + extra_wait)
        return msgspec.convert(reply[field] if field else reply, type_)

    async def close(self) -> None:
        if self._owned:
            await self.client.close()

    async def __aenter__(self) -> AsyncDaqClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

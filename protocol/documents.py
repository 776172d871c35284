"""Bluesky documents and their runs in the observation store: what the RunEngine worker tells it to store,
what closes the runs a dead worker left open, and the front-door reads (`runs_get`, `runs_query`).

Documents are bluesky's `(name, doc)` pairs as the RunEngine emits them (`start`, `descriptor`, `event`,
`event_page`, `resource`, `datum`, `datum_page`, `stop`); the store keeps them in the databroker /
suitcase-mongo normalized layout (collections `run_start`, `event_descriptor`, `event`, `resource`, `datum`,
`run_stop`), pages unpacked into single events and datums, numpy arrays as lists.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from .observations import QueryMeta, QueryReply

__all__ = [
    "CloseOpenRuns",
    "RunReply",
    "RunsClosed",
    "RunsGet",
    "RunsQuery",
    "StopStatus",
    "StoreDocuments",
]

StopStatus = Literal["success", "abort", "fail"]
"""bluesky's `exit_status` of a stop document."""

_CLIENT = {"frozen": True, "forbid_unknown_fields": True, "kw_only": True}


# -- bus messages (internal: not front-door methods) ---------------------------------------------------------
class RunsClosed(msgspec.Struct, kw_only=True):
    """The runs that got a stop document (those that had one, or were never stored, are not listed)."""

    run_uids: list[str]


class StoreDocuments(msgspec.Struct, tag="store_documents", **_CLIENT):
    """A tell from the RunEngine worker: store these documents, in this order (nothing is replied; a failure
    is logged by the store)."""

    docs: list[tuple[str, dict[str, Any]]]
    """`(name, doc)` pairs, as the RunEngine emitted them."""


class CloseOpenRuns(msgspec.Struct, tag="close_open_runs", **_CLIENT):
    """Write a stop document for each of these runs that was started but has no stop yet (its worker died
    during the plan). `num_events` counts the stored events per stream. Ask it: a storage failure then comes
    back to the asker."""

    run_uids: list[str]
    exit_status: StopStatus = "fail"
    reason: str = ""
    reply_type: ClassVar[type] = RunsClosed


# -- front door ----------------------------------------------------------------------------------------------
class RunReply(msgspec.Struct, kw_only=True):
    """One run's documents; events stream by stream (descriptors in order of time), each by `seq_num`."""

    success: bool = True
    msg: str = ""
    start: dict[str, Any]
    stop: dict[str, Any] | None = None
    """None while the run is open."""
    descriptors: list[dict[str, Any]] = []
    resources: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    """The page of events asked for (`offset`, `limit`)."""
    events_meta: QueryMeta
    """`count`: the run's (or the stream's) events in all; `limit`, `offset` of this page."""


class RunsGet(msgspec.Struct, tag="runs_get", **_CLIENT):
    """A run's documents (start, stop, descriptors, resources) and a page of its events."""

    uid: Annotated[str, Meta(description="uid of the run's start document.")]
    stream: Annotated[str | None, Meta(description="Only the events of this stream (`primary`, …).")] = None
    offset: Annotated[int, Meta(ge=0, description="Events to skip.")] = 0
    limit: Annotated[int, Meta(ge=0, description="Most events to return; 0: all.")] = 100
    reply_type: ClassVar[type] = RunReply


class RunsQuery(msgspec.Struct, tag="runs_query", **_CLIENT):
    """Query runs with lookups over their start documents; returns start documents, newest first.

    `order_by` changes the order (default `-time`). `uid`, `time`, `scan_id`, `plan_name`, `plan_type`,
    `detectors` and `motors` are indexed fields (`time__range`, `detectors__contains`, …); any other key is
    looked up inside the start document (`sample__name__icontains="x"`)."""

    lookups: dict[str, Any] = {}
    reply_type: ClassVar[type] = QueryReply

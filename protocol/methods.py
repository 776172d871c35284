"""The method table of the front door: method name -> params Struct -> owning actor -> reply Struct."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import msgspec

from . import daq, queue
from . import documents as docs
from . import observations as obs
from .daq import DAQ_COORDINATOR
from .system import ConfigGetParams, ConfigGetReply, PingParams, Status, StatusParams
from .worker import QUEUE_MANAGER

__all__ = [
    "DAQ_COORDINATOR",
    "FRONT_DOOR",
    "METHODS",
    "OBSERVATION_STORE",
    "QUEUE_MANAGER",
    "Method",
    "method_table",
]

FRONT_DOOR = "front_door"
"""Owner of the methods the front door answers itself (from its status snapshot or the daemon config)."""
OBSERVATION_STORE = "observation_store"


@dataclass(frozen=True, slots=True)
class Method:
    """One front-door method. The params Struct is also the message the owning actor receives."""

    name: str
    params: type[msgspec.Struct]
    owner: str
    reply: type[msgspec.Struct]
    doc: str
    lookups: bool = False
    """The params object is a set of query lookups, passed to the actor as `params.lookups`."""
    wait_param: str | None = None
    """A params field (seconds) by which the reply may take longer than the request timeout (an await)."""


def method_table(methods: Iterable[Method]) -> Mapping[str, Method]:
    """Index methods by name, refusing duplicates and params types whose tag differs from the name."""
    table: dict[str, Method] = {}
    for m in methods:
        if m.name in table:
            raise ValueError(f"method {m.name!r} declared twice")
        tag = m.params.__struct_config__.tag
        if tag != m.name:
            raise ValueError(f"params type {m.params.__name__} of {m.name!r} must be tagged {m.name!r}")
        table[m.name] = m
    return table


METHODS: Mapping[str, Method] = method_table(
    [
        Method("ping", PingParams, FRONT_DOOR, Status, "Liveness check; returns the status object."),
        Method("status", StatusParams, FRONT_DOOR, Status, "Daemon version, uptime and the actor tree."),
        Method(
            "config_get",
            ConfigGetParams,
            FRONT_DOOR,
            ConfigGetReply,
            "The daemon's effective configuration (secrets removed).",
        ),
        *[
            Method(
                p.__struct_config__.tag,
                p,
                OBSERVATION_STORE,
                p.reply_type,
                (p.__doc__ or "").split("\n")[0],
                lookups="lookups" in p.__struct_fields__,
            )
            for p in (
                obs.ObservationsCreate,
                obs.ObservationsQuery,
                obs.ObservationsGet,
                obs.ObservationsUpdate,
                obs.ObservationSetsCreate,
                obs.ObservationSetsGet,
                obs.ObservationSetsQuery,
                obs.ObservationSetsUpdate,
                obs.ObservationSetsFinalize,
                obs.ObservationSetObservations,
                obs.SequenceMetadatasCreate,
                obs.SequenceMetadatasQuery,
                obs.SequenceResultSave,
                obs.SequenceResultGet,
                obs.DutsGet,
                obs.DutFieldsGet,
                obs.SettingsGet,
                obs.SoftwareVersionSetGetOrCreate,
                obs.MessagesInsert,
                obs.MessagesQuery,
                docs.RunsGet,
                docs.RunsQuery,
            )
        ],
        *[
            Method(p.__struct_config__.tag, p, QUEUE_MANAGER, p.reply_type, (p.__doc__ or "").split("\n")[0])
            for p in queue.QUEUE_METHODS
        ],
        *[
            Method(
                p.__struct_config__.tag,
                p,
                DAQ_COORDINATOR,
                p.reply_type,
                (p.__doc__ or "").split("\n")[0],
                wait_param=getattr(p, "wait_param", None),
            )
            for p in daq.DAQ_METHODS
        ],
    ]
)

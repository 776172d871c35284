"""The observation store's collections: IQM station control's, Ricochet's messages, and bluesky's documents
in the databroker / suitcase-mongo normalized layout."""

from __future__ import annotations

import datetime
from typing import Any

import msgspec

from stationd.actors.storage.collection import Collection
from stationd.protocol.observations import (
    Message,
    ObservationData,
    ObservationSetData,
    SequenceMetadataData,
    SequenceResultData,
)


class SoftwareVersionSet(msgspec.Struct, kw_only=True, frozen=True):
    """A set of package versions, identified by its canonical text so the same set gets the same id."""

    software_version_set_id: int | None = None
    key: str
    versions: dict[str, str]
    created_timestamp: datetime.datetime


OBSERVATIONS = Collection(
    "observations",
    ObservationData,
    "observation_id",
    # `invalid` last: the actor adds `invalid=False` to every query unless told otherwise; with it in the
    # index, the counts and the `latest="dut_field"` groups of such queries are read from the index alone
    # (dut_label, invalid): rows of one DUT in id order (the row key ends every index), so a DUT's first page
    # needs no sort; (tags, invalid): counts of `tags__overlap` queries from the index alone
    indexes=(
        ("dut_label", "dut_field", "created_timestamp", "invalid"),
        ("dut_label", "created_timestamp"),
        ("dut_label", "invalid"),
        ("tags", "invalid"),
    ),
    unindexed=(
        "observation_set_ids",
    ),  # membership comes from the sets (the actor turns such lookups into ids)
)
OBSERVATION_SETS = Collection(
    "observation_sets",
    ObservationSetData,
    "observation_set_id",
    id_kind="uuid",
    indexes=(("observation_set_type", "dut_label"), ("end_timestamp",)),
)
SEQUENCE_METADATAS = Collection("sequence_metadatas", SequenceMetadataData, "sequence_id", id_kind="str")
SEQUENCE_RESULTS = Collection("sequence_results", SequenceResultData, "sequence_id", id_kind="str")
SOFTWARE_VERSION_SETS = Collection(
    "software_version_sets", SoftwareVersionSet, "software_version_set_id", indexes=(("key",),)
)
MESSAGES = Collection("messages", Message, "message_id", indexes=(("topic", "timestamp"),))


# -- bluesky documents ---------------------------------------------------------------------------------------
# Documents whose keys are open (start, stop, descriptor, resource) are kept whole in `document`, beside the
# fields a reader looks them up by (copied out of it, None when absent); events and datums have a closed set
# of keys and are stored as they are. On MongoDB the collections are suitcase-mongo's, and the fields have
# its names, so its readers' lookups (uid, scan_id, time, run_start, descriptor, seq_num) work there.
class RunStartRecord(msgspec.Struct, kw_only=True, frozen=True):
    uid: str
    time: float
    scan_id: int | None = None
    plan_name: str | None = None
    plan_type: str | None = None
    detectors: list[str] = []
    motors: list[str] = []
    document: dict[str, Any]


class RunStopRecord(msgspec.Struct, kw_only=True, frozen=True):
    uid: str
    run_start: str
    time: float
    exit_status: str | None = None
    document: dict[str, Any]


class DescriptorRecord(msgspec.Struct, kw_only=True, frozen=True):
    uid: str
    run_start: str
    time: float
    name: str | None = None
    """The stream (`primary`, `baseline`, …)."""
    document: dict[str, Any]


class EventRecord(msgspec.Struct, kw_only=True, frozen=True):
    """An event document itself."""

    uid: str
    descriptor: str
    seq_num: int
    time: float
    data: dict[str, Any]
    timestamps: dict[str, Any]
    filled: dict[str, Any] = {}


class ResourceRecord(msgspec.Struct, kw_only=True, frozen=True):
    uid: str
    run_start: str | None = None
    spec: str | None = None
    document: dict[str, Any]


class DatumRecord(msgspec.Struct, kw_only=True, frozen=True):
    """A datum document itself."""

    datum_id: str
    resource: str
    datum_kwargs: dict[str, Any]


RUN_STARTS = Collection(
    "run_start",
    RunStartRecord,
    "uid",
    id_kind="str",
    created_field="time",  # indexed: runs by time, and `latest=`
    indexes=(("scan_id",), ("plan_name", "time")),
)
RUN_STOPS = Collection(
    "run_stop", RunStopRecord, "uid", id_kind="str", created_field=None, indexes=(("run_start",),)
)
DESCRIPTORS = Collection(
    "event_descriptor",
    DescriptorRecord,
    "uid",
    id_kind="str",
    created_field=None,
    indexes=(("run_start", "time"),),
)
EVENTS = Collection(
    "event",
    EventRecord,
    "uid",
    id_kind="str",
    created_field=None,  # events are read by descriptor: no index on time to maintain on every insert
    indexes=(("descriptor", "seq_num"),),
)
RESOURCES = Collection(
    "resource", ResourceRecord, "uid", id_kind="str", created_field=None, indexes=(("run_start",),)
)
DATUMS = Collection(
    "datum", DatumRecord, "datum_id", id_kind="str", created_field=None, indexes=(("resource",),)
)
RUN_COLLECTIONS = [RUN_STARTS, RUN_STOPS, DESCRIPTORS, EVENTS, RESOURCES, DATUMS]

ALL = [
    OBSERVATIONS,
    OBSERVATION_SETS,
    SEQUENCE_METADATAS,
    SEQUENCE_RESULTS,
    SOFTWARE_VERSION_SETS,
    MESSAGES,
    *RUN_COLLECTIONS,
]

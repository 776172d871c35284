"""The observation store's collections."""

from __future__ import annotations

import datetime

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

ALL = [OBSERVATIONS, OBSERVATION_SETS, SEQUENCE_METADATAS, SEQUENCE_RESULTS, SOFTWARE_VERSION_SETS, MESSAGES]

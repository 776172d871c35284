"""Front-door messages of the observation store: IQM station control's data API, and Ricochet-style messages.

Query methods take the lookups themselves as params (`{"dut_label": "QB1", "tags__overlap": ["a"]}`); their
params Struct carries them in `lookups` and the front door fills it from the whole params object.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

__all__ = [
    "SOURCE_TYPES",
    "DutData",
    "DutFieldData",
    "DutFieldsGet",
    "DutsGet",
    "ItemReply",
    "ItemsReply",
    "Message",
    "MessagesInsert",
    "MessagesQuery",
    "ObservationData",
    "ObservationDefinition",
    "ObservationLite",
    "ObservationSetData",
    "ObservationSetDefinition",
    "ObservationSetObservations",
    "ObservationSetsCreate",
    "ObservationSetsFinalize",
    "ObservationSetsGet",
    "ObservationSetsQuery",
    "ObservationSetsUpdate",
    "ObservationUpdate",
    "ObservationsCreate",
    "ObservationsGet",
    "ObservationsQuery",
    "ObservationsUpdate",
    "QueryMeta",
    "QueryReply",
    "SequenceMetadataData",
    "SequenceMetadatasCreate",
    "SequenceMetadatasQuery",
    "SequenceResultData",
    "SequenceResultGet",
    "SequenceResultSave",
    "SettingsGet",
    "SettingsReply",
    "SoftwareVersionSetGetOrCreate",
    "SoftwareVersionSetReply",
]

SOURCE_TYPES = (
    "analysis_source",
    "configuration_source",
    "measurement_source",
    "sequence_analysis_source",
    "specification_source",
)
ObservationSetType = Literal["calibration-set", "characterization-set", "generic-set", "quality-metric-set"]
GetObservationsMode = Literal["all_latest", "tags_and", "tags_or", "sequence"]

_CLIENT = {"frozen": True, "forbid_unknown_fields": True, "kw_only": True}


# -- records (stored, and returned to clients) ---------------------------------------------------------------
class ObservationData(msgspec.Struct, kw_only=True, frozen=True):
    """An observation. Immutable but for `invalid`; `value`/`uncertainty` may be bool, str, int, float,
    complex or a numpy array (JSON clients use IQM's `__complex__`/`__ndarray__` objects)."""

    observation_id: int | None = None
    dut_label: str
    dut_field: str
    value: Any
    unit: str = ""
    uncertainty: Any = None
    invalid: bool = False
    source: dict[str, Any]
    tags: list[str] = []
    observation_set_ids: list[uuid.UUID] = []
    created_timestamp: datetime.datetime
    modified_timestamp: datetime.datetime


class ObservationLite(msgspec.Struct, kw_only=True, frozen=True):
    """An observation without its provenance (members of a set)."""

    observation_id: int
    dut_field: str
    value: Any
    unit: str = ""
    uncertainty: Any = None
    invalid: bool = False
    created_timestamp: datetime.datetime
    modified_timestamp: datetime.datetime


class ObservationSetData(msgspec.Struct, kw_only=True, frozen=True):
    """A set of observations (a calibration set, …); open until finalized (`end_timestamp` set)."""

    observation_set_id: uuid.UUID | None = None
    observation_set_type: ObservationSetType
    observation_ids: list[int] = []
    describes_id: uuid.UUID | None = None
    invalid: bool = False
    dut_label: str | None = None
    created_timestamp: datetime.datetime
    end_timestamp: datetime.datetime | None = None


class SequenceMetadataData(msgspec.Struct, kw_only=True, frozen=True):
    sequence_id: uuid.UUID
    origin_id: str
    origin_uri: str
    created_timestamp: datetime.datetime


class SequenceResultData(msgspec.Struct, kw_only=True, frozen=True):
    sequence_id: uuid.UUID
    data: dict[str, Any]
    final: bool
    created_timestamp: datetime.datetime
    modified_timestamp: datetime.datetime | None = None


class DutData(msgspec.Struct, kw_only=True, frozen=True):
    """A device under test."""

    label: Annotated[str, Meta(description="DUT label, as in observations' `dut_label`.")]
    dut_type: Annotated[Literal["chip", "twpa"], Meta(description="`chip` or `twpa`.")] = "chip"


class DutFieldData(msgspec.Struct, kw_only=True, frozen=True):
    path: str
    unit: str


class Message(msgspec.Struct, kw_only=True, frozen=True):
    """A Ricochet-style message: `topic` and `timestamp` are mandatory, every other key is free."""

    message_id: int | None = None
    topic: str
    timestamp: datetime.datetime
    created_timestamp: datetime.datetime
    data: dict[str, Any] = {}


# -- replies -------------------------------------------------------------------------------------------------
class QueryMeta(msgspec.Struct, kw_only=True):
    """`meta` of a query reply (IQM's `ListWithMeta.meta`)."""

    count: int
    order_by: str | None = None
    limit: int | None = None
    offset: int | None = None
    errors: list[str] | None = None


class ItemsReply(msgspec.Struct, kw_only=True):
    success: bool = True
    msg: str = ""
    items: list[Any]


class QueryReply(msgspec.Struct, kw_only=True):
    success: bool = True
    msg: str = ""
    items: list[Any]
    meta: QueryMeta


class ItemReply(msgspec.Struct, kw_only=True):
    success: bool = True
    msg: str = ""
    item: Any


class SettingsReply(msgspec.Struct, kw_only=True):
    success: bool = True
    msg: str = ""
    settings: dict[str, Any]


class SoftwareVersionSetReply(msgspec.Struct, kw_only=True):
    success: bool = True
    msg: str = ""
    software_version_set_id: int


# -- requests ------------------------------------------------------------------------------------------------
class ObservationDefinition(msgspec.Struct, **_CLIENT):
    dut_label: Annotated[str, Meta(min_length=1)]
    dut_field: Annotated[str, Meta(min_length=1)]
    value: Any
    unit: str = ""
    uncertainty: Any = None
    invalid: bool = False
    source: dict[str, Any]
    """Must have `type`, one of SOURCE_TYPES; other keys depend on it (`run_id`, `sequence_id`, …)."""
    tags: list[str] = []


class ObservationUpdate(msgspec.Struct, **_CLIENT):
    """Only `invalid` may change."""

    observation_id: int
    invalid: bool


class ObservationSetDefinition(msgspec.Struct, **_CLIENT):
    observation_set_type: ObservationSetType
    observation_ids: list[int] = []
    describes_id: uuid.UUID | None = None
    invalid: bool = False


class ObservationsCreate(msgspec.Struct, tag="observations_create", **_CLIENT):
    """Create observations; all or nothing."""

    observations: list[ObservationDefinition]
    reply_type: ClassVar[type] = ItemsReply


class ObservationsQuery(msgspec.Struct, tag="observations_query", **_CLIENT):
    """Query observations with lookups; `invalid=False` unless the caller passes `invalid` (`null`: all)."""

    lookups: dict[str, Any] = {}
    reply_type: ClassVar[type] = QueryReply


class ObservationsGet(msgspec.Struct, tag="observations_get", **_CLIENT):
    """IQM's `get_observations(mode=…)`."""

    mode: GetObservationsMode
    dut_label: str | None = None
    dut_field: str | None = None
    tags: list[str] | None = None
    invalid: bool | None = False
    run_ids: list[uuid.UUID] | None = None
    sequence_ids: list[uuid.UUID] | None = None
    limit: int | None = None
    reply_type: ClassVar[type] = ItemsReply


class ObservationsUpdate(msgspec.Struct, tag="observations_update", **_CLIENT):
    """Set or clear `invalid` on observations; all or nothing."""

    observation_updates: list[ObservationUpdate]
    reply_type: ClassVar[type] = ItemsReply


class ObservationSetsCreate(msgspec.Struct, tag="observation_sets_create", **_CLIENT):
    """Create an open observation set."""

    observation_set: ObservationSetDefinition
    reply_type: ClassVar[type] = ItemReply


class ObservationSetsGet(msgspec.Struct, tag="observation_sets_get", **_CLIENT):
    """One observation set by id."""

    observation_set_id: uuid.UUID
    reply_type: ClassVar[type] = ItemReply


class ObservationSetsQuery(msgspec.Struct, tag="observation_sets_query", **_CLIENT):
    """Query observation sets with lookups; `invalid=False` unless given."""

    lookups: dict[str, Any] = {}
    reply_type: ClassVar[type] = QueryReply


class ObservationSetsUpdate(msgspec.Struct, tag="observation_sets_update", **_CLIENT):
    """Add observations (never remove) and set `invalid`; after finalize only `invalid` may change."""

    observation_set_id: uuid.UUID
    observation_ids: list[int] | None = None
    invalid: bool | None = None
    reply_type: ClassVar[type] = ItemReply


class ObservationSetsFinalize(msgspec.Struct, tag="observation_sets_finalize", **_CLIENT):
    """Close a set: `end_timestamp` is set and only `invalid` may change afterwards."""

    observation_set_id: uuid.UUID
    reply_type: ClassVar[type] = ItemReply


class ObservationSetObservations(msgspec.Struct, tag="observation_set_observations", **_CLIENT):
    """The member observations of a set."""

    observation_set_id: uuid.UUID
    reply_type: ClassVar[type] = ItemsReply


class SequenceMetadatasCreate(msgspec.Struct, tag="sequence_metadatas_create", **_CLIENT):
    """Record who created a sequence and where it came from."""

    sequence_id: uuid.UUID
    origin_id: str
    origin_uri: str
    reply_type: ClassVar[type] = ItemReply


class SequenceMetadatasQuery(msgspec.Struct, tag="sequence_metadatas_query", **_CLIENT):
    """Query sequence metadata with lookups."""

    lookups: dict[str, Any] = {}
    reply_type: ClassVar[type] = QueryReply


class SequenceResultSave(msgspec.Struct, tag="sequence_result_save", **_CLIENT):
    """Create, or completely replace `data` and `final` (upsert)."""

    sequence_id: uuid.UUID
    data: dict[str, Any]
    final: bool
    reply_type: ClassVar[type] = ItemReply


class SequenceResultGet(msgspec.Struct, tag="sequence_result_get", **_CLIENT):
    """The result of a sequence."""

    sequence_id: uuid.UUID
    reply_type: ClassVar[type] = ItemReply


class DutsGet(msgspec.Struct, tag="duts_get", **_CLIENT):
    """The devices under test of this station."""

    reply_type: ClassVar[type] = ItemsReply


class DutFieldsGet(msgspec.Struct, tag="dut_fields_get", **_CLIENT):
    """The fields observed on a DUT, with their units."""

    dut_label: str
    reply_type: ClassVar[type] = ItemsReply


class SettingsGet(msgspec.Struct, tag="settings_get", **_CLIENT):
    """The station settings tree (from the config)."""

    reply_type: ClassVar[type] = SettingsReply


class SoftwareVersionSetGetOrCreate(msgspec.Struct, tag="software_version_set_get_or_create", **_CLIENT):
    """The id of this set of package versions, created the first time it is seen."""

    software_version_set: dict[str, str]
    reply_type: ClassVar[type] = SoftwareVersionSetReply


class MessagesInsert(msgspec.Struct, tag="messages_insert", **_CLIENT):
    """Insert messages; each needs `topic` and `timestamp` (unix seconds or ISO 8601); all or nothing."""

    messages: list[dict[str, Any]]
    reply_type: ClassVar[type] = ItemsReply


class MessagesQuery(msgspec.Struct, tag="messages_query", **_CLIENT):
    """Query messages with lookups (free keys are looked up inside each message)."""

    lookups: dict[str, Any] = {}
    reply_type: ClassVar[type] = QueryReply

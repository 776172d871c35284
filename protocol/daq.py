"""Messages of the DAQ coordinator: ESO OCM's `daqif.OcmDaqControl` on the front door, its event, and the
source protocol that primary and metadata sources speak (in-daemon actors over the bus, external processes
over ZMQ).

States, substates and keyword objects keep OCM's spelling (`StateAcquiring`, `NotStarted`, `valueKeyword`)
so that OCM scripts and their JSON carry over unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from .errors import ErrorInfo

__all__ = [
    "DAQ_COORDINATOR",
    "DAQ_METHODS",
    "FILE_PREFIX_PATTERN",
    "AwaitDaqReply",
    "DaqAbort",
    "DaqActiveList",
    "DaqActiveListReply",
    "DaqAwaitState",
    "DaqForceAbort",
    "DaqForceStop",
    "DaqProperties",
    "DaqReply",
    "DaqStart",
    "DaqState",
    "DaqStateChanged",
    "DaqStatus",
    "DaqStatusGet",
    "DaqStatusReply",
    "DaqStop",
    "DaqSubState",
    "DaqTransition",
    "DaqUpdateKeywords",
    "EsoKeyword",
    "FitsKeyword",
    "KeywordValue",
    "LiteralKeyword",
    "SourceAbort",
    "SourceAck",
    "SourceKind",
    "SourceRequest",
    "SourceResponse",
    "SourceResult",
    "SourceStart",
    "SourceState",
    "SourceStatus",
    "SourceStop",
    "SourceWait",
    "SourceWaitReply",
    "ValueKeyword",
]

DAQ_COORDINATOR = "daq_coordinator"
FILE_PREFIX_PATTERN = r"^[-a-zA-Z0-9_\.]*$"
"""OCM's rule for `file_prefix` (anything else is `invalid_params`)."""


class DaqState(StrEnum):
    """OCM's `DaqState`."""

    ACQUIRING = "StateAcquiring"
    MERGING = "StateMerging"
    COMPLETED = "StateCompleted"
    UNDEFINED = "StateUndefined"


class DaqSubState(StrEnum):
    """OCM's `DaqSubState`, in life-cycle order (Aborting/Aborted may follow any non-final substate)."""

    NOT_STARTED = "NotStarted"
    STARTING = "Starting"
    ACQUIRING = "Acquiring"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    NOT_SCHEDULED = "NotScheduled"
    SCHEDULED = "Scheduled"
    MERGING = "Merging"
    RELEASING = "Releasing"
    COMPLETED = "Completed"
    ABORTING = "Aborting"
    ABORTED = "Aborted"


# -- FITS keywords (OCM's FitsKeyword JSON union, discriminated by "type") -----------------------------------
KeywordValue = str | bool | int | float
"""JSON string -> FITS string, boolean -> logical, integer -> integer, number with a fraction -> float."""


class ValueKeyword(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="valueKeyword"
):
    """A standard FITS keyword (name of at most 8 characters: letters, digits, `-`, `_`)."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,8}$")]
    value: KeywordValue
    comment: str = ""


class EsoKeyword(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="esoKeyword"):
    """An ESO hierarchical keyword named without its prefix (`DET EXP ID`); written `HIERARCH ESO <name>`."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+( [A-Za-z0-9_-]+)*$")]
    value: KeywordValue
    comment: str = ""


class LiteralKeyword(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", tag="literalKeyword"
):
    """A whole card, as written (`COMMENT Example of a commentary keyword.`), for commentary keywords."""

    value: Annotated[str, Meta(max_length=80)]


FitsKeyword = ValueKeyword | EsoKeyword | LiteralKeyword


class DaqProperties(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """OCM's StartDaq `properties` JSON, plus `sourceTimeout` (OCM has no timeout on source requests)."""

    awaitInterval: Annotated[float, Meta(ge=0)] = 5.0  # OCM's JSON names
    """Longest wait of one end-of-recording request to the primary sources (seconds); re-issued until done."""
    keywords: list[FitsKeyword] = []
    """Initial user keywords."""
    sourceTimeout: Annotated[float, Meta(gt=0)] | None = None
    """Seconds each request to a source may take before it fails (None: the coordinator's default)."""


# -- status --------------------------------------------------------------------------------------------------
SourceKind = Literal["primary", "metadata"]


class SourceState(StrEnum):
    """Where one source of a DAQ is."""

    NOT_STARTED = "NotStarted"
    STARTING = "Starting"
    ACQUIRING = "Acquiring"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    ABORTING = "Aborting"
    ABORTED = "Aborted"
    FAILED = "Failed"
    """A request to the source failed or timed out; `error` says which and why."""


class SourceStatus(msgspec.Struct, kw_only=True):
    """One source of a DAQ."""

    name: str
    uri: str
    kind: SourceKind
    state: SourceState = SourceState.NOT_STARTED
    error: str = ""
    """The last error of a request to this source ("" when none)."""
    rows: int = 0
    """Rows of data the source delivered (primary sources, once stopped)."""


class DaqTransition(msgspec.Struct, frozen=True, array_like=True):
    """One step of a DAQ's state history: `[state, substate, timestamp]`."""

    state: DaqState
    substate: DaqSubState
    timestamp: float


class DaqStatus(msgspec.Struct, kw_only=True):
    """OCM's `DaqStatus`, with the sources, the user keywords and the state history."""

    id: str
    file_id: str
    state: DaqState
    substate: DaqSubState
    error: bool = False
    """True while a non-fatal error is recorded (a source failed to stop, an abort failed)."""
    message: str = ""
    """What went wrong, or why the DAQ is where it is."""
    result: str = ""
    """Path of the data product once merged."""
    timestamp: float
    """Time of the last status change (seconds since the epoch)."""
    created: float
    sources: list[SourceStatus] = []
    keywords: list[FitsKeyword] = []
    history: list[DaqTransition] = []


class DaqStateChanged(msgspec.Struct, frozen=True, kw_only=True):
    """Published as `event.daq_coordinator.state_changed` on every transition."""

    id: str
    old_state: DaqState
    old_substate: DaqSubState
    state: DaqState
    substate: DaqSubState
    error: bool
    message: str
    timestamp: float


# -- replies -------------------------------------------------------------------------------------------------
class DaqReply(msgspec.Struct, kw_only=True):
    """OCM's `DaqReply`: `error` is true after a partial (non-fatal) failure of a fail-slow command."""

    success: bool = True
    msg: str = ""
    id: str
    error: bool = False


class AwaitDaqReply(msgspec.Struct, kw_only=True):
    """OCM's `AwaitDaqReply`: `timeout` true when the condition did not hold in time (not an error)."""

    success: bool = True
    msg: str = ""
    timeout: bool
    status: DaqStatus


class DaqStatusReply(msgspec.Struct, kw_only=True):
    success: bool = True
    msg: str = ""
    status: DaqStatus


class DaqActiveListReply(msgspec.Struct, kw_only=True):
    success: bool = True
    msg: str = ""
    daqs: list[DaqStatus]


# -- front-door params ---------------------------------------------------------------------------------------
class _Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    reply_type: ClassVar[type] = DaqReply


class _ById(_Params, frozen=True, kw_only=True):
    id: str


class DaqStart(_Params, frozen=True, kw_only=True, tag="daq_start"):
    """Create and start a DAQ (fail-fast: any source failing to start aborts it and the command fails)."""

    id: str = ""
    """Empty: a unique id is generated (`<file_prefix or DAQ>.<ISO time with ms>`)."""
    file_prefix: Annotated[str, Meta(pattern=FILE_PREFIX_PATTERN)] = ""
    prim_sources: str = ""
    """Space-separated `name@uri` (at least one source in total)."""
    meta_sources: str = ""
    properties: str | dict[str, Any] = ""
    """OCM's properties JSON (a string, as OCM sends it, or an object)."""


class DaqStop(_ById, frozen=True, kw_only=True, tag="daq_stop"):
    """Stop acquiring and keep the data (fails only when every source fails to stop)."""


class DaqForceStop(_ById, frozen=True, kw_only=True, tag="daq_force_stop"):
    """Stop acquiring; the DAQ is marked stopped even when some sources fail (fail-slow)."""


class DaqAbort(_ById, frozen=True, kw_only=True, tag="daq_abort"):
    """Abort and discard the data (fail-fast: on error the DAQ stays in Aborting)."""


class DaqForceAbort(_ById, frozen=True, kw_only=True, tag="daq_force_abort"):
    """Abort and discard the data; the DAQ is marked aborted even when some sources fail (fail-slow)."""


class DaqUpdateKeywords(_ById, frozen=True, kw_only=True, tag="daq_update_keywords"):
    """Add or update user keywords (identity: kind and name); refused from NotScheduled on."""

    keywords: str | list[Any]
    """OCM's keyword list JSON (a string, as OCM sends it, or a list)."""


class DaqAwaitState(_ById, frozen=True, kw_only=True, tag="daq_await_state"):
    """Wait until the DAQ reaches `state`/`substate` or can no longer reach it, or `timeout` passes."""

    state: DaqState
    substate: DaqSubState
    timeout: Annotated[float, Meta(ge=0, le=86400)]
    reply_type: ClassVar[type] = AwaitDaqReply
    wait_param: ClassVar[str] = "timeout"
    """The front door waits this many seconds longer than its request timeout for the reply."""


class DaqStatusGet(_ById, frozen=True, kw_only=True, tag="daq_status"):
    """The status of one DAQ (active or finished)."""

    reply_type: ClassVar[type] = DaqStatusReply


class DaqActiveList(_Params, frozen=True, kw_only=True, tag="daq_active_list"):
    """The DAQs not in StateCompleted."""

    reply_type: ClassVar[type] = DaqActiveListReply


DAQ_METHODS: tuple[type[_Params], ...] = (
    DaqStart,
    DaqStop,
    DaqForceStop,
    DaqAbort,
    DaqForceAbort,
    DaqUpdateKeywords,
    DaqAwaitState,
    DaqStatusGet,
    DaqActiveList,
)


# -- the source protocol -------------------------------------------------------------------------------------
class SourceAck(msgspec.Struct, frozen=True, tag="source_ack"):
    """Reply to start and abort."""


class SourceWaitReply(msgspec.Struct, frozen=True, tag="source_wait_reply"):
    ended: bool


class SourceResult(msgspec.Struct, frozen=True, kw_only=True, tag="source_result"):
    """Reply to stop: keywords for the primary HDU and, from a primary source, its table of recorded rows."""

    keywords: list[FitsKeyword] = []
    columns: dict[str, Any] = {}
    """Column name -> 1-d numpy array (or list), all of the same length; empty for metadata sources."""


class SourceStart(msgspec.Struct, frozen=True, kw_only=True, tag="source_start"):
    """Start recording for DAQ `daq_id` (the id travels with every request, unlike OCM's recif)."""

    daq_id: str
    source: str
    """The source's name in this DAQ."""
    reply_type: ClassVar[type] = SourceAck


class SourceStop(msgspec.Struct, frozen=True, kw_only=True, tag="source_stop"):
    """Stop recording for `daq_id` and hand over what was recorded."""

    daq_id: str
    reply_type: ClassVar[type] = SourceResult


class SourceAbort(msgspec.Struct, frozen=True, kw_only=True, tag="source_abort"):
    """Abort recording for `daq_id`, discarding the data."""

    daq_id: str
    reply_type: ClassVar[type] = SourceAck


class SourceWait(msgspec.Struct, frozen=True, kw_only=True, tag="source_wait"):
    """Reply as soon as the recording of `daq_id` ended by itself, or after `timeout` seconds."""

    daq_id: str
    timeout: float
    reply_type: ClassVar[type] = SourceWaitReply


SourceRequestBody = SourceStart | SourceStop | SourceAbort | SourceWait
SourceReplyBody = SourceAck | SourceWaitReply | SourceResult | ErrorInfo


class SourceRequest(msgspec.Struct, frozen=True, array_like=True):
    """What the coordinator sends an external source over ZMQ (DEALER -> ROUTER): `[req_id, body]`."""

    req_id: int
    body: SourceRequestBody


class SourceResponse(msgspec.Struct, frozen=True, array_like=True):
    """What an external source answers: `[req_id, body]`, body an `ErrorInfo` when the request failed."""

    req_id: int
    body: SourceReplyBody

"""`StationControlClient`: IQM station control's Python API (method names and return types) over stationd.

client = StationControlClient("tcp://127.0.0.1:60615")
obs = client.query_observations(dut_label="QB1", tags__overlap=["a"], limit=0)   # ListWithMeta
obs.meta.count
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from . import observations as o
from .client import Client
from .codec import enc_hook_json, revive

__all__ = ["ListWithMeta", "StationControlClient"]

T = TypeVar("T")


class ListWithMeta(list[T]):
    """A page of results with `meta` (count of all matches, order, limit, offset), as IQM's client returns."""

    meta: o.QueryMeta

    def __init__(self, items: list[T], meta: o.QueryMeta) -> None:
        super().__init__(items)
        self.meta = meta


def _typed(type_: type[T], item: Any) -> T:
    value = msgspec.convert(item, type_)
    if isinstance(value, (o.ObservationData, o.ObservationLite)):
        value = msgspec.structs.replace(
            value, value=revive(value.value), uncertainty=revive(value.uncertainty)
        )
    return value


def _plain(value: Any) -> Any:
    """Structs, UUIDs, times, arrays and complex numbers as JSON-ready builtins (IQM's objects for values)."""
    return msgspec.to_builtins(value, enc_hook=enc_hook_json)


class StationControlClient:
    """Observations, observation sets, sequences, DUTs, settings and messages of a stationd daemon."""

    def __init__(
        self, addr: str | None = None, *, client: Client | None = None, **client_options: Any
    ) -> None:
        self._client = client or Client(addr, **client_options)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> StationControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------------------
    def _items(self, type_: type[T], method: str, params: Mapping[str, Any] | None = None) -> list[T]:
        return [_typed(type_, i) for i in self._client.request(method, _plain(params or {}))["items"]]

    def _item(self, type_: type[T], method: str, params: Mapping[str, Any]) -> T:
        return _typed(type_, self._client.request(method, _plain(params))["item"])

    def _query(self, type_: type[T], method: str, lookups: Mapping[str, Any]) -> ListWithMeta[T]:
        reply = self._client.request(method, {k: _plain(v) for k, v in lookups.items()})
        return ListWithMeta(
            [_typed(type_, i) for i in reply["items"]], msgspec.convert(reply["meta"], o.QueryMeta)
        )

    # -- observations ----------------------------------------------------------------------------------------
    def create_observations(
        self, definitions: Sequence[o.ObservationDefinition | Mapping[str, Any]]
    ) -> list[o.ObservationData]:
        return self._items(o.ObservationData, "observations_create", {"observations": list(definitions)})

    def query_observations(self, **lookups: Any) -> ListWithMeta[o.ObservationData]:
        """`invalid=False` is implied unless given; `invalid=None` returns valid and invalid ones."""
        return self._query(o.ObservationData, "observations_query", lookups)

    def get_observations(self, *, mode: str, **params: Any) -> list[o.ObservationData]:
        return self._items(o.ObservationData, "observations_get", {"mode": mode, **params})

    def update_observations(
        self, updates: Sequence[o.ObservationUpdate | Mapping[str, Any]]
    ) -> list[o.ObservationData]:
        return self._items(o.ObservationData, "observations_update", {"observation_updates": list(updates)})

    # -- observation sets ------------------------------------------------------------------------------------
    def create_observation_set(
        self, definition: o.ObservationSetDefinition | Mapping[str, Any]
    ) -> o.ObservationSetData:
        return self._item(o.ObservationSetData, "observation_sets_create", {"observation_set": definition})

    def get_observation_set(self, observation_set_id: uuid.UUID | str) -> o.ObservationSetData:
        return self._item(
            o.ObservationSetData, "observation_sets_get", {"observation_set_id": observation_set_id}
        )

    def query_observation_sets(self, **lookups: Any) -> ListWithMeta[o.ObservationSetData]:
        return self._query(o.ObservationSetData, "observation_sets_query", lookups)

    def update_observation_set(
        self,
        observation_set_id: uuid.UUID | str,
        *,
        observation_ids: Sequence[int] | None = None,
        invalid: bool | None = None,
    ) -> o.ObservationSetData:
        params = {
            "observation_set_id": observation_set_id,
            "observation_ids": observation_ids,
            "invalid": invalid,
        }
        return self._item(
            o.ObservationSetData,
            "observation_sets_update",
            {k: v for k, v in params.items() if v is not None},
        )

    def finalize_observation_set(self, observation_set_id: uuid.UUID | str) -> o.ObservationSetData:
        return self._item(
            o.ObservationSetData, "observation_sets_finalize", {"observation_set_id": observation_set_id}
        )

    def get_observation_set_observations(
        self, observation_set_id: uuid.UUID | str
    ) -> list[o.ObservationLite]:
        return self._items(
            o.ObservationLite, "observation_set_observations", {"observation_set_id": observation_set_id}
        )

    def get_latest_calibration_set_id(self, dut_label: str) -> uuid.UUID | None:
        """The newest finalized, valid calibration set of a DUT (as IQM's client looks it up)."""
        found = self.query_observation_sets(
            observation_set_type="calibration-set",
            dut_label=dut_label,
            end_timestamp__isnull=False,
            order_by="-end_timestamp",
            limit=1,
        )
        return found[0].observation_set_id if found else None

    def get_calibration_set_values(self, observation_set_id: uuid.UUID | str) -> dict[str, Any]:
        """`{dut_field: value}` of a calibration set's observations."""
        return {m.dut_field: m.value for m in self.get_observation_set_observations(observation_set_id)}

    # -- sequences, DUTs, settings, software versions, messages ----------------------------------------------
    def create_sequence_metadata(
        self, sequence_id: uuid.UUID | str, origin_id: str, origin_uri: str
    ) -> o.SequenceMetadataData:
        params = {"sequence_id": sequence_id, "origin_id": origin_id, "origin_uri": origin_uri}
        return self._item(o.SequenceMetadataData, "sequence_metadatas_create", params)

    def query_sequence_metadatas(self, **lookups: Any) -> ListWithMeta[o.SequenceMetadataData]:
        return self._query(o.SequenceMetadataData, "sequence_metadatas_query", lookups)

    def save_sequence_result(
        self, sequence_id: uuid.UUID | str, data: dict[str, Any], final: bool
    ) -> o.SequenceResultData:
        params = {"sequence_id": sequence_id, "data": data, "final": final}
        return self._item(o.SequenceResultData, "sequence_result_save", params)

    def get_sequence_result(self, sequence_id: uuid.UUID | str) -> o.SequenceResultData:
        return self._item(o.SequenceResultData, "sequence_result_get", {"sequence_id": sequence_id})

    def get_duts(self) -> list[o.DutData]:
        return self._items(o.DutData, "duts_get")

    def get_dut_fields(self, dut_label: str) -> list[o.DutFieldData]:
        return self._items(o.DutFieldData, "dut_fields_get", {"dut_label": dut_label})

    def get_settings(self) -> dict[str, Any]:
        return self._client.request("settings_get")["settings"]

    def get_or_create_software_version_set(self, software_version_set: Mapping[str, str]) -> int:
        reply = self._client.request(
            "software_version_set_get_or_create", {"software_version_set": dict(software_version_set)}
        )
        return reply["software_version_set_id"]

    def insert_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Ricochet's `DaqLogger.insert`: each message needs `topic` and `timestamp`; all or nothing."""
        return self._client.request("messages_insert", {"messages": [_plain(m) for m in messages]})["items"]

    def query_messages(self, **lookups: Any) -> ListWithMeta[dict[str, Any]]:
        reply = self._client.request("messages_query", {k: _plain(v) for k, v in lookups.items()})
        return ListWithMeta(reply["items"], msgspec.convert(reply["meta"], o.QueryMeta))

"""The observation store actor: IQM station control's data API (observations, sets, sequences, DUTs,
settings, software versions), Ricochet-style messages and bluesky's documents, persisted through the storage
layer."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, assert_never

import msgspec
from msgspec import Meta

from stationd.actors.base import Actor, ActorContext
from stationd.actors.storage.query import parse_query
from stationd.actors.storage.sqlite import SQLiteStore
from stationd.actors.storage.store import Store
from stationd.protocol import documents as docs
from stationd.protocol import observations as obs
from stationd.protocol.errors import Conflict, InvalidParams, NotFound

from .collections import (
    ALL,
    MESSAGES,
    OBSERVATION_SETS,
    OBSERVATIONS,
    SEQUENCE_METADATAS,
    SEQUENCE_RESULTS,
    SOFTWARE_VERSION_SETS,
    SoftwareVersionSet,
)
from .requests import (
    check_value,
    flatten_message,
    get_mode_lookups,
    message_lookups,
    parse_messages,
    valid_only,
)
from .runs import Runs

__all__ = ["ObservationStore", "ObservationStoreOptions"]

Inbox = (
    obs.ObservationsCreate
    | obs.ObservationsQuery
    | obs.ObservationsGet
    | obs.ObservationsUpdate
    | obs.ObservationSetsCreate
    | obs.ObservationSetsGet
    | obs.ObservationSetsQuery
    | obs.ObservationSetsUpdate
    | obs.ObservationSetsFinalize
    | obs.ObservationSetObservations
    | obs.SequenceMetadatasCreate
    | obs.SequenceMetadatasQuery
    | obs.SequenceResultSave
    | obs.SequenceResultGet
    | obs.DutsGet
    | obs.DutFieldsGet
    | obs.SettingsGet
    | obs.SoftwareVersionSetGetOrCreate
    | obs.MessagesInsert
    | obs.MessagesQuery
    | docs.StoreDocuments
    | docs.CloseOpenRuns
    | docs.RunsGet
    | docs.RunsQuery
)


class ObservationStoreOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Options of the observation store (`[observation_store]` in the daemon config)."""

    backend: Annotated[Literal["sqlite", "mongodb"], Meta(description="`sqlite` or `mongodb`.")] = "sqlite"
    path: Annotated[str, Meta(description="SQLite file; empty: `<state_dir>/observations.sqlite`.")] = ""
    mongodb_uri: Annotated[str, Meta(description="MongoDB URI, e.g. `mongodb://host:27017`.")] = ""
    mongodb_database: Annotated[str, Meta(description="MongoDB database name.")] = "stationd"
    mongodb_timeout: Annotated[
        float,
        Meta(gt=0, description="Seconds to wait for an unreachable MongoDB before a storage_error reply."),
    ] = 2.0
    duts: Annotated[list[obs.DutData], Meta(description="The station's devices under test.")] = []
    settings: Annotated[dict[str, Any], Meta(description="The station settings tree (`settings_get`).")] = {}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _meta(params: Mapping[str, Any], count: int, limit: int, offset: int) -> obs.QueryMeta:
    order_by = params.get("order_by")
    return obs.QueryMeta(
        count=count,
        order_by=",".join(order_by) if isinstance(order_by, list) else order_by,
        limit=limit,
        offset=offset,
    )


class ObservationStore(Actor):
    """Owns the station's observations and everything IQM station control stores beside them."""

    inbox = Inbox
    Options = ObservationStoreOptions

    def __init__(self, ctx: ActorContext, options: ObservationStoreOptions) -> None:
        super().__init__(ctx, options)
        self.options = options
        self.store: Store = self._make_store()
        self.runs = Runs(self.store, ctx)

    def _make_store(self) -> Store:
        if self.options.backend == "mongodb":
            from stationd.actors.storage.mongo import MongoStore

            return MongoStore(
                self.options.mongodb_uri,
                self.options.mongodb_database,
                ALL,
                server_selection_timeout_ms=int(self.options.mongodb_timeout * 1000),
            )
        path = Path(self.options.path) if self.options.path else self.ctx.state_dir / "observations.sqlite"
        return SQLiteStore(path, ALL)

    async def on_start(self) -> None:
        await self.store.open()

    async def on_stop(self) -> None:
        await self.store.close()

    async def on_failure(self, exc: BaseException) -> None:
        await self.store.close()

    async def handle(self, msg: Inbox) -> Any:
        match msg:
            case obs.ObservationsCreate():
                return obs.ItemsReply(items=await self._create_observations(msg))
            case obs.ObservationsQuery(lookups=lookups):
                return await self._query_observations(valid_only(lookups))
            case obs.ObservationsGet():
                return obs.ItemsReply(items=await self._get_observations(msg))
            case obs.ObservationsUpdate():
                return obs.ItemsReply(items=await self._update_observations(msg))
            case obs.ObservationSetsCreate():
                return obs.ItemReply(item=await self._create_set(msg.observation_set))
            case obs.ObservationSetsGet(observation_set_id=set_id):
                return obs.ItemReply(item=await self._get_set(set_id))
            case obs.ObservationSetsQuery(lookups=lookups):
                return await self._query(OBSERVATION_SETS.name, valid_only(lookups))
            case obs.ObservationSetsUpdate():
                return obs.ItemReply(item=await self._update_set(msg))
            case obs.ObservationSetsFinalize(observation_set_id=set_id):
                return obs.ItemReply(item=await self._finalize_set(set_id))
            case obs.ObservationSetObservations(observation_set_id=set_id):
                return obs.ItemsReply(items=await self._set_members(set_id))
            case obs.SequenceMetadatasCreate():
                return obs.ItemReply(item=await self._create_sequence_metadata(msg))
            case obs.SequenceMetadatasQuery(lookups=lookups):
                return await self._query(SEQUENCE_METADATAS.name, lookups)
            case obs.SequenceResultSave():
                return obs.ItemReply(item=await self._save_sequence_result(msg))
            case obs.SequenceResultGet(sequence_id=sequence_id):
                found = await self.store.get(SEQUENCE_RESULTS.name, sequence_id)
                if found is None:
                    raise NotFound(f"no result for sequence {sequence_id}")
                return obs.ItemReply(item=found)
            case obs.DutsGet():
                return obs.ItemsReply(items=list(self.options.duts))
            case obs.DutFieldsGet(dut_label=label):
                return obs.ItemsReply(items=await self._dut_fields(label))
            case obs.SettingsGet():
                return obs.SettingsReply(settings=self.options.settings)
            case obs.SoftwareVersionSetGetOrCreate(software_version_set=versions):
                return obs.SoftwareVersionSetReply(
                    software_version_set_id=await self._software_version_set(versions)
                )
            case obs.MessagesInsert(messages=messages):
                return obs.ItemsReply(items=await self._insert_messages(messages))
            case obs.MessagesQuery(lookups=lookups):
                return await self._query_messages(lookups)
            case docs.StoreDocuments(docs=documents):
                await self.runs.store_documents(documents)
                return None
            case docs.CloseOpenRuns():
                return await self.runs.close_open_runs(msg)
            case docs.RunsGet():
                return await self.runs.get_run(msg)
            case docs.RunsQuery(lookups=lookups):
                return await self.runs.query_runs(lookups)
            case _:
                assert_never(msg)

    # -- observations ----------------------------------------------------------------------------------------
    async def _create_observations(self, msg: obs.ObservationsCreate) -> list[obs.ObservationData]:
        now = _now()
        records = []
        for i, d in enumerate(msg.observations):
            where = f"observations[{i}]"
            if d.source.get("type") not in obs.SOURCE_TYPES:
                raise InvalidParams(f"{where}.source.type must be one of {', '.join(obs.SOURCE_TYPES)}")
            records.append(
                obs.ObservationData(
                    dut_label=d.dut_label,
                    dut_field=d.dut_field,
                    value=check_value(d.value, f"{where}.value"),
                    unit=d.unit,
                    uncertainty=check_value(
                        d.uncertainty, f"{where}.uncertainty", allow_none=True, allow_str=False
                    ),
                    invalid=d.invalid,
                    source=d.source,
                    tags=d.tags,
                    created_timestamp=now,
                    modified_timestamp=now,
                )
            )
        created = await self.store.insert(OBSERVATIONS.name, records)
        self.ctx.publish("observations_created", {"observation_ids": [o.observation_id for o in created]})
        return created

    async def _query_observations(self, lookups: dict[str, Any]) -> obs.QueryReply:
        """Set membership is derived from the sets, so `observation_set_ids__…` become id filters."""
        for key in ("observation_set_ids__overlap", "observation_set_ids__contains"):
            if key in lookups:
                set_ids = lookups.pop(key)
                sets = await self.store.get_many(OBSERVATION_SETS.name, [uuid.UUID(str(s)) for s in set_ids])
                member_lists = [set(s.observation_ids) for s in sets]
                if key.endswith("overlap"):
                    ids = set().union(*member_lists)
                else:
                    ids = set.intersection(*member_lists) if len(sets) == len(set_ids) and sets else set()
                previous = lookups.get("observation_id__in")
                lookups["observation_id__in"] = sorted(ids if previous is None else ids & set(previous))
        reply = await self._query(OBSERVATIONS.name, lookups)
        reply.items = await self._with_set_ids(reply.items)
        return reply

    async def _with_set_ids(self, items: list[obs.ObservationData]) -> list[obs.ObservationData]:
        if not items:
            return items
        ids = [o.observation_id for o in items]
        sets, _ = await self.store.query(
            OBSERVATION_SETS.name,
            parse_query(OBSERVATION_SETS, {"observation_ids__overlap": ids, "limit": 0}),
        )
        by_obs: dict[int, list[uuid.UUID]] = {}
        for s in sets:
            for oid in s.observation_ids:
                by_obs.setdefault(oid, []).append(s.observation_set_id)
        return [
            msgspec.structs.replace(o, observation_set_ids=by_obs.get(o.observation_id, [])) for o in items
        ]

    async def _get_observations(self, msg: obs.ObservationsGet) -> list[obs.ObservationData]:
        found: dict[int, obs.ObservationData] = {}
        for lookups in get_mode_lookups(msg):
            page, _ = await self.store.query(OBSERVATIONS.name, parse_query(OBSERVATIONS, lookups))
            found.update((o.observation_id, o) for o in page)
        return await self._with_set_ids([found[k] for k in sorted(found)])

    async def _update_observations(self, msg: obs.ObservationsUpdate) -> list[obs.ObservationData]:
        ids = [u.observation_id for u in msg.observation_updates]
        found = {o.observation_id: o for o in await self.store.get_many(OBSERVATIONS.name, ids)}
        if missing := [i for i in ids if i not in found]:
            raise NotFound(f"no observation with observation_id {missing[0]}")
        now = _now()
        changed = {}
        for u in msg.observation_updates:
            changed[u.observation_id] = msgspec.structs.replace(
                changed.get(u.observation_id, found[u.observation_id]),
                invalid=u.invalid,
                modified_timestamp=now,
            )
        await self.store.update(OBSERVATIONS.name, list(changed.values()))
        self.ctx.publish("observations_updated", {"observation_ids": list(changed)})
        return await self._with_set_ids(list(changed.values()))

    # -- observation sets ------------------------------------------------------------------------------------
    async def _members(self, ids: list[int]) -> list[obs.ObservationData]:
        members = await self.store.get_many(OBSERVATIONS.name, ids)
        if len(members) != len(set(ids)):
            have = {m.observation_id for m in members}
            raise NotFound(f"no observation with observation_id {next(i for i in ids if i not in have)}")
        return members

    @staticmethod
    def _dut_label(members: list[obs.ObservationData]) -> str | None:
        labels = {m.dut_label for m in members}
        return labels.pop() if len(labels) == 1 else None

    async def _get_set(self, set_id: uuid.UUID) -> obs.ObservationSetData:
        found = await self.store.get(OBSERVATION_SETS.name, set_id)
        if found is None:
            raise NotFound(f"no observation set {set_id}")
        return found

    async def _create_set(self, d: obs.ObservationSetDefinition) -> obs.ObservationSetData:
        ids = list(dict.fromkeys(d.observation_ids))
        members = await self._members(ids)
        if d.describes_id is not None:
            await self._get_set(d.describes_id)
        record = obs.ObservationSetData(
            observation_set_type=d.observation_set_type,
            observation_ids=ids,
            describes_id=d.describes_id,
            invalid=d.invalid,
            dut_label=self._dut_label(members),
            created_timestamp=_now(),
        )
        (created,) = await self.store.insert(OBSERVATION_SETS.name, [record])
        self.ctx.publish("observation_set_created", {"observation_set_id": str(created.observation_set_id)})
        return created

    async def _update_set(self, msg: obs.ObservationSetsUpdate) -> obs.ObservationSetData:
        current = await self._get_set(msg.observation_set_id)
        adding = [i for i in msg.observation_ids or [] if i not in current.observation_ids]
        if current.end_timestamp is not None and msg.observation_ids:
            raise Conflict(
                f"observation set {current.observation_set_id} was finalized at "
                f"{current.end_timestamp.isoformat()}: only `invalid` may change"
            )
        changes: dict[str, Any] = {}
        if adding:
            ids = [*current.observation_ids, *dict.fromkeys(adding)]
            changes |= {"observation_ids": ids, "dut_label": self._dut_label(await self._members(ids))}
        if msg.invalid is not None:
            changes["invalid"] = msg.invalid
        updated = msgspec.structs.replace(current, **changes)
        await self.store.update(OBSERVATION_SETS.name, [updated])
        self.ctx.publish("observation_set_updated", {"observation_set_id": str(updated.observation_set_id)})
        return updated

    async def _finalize_set(self, set_id: uuid.UUID) -> obs.ObservationSetData:
        current = await self._get_set(set_id)
        if current.end_timestamp is not None:
            raise Conflict(
                f"observation set {set_id} was already finalized at {current.end_timestamp.isoformat()}"
            )
        final = msgspec.structs.replace(current, end_timestamp=_now())
        await self.store.update(OBSERVATION_SETS.name, [final])
        self.ctx.publish("observation_set_finalized", {"observation_set_id": str(set_id)})
        return final

    async def _set_members(self, set_id: uuid.UUID) -> list[obs.ObservationLite]:
        s = await self._get_set(set_id)
        members = await self.store.get_many(OBSERVATIONS.name, s.observation_ids)  # in the set's order
        return [
            obs.ObservationLite(
                observation_id=m.observation_id,
                dut_field=m.dut_field,
                value=m.value,
                unit=m.unit,
                uncertainty=m.uncertainty,
                invalid=m.invalid,
                created_timestamp=m.created_timestamp,
                modified_timestamp=m.modified_timestamp,
            )
            for m in members
        ]

    # -- sequences, DUTs, software versions ------------------------------------------------------------------
    async def _create_sequence_metadata(self, msg: obs.SequenceMetadatasCreate) -> obs.SequenceMetadataData:
        record = obs.SequenceMetadataData(
            sequence_id=msg.sequence_id,
            origin_id=msg.origin_id,
            origin_uri=msg.origin_uri,
            created_timestamp=_now(),
        )
        (created,) = await self.store.insert(SEQUENCE_METADATAS.name, [record])
        self.ctx.publish("sequence_metadata_created", {"sequence_id": str(msg.sequence_id)})
        return created

    async def _save_sequence_result(self, msg: obs.SequenceResultSave) -> obs.SequenceResultData:
        current = await self.store.get(SEQUENCE_RESULTS.name, msg.sequence_id)
        now = _now()
        record = obs.SequenceResultData(
            sequence_id=msg.sequence_id,
            data=msg.data,
            final=msg.final,
            created_timestamp=current.created_timestamp if current else now,
            modified_timestamp=now if current else None,
        )
        await self.store.upsert(SEQUENCE_RESULTS.name, [record])
        self.ctx.publish("sequence_result_saved", {"sequence_id": str(msg.sequence_id), "final": msg.final})
        return record

    async def _dut_fields(self, label: str) -> list[obs.DutFieldData]:
        q = parse_query(
            OBSERVATIONS, {"dut_label": label, "latest": "dut_field", "order_by": "dut_field", "limit": 0}
        )
        page, _ = await self.store.query(OBSERVATIONS.name, q)
        return [obs.DutFieldData(path=o.dut_field, unit=o.unit) for o in page]

    async def _software_version_set(self, versions: dict[str, str]) -> int:
        key = msgspec.json.encode(dict(sorted(versions.items()))).decode()
        page, _ = await self.store.query(
            SOFTWARE_VERSION_SETS.name, parse_query(SOFTWARE_VERSION_SETS, {"key": key})
        )
        if page:
            return page[0].software_version_set_id
        (created,) = await self.store.insert(
            SOFTWARE_VERSION_SETS.name,
            [SoftwareVersionSet(key=key, versions=versions, created_timestamp=_now())],
        )
        self.ctx.publish(
            "software_version_set_created", {"software_version_set_id": created.software_version_set_id}
        )
        return created.software_version_set_id

    # -- messages --------------------------------------------------------------------------------------------
    async def _insert_messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        created = await self.store.insert(MESSAGES.name, parse_messages(messages, _now()))
        self.ctx.publish(
            "messages_inserted", {"count": len(created), "topics": sorted({m.topic for m in created})}
        )
        return [flatten_message(m) for m in created]

    async def _query_messages(self, lookups: dict[str, Any]) -> obs.QueryReply:
        reply = await self._query(MESSAGES.name, message_lookups(lookups))
        reply.items = [flatten_message(m) for m in reply.items]
        return reply

    async def _query(self, coll: str, lookups: Mapping[str, Any]) -> obs.QueryReply:
        spec = next(c for c in ALL if c.name == coll)
        q = parse_query(spec, lookups)
        items, count = await self.store.query(coll, q)
        return obs.QueryReply(items=items, meta=_meta(lookups, count, q.limit, q.offset))

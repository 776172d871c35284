"""The observation store actor: IQM station-control semantics, through real asks on the bus."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from stationd.actors.specs import ActorSpec
from stationd.protocol import observations as obs
from stationd.protocol.errors import Conflict, InvalidParams, InvalidQuery, NotFound
from tests.support.harness import Harness

STORE = "observation_store"


def definition(field: str, value: Any = 1.0, **kw: Any) -> obs.ObservationDefinition:
    kw.setdefault("dut_label", "QB")
    kw.setdefault("source", {"type": "measurement_source", "run_id": str(uuid.UUID(int=1))})
    return obs.ObservationDefinition(dut_field=field, value=value, **kw)


@pytest.fixture(params=["sqlite", "mongodb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """The actor on each backend: both must give the same answers."""
    h = Harness(tmp_path)
    options: dict[str, Any] = {
        "duts": [{"label": "QB", "dut_type": "chip"}],
        "settings": {"readout": {"frequency": 7.2e9}},
    }
    if request.param == "mongodb":
        uri = request.getfixturevalue("mongo_uri")
        options |= {"backend": "mongodb", "mongodb_uri": uri, "mongodb_database": f"obs_{uuid.uuid4().hex}"}
    await h.start_tree(
        ActorSpec(name=STORE, actor="stationd.actors.observation_store:ObservationStore", options=options)
    )
    yield h
    await h.close()


def typed(type_: type, items: list[Any]) -> list[Any]:
    """Replies carry `items: list[Any]`; the client side types them (as the Python client does)."""
    return [msgspec.convert(i, type_) for i in items]


async def create(h: Harness, *defs: obs.ObservationDefinition) -> list[obs.ObservationData]:
    reply = await h.ask(STORE, obs.ObservationsCreate(observations=list(defs)))
    return typed(obs.ObservationData, reply.items)


async def query(h: Harness, **lookups: Any) -> obs.QueryReply:
    reply = await h.ask(STORE, obs.ObservationsQuery(lookups=lookups))
    reply.items = typed(obs.ObservationData, reply.items)
    return reply


async def test_created_observations_get_ids_timestamps_and_keep_their_values(store: Harness) -> None:
    arr = np.linspace(0, 1, 5)
    since = store.events.mark()
    items = await create(
        store, definition("QB.f", 4.5e9, unit="Hz"), definition("QB.t1", 1 + 2j), definition("QB.iq", arr)
    )
    assert [o.observation_id for o in items] == [1, 2, 3]
    assert items[0].created_timestamp == items[0].modified_timestamp and items[0].created_timestamp.tzinfo
    reply = await query(store, order_by="observation_id")
    assert reply.items[1].value == 1 + 2j
    np.testing.assert_array_equal(reply.items[2].value, arr)
    assert (await store.events.wait_event(STORE, "observations_created", since=since)) == {
        "observation_ids": [1, 2, 3]
    }


async def test_a_batch_with_one_bad_observation_writes_nothing(store: Harness) -> None:
    with pytest.raises(InvalidParams, match=r"observations\[1\]\.source\.type must be one of"):
        await create(store, definition("QB.a"), definition("QB.b", source={"type": "guess"}))
    with pytest.raises(InvalidParams, match=r"observations\[0\]\.value: dict is not a valid value"):
        await create(store, definition("QB.a", {"not": "a value"}))
    with pytest.raises(InvalidParams, match=r"observations\[0\]\.uncertainty: str is not a valid value"):
        await create(store, definition("QB.a", uncertainty="big"))
    assert (await query(store, invalid=None)).meta.count == 0


async def test_queries_hide_invalid_observations_unless_asked(store: Harness) -> None:
    a, b = await create(store, definition("QB.a"), definition("QB.b"))
    await store.ask(
        STORE,
        obs.ObservationsUpdate(
            observation_updates=[obs.ObservationUpdate(observation_id=b.observation_id, invalid=True)]
        ),
    )
    assert [o.observation_id for o in (await query(store)).items] == [a.observation_id]
    assert [o.observation_id for o in (await query(store, invalid=True)).items] == [b.observation_id]
    assert (await query(store, invalid=None)).meta.count == 2


async def test_query_lookups_meta_and_paging(store: Harness) -> None:
    await create(
        store,
        definition("QB1.f", tags=["calibration=good", "x"]),
        definition("QB2.f", tags=["y"]),
        definition("QB1.t1", tags=["x"], uncertainty=0.1),
    )
    reply = await query(
        store, dut_field__in=["QB1.f", "QB1.t1"], tags__overlap=["x"], order_by="-observation_id", limit=1
    )
    assert [o.observation_id for o in reply.items] == [3]
    assert (reply.meta.count, reply.meta.limit, reply.meta.offset, reply.meta.order_by) == (
        2,
        1,
        0,
        "-observation_id",
    )
    assert (await query(store, uncertainty__isnull=False)).meta.count == 1
    assert (
        await query(store, source__type="measurement_source", tags__contains=["x", "calibration=good"])
    ).meta.count == 1
    with pytest.raises(InvalidQuery, match="foo__bar: observations has no field 'foo'"):
        await query(store, foo__bar=1)


async def test_observations_are_immutable_but_for_invalid(store: Harness) -> None:
    (a,) = await create(store, definition("QB.a"))
    with pytest.raises(NotFound, match="no observation with observation_id 99"):
        await store.ask(
            STORE,
            obs.ObservationsUpdate(
                observation_updates=[
                    obs.ObservationUpdate(observation_id=a.observation_id, invalid=True),
                    obs.ObservationUpdate(observation_id=99, invalid=True),
                ]
            ),
        )
    assert (await query(store)).meta.count == 1  # nothing changed


async def test_get_observations_modes(store: Harness) -> None:
    run, seq = uuid.uuid4(), uuid.uuid4()
    await create(
        store,
        definition("QB.f", 1.0, tags=["a", "b"], source={"type": "measurement_source", "run_id": str(run)}),
        definition("QB.f", 2.0, tags=["a"]),
        definition(
            "QB.t1", 3.0, tags=["b"], source={"type": "sequence_analysis_source", "sequence_id": str(seq)}
        ),
    )

    async def get(**kw: Any) -> list[Any]:
        return [o["value"] for o in (await store.ask(STORE, obs.ObservationsGet(**kw))).items]

    assert sorted(await get(mode="all_latest", dut_label="QB")) == [2.0, 3.0]
    assert await get(mode="tags_and", tags=["a", "b"]) == [1.0]
    assert sorted(await get(mode="tags_or", tags=["b"], dut_label="QB")) == [1.0, 3.0]
    assert sorted(await get(mode="sequence", run_ids=[run], sequence_ids=[seq])) == [1.0, 3.0]
    with pytest.raises(InvalidParams, match="mode 'sequence' does not accept dut_label"):
        await get(mode="sequence", run_ids=[run], dut_label="QB")
    with pytest.raises(InvalidParams, match="mode 'tags_or' needs tags and dut_label"):
        await get(mode="tags_or", tags=["a"])


async def test_observation_set_life_cycle(store: Harness) -> None:
    await create(store, definition("QB.a"), definition("QB.b"), definition("QB.c"))
    created = await store.ask(
        STORE,
        obs.ObservationSetsCreate(
            observation_set=obs.ObservationSetDefinition(
                observation_set_type="calibration-set", observation_ids=[1, 2]
            )
        ),
    )
    s = msgspec.convert(created.item, obs.ObservationSetData)
    assert (s.dut_label, s.end_timestamp, s.observation_ids) == ("QB", None, [1, 2])
    set_id = s.observation_set_id
    updated = await store.ask(
        STORE, obs.ObservationSetsUpdate(observation_set_id=set_id, observation_ids=[3, 1])
    )
    assert updated.item["observation_ids"] == [1, 2, 3]  # ids can only be added
    final = (await store.ask(STORE, obs.ObservationSetsFinalize(observation_set_id=set_id))).item
    assert final["end_timestamp"] is not None
    with pytest.raises(Conflict, match=r"was finalized at .*: only `invalid` may change"):
        await store.ask(STORE, obs.ObservationSetsUpdate(observation_set_id=set_id, observation_ids=[4]))
    invalidated = await store.ask(STORE, obs.ObservationSetsUpdate(observation_set_id=set_id, invalid=True))
    assert invalidated.item["invalid"] and invalidated.item["end_timestamp"] == final["end_timestamp"]
    with pytest.raises(Conflict, match="already finalized"):
        await store.ask(STORE, obs.ObservationSetsFinalize(observation_set_id=set_id))
    members = (await store.ask(STORE, obs.ObservationSetObservations(observation_set_id=set_id))).items
    assert [m["observation_id"] for m in members] == [1, 2, 3]
    in_set = await query(store, observation_set_ids__overlap=[str(set_id)])
    assert [o["observation_id"] if isinstance(o, dict) else o.observation_id for o in in_set.items] == [
        1,
        2,
        3,
    ]
    assert in_set.items[0].observation_set_ids == [set_id]


async def test_latest_finalized_calibration_set_as_iqm_finds_it(store: Harness) -> None:
    await create(store, definition("QB.a"))
    ids = []
    for _ in range(3):
        reply = await store.ask(
            STORE,
            obs.ObservationSetsCreate(
                observation_set=obs.ObservationSetDefinition(
                    observation_set_type="calibration-set", observation_ids=[1]
                )
            ),
        )
        ids.append(reply.item["observation_set_id"])
    for set_id in ids[:2]:
        await store.ask(STORE, obs.ObservationSetsFinalize(observation_set_id=set_id))
    reply = await store.ask(
        STORE,
        obs.ObservationSetsQuery(
            lookups={
                "observation_set_type": "calibration-set",
                "dut_label": "QB",
                "end_timestamp__isnull": False,
                "order_by": "-end_timestamp",
                "limit": 1,
            }
        ),
    )
    assert [s["observation_set_id"] for s in reply.items] == [ids[1]]


async def test_sets_refuse_unknown_members_and_unknown_sets(store: Harness) -> None:
    with pytest.raises(NotFound, match="no observation with observation_id 7"):
        await store.ask(
            STORE,
            obs.ObservationSetsCreate(
                observation_set=obs.ObservationSetDefinition(
                    observation_set_type="generic-set", observation_ids=[7]
                )
            ),
        )
    with pytest.raises(NotFound, match="no observation set"):
        await store.ask(STORE, obs.ObservationSetsGet(observation_set_id=uuid.uuid4()))


async def test_sequence_metadata_and_results(store: Harness) -> None:
    seq = uuid.uuid4()
    await store.ask(
        STORE, obs.SequenceMetadatasCreate(sequence_id=seq, origin_id="alice", origin_uri="file://local/x")
    )
    with pytest.raises(Conflict):
        await store.ask(STORE, obs.SequenceMetadatasCreate(sequence_id=seq, origin_id="bob", origin_uri="x"))
    found = await store.ask(STORE, obs.SequenceMetadatasQuery(lookups={"origin_uri__icontains": "LOCAL"}))
    assert [m["origin_id"] for m in found.items] == ["alice"]
    save = obs.SequenceResultSave
    first = (await store.ask(STORE, save(sequence_id=seq, data={"x": 1}, final=False))).item
    assert first["modified_timestamp"] is None
    second = (await store.ask(STORE, save(sequence_id=seq, data={"y": 2}, final=True))).item
    assert second["data"] == {"y": 2} and second["final"] and second["modified_timestamp"] is not None
    assert second["created_timestamp"] == first["created_timestamp"]
    got = (await store.ask(STORE, obs.SequenceResultGet(sequence_id=seq))).item
    assert got == second
    with pytest.raises(NotFound):
        await store.ask(STORE, obs.SequenceResultGet(sequence_id=uuid.uuid4()))


async def test_duts_fields_settings_and_software_versions(store: Harness) -> None:
    await create(
        store, definition("QB.f", unit="Hz"), definition("QB.t1", unit="s"), definition("QB.f", unit="Hz")
    )
    assert (await store.ask(STORE, obs.DutsGet())).items == [{"label": "QB", "dut_type": "chip"}]
    fields = (await store.ask(STORE, obs.DutFieldsGet(dut_label="QB"))).items
    assert fields == [{"path": "QB.f", "unit": "Hz"}, {"path": "QB.t1", "unit": "s"}]
    assert (await store.ask(STORE, obs.SettingsGet())).settings == {"readout": {"frequency": 7.2e9}}
    one = await store.ask(STORE, obs.SoftwareVersionSetGetOrCreate(software_version_set={"b": "2", "a": "1"}))
    same = await store.ask(
        STORE, obs.SoftwareVersionSetGetOrCreate(software_version_set={"a": "1", "b": "2"})
    )
    other = await store.ask(STORE, obs.SoftwareVersionSetGetOrCreate(software_version_set={"a": "2"}))
    assert one.software_version_set_id == same.software_version_set_id != other.software_version_set_id


async def test_messages_need_topic_and_timestamp_and_are_queried_by_their_free_keys(store: Harness) -> None:
    with pytest.raises(InvalidParams, match=r"messages\[1\]: missing timestamp; nothing was inserted"):
        await store.ask(STORE, obs.MessagesInsert(messages=[{"topic": "t", "timestamp": 1}, {"topic": "t"}]))
    inserted = await store.ask(
        STORE,
        obs.MessagesInsert(
            messages=[
                {"topic": "cryo", "timestamp": 1_795_000_000.25, "temperature": 0.012, "device": "mmr3"},
                {"topic": "cryo", "timestamp": "2026-11-21T10:00:00Z", "temperature": 4.2, "device": "mgc3"},
                {"topic": "daq", "timestamp": 1_795_000_001, "val1": 5},
            ]
        ),
    )
    assert [m["message_id"] for m in inserted.items] == [1, 2, 3]
    cold = await store.ask(STORE, obs.MessagesQuery(lookups={"topic": "cryo", "temperature__range": [0, 1]}))
    assert [(m["device"], m["temperature"]) for m in cold.items] == [("mmr3", 0.012)]
    assert cold.meta.count == 1

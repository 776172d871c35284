"""Both backends answer every lookup exactly as the plain-Python reference does (hypothesis: records,
queries)."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from stationd.actors.storage import evaluate, parse_query
from tests.actors.storage.conftest import Backend
from tests.actors.storage.records import RECS, Rec

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
TIMES = [T0 + datetime.timedelta(seconds=s, microseconds=us) for s in (0, 1, 60) for us in (0, 1, 999_999)]
UIDS = [uuid.UUID(int=i) for i in (1, 2, 3)]
NAMES = ["a", "b", "Ab", "ÇA", "x_y%", "Straße", "STRASSE"]
TAGS = ["t1", "t2", "t3", "T1"]
# JSON values of every type under one key: the reference compares JSON booleans as 1/0, containers as their
# JSON text, and never strings with numbers; keys with `.`, `$` and `%` must stay single path elements
JSON_SCALARS = [0, 1, 2, 1.0, 0.5, True, False, "a", "A", "1", "true", "ß", "ss", "[1]", '{"k":"p"}']
JSON_VALUES = st.one_of(
    st.sampled_from([*JSON_SCALARS, None]),
    st.lists(st.sampled_from([1, "a", True]), max_size=2),
    st.fixed_dictionaries({}, optional={"k": st.sampled_from(["p", "Q", 1])}),
)
ODD_KEYS = ["a.b", "$x", "%", "%2E"]

metas = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["m", "s", "Ms"]),
        "run": st.integers(0, 3),
        "flag": st.booleans(),
        "inner": st.fixed_dictionaries({}, optional={"k": st.sampled_from(["p", "q"])}),
        "v": JSON_VALUES,
        **{key: st.sampled_from(["p", 1]) for key in ODD_KEYS},
    },
)
records = st.builds(
    Rec,
    name=st.sampled_from(NAMES),
    kind=st.sampled_from(["k1", "k2", None]),
    n=st.one_of(st.none(), st.integers(-2, 3)),
    x=st.sampled_from([0.0, 0.5, -1.25, 3.0]),
    flag=st.booleans(),
    at=st.sampled_from(TIMES),
    uid=st.sampled_from([*UIDS, None]),
    tags=st.lists(st.sampled_from(TAGS), max_size=3),
    meta=metas,
    payload=st.sampled_from([None, 1, "v", [1, 2]]),
    created_timestamp=st.sampled_from(TIMES),
)

FILTERS: list[st.SearchStrategy[tuple[str, Any]]] = [
    st.tuples(st.just("name"), st.sampled_from(NAMES)),
    st.tuples(st.just("name__in"), st.lists(st.sampled_from(NAMES), max_size=3)),
    st.tuples(st.just("name__icontains"), st.sampled_from(["a", "ç", "_", "%", "X"])),
    st.tuples(st.just("name__contains"), st.sampled_from(["a", "A", "_y"])),
    st.tuples(st.just("name__range"), st.lists(st.sampled_from(NAMES), min_size=2, max_size=2)),
    st.tuples(st.just("kind"), st.sampled_from(["k1", "k2", None])),
    st.tuples(st.just("kind__isnull"), st.booleans()),
    st.tuples(st.just("n__range"), st.lists(st.integers(-2, 3), min_size=2, max_size=2)),
    st.tuples(st.just("n__in"), st.lists(st.integers(-2, 3), max_size=3)),
    st.tuples(st.just("n__isnull"), st.booleans()),
    st.tuples(st.just("x__range"), st.tuples(st.sampled_from([-1.25, 0.0]), st.sampled_from([0.5, 3.0]))),
    st.tuples(st.just("flag"), st.booleans()),
    st.tuples(
        st.just("at__range"),
        st.lists(st.sampled_from(TIMES).map(lambda t: t.isoformat()), min_size=2, max_size=2),
    ),
    st.tuples(st.just("at"), st.sampled_from(TIMES)),
    st.tuples(st.just("uid__in"), st.lists(st.sampled_from(UIDS).map(str), max_size=2)),
    st.tuples(st.just("uid__isnull"), st.booleans()),
    st.tuples(st.just("tags__overlap"), st.lists(st.sampled_from(TAGS), max_size=3)),
    st.tuples(st.just("tags__contains"), st.lists(st.sampled_from(TAGS), max_size=3)),
    st.tuples(st.just("meta__type"), st.sampled_from(["m", "s"])),
    st.tuples(st.just("meta__type__in"), st.lists(st.sampled_from(["m", "s", "Ms"]), max_size=2)),
    st.tuples(st.just("meta__type__icontains"), st.sampled_from(["m", "S"])),
    st.tuples(st.just("meta__run__range"), st.lists(st.integers(0, 3), min_size=2, max_size=2)),
    st.tuples(st.just("meta__run__isnull"), st.booleans()),
    st.tuples(st.just("meta__flag"), st.booleans()),
    st.tuples(st.just("meta__inner__k"), st.sampled_from(["p", "q"])),
    st.tuples(st.just("meta__isnull"), st.booleans()),
    st.tuples(st.just("payload__isnull"), st.booleans()),
    st.tuples(st.just("name__icontains"), st.sampled_from(["ß", "ss", "SS", "straße"])),
    st.tuples(st.just("tags__isnull"), st.booleans()),
    st.tuples(st.just("tags__contains"), st.just([])),
    st.tuples(st.just("meta__v"), st.sampled_from([*JSON_SCALARS, None])),
    st.tuples(st.just("meta__v__in"), st.lists(st.sampled_from(JSON_SCALARS), max_size=3)),
    st.tuples(st.just("meta__v__range"), st.lists(st.sampled_from(JSON_SCALARS), min_size=2, max_size=2)),
    st.tuples(st.just("meta__v__contains"), st.sampled_from(["a", "A", "1", "k", '"', "ß", "["])),
    st.tuples(st.just("meta__v__icontains"), st.sampled_from(["a", "q", "SS", "ß", "TRUE", "{"])),
    st.tuples(st.just("meta__v__isnull"), st.booleans()),
    st.tuples(st.just("meta__v__k"), st.sampled_from(["p", "q", 1, True])),
    st.tuples(st.just("meta__v__k__isnull"), st.booleans()),
    st.tuples(st.sampled_from([f"meta__{k}" for k in ODD_KEYS]), st.sampled_from(["p", 1, "1"])),
]
queries = st.tuples(
    st.lists(st.one_of(FILTERS), max_size=3),
    st.sampled_from([None, "name", "kind", "flag", "n"]),
    st.lists(
        st.sampled_from(["name", "-name", "n", "-n", "at", "-at", "flag", "-x", "uid", "-kind"]), max_size=2
    ),
    st.sampled_from([0, 1, 3, 20]),
    st.integers(0, 3),
).map(
    lambda t: {
        **dict(t[0]),
        **({"latest": t[1]} if t[1] else {}),
        **({"order_by": ",".join(t[2])} if t[2] else {}),
        "limit": t[3],
        "offset": t[4],
    }
)


@settings(
    max_examples=300,
    deadline=None,
    # `backend` only makes stores; every example opens one on fresh storage of its own
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(recs=st.lists(records, max_size=25), params_list=st.lists(queries, min_size=1, max_size=6))
def test_the_backend_answers_like_the_python_reference(
    backend: Backend, recs: list[Rec], params_list: list[dict[str, Any]]
) -> None:
    name = uuid.uuid4().hex  # fresh storage for every example

    async def run() -> None:
        store = backend.store(name=name)
        await store.open()
        try:
            stored = await store.insert("recs", recs)
            for params in params_list:
                q = parse_query(RECS, params)
                expected, expected_count = evaluate(RECS, stored, q)
                got, got_count = await store.query("recs", q)
                assert [r.rec_id for r in got] == [r.rec_id for r in expected], params
                assert got_count == expected_count, params
                assert got == expected
                assert await store.count("recs", q) == expected_count, params
                event(f"rows {min(got_count, 3)}")
        finally:
            await store.close()

    try:
        asyncio.run(run())
    finally:
        backend.discard(name)

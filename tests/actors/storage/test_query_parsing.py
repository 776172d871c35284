"""Lookups are validated up front: every bad parameter is named, nothing half-valid reaches a backend."""

from __future__ import annotations

import datetime
import uuid

import pytest

from stationd.actors.storage import Kind, parse_query
from stationd.protocol.errors import InvalidQuery
from tests.actors.storage.records import RECS


def test_exact_is_the_default_lookup_and_values_are_converted_to_the_field_type() -> None:
    q = parse_query(RECS, {"name": "a", "at": "2026-01-01T00:00:01Z", "uid": str(uuid.UUID(int=5))})
    by_field = {f.field: f for f in q.filters}
    assert by_field["name"].lookup == "exact"
    assert by_field["at"].value == datetime.datetime(2026, 1, 1, 0, 0, 1, tzinfo=datetime.UTC)
    assert by_field["uid"].value == uuid.UUID(int=5)


def test_naive_times_are_taken_as_utc() -> None:
    (f,) = parse_query(RECS, {"at": "2026-01-01T00:00:00"}).filters
    assert f.value.tzinfo is datetime.UTC


def test_nested_paths_of_mapping_fields() -> None:
    (f,) = parse_query(RECS, {"meta__inner__k__in": ["p", "q"]}).filters
    assert (f.field, f.path, f.lookup, f.value, f.kind) == (
        "meta",
        ("inner", "k"),
        "in",
        ("p", "q"),
        Kind.JSON,
    )


def test_cli_style_comma_lists_are_accepted_for_list_lookups() -> None:
    (f,) = parse_query(RECS, {"tags__overlap": "a,b"}).filters
    assert f.value == ("a", "b")


def test_defaults_and_paging() -> None:
    q = parse_query(RECS, {})
    assert (q.limit, q.offset, q.latest, q.order_by) == (20, 0, None, ())
    q = parse_query(RECS, {"limit": "0", "order_by": "-at,name", "latest": "name"})
    assert q.limit == 0 and [(o.field, o.descending) for o in q.order_by] == [("at", True), ("name", False)]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"foo": 1}, "foo: recs has no field 'foo'"),
        ({"foo__bar": 1}, "foo__bar: recs has no field 'foo'"),
        ({"name__bogus": "x"}, "name__bogus: unknown lookup 'bogus'"),
        ({"name__a__b": "x"}, "name__a__b: 'name' has no sub-fields"),
        ({"n__icontains": "x"}, "n__icontains: lookup 'icontains' does not apply to 'n'"),
        ({"tags": "x"}, "tags: lookup 'exact' does not apply to 'tags'"),
        ({"n": "seven"}, "n: Expected `int`, got `str`"),
        ({"at__range": ["2026-01-01T00:00:00Z"]}, "at__range: a range needs exactly two bounds"),
        ({"at__range": "2026-01-01T00:00:00Z"}, "at__range: a range needs exactly two bounds"),
        ({"n__range": [1, None]}, "n__range: Expected `int`, got `null`"),
        ({"n__in": [1, None]}, "n__in: Expected `int`, got `null`"),
        ({"meta__run__in": [None]}, "meta__run__in: Expected `bool | int | float | str`, got `null`"),
        ({"kind__isnull": "perhaps"}, "kind__isnull: Expected `bool`"),
        ({"uid": "not-a-uuid"}, "uid: Invalid UUID"),
        ({"payload": 1}, "payload: lookup 'exact' does not apply to 'payload'"),
        ({"order_by": "tags"}, "order_by: cannot order recs by 'tags'"),
        ({"latest": "meta"}, "latest: cannot pick the latest recs by 'meta'"),
        ({"limit": "many"}, "limit: Expected `int`"),
        ({"offset": -1}, "offset: must be 0 or more"),
    ],
)
def test_each_bad_parameter_is_named(params: dict, message: str) -> None:
    with pytest.raises(InvalidQuery) as info:
        parse_query(RECS, params)
    assert message in info.value.msg
    assert info.value.code == "invalid_query"


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(InvalidQuery) as info:
        parse_query(RECS, {"foo": 1, "n": "x", "limit": "y"})
    assert info.value.msg.count(";") == 2

"""Errors: stable, unique codes that survive the wire."""

from __future__ import annotations

import pytest

from stationd.protocol import errors
from stationd.protocol.errors import StationError, error_from_code

ERROR_TYPES = [
    obj
    for name in errors.__all__
    if isinstance(obj := getattr(errors, name), type)
    and issubclass(obj, StationError)
    and obj is not StationError
]


def test_every_error_type_has_its_own_code() -> None:
    codes = [t.code for t in ERROR_TYPES]
    assert len(codes) == len(set(codes)), codes


@pytest.mark.parametrize("error_type", ERROR_TYPES, ids=lambda t: t.__name__)
def test_an_error_rebuilt_from_its_code_has_the_same_type_and_message(error_type: type[StationError]) -> None:
    info = error_type("what happened").to_info()
    rebuilt = error_from_code(info.code, info.msg)
    assert type(rebuilt) is error_type and rebuilt.msg == "what happened"


def test_an_unknown_code_from_a_newer_peer_keeps_its_code() -> None:
    err = error_from_code("brand_new_code", "explained")
    assert isinstance(err, StationError) and err.code == "brand_new_code" and err.msg == "explained"

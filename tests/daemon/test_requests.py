"""Front-door request decoding: any bytes, any JSON, give a typed error naming the problem, never a crash."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stationd.daemon.requests import RequestDecoder
from stationd.protocol.errors import (
    InvalidParams,
    InvalidRequest,
    MalformedRequest,
    RequestTooLarge,
    StationError,
    UnknownMethod,
)
from stationd.protocol.methods import METHODS
from stationd.protocol.system import StatusParams

DECODER = RequestDecoder(METHODS, max_request_bytes=4096)

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def decode(payload: bytes):  # type: ignore[no-untyped-def]
    return DECODER.decode(DECODER.codec_for(payload), payload)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_give_a_typed_error(data: bytes) -> None:
    try:
        method, _ = decode(data)
    except StationError as err:
        assert err.code in {"malformed_request", "invalid_request", "unknown_method", "invalid_params"}
        assert err.msg
    else:
        assert method.name in METHODS


@settings(max_examples=500)
@given(JSON_VALUES)
def test_random_json_decodes_or_gives_a_typed_error(value: object) -> None:
    for payload in (msgspec.json.encode(value), msgspec.msgpack.encode(value)):
        try:
            decode(payload)
        except StationError as err:
            assert err.msg


@settings(max_examples=200)
@given(st.sampled_from(list(METHODS)), st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3))
def test_random_params_of_a_known_method_decode_or_give_invalid_params(method: str, params: dict) -> None:
    try:
        decode(msgspec.json.encode({"method": method, "params": params}))
    except InvalidParams as err:
        assert method in err.msg or "unsupported parameters" in err.msg


def test_a_known_method_without_params_decodes() -> None:
    method, params = decode(b'{"method": "status"}')
    assert method.name == "status" and params == StatusParams()


def test_msgpack_requests_decode_like_json() -> None:
    method, params = decode(msgspec.msgpack.encode({"method": "status", "params": {}}))
    assert method.name == "status" and params == StatusParams()


@pytest.mark.parametrize(
    ("payload", "error", "text"),
    [
        (b"not json{", MalformedRequest, "Failed to decode the request: json decode error"),
        (b"[1, 2]", MalformedRequest, "Incorrect request type: array. Dictionary is expected"),
        (b'"status"', MalformedRequest, "Incorrect request type: str. Dictionary is expected"),
        (b'{"params": {}}', InvalidRequest, "missing required field `method`"),
        (b'{"method": "status", "extra": 1}', InvalidRequest, "unknown field `extra`"),
        (b'{"method": 5}', InvalidRequest, "Expected `str`, got `int`"),
        (b'{"method": "bogus"}', UnknownMethod, "Unknown method 'bogus'"),
        (
            b'{"method": "status", "params": {"x": 1, "y": 2}}',
            InvalidParams,
            "unsupported parameters: ['x', 'y']",
        ),
        (b'{"method": "status", "params": {"x": 1}}', InvalidParams, "unsupported parameters: 'x'"),
        (b'{"method": "status", "params": []}', InvalidParams, "must be an object"),
        (msgspec.msgpack.encode({"method": "status"})[:-2], MalformedRequest, "msgpack decode error"),
        (b"\x81\xa2\x00\x80", MalformedRequest, "msgpack decode error"),  # a key that is not UTF-8
    ],
)
def test_each_kind_of_bad_request_names_its_problem(payload: bytes, error: type, text: str) -> None:
    with pytest.raises(error) as info:
        decode(payload)
    assert text in info.value.msg


def test_a_request_over_the_size_limit_is_refused_with_the_sizes() -> None:
    payload = b'{"method": "status", "params": {"pad": "' + b"x" * 5000 + b'"}}'
    with pytest.raises(RequestTooLarge) as info:
        decode(payload)
    assert info.value.msg == f"Request of {len(payload)} bytes exceeds the limit of 4096 bytes"

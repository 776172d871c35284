"""Codecs: every message round-trips in msgpack and JSON; numpy travels without being imported up front."""

from __future__ import annotations

import datetime
import enum
import math
import types
import typing
import uuid
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stationd.protocol.codec import (
    Encoding,
    detect_encoding,
    json_decoder,
    json_encoder,
    msgpack_decoder,
    msgpack_encoder,
    revive,
)
from stationd.protocol.schema import all_message_types

# Envelope and Request carry msgspec.Raw (already-encoded bytes of one encoding); they have their own tests.
MESSAGE_TYPES = [
    t for t in all_message_types() if not any(f.type is msgspec.Raw for f in msgspec.structs.fields(t))
]


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda t: t.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_message_round_trips_in_msgpack_and_json(message_type: type, data: st.DataObject) -> None:
    msg = data.draw(_message_strategy(message_type))
    assert msgpack_decoder(message_type).decode(msgpack_encoder().encode(msg)) == msg
    assert json_decoder(message_type).decode(json_encoder().encode(msg)) == msg


def _message_strategy(message_type: type) -> st.SearchStrategy[Any]:
    """Build instances field by field from JSON-safe values (Raw fields get encoded objects)."""
    fields = msgspec.structs.fields(message_type)
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for f in fields:
        kwargs[f.name] = _value_strategy(f.type)
    return st.fixed_dictionaries(kwargs).map(lambda kw: message_type(**kw))


_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_JSON_VALUES = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _value_strategy(tp: Any) -> st.SearchStrategy[Any]:
    """Values of a field type; integers stay within msgpack's and JSON's exact range."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        meta = next((a for a in args[1:] if isinstance(a, msgspec.Meta)), None)
        if args[0] is str and meta is not None and meta.pattern:
            return st.from_regex(meta.pattern, fullmatch=True)
        if args[0] is str and meta is not None and (meta.min_length or meta.max_length):
            return st.text(min_size=meta.min_length or 0, max_size=min(meta.max_length or 20, 20))
        if args[0] is float and meta is not None:
            low = meta.ge if meta.ge is not None else meta.gt
            return st.floats(
                min_value=low,
                max_value=meta.le,
                exclude_min=meta.gt is not None,
                allow_nan=False,
                allow_infinity=False,
            )
        if args[0] is int and meta is not None and meta.ge is not None:
            return st.integers(min_value=meta.ge, max_value=2**53)
        return _value_strategy(args[0])
    if tp is Any:
        return _JSON_VALUES
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _message_strategy(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[_value_strategy(a) for a in args])
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(_value_strategy(args[0]), max_size=3)
    if origin is tuple and ... not in args:
        return st.tuples(*[_value_strategy(a) for a in args])
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), _value_strategy(args[1]), max_size=3)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        type(None): st.none(),
        msgspec.UnsetType: st.just(msgspec.UNSET),
        bool: st.booleans(),
        int: st.integers(min_value=-(2**53), max_value=2**53),
        float: st.floats(allow_nan=False, allow_infinity=False),
        str: st.text(max_size=20),
        uuid.UUID: st.uuids(),
        datetime.datetime: st.datetimes(timezones=st.just(datetime.UTC)),
    }
    return simple[tp]


def test_an_envelope_carries_its_body_unparsed() -> None:
    from stationd.daemon.mailbox import decode_envelope, encode_body, encode_envelope
    from stationd.protocol.envelope import Envelope, Kind

    body = encode_body({"x": [1, 2.5, "z"]})
    env = decode_envelope(encode_envelope(Envelope(Kind.ASK, "a", 7, 123.5, body, user="u", user_group="g")))
    assert (env.kind, env.sender, env.corr, env.deadline, env.user, env.user_group) == (
        1,
        "a",
        7,
        123.5,
        "u",
        "g",
    )
    assert msgspec.msgpack.decode(env.body) == {"x": [1, 2.5, "z"]}


@given(
    st.lists(st.integers(1, 5), min_size=0, max_size=3).flatmap(
        lambda shape: st.sampled_from(["<f8", "<i4", "<u2", "|b1", "<c16"]).map(lambda dt: (shape, dt))
    )
)
@settings(max_examples=40, deadline=None)
def test_numpy_arrays_round_trip_exactly_in_msgpack(shape_dtype: tuple[list[int], str]) -> None:
    shape, dtype = shape_dtype
    arr = (np.arange(math.prod(shape)) % 3).astype(dtype).reshape(shape)
    out = msgpack_decoder().decode(msgpack_encoder().encode({"a": arr}))["a"]
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_numpy_arrays_travel_in_json_as_iqm_objects_and_come_back_exactly() -> None:
    arr = np.array([[1, 2], [3, 4]], dtype=np.int16)
    encoded = json_encoder().encode({"a": arr, "f": np.float64(1.5), "b": np.bool_(True)})
    plain = json_decoder().decode(encoded)
    assert plain["a"] == {"__ndarray__": "true", "data": "AQACAAMABAA=", "dtype": "<i2", "shape": [2, 2]}
    assert (plain["f"], plain["b"]) == (1.5, True)
    back = revive(plain)["a"]
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


def test_complex_numbers_round_trip() -> None:
    assert msgpack_decoder().decode(msgpack_encoder().encode([1 + 2j])) == [1 + 2j]
    marker = {"__complex__": "true", "real": 1.0, "imag": 2.0}
    assert json_decoder().decode(json_encoder().encode([1 + 2j])) == [marker]
    assert json_decoder(list[complex]).decode(json_encoder().encode([1 + 2j])) == [1 + 2j]
    revived = revive(
        {"v": {"__complex__": True, "real": 0, "imag": -1}, "t": {"__tuple__": "true", "data": [1]}}
    )
    assert revived == {"v": -1j, "t": (1,)}


def test_unsupported_objects_are_refused_with_their_type_named() -> None:
    with pytest.raises(NotImplementedError, match="cannot encode objects of type object"):
        msgpack_encoder().encode(object())
    with pytest.raises(NotImplementedError, match="cannot encode objects of type object"):
        json_encoder().encode(object())


@given(st.binary(max_size=64))
def test_encoding_detection_never_fails(data: bytes) -> None:
    assert detect_encoding(data) in (Encoding.JSON, Encoding.MSGPACK)


def test_a_msgpack_map_is_detected_and_json_is_the_default() -> None:
    assert detect_encoding(msgspec.msgpack.encode({"method": "ping"})) == Encoding.MSGPACK
    assert detect_encoding(b'{"method": "ping"}') == Encoding.JSON
    assert detect_encoding(b"") == Encoding.JSON

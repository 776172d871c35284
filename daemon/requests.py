"""Decoding of front-door requests: envelope, method, params, with an error that names every problem."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from stationd.protocol.codec import (
    Encoding,
    detect_encoding,
    json_decoder,
    json_encoder,
    msgpack_decoder,
    msgpack_encoder,
)
from stationd.protocol.errors import (
    InvalidParams,
    InvalidRequest,
    MalformedRequest,
    RequestTooLarge,
    UnknownMethod,
)
from stationd.protocol.frontdoor import ALLOWED_REQUEST_KEYS, Request
from stationd.protocol.methods import Method

__all__ = ["Codec", "RequestDecoder"]

_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(.+)`")


class Codec:
    """Request decoding and reply encoding for one wire encoding."""

    def __init__(self, encoding: Encoding) -> None:
        self.encoding = encoding
        if encoding == Encoding.JSON:
            self.request = json_decoder(Request)
            self.mapping = json_decoder(dict[str, Any])
            self.encode = json_encoder().encode
            self._params_decoder: Callable[[Any], Any] = json_decoder
        else:
            self.request = msgpack_decoder(Request)
            self.mapping = msgpack_decoder(dict[str, Any])
            self.encode = msgpack_encoder().encode
            self._params_decoder = msgpack_decoder
        self._params: dict[type, Any] = {}

    def params(self, type_: type) -> Any:
        dec = self._params.get(type_)
        if dec is None:
            dec = self._params[type_] = self._params_decoder(type_)
        return dec


class RequestDecoder:
    """Turns request bytes into `(method, params)` or raises the `StationError` to send back."""

    def __init__(self, methods: Mapping[str, Method], max_request_bytes: int) -> None:
        self._methods = methods
        self._max = max_request_bytes
        self.codecs = {Encoding.JSON: Codec(Encoding.JSON), Encoding.MSGPACK: Codec(Encoding.MSGPACK)}

    def codec_for(self, payload: bytes) -> Codec:
        """The codec of the request's encoding (replies use the same)."""
        return self.codecs[detect_encoding(payload)]

    def decode(self, codec: Codec, payload: bytes) -> tuple[Method, Any]:
        if len(payload) > self._max:
            raise RequestTooLarge(f"Request of {len(payload)} bytes exceeds the limit of {self._max} bytes")
        try:
            request = codec.request.decode(payload)
        except msgspec.ValidationError as exc:
            text = str(exc)
            if text.startswith("Expected `object`"):
                kind = text.split(", got ")[-1].strip("`") if ", got " in text else "unknown"
                raise MalformedRequest(f"Incorrect request type: {kind}. Dictionary is expected") from None
            raise InvalidRequest(
                f"Invalid request format: {text}. Allowed keys: {ALLOWED_REQUEST_KEYS}"
            ) from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgpack strings are not checked up front
            raise MalformedRequest(
                f"Failed to decode the request: {codec.encoding} decode error: {exc}"
            ) from None
        method = self._methods.get(request.method)
        if method is None:
            raise UnknownMethod(f"Unknown method '{request.method}'")
        raw = request.params
        if method.lookups:
            return method, method.params(lookups=self._lookups(codec, method, raw))
        if not len(raw):
            try:
                return method, method.params()
            except TypeError as exc:
                raise InvalidParams(f"Method '{method.name}' requires params: {exc}") from None
        try:
            return method, codec.params(method.params).decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidParams(self._params_error(codec, method, raw, exc)) from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # params stayed raw bytes until now
            raise MalformedRequest(f"Failed to decode the params: {exc}") from None

    @staticmethod
    def _lookups(codec: Codec, method: Method, raw: msgspec.Raw) -> dict[str, Any]:
        if not len(raw):
            return {}
        try:
            return codec.mapping.decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidParams(f"Params of '{method.name}' must be an object of lookups: {exc}") from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise MalformedRequest(f"Failed to decode the params: {exc}") from None

    def _params_error(
        self, codec: Codec, method: Method, raw: msgspec.Raw, exc: msgspec.ValidationError
    ) -> str:
        supported = [f for f in method.params.__struct_fields__]
        if _UNKNOWN_FIELD.match(str(exc)):
            given = codec.mapping.decode(raw)
            unknown = [k for k in given if k not in supported and k != "type"]
            shown = f"'{unknown[0]}'" if len(unknown) == 1 else str(unknown)
            return f"API request contains unsupported parameters: {shown}. Supported parameters: {supported}"
        if str(exc).startswith("Expected `object`"):
            return f"Params of '{method.name}' must be an object: {exc}"
        return f"Invalid params of '{method.name}': {exc}"

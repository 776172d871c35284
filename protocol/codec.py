"""Encoders and decoders for the bus (msgpack) and for clients (JSON or msgpack, detected per message).

numpy values are supported without importing numpy up front (the daemon must start fast): arrays travel as a
msgpack extension (dtype, shape, raw bytes); in JSON, arrays and complex numbers use IQM station control's
objects (`{"__ndarray__": "true", "data": <base64>, "dtype", "shape"}`, `{"__complex__": "true", "real",
"imag"}`), which `revive` turns back into values. numpy scalars become Python scalars.
"""

from __future__ import annotations

import base64
from enum import StrEnum
from typing import Any

import msgspec

__all__ = [
    "NDARRAY_EXT",
    "Encoding",
    "dec_hook",
    "detect_encoding",
    "enc_hook_json",
    "enc_hook_msgpack",
    "ext_hook",
    "json_decoder",
    "json_encoder",
    "msgpack_decoder",
    "msgpack_encoder",
    "revive",
]

NDARRAY_EXT = 1
"""msgpack extension code of a numpy array: payload = msgpack([dtype.str, shape]) + raw bytes."""
COMPLEX_EXT = 2
"""msgpack extension code of a complex number: payload = msgpack([real, imag])."""


class Encoding(StrEnum):
    """Wire encodings a client may use."""

    JSON = "json"
    MSGPACK = "msgpack"


def detect_encoding(data: bytes | memoryview) -> Encoding:
    """Tell msgpack from JSON by the first byte: a msgpack map starts with 0x80-0x8f, 0xde or 0xdf."""
    if data and (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):
        return Encoding.MSGPACK
    return Encoding.JSON


def _is_numpy(obj: object) -> bool:
    return type(obj).__module__ == "numpy"


def enc_hook_msgpack(obj: Any) -> Any:
    """Encode numpy arrays as an extension, numpy scalars as Python scalars, complex as an extension."""
    if isinstance(obj, complex):
        return msgspec.msgpack.Ext(COMPLEX_EXT, msgspec.msgpack.encode([obj.real, obj.imag]))
    if _is_numpy(obj):
        import numpy as np

        if isinstance(obj, np.ndarray):
            arr = obj if obj.flags.c_contiguous else obj.copy(order="C")  # ascontiguousarray makes 0-d 1-d
            if arr.dtype.hasobject:
                return arr.tolist()
            header = msgspec.msgpack.encode([arr.dtype.str, list(arr.shape)])
            return msgspec.msgpack.Ext(
                NDARRAY_EXT, len(header).to_bytes(4, "little") + header + arr.tobytes()
            )
        if isinstance(obj, np.generic):
            return obj.item()
    raise NotImplementedError(f"cannot encode objects of type {type(obj).__name__}")


def enc_hook_json(obj: Any) -> Any:
    """Encode arrays and complex numbers as IQM's marker objects, numpy scalars as Python scalars."""
    if isinstance(obj, complex):
        return {"__complex__": "true", "real": obj.real, "imag": obj.imag}
    if _is_numpy(obj):
        import numpy as np

        if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
            data = base64.b64encode(np.ascontiguousarray(obj).tobytes()).decode()
            return {"__ndarray__": "true", "data": data, "dtype": obj.dtype.str, "shape": list(obj.shape)}
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, np.generic):
            return obj.item()
    raise NotImplementedError(f"cannot encode objects of type {type(obj).__name__}")


def revive(value: Any) -> Any:
    """Turn IQM's `__complex__`/`__ndarray__`/`__tuple__` objects (from JSON) back into values."""
    if isinstance(value, list):
        return [revive(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__complex__" in value:
        return complex(value["real"], value["imag"])
    if "__ndarray__" in value:
        import numpy as np

        raw = base64.b64decode(value["data"])
        return np.frombuffer(raw, dtype=np.dtype(value["dtype"])).reshape(tuple(value["shape"])).copy()
    if "__tuple__" in value:
        return tuple(revive(v) for v in value["data"])
    return {k: revive(v) for k, v in value.items()}


def ext_hook(code: int, data: memoryview) -> Any:
    """Decode the msgpack extensions written by `enc_hook_msgpack`."""
    if code == NDARRAY_EXT:
        import numpy as np

        size = int.from_bytes(data[:4], "little")
        dtype, shape = msgspec.msgpack.decode(data[4 : 4 + size])
        return np.frombuffer(data[4 + size :], dtype=np.dtype(dtype)).reshape(tuple(shape)).copy()
    if code == COMPLEX_EXT:
        real, imag = msgspec.msgpack.decode(data)
        return complex(real, imag)
    raise msgspec.ValidationError(f"unknown msgpack extension code {code}")


def dec_hook(type_: type, obj: Any) -> Any:
    """Build numpy arrays and complex numbers from their JSON forms when a Struct field asks for them."""
    if type_ is complex and isinstance(obj, dict) and "__complex__" in obj:
        return revive(obj)
    if type_ is complex and isinstance(obj, list) and len(obj) == 2:
        return complex(obj[0], obj[1])
    if getattr(type_, "__module__", "") == "numpy" and getattr(type_, "__name__", "") == "ndarray":
        import numpy as np

        return revive(obj) if isinstance(obj, dict) else np.asarray(obj)
    raise NotImplementedError(f"cannot decode {type(obj).__name__} as {type_!r}")


def msgpack_encoder() -> msgspec.msgpack.Encoder:
    return msgspec.msgpack.Encoder(enc_hook=enc_hook_msgpack)


def msgpack_decoder(type_: Any = Any) -> msgspec.msgpack.Decoder:
    return msgspec.msgpack.Decoder(type_, dec_hook=dec_hook, ext_hook=ext_hook)


def json_encoder() -> msgspec.json.Encoder:
    return msgspec.json.Encoder(enc_hook=enc_hook_json)


def json_decoder(type_: Any = Any) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(type_, dec_hook=dec_hook)

"""Turn values from user code (RunEngine metadata, documents) into what the bus and JSON clients accept."""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["json_safe", "wire_safe"]


_PLAIN = (str, int, float, bool, type(None))


def _fallback(obj: Any) -> Any:
    if isinstance(obj, str):
        return str(obj)  # a str subclass (the RunEngine's state is one)
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):
        return obj.tolist()  # arrays and numpy scalars
    return repr(obj)  # an object only user code understands: keep something readable


def json_safe(value: Any) -> Any:
    """JSON builtins only: numpy values become lists and scalars, other objects their repr."""
    return msgspec.to_builtins(value, enc_hook=_fallback, str_keys=True)


def wire_safe(value: Any) -> Any:
    """Like `json_safe`, but keeps numpy arrays and scalars, which the bus codec carries natively."""
    if isinstance(value, dict):
        return {str(k): wire_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [wire_safe(v) for v in value]
    if type(value) in _PLAIN or type(value).__module__ == "numpy":
        return value
    return json_safe(value)

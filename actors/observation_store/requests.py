"""Pure translations of observation-store requests: value checks, IQM get modes, Ricochet messages."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, assert_never

import msgspec

from stationd.protocol import observations as obs
from stationd.protocol.codec import revive
from stationd.protocol.errors import InvalidParams

__all__ = [
    "check_value",
    "flatten_message",
    "get_mode_lookups",
    "message_lookups",
    "parse_messages",
    "valid_only",
]

_VALUE_TYPES = (bool, str, int, float, complex)
_MESSAGE_FIELDS = frozenset(obs.Message.__struct_fields__)
_PAGING = ("latest", "order_by", "limit", "offset")
_MODE_PARAMS = {
    "all_latest": {"dut_label", "invalid"},
    "tags_and": {"tags", "dut_label", "dut_field", "invalid", "limit"},
    "tags_or": {"tags", "dut_label", "invalid"},
    "sequence": {"run_ids", "sequence_ids", "invalid"},
}


def check_value(value: Any, where: str, *, allow_none: bool = False, allow_str: bool = True) -> Any:
    """An observation value (or uncertainty, `allow_str=False`), revived from IQM's JSON objects."""
    value = revive(value)
    if value is None and allow_none:
        return None
    if type(value).__module__ == "numpy" and type(value).__name__ == "ndarray":
        return value
    if isinstance(value, _VALUE_TYPES) and (allow_str or not isinstance(value, (str, bool))):
        return value
    allowed = "bool, str, int, float, complex or an array" if allow_str else "int, float, complex or an array"
    raise InvalidParams(f"{where}: {type(value).__name__} is not a valid value ({allowed})")


def valid_only(lookups: Mapping[str, Any]) -> dict[str, Any]:
    """IQM: `invalid=False` unless the caller says otherwise; `invalid: null` means valid and invalid."""
    out = dict(lookups)
    if "invalid" not in out:
        out["invalid"] = False
    elif out["invalid"] is None:
        del out["invalid"]
    return out


def get_mode_lookups(msg: obs.ObservationsGet) -> list[dict[str, Any]]:
    """The queries behind IQM's `get_observations(mode=…)`; the results of several are merged (an OR)."""
    given = {f for f in msg.__struct_fields__ if f != "mode" and getattr(msg, f) not in (None, False)}
    if extra := sorted(given - _MODE_PARAMS[msg.mode]):
        raise InvalidParams(f"mode {msg.mode!r} does not accept {', '.join(extra)}")
    base: dict[str, Any] = {"limit": 0} if msg.invalid is None else {"limit": 0, "invalid": msg.invalid}
    match msg.mode:
        case "all_latest":
            if not msg.dut_label:
                raise InvalidParams("mode 'all_latest' needs dut_label")
            return [{**base, "dut_label": msg.dut_label, "latest": "dut_field"}]
        case "tags_and":
            if not msg.tags:
                raise InvalidParams("mode 'tags_and' needs tags")
            narrow = {k: v for k in ("dut_label", "dut_field") if (v := getattr(msg, k))}
            return [{**base, "tags__contains": msg.tags, "limit": msg.limit or 0, **narrow}]
        case "tags_or":
            if not msg.tags or not msg.dut_label:
                raise InvalidParams("mode 'tags_or' needs tags and dut_label")
            return [{**base, "tags__overlap": msg.tags, "dut_label": msg.dut_label, "latest": "dut_field"}]
        case "sequence":
            if not (msg.run_ids or msg.sequence_ids):
                raise InvalidParams("mode 'sequence' needs run_ids or sequence_ids")
            pairs = (("source__run_id__in", msg.run_ids), ("source__sequence_id__in", msg.sequence_ids))
            return [{**base, key: [str(i) for i in ids]} for key, ids in pairs if ids]
        case _:
            assert_never(msg.mode)


def _timestamp(stamp: Any, where: str) -> datetime.datetime:
    """Unix seconds (as Ricochet's examples send) or ISO 8601; naive means UTC."""
    try:
        if isinstance(stamp, int | float) and not isinstance(stamp, bool):
            return datetime.datetime.fromtimestamp(stamp, datetime.UTC)
        when = msgspec.convert(stamp, datetime.datetime)
    except (msgspec.ValidationError, OverflowError, ValueError, OSError) as exc:
        raise InvalidParams(f"{where}.timestamp: {exc}; nothing was inserted") from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def parse_messages(messages: list[dict[str, Any]], now: datetime.datetime) -> list[obs.Message]:
    """Ricochet's DaqLogger rule: every message has `topic` and `timestamp`, or none is inserted."""
    records = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if missing := [k for k in ("topic", "timestamp") if m.get(k) is None]:
            raise InvalidParams(f"{where}: missing {' and '.join(missing)}; nothing was inserted")
        if not isinstance(m["topic"], str):
            raise InvalidParams(f"{where}.topic must be a string; nothing was inserted")
        if reserved := sorted((_MESSAGE_FIELDS - {"topic", "timestamp"}) & set(m)):
            raise InvalidParams(f"{where}: {', '.join(reserved)} is set by the store; nothing was inserted")
        data = {k: v for k, v in m.items() if k not in ("topic", "timestamp")}
        records.append(
            obs.Message(
                topic=m["topic"],
                timestamp=_timestamp(m["timestamp"], where),
                created_timestamp=now,
                data=data,
            )
        )
    return records


def flatten_message(m: obs.Message) -> dict[str, Any]:
    """A stored message as the client sent it, plus its id."""
    return {"message_id": m.message_id, "topic": m.topic, "timestamp": m.timestamp, **m.data}


def message_lookups(lookups: Mapping[str, Any]) -> dict[str, Any]:
    """Free keys of messages live in `data`: `temperature__range` means `data__temperature__range`."""
    out = {}
    for key, value in lookups.items():
        known = key.split("__", 1)[0] in _MESSAGE_FIELDS or key in _PAGING
        out[key if known else f"data__{key}"] = value
    return out

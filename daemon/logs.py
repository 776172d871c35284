"""Logging: structlog configured once per process; JSON lines when stdout is not a terminal (journald),
readable lines on a terminal; every event is also handed to a forwarder (the info stream's `log` topic)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import msgspec
import structlog

from stationd.protocol.pubsub import LogMessage

__all__ = ["actor_logger", "configure", "level_number"]

_JSON = msgspec.json.Encoder()
_STANDARD_KEYS = frozenset({"event", "level", "timestamp", "actor"})
_PLAIN = (str, int, float, bool, type(None))


def level_number(level: str | int) -> int:
    """`"info"` -> 20; raises ValueError naming the level when it is unknown."""
    if isinstance(level, int):
        return level
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r} (use debug, info, warning, error or critical)")
    return number


class _Forwarder:
    """structlog processor handing each event, as a `LogMessage`, to the info stream."""

    def __init__(self, forward: Callable[[LogMessage], None]) -> None:
        self._forward = forward

    def __call__(self, _logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        fields = {
            k: (v if isinstance(v, _PLAIN) else str(v))
            for k, v in event_dict.items()
            if k not in _STANDARD_KEYS
        }
        self._forward(
            LogMessage(
                time=time.time(),
                level=event_dict.get("level", method),
                actor=str(event_dict.get("actor", "daemon")),
                event=str(event_dict.get("event", "")),
                fields=fields,
            )
        )
        return event_dict


def _json_serializer(obj: Any, **_kw: Any) -> bytes:
    try:
        return _JSON.encode(obj)
    except TypeError:
        return _JSON.encode({k: (v if isinstance(v, _PLAIN) else str(v)) for k, v in obj.items()})


def configure(
    level: str = "info",
    fmt: str = "auto",
    *,
    stream: TextIO | None = None,
    forward: Callable[[LogMessage], None] | None = None,
) -> None:
    """Configure structlog for this process. `fmt` is `auto` (JSON unless a terminal), `json` or `console`."""
    stream = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    if forward is not None:
        processors.append(_Forwarder(forward))
    if use_json:
        processors.append(structlog.processors.JSONRenderer(serializer=_json_serializer))
        factory: Any = structlog.BytesLoggerFactory(stream.buffer if hasattr(stream, "buffer") else stream)
    else:
        from structlog.dev import ConsoleRenderer  # imported only for terminals: it pulls in rich

        processors.append(ConsoleRenderer(colors=stream.isatty()))
        factory = structlog.PrintLoggerFactory(stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_number(level)),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def actor_logger(name: str, level: str) -> Any:
    """A logger bound with `actor=<name>` that filters below `level` at the call (cheap when filtered)."""
    return structlog.wrap_logger(
        None, wrapper_class=structlog.make_filtering_bound_logger(level_number(level))
    ).bind(actor=name)

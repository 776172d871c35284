"""The info stream: one PUB socket; per-topic sequence numbers; in-process listeners for daemon components."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
import zmq

from stationd.protocol.codec import Encoding, json_encoder, msgpack_encoder
from stationd.protocol.pubsub import (
    CONSOLE,
    INFO,
    LOG,
    ConsoleMessage,
    EventMessage,
    InfoMessage,
    LogMessage,
    event_topic,
)

__all__ = ["Publisher"]

Listener = Callable[[str, Any], None]


class Publisher:
    """Publishes `[topic, payload]` frames; `payload` is JSON (bluesky-queueserver's default) or msgpack."""

    def __init__(self, sock: zmq.Socket[bytes] | None, encoding: Encoding = Encoding.JSON) -> None:
        self._sock = sock
        self._encode = (json_encoder() if encoding == Encoding.JSON else msgpack_encoder()).encode
        self._seq: dict[str, int] = {}
        self._listeners: list[tuple[str, Listener]] = []

    def add_listener(self, prefix: str, listener: Listener) -> None:
        """Call `listener(topic, message)` in-process for every message whose topic starts with `prefix`."""
        self._listeners.append((prefix, listener))

    def next_seq(self, topic: str) -> int:
        seq = self._seq.get(topic, 0) + 1
        self._seq[topic] = seq
        return seq

    def publish_event(self, actor: str, name: str, data: Any, *, at: float | None = None) -> None:
        topic = event_topic(actor, name)
        self._send(
            topic,
            EventMessage(seq=self.next_seq(topic), time=at or time.time(), actor=actor, name=name, data=data),
        )

    def publish_log(self, msg: LogMessage) -> None:
        self._send(LOG, msgspec.structs.replace(msg, seq=self.next_seq(LOG)))
        line = f"{msg.actor}: {msg.event}"
        if msg.fields:
            line += " " + " ".join(f"{k}={v}" for k, v in msg.fields.items())
        self.publish_console(
            f"[{msg.level.upper():.1s} {time.strftime('%H:%M:%S', time.localtime(msg.time))}] {line}\n"
        )

    def publish_console(self, text: str) -> None:
        self._send(CONSOLE, ConsoleMessage(time=time.time(), msg=text, seq=self.next_seq(CONSOLE)))

    def publish_info(self, status: Any) -> None:
        self._send(INFO, InfoMessage(time=time.time(), msg={"status": status}, seq=self.next_seq(INFO)))

    def publish_mapping(self, topic: str, payload: Any) -> None:
        """Publish a payload that arrived already built (from an actor in a child process); set its `seq`."""
        if isinstance(payload, dict):
            payload["seq"] = self.next_seq(topic)
        self._send(topic, payload)

    def _send(self, topic: str, message: Any) -> None:
        for prefix, listener in self._listeners:
            if topic.startswith(prefix):
                listener(topic, message)
        if self._sock is not None:
            try:
                self._sock.send_multipart([topic.encode(), self._encode(message)], zmq.NOBLOCK)
            except zmq.Again:
                pass  # PUB drops when a subscriber's queue is full; subscribers see the gap in `seq`

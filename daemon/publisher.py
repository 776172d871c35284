"""The info stream: one PUB socket; per-topic sequence numbers; in-process listeners for daemon components."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
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

_SNAPSHOT_INTERVAL = 0.01
"""Least time (s) between two publications of a coalesced topic on the socket."""


@dataclass(slots=True)
class _Snapshots:
    """The wire side of a coalesced topic: the latest message not sent yet, and when the last one went."""

    latest: Any = None
    sent_at: float = -_SNAPSHOT_INTERVAL
    scheduled: bool = False
    seq: int = 0


class Publisher:
    """Publishes `[topic, payload]` frames; `payload` is JSON (bluesky-queueserver's default) or msgpack."""

    def __init__(self, sock: zmq.Socket[bytes] | None, encoding: Encoding = Encoding.JSON) -> None:
        self._sock = sock
        self._encode = (json_encoder() if encoding == Encoding.JSON else msgpack_encoder()).encode
        self._seq: dict[str, int] = {}
        self._listeners: list[tuple[str, Listener]] = []
        self._coalesced: dict[str, _Snapshots] = {}

    def add_listener(self, prefix: str, listener: Listener) -> None:
        """Call `listener(topic, message)` in-process for every message whose topic starts with `prefix`."""
        self._listeners.append((prefix, listener))

    def coalesce(self, topic: str) -> None:
        """Declare `topic` a stream of state snapshots (each one replaces the previous): in-process listeners
        still get every one at once, subscribers get the latest at most every 10 ms and always the last one.
        A burst of thousands of changes (queued items) is then not thousands of messages on the socket."""
        self._coalesced.setdefault(topic, _Snapshots())

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
        snapshots = self._coalesced.get(topic)
        if snapshots is not None:
            self._send_latest(topic, snapshots, message)
        else:
            self._send_now(topic, message)

    def _send_latest(self, topic: str, snapshots: _Snapshots, message: Any) -> None:
        snapshots.latest = message
        if snapshots.scheduled:
            return
        wait = snapshots.sent_at + _SNAPSHOT_INTERVAL - time.monotonic()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            wait = 0.0  # no loop to wait with: send at once
        if wait <= 0:
            self._flush(topic, snapshots)
        else:
            snapshots.scheduled = True
            loop.call_later(wait, self._flush, topic, snapshots)

    def _flush(self, topic: str, snapshots: _Snapshots) -> None:
        message, snapshots.latest, snapshots.scheduled = snapshots.latest, None, False
        snapshots.sent_at = time.monotonic()
        snapshots.seq += 1  # subscribers see consecutive numbers: skipped snapshots are not losses
        if isinstance(message, EventMessage):
            message = msgspec.structs.replace(message, seq=snapshots.seq)
        self._send_now(topic, message)

    def _send_now(self, topic: str, message: Any) -> None:
        if self._sock is not None and not self._sock.closed:  # closed: the daemon is stopping
            try:
                self._sock.send_multipart([topic.encode(), self._encode(message)], zmq.NOBLOCK)
            except zmq.Again:
                pass  # PUB drops when a subscriber's queue is full; subscribers see the gap in `seq`

"""Hands the RunEngine's documents to the info stream (`doc.<name>`) and to the observation store, which
stores them (`StoreDocuments` tells)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from stationd.actors.base import ActorContext
from stationd.protocol.documents import StoreDocuments
from stationd.protocol.errors import StationError
from stationd.protocol.methods import OBSERVATION_STORE
from stationd.protocol.pubsub import DOC_PREFIX

from .values import wire_safe

__all__ = ["DocumentSender"]

_UNENCODABLE = (TypeError, NotImplementedError, OverflowError)
"""What encoding a message with a value the bus codec cannot carry raises (its enc_hook raises
NotImplementedError, which msgspec passes on)."""
_MAX_BATCH = 1000
"""Most documents in one tell (a fast plan's events arrive by the thousand)."""
LINGER_S = 0.005
"""How long the first document of a batch waits for the next ones: a fast plan's start, descriptor, events
and stop then go in one tell and one publication message (instead of one per loop iteration that saw a
document, and one per document), with fewer bus messages and store transactions."""


class DocumentSender:
    """Publishes documents on `doc.<name>` and tells them to the observation store, in the order they came,
    in batches: those that arrive within `linger` seconds of the first go together. The actor calls `flush`
    before telling anything that must come after them (the plan's end) and when it stops, or hands such a
    tell to `then`. A failure to send is logged, never raised: publishing and storing documents must not
    stop a plan."""

    def __init__(self, ctx: ActorContext, *, linger: float = LINGER_S) -> None:
        self._ctx = ctx
        self._linger = linger
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._after: list[Callable[[], None]] = []

    def add(self, name: str, doc: dict[str, Any]) -> None:
        """Queue a document (on the actor loop)."""
        if not self._pending:
            self._timer = asyncio.get_running_loop().call_later(self._linger, self.flush)
        self._pending.append((name, doc))
        if len(self._pending) >= _MAX_BATCH:
            self.flush()

    def then(self, fn: Callable[[], None]) -> None:
        """Call `fn` once the documents queued so far are sent (at once if none waits): what announces a run
        (`RunsChanged`) must not reach the queue manager before the run's start reaches the store."""
        if self._pending:
            self._after.append(fn)
        else:
            fn()

    def flush(self) -> None:
        """Publish and tell the queued documents now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        docs, self._pending = self._pending, []
        if not docs:
            return
        self._send("published", docs, self._publish_docs)
        self._send("sent", docs, self._tell_docs)
        after, self._after = self._after, []
        for fn in after:
            fn()

    def _publish_docs(self, docs: list[tuple[str, dict[str, Any]]]) -> None:
        self._ctx.publish_topics([(f"{DOC_PREFIX}{n}", {"name": n, "doc": d}) for n, d in docs])

    def _tell_docs(self, docs: list[tuple[str, dict[str, Any]]]) -> None:
        self._ctx.tell(OBSERVATION_STORE, StoreDocuments(docs=docs))

    def _send(
        self,
        what: str,
        docs: list[tuple[str, dict[str, Any]]],
        send: Callable[[list[tuple[str, dict[str, Any]]]], None],
    ) -> None:
        try:
            try:
                send(docs)
            except _UNENCODABLE:  # a value the bus codec does not know (user metadata): a readable form
                send([(n, wire_safe(d)) for n, d in docs])
        except (StationError, *_UNENCODABLE) as exc:  # still not encodable, or the mailbox is closed
            self._ctx.log.error(
                f"documents_not_{what}",
                error=f"{type(exc).__name__}: {exc}",
                documents=len(docs),
                names=sorted({n for n, _ in docs}),
            )

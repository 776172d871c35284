"""What the queue manager persists, and how: queued items (with their order key), the running item, the
history, and settings (queue mode, autostart, locks, permissions, the cached plan and device descriptions).

`QueueRecords` turns the `Changes` of a `PlanQueue` operation into storage writes, so that every operation is
persisted as one all-or-nothing unit, and rebuilds the queue from what was persisted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from stationd.actors.storage.collection import Collection
from stationd.actors.storage.query import parse_query
from stationd.actors.storage.sqlite import Op, SQLiteStore

from .plan_queue import Changes, PlanQueue, QueueEntry

__all__ = [
    "ALL",
    "HISTORY",
    "QUEUE",
    "RUNNING",
    "SETTINGS",
    "HistoryEntry",
    "QueueRecords",
    "QueuedItem",
    "Setting",
]


class QueuedItem(msgspec.Struct, kw_only=True, frozen=True):
    item_uid: str
    order: float
    """Position key: the queue is the items sorted by it."""
    item: dict[str, Any]


class HistoryEntry(msgspec.Struct, kw_only=True, frozen=True):
    entry_id: str
    """Zero-padded sequence number: the history is the entries sorted by it."""
    item: dict[str, Any]


class Setting(msgspec.Struct, kw_only=True, frozen=True):
    key: str
    value: Any


QUEUE = Collection("queue", QueuedItem, "item_uid", id_kind="str", created_field=None)
RUNNING = Collection("running", Setting, "key", id_kind="str", created_field=None)
"""At most one row, `running`: the item the RunEngine is executing (moved there in one transaction)."""
HISTORY = Collection("history", HistoryEntry, "entry_id", id_kind="str", created_field=None)
SETTINGS = Collection("settings", Setting, "key", id_kind="str", created_field=None)
ALL = [QUEUE, RUNNING, HISTORY, SETTINGS]
_RUNNING_KEY = "running"


class QueueRecords:
    """The queue manager's store (`queue.sqlite`): loads the queue and settings, persists changes."""

    def __init__(self, path: Path) -> None:
        self.store = SQLiteStore(path, ALL)
        self._history_ids: deque[str] = deque()
        self._next_seq = 1
        self._queued: set[str] = set()
        """Uids of the queued items written to the store, so that a new one is inserted without a look for
        it first (an add is the most frequent write). Kept as the writes are made: a write that failed
        leaves at worst a uid here that is not stored, which the upsert handles."""

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    async def load(self) -> tuple[PlanQueue, dict[str, Any]]:
        """The persisted queue (mode from the settings) and the settings by key."""
        settings = await self.load_settings()
        rows = await self._all(QUEUE)
        self._queued = {r.item_uid for r in rows}
        entries = [QueueEntry(r.item, r.order) for r in rows]
        running = await self.store.get(RUNNING.name, _RUNNING_KEY)
        history = sorted(await self._all(HISTORY), key=lambda h: h.entry_id)
        self._history_ids = deque(h.entry_id for h in history)
        self._next_seq = int(history[-1].entry_id) + 1 if history else 1
        queue = PlanQueue.restore(
            queue=entries,
            running_item=running.value if running is not None else None,
            history=[h.item for h in history],
            mode=settings.get("mode"),
        )
        return queue, settings

    async def write(self, changes: Iterable[Changes], settings: dict[str, Any] | None = None) -> None:
        """Persist queue changes (applied in order) and settings as one unit."""
        ops = [op for c in changes for op in self.ops(c)]
        if settings:
            ops.append(self.settings_op(settings))
        if ops:
            await self.store.write_many(ops)

    def ops(self, changes: Changes) -> list[Op]:
        ops: list[Op] = []
        if changes.queue_removed:
            ops.append(Op("delete", QUEUE.name, list(changes.queue_removed)))
            self._queued.difference_update(changes.queue_removed)
        if changes.queue_upserted:
            stored = [e for e in changes.queue_upserted if e.uid in self._queued]
            new = [e for e in changes.queue_upserted if e.uid not in self._queued]
            if stored:
                ops.append(Op("upsert", QUEUE.name, [_queued_item(e) for e in stored]))
            if new:
                ops.append(Op("insert", QUEUE.name, [_queued_item(e) for e in new]))
                self._queued.update(e.uid for e in new)
        if changes.running_changed:
            if changes.running_item is None:
                ops.append(Op("delete", RUNNING.name, [_RUNNING_KEY]))
            else:
                ops.append(
                    Op("upsert", RUNNING.name, [Setting(key=_RUNNING_KEY, value=changes.running_item)])
                )
        if changes.history_removed:
            ops.append(Op("delete", HISTORY.name, self._drop_oldest(changes.history_removed)))
        if changes.history_appended:
            ops.append(Op("insert", HISTORY.name, list(self._entries(changes.history_appended))))
        if changes.mode is not None:
            ops.append(self.settings_op({"mode": dict(changes.mode)}))
        return ops

    @staticmethod
    def settings_op(settings: dict[str, Any]) -> Op:
        return Op("upsert", SETTINGS.name, [Setting(key=k, value=v) for k, v in settings.items()])

    async def load_settings(self) -> dict[str, Any]:
        return {s.key: s.value for s in await self._all(SETTINGS)}

    async def save_settings(self, **settings: Any) -> None:
        await self.store.write_many([self.settings_op(settings)])

    def _drop_oldest(self, n: int) -> list[str]:
        return [self._history_ids.popleft() for _ in range(min(n, len(self._history_ids)))]

    def _entries(self, items: Iterable[dict[str, Any]]) -> Iterable[HistoryEntry]:
        for item in items:
            entry_id = f"{self._next_seq:016d}"
            self._next_seq += 1
            self._history_ids.append(entry_id)
            yield HistoryEntry(entry_id=entry_id, item=item)

    async def _all(self, coll: Collection) -> list[Any]:
        items, _ = await self.store.query(coll.name, parse_query(coll, {"limit": 0}))
        return items


def _queued_item(entry: QueueEntry) -> QueuedItem:
    return QueuedItem(item_uid=entry.uid, order=entry.order, item=entry.item)

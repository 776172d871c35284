"""What the queue manager persists: queued items (with their order key), the running item, the history, and
settings (queue mode, autostart, locks, permissions, the cached plan and device descriptions)."""

from __future__ import annotations

from typing import Any

import msgspec

from stationd.actors.storage.collection import Collection

__all__ = ["ALL", "HISTORY", "QUEUE", "RUNNING", "SETTINGS", "HistoryEntry", "QueuedItem", "Setting"]


class QueuedItem(msgspec.Struct, kw_only=True, frozen=True):
    item_uid: str
    order: float
    """Position key: the queue is the items sorted by it."""
    item: dict[str, Any]


class HistoryEntry(msgspec.Struct, kw_only=True, frozen=True):
    entry_id: int | None = None
    """Assigned in order: the history is the entries sorted by it."""
    item: dict[str, Any]


class Setting(msgspec.Struct, kw_only=True, frozen=True):
    key: str
    value: Any


QUEUE = Collection("queue", QueuedItem, "item_uid", id_kind="str", created_field=None)
RUNNING = Collection("running", Setting, "key", id_kind="str", created_field=None)
"""At most one row, `running`: the item the RunEngine is executing (moved there in one transaction)."""
HISTORY = Collection("history", HistoryEntry, "entry_id", created_field=None)
SETTINGS = Collection("settings", Setting, "key", id_kind="str", created_field=None)
ALL = [QUEUE, RUNNING, HISTORY, SETTINGS]

"""The plan queue in memory: queued items, the running item, the history and the queue mode.

Pure and synchronous (no I/O, no asyncio). Semantics and error texts follow bluesky-queueserver 0.0.25's
`plan_queue_ops.py` (queueserver-api.md §4, §9). Every mutating method returns the `Changes` it made, so the
caller persists only those, and `PlanQueue.restore` rebuilds the queue from what was persisted. Items are
plain dicts; the queue never mutates a dict it has handed out, and callers must not mutate them either.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

__all__ = [
    "ALLOWED_ITEM_KEYS",
    "DEFAULT_MODE",
    "EXIT_STATUSES",
    "Changes",
    "Finished",
    "PlanQueue",
    "QueueEntry",
    "QueueError",
    "StartKind",
    "Started",
]

Item = dict[str, Any]
Pos = int | str | None

ALLOWED_ITEM_KEYS = frozenset(
    {"item_uid", "item_type", "name", "args", "kwargs", "meta", "user", "user_group", "properties"}
)
"""Keys an item keeps when it is added or replaced (bluesky-queueserver's parameter filter)."""
EXIT_STATUSES = frozenset({"completed", "stopped", "failed", "aborted", "halted", "unknown"})
DEFAULT_MODE: Mapping[str, bool] = {"loop": False, "ignore_failures": False}
_FAILURES = frozenset({"failed", "aborted", "halted"})


class QueueError(ValueError):
    """A refused queue operation; the message is bluesky-queueserver's text, without the caller's prefix."""


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A queued item and its order key: the queue is its entries sorted by `order`."""

    item: Item
    order: float

    @property
    def uid(self) -> str:
        return self.item["item_uid"]


@dataclass(frozen=True, slots=True)
class Changes:
    """What one operation changed, for the storage layer.

    Attributes:
        queue_upserted: queued entries to insert or overwrite (new items, and items whose key changed).
        queue_removed: uids of queued items to delete.
        running_changed: the running slot changed; its new content is `running_item` (None: empty).
        running_item: the running item, meaningful only when `running_changed`.
        history_appended: items to append to the history, oldest first.
        history_removed: number of the oldest history items to delete (applied before the appends).
        mode: the new queue mode, when it changed.
    """

    queue_upserted: tuple[QueueEntry, ...] = ()
    queue_removed: tuple[str, ...] = ()
    running_changed: bool = False
    running_item: Item | None = None
    history_appended: tuple[Item, ...] = ()
    history_removed: int = 0
    mode: Mapping[str, bool] | None = None

    @property
    def queue_changed(self) -> bool:
        """The queue or the running item changed (so `plan_queue_uid` is new)."""
        return bool(self.queue_upserted or self.queue_removed or self.running_changed)

    @property
    def history_changed(self) -> bool:
        """The history changed (so `plan_history_uid` is new)."""
        return bool(self.history_appended or self.history_removed)

    def __bool__(self) -> bool:
        return self.queue_changed or self.history_changed or self.mode is not None


class StartKind(StrEnum):
    """What `start_next` / `start_immediate` did."""

    PLAN = "plan"  # the plan is now in the running slot: send it to the worker
    QUEUE_STOP = "queue_stop"  # a queue_stop instruction was consumed: the queue stops
    EMPTY = "empty"  # the queue is empty: nothing started


@dataclass(frozen=True, slots=True)
class Started:
    """What `start_next` / `start_immediate` did, and the changes to persist."""

    kind: StartKind
    item: Item | None  # the running plan, the consumed instruction, or None when empty
    changes: Changes


@dataclass(frozen=True, slots=True)
class Finished:
    """Where the item that left the running slot went, and the changes to persist."""

    history_item: Item  # the item as appended to the history (original uid, with `result`)
    requeued_item: Item | None  # the copy put back into the queue (new uid), if any
    continues: bool  # the queue may start its next item (the caller still applies stop requests)
    changes: Changes


class _Recorder:
    """Collects the changes of one operation; the last write to a uid wins."""

    def __init__(self) -> None:
        self.upserted: dict[str, QueueEntry] = {}
        self.removed: dict[str, None] = {}
        self.running_changed = False
        self.running: Item | None = None
        self.appended: list[Item] = []
        self.history_removed = 0
        self.mode: Mapping[str, bool] | None = None

    def upsert(self, entry: QueueEntry) -> None:
        self.removed.pop(entry.uid, None)
        self.upserted[entry.uid] = entry

    def remove(self, uid: str) -> None:
        self.upserted.pop(uid, None)
        self.removed[uid] = None

    def set_running(self, item: Item | None) -> None:
        self.running_changed, self.running = True, item

    def build(self) -> Changes:
        return Changes(
            queue_upserted=tuple(self.upserted.values()),
            queue_removed=tuple(self.removed),
            running_changed=self.running_changed,
            running_item=self.running,
            history_appended=tuple(self.appended),
            history_removed=self.history_removed,
            mode=self.mode,
        )


class PlanQueue:
    """bluesky-queueserver's plan queue operations on in-memory lists, reporting every change."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._queue: list[QueueEntry] = []
        self._running: Item | None = None
        self._history: list[Item] = []
        self._mode: dict[str, bool] = dict(DEFAULT_MODE)
        self._plan_queue_uid = _new_uid()
        self._plan_history_uid = _new_uid()

    @classmethod
    def restore(
        cls,
        *,
        queue: Iterable[QueueEntry] = (),
        running_item: Item | None = None,
        history: Iterable[Item] = (),
        mode: Mapping[str, bool] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> PlanQueue:
        """Rebuild a queue from persisted parts (queue entries in any order, history oldest first)."""
        pq = cls(clock=clock)
        pq._queue = sorted(queue, key=lambda e: e.order)
        pq._running = running_item or None
        pq._history = list(history)
        if mode is not None:
            pq._mode = _checked_mode({**DEFAULT_MODE, **mode})
        uids = [e.uid for e in pq._queue] + ([pq._running["item_uid"]] if pq._running else [])
        if len(set(uids)) != len(uids):
            raise QueueError(f"Persisted queue contains repeated UIDs: {uids}")
        return pq

    # -- reading --------------------------------------------------------------------------------------------
    @property
    def plan_queue_uid(self) -> str:
        """Change token: new whenever the queue or the running item changes."""
        return self._plan_queue_uid

    @property
    def plan_history_uid(self) -> str:
        """Change token: new whenever the history changes."""
        return self._plan_history_uid

    @property
    def items(self) -> list[Item]:
        return [e.item for e in self._queue]

    @property
    def entries(self) -> tuple[QueueEntry, ...]:
        return tuple(self._queue)

    @property
    def queue_size(self) -> int:
        return len(self._queue)

    @property
    def running_item(self) -> Item | None:
        return self._running

    @property
    def running_item_uid(self) -> str | None:
        return self._running["item_uid"] if self._running else None

    @property
    def history(self) -> list[Item]:
        return list(self._history)

    @property
    def history_size(self) -> int:
        return len(self._history)

    @property
    def mode(self) -> dict[str, bool]:
        return dict(self._mode)

    def queue_get(self) -> dict[str, Any]:
        """The `queue_get` reply fields: `items`, `running_item` (`{}` if none), `plan_queue_uid`."""
        return {
            "items": self.items,
            "running_item": self._running or {},
            "plan_queue_uid": self._plan_queue_uid,
        }

    def history_get(self, *, offset: int = 0, limit: int | None = None) -> dict[str, Any]:
        """The `history_get` reply fields; `offset`/`limit` page it, oldest first (an extension)."""
        for name, value in (("offset", offset), ("limit", limit)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise QueueError(f"Parameter '{name}' must be a non-negative integer: {name}={value!r}")
        stop = None if limit is None else offset + limit
        return {"items": self._history[offset:stop], "plan_history_uid": self._plan_history_uid}

    def get_item(self, *, pos: Pos = None, uid: str | None = None) -> Item:
        """The queued item at `pos` (default `"back"`) or with `uid`."""
        if pos is not None and uid is not None:
            raise QueueError("Ambiguous parameters: plan position and UID is specified")
        if uid is not None:
            index = self._index(uid)
            if uid == self.running_item_uid:
                raise QueueError(f"The item with UID '{uid}' is currently running.")
            if index is None:
                raise QueueError(f"Item with UID '{uid}' is not in the queue.")
            return self._queue[index].item
        return self._queue[self._existing_index(pos)].item

    # -- editing --------------------------------------------------------------------------------------------
    def add_item(
        self, item: Item, *, pos: Pos = None, before_uid: str | None = None, after_uid: str | None = None
    ) -> tuple[Item, Changes]:
        """Add `item` (with a new uid, keys filtered) at `pos` (default `"back"`) or before/after a uid."""
        items, changes = self._add([item], pos, before_uid, after_uid)
        return items[0], changes

    def add_batch(
        self,
        items: Sequence[Item],
        *,
        pos: Pos = None,
        before_uid: str | None = None,
        after_uid: str | None = None,
    ) -> tuple[list[Item], Changes]:
        """Add `items` in order as one block, all or nothing; an empty batch is a no-op.

        On a QueueError nothing was added; bluesky-queueserver then reports every item as failed with
        `Failed to add item to queue: <message>`.
        """
        if not items:
            return [], Changes()
        return self._add(items, pos, before_uid, after_uid)

    def remove_item(self, *, pos: Pos = None, uid: str | None = None) -> tuple[Item, Changes]:
        """Remove the item at `pos` (default `"back"`) or with `uid`."""
        if pos is not None and uid is not None:
            raise QueueError("Ambiguous parameters: plan position and UID is specified")
        if uid is not None:
            index = self._index(uid)
            if uid == self.running_item_uid:
                raise QueueError("Can not remove an item which is currently running.")
            if index is None:
                raise QueueError(f"Plan with UID '{uid}' is not in the queue.")
        elif pos is None or pos in ("back", "front"):
            if not self._queue:
                raise QueueError("Queue is empty")
            index = 0 if pos == "front" else len(self._queue) - 1
        elif isinstance(pos, int):
            index = self._existing_index(pos)
        else:
            raise QueueError(f"Parameter 'pos' has incorrect value: pos={pos} (type={type(pos)})")
        rec = _Recorder()
        item = self._remove_at(index, rec)
        return item, self._commit(rec)

    def remove_batch(self, uids: list[str], *, ignore_missing: bool = True) -> tuple[list[Item], Changes]:
        """Remove the items with `uids`; unless `ignore_missing`, a missing or repeated uid fails it all."""
        _check_uid_list(uids)
        if not ignore_missing:
            self._check_batch(uids)
        rec = _Recorder()
        removed = []
        for uid in uids:
            index = self._index(uid)
            if index is not None:
                removed.append(self._remove_at(index, rec))
        return removed, self._commit(rec)

    def move_item(
        self,
        *,
        pos: Pos = None,
        uid: str | None = None,
        pos_dest: Pos = None,
        before_uid: str | None = None,
        after_uid: str | None = None,
    ) -> tuple[Item, Changes]:
        """Move the item at `pos` or with `uid` to `pos_dest`, or before/after another item."""
        _check_move_params(pos, uid, pos_dest, before_uid, after_uid)
        where = f"UID '{uid}'" if uid is not None else f"position {pos}"
        try:
            item = self.get_item(pos=pos, uid=uid)
        except QueueError as exc:
            raise QueueError(f"Source plan ({where}) was not found: {exc}.") from exc
        dest_uid, before = self._destination(item["item_uid"], pos_dest, before_uid, after_uid)
        rec = _Recorder()
        if dest_uid != item["item_uid"]:
            self._reorder(
                _placed(self._uids(), [item["item_uid"]], dest_uid, before), [item["item_uid"]], rec
            )
        return item, self._commit(rec)

    def move_batch(
        self,
        uids: list[str],
        *,
        pos_dest: Pos = None,
        before_uid: str | None = None,
        after_uid: str | None = None,
        reorder: bool = False,
    ) -> tuple[list[Item], Changes]:
        """Move the items with `uids` as one block (in `uids` order, or queue order if `reorder`)."""
        _check_uid_list(uids)
        _check_batch_destination(pos_dest, before_uid, after_uid)
        self._check_batch(uids)
        for name, ref in (("before_uid", before_uid), ("after_uid", after_uid)):
            if ref is not None and ref in uids:
                raise QueueError(f"Parameter '{name}': item with UID '{ref}' is in the batch")
        order = self._uids()
        block = sorted(uids, key=order.index) if reorder else list(uids)
        if not block:
            return [], Changes()
        first = block[0]
        dest_uid, before = self._destination(first, pos_dest, before_uid, after_uid)
        if dest_uid != first:  # the first item goes where `move_item` puts it, the others follow it
            order = _placed(order, [first], dest_uid, before)
        others = set(block[1:])
        rest = [u for u in order if u not in others]
        at = rest.index(first)
        rec = _Recorder()
        self._reorder(rest[:at] + block + rest[at + 1 :], block, rec)
        moved = {e.uid: e.item for e in self._queue}
        return [moved[u] for u in block], self._commit(rec)

    def replace_item(self, item: Item, *, replace: bool = False) -> tuple[Item, Changes]:
        """`queue_item_update`: replace the queued item with `item["item_uid"]`, in place.

        With `replace=False` the item keeps its uid; with `replace=True` it gets a new one.
        """
        _check_is_dict(item)
        uid = item.get("item_uid")
        if uid is None and not replace:
            raise QueueError("Item description contains no UID and UID generation is skipped")
        index = self._index(uid) if isinstance(uid, str) else None
        if uid is not None and uid == self.running_item_uid:
            raise QueueError(f"Failed to replace item: Item with UID '{uid}' is currently running")
        if index is None:
            raise QueueError(f"Failed to replace item: Item with UID '{uid}' is not in the queue")
        new = _filtered(item)
        if replace:
            new["item_uid"] = _new_uid()
        old = self._queue[index]
        if new == old.item:
            return old.item, Changes()
        rec = _Recorder()
        self._queue[index] = QueueEntry(new, old.order)
        if replace:
            rec.remove(uid)
        rec.upsert(self._queue[index])
        return new, self._commit(rec)

    def clear(self) -> Changes:
        """Empty the queue; the running item stays."""
        rec = _Recorder()
        for entry in self._queue:
            rec.remove(entry.uid)
        self._queue = []
        return self._commit(rec)

    def clear_history(self, *, size: int | None = None, item_uid: str | None = None) -> Changes:
        """Clear the history, keep only the newest `size` items, or drop `item_uid` and everything older."""
        if size is not None and item_uid is not None:
            raise QueueError("Parameters 'size' and 'item_uid' are mutually exclusive.")
        if size is not None and not isinstance(size, int):
            raise QueueError(f"The 'size' parameter must be an integer: size={size!r}")
        if item_uid is not None and not isinstance(item_uid, str):
            raise QueueError(f"The 'item_uid' parameter must be a string: item_uid={item_uid!r}")
        n = len(self._history)
        if size is not None:
            drop = max(n - max(size, 0), 0)
        elif item_uid is not None:
            uids = [h.get("item_uid") for h in self._history]
            drop = uids.index(item_uid) + 1 if item_uid in uids else 0
        else:
            drop = n
        rec = _Recorder()
        if drop:
            del self._history[:drop]
            rec.history_removed = drop
        return self._commit(rec)

    def set_mode(self, mode: Mapping[str, Any] | str) -> Changes:
        """`queue_mode_set`: update the given keys of the mode, or reset it with `"default"`."""
        if isinstance(mode, str) and mode == "default":
            new = dict(DEFAULT_MODE)
        elif isinstance(mode, Mapping):
            new = _checked_mode({**self._mode, **mode})
        else:
            raise QueueError(
                f"Queue mode is passed using object of unsupported type '{type(mode)}': ({mode}). "
                "Supported types: ('dict', 'str'), supported string value: 'default'"
            )
        rec = _Recorder()
        if new != self._mode:
            self._mode = new
            rec.mode = dict(new)
        return self._commit(rec)

    # -- execution ------------------------------------------------------------------------------------------
    def start_next(self) -> Started:
        """Start the front item: a plan moves to the running slot (with `properties.time_start`); a
        `queue_stop` instruction is consumed (and re-appended with a new uid in loop mode)."""
        self._check_nothing_running()
        if not self._queue:
            return Started(StartKind.EMPTY, None, Changes())
        front = self._queue[0].item
        kind = _kind_of(front)
        rec = _Recorder()
        self._remove_at(0, rec)
        if kind is StartKind.PLAN:
            running = self._set_running(front, rec)
            return Started(kind, running, self._commit(rec))
        if self._mode["loop"]:
            self._insert(len(self._queue), [_with_new_uid(front)], rec)
        return Started(kind, front, self._commit(rec))

    def start_immediate(self, item: Item) -> Started:
        """`queue_item_execute`: run `item` (new uid) without touching the queue; it is never re-queued.

        An immediate `queue_stop` instruction does nothing (as in bluesky-queueserver).
        """
        self._check_nothing_running()
        _check_is_dict(item)
        prepared = {**_filtered(item), "item_uid": _new_uid()}
        kind = _kind_of(prepared)
        if kind is not StartKind.PLAN:
            return Started(kind, prepared, Changes())
        rec = _Recorder()
        prepared["properties"] = {**_properties(prepared), "immediate_execution": True}
        running = self._set_running(prepared, rec)
        return Started(kind, running, self._commit(rec))

    def finish_running(self, result: Mapping[str, Any], *, item_uid: str | None = None) -> Finished:
        """The running plan ended with `result` (bluesky-queueserver's history `result`; `exit_status`
        required): it goes to the history and back into the queue per queueserver-api.md §9.2.

        `item_uid`, when given, must be the running item's (a guard against stale reports).
        """
        running = self._check_running(item_uid)
        status = result.get("exit_status")
        if status not in EXIT_STATUSES:
            raise QueueError(f"Unsupported exit status: {status!r}, expected one of {sorted(EXIT_STATUSES)}")
        ignored = status == "failed" and self._mode["ignore_failures"]
        if status in _FAILURES and not ignored:
            return self._end_running(running, result, requeue="front", continues=False)
        requeue = "back" if self._mode["loop"] else None
        return self._end_running(running, result, requeue=requeue, continues=status != "stopped")

    def recover_interrupted(self, msg: str) -> Finished:
        """After a daemon restart with an item in the running slot: history `unknown` with `msg`, and the
        item back at the front of the queue with a new uid (bluesky-queueserver drops it)."""
        return self.requeue_running({"exit_status": "unknown", "msg": msg})

    def requeue_running_failed(self, msg: str) -> Finished:
        """The worker died or refused the plan: history `failed` with `msg`, the item back at the front
        with a new uid, whatever `ignore_failures` says."""
        return self.requeue_running({"exit_status": "failed", "msg": msg})

    def requeue_running(self, result: Mapping[str, Any]) -> Finished:
        """The running plan was ended by the daemon, not by its user (restart, worker death, shutdown):
        history with `result`, and the item back at the front of the queue with a new uid."""
        running = self._check_running(None)
        return self._end_running(running, result, requeue="front", continues=False)

    # -- internals ------------------------------------------------------------------------------------------
    def _commit(self, rec: _Recorder) -> Changes:
        changes = rec.build()
        if changes.queue_changed:
            self._plan_queue_uid = _new_uid()
        if changes.history_changed:
            self._plan_history_uid = _new_uid()
        return changes

    def _uids(self) -> list[str]:
        return [e.uid for e in self._queue]

    def _index(self, uid: str) -> int | None:
        return next((i for i, e in enumerate(self._queue) if e.uid == uid), None)

    def _existing_index(self, pos: Pos) -> int:
        """The index of an existing item at `pos` (get/remove semantics: no clipping)."""
        pos = "back" if pos is None else pos
        if pos == "back":
            index = -1
        elif pos == "front":
            index = 0
        elif isinstance(pos, int):
            index = pos
        else:
            raise QueueError(f"Parameter 'pos' has incorrect type: pos={pos} (type={type(pos)})")
        if not -len(self._queue) <= index < len(self._queue):
            raise QueueError(f"Index '{index}' is out of range (parameter pos = '{pos}')")
        return index % len(self._queue)

    def _insert_index(self, pos: Pos, before_uid: str | None, after_uid: str | None) -> int:
        """Where an added item goes (add semantics: integer positions are clipped to front/back)."""
        if pos is not None and (before_uid is not None or after_uid is not None):
            raise QueueError("Ambiguous parameters: plan position and UID is specified")
        if before_uid is not None and after_uid is not None:
            raise QueueError(
                "Ambiguous parameters: request to insert the plan before and after the reference plan"
            )
        n = len(self._queue)
        ref = before_uid if before_uid is not None else after_uid
        if ref is not None:
            if ref == self.running_item_uid:
                if before_uid is not None:
                    raise QueueError("Can not insert a plan in the queue before a currently running plan.")
                return 0  # after the running item: the front of the queue
            index = self._index(ref)
            if index is None:
                raise QueueError(f"Plan with UID '{ref}' is not in the queue.")
            return index if before_uid is not None else index + 1
        pos = "back" if pos is None else pos
        if pos == "front" or (isinstance(pos, int) and (pos == 0 or pos < -n)):
            return 0
        if pos == "back" or (isinstance(pos, int) and (pos == -1 or pos >= n)):
            return n
        if isinstance(pos, int):  # before the item at `pos`; negative: before the item at `pos + 1`
            return pos if pos > 0 else n + pos + 1
        raise QueueError(f"Parameter 'pos' has incorrect value: pos='{pos}' (type={type(pos)})")

    def _add(
        self, items: Sequence[Item], pos: Pos, before_uid: str | None, after_uid: str | None
    ) -> tuple[list[Item], Changes]:
        index = self._insert_index(pos, before_uid, after_uid)
        for item in items:
            _check_is_dict(item)
        added = [{**_filtered(item), "item_uid": _new_uid()} for item in items]
        rec = _Recorder()
        self._insert(index, added, rec)
        return added, self._commit(rec)

    def _insert(self, index: int, items: Sequence[Item], rec: _Recorder) -> None:
        """Insert `items` as a block before `self._queue[index]`, with order keys between the neighbours."""
        lo = self._queue[index - 1].order if index > 0 else None
        hi = self._queue[index].order if index < len(self._queue) else None
        keys = _keys_between(lo, hi, len(items))
        entries = [
            QueueEntry(item, key) for item, key in zip(items, keys or [math.nan] * len(items), strict=True)
        ]
        self._queue[index:index] = entries
        if keys is None:
            self._renumber(rec)
        else:
            for entry in entries:
                rec.upsert(entry)

    def _renumber(self, rec: _Recorder) -> None:
        self._queue = [QueueEntry(e.item, float(i + 1)) for i, e in enumerate(self._queue)]
        for entry in self._queue:
            rec.upsert(entry)

    def _remove_at(self, index: int, rec: _Recorder) -> Item:
        entry = self._queue.pop(index)
        rec.remove(entry.uid)
        return entry.item

    def _reorder(self, new_order: list[str], block: list[str], rec: _Recorder) -> None:
        """Apply `new_order`, in which `block` is contiguous and the other items keep their order."""
        if new_order == self._uids():
            return
        by_uid = {e.uid: e for e in self._queue}
        moved = set(block)
        self._queue = [by_uid[u] for u in new_order if u not in moved]
        self._insert(new_order.index(block[0]), [by_uid[u].item for u in block], rec)

    def _destination(
        self, src_uid: str, pos_dest: Pos, before_uid: str | None, after_uid: str | None
    ) -> tuple[str, bool]:
        """The item a moved item goes next to, and whether it goes before it."""
        ref = before_uid if before_uid is not None else after_uid
        where = f"UID '{ref}'" if ref is not None else f"position {pos_dest}"
        try:
            dest_uid = self.get_item(pos=None if ref is not None else pos_dest, uid=ref)["item_uid"]
        except QueueError as exc:
            raise QueueError(f"Destination plan ({where}) was not found: {exc}.") from exc
        if ref is not None:
            return dest_uid, before_uid is not None
        if pos_dest in ("front", "back"):
            return dest_uid, pos_dest == "front"
        uids = self._uids()  # an integer destination: the moved item ends up at that index
        return dest_uid, uids.index(src_uid) > uids.index(dest_uid)

    def _check_batch(self, uids: list[str]) -> None:
        repeated = len(uids) - len(set(uids))
        if repeated:
            raise QueueError(f"The list of contains repeated UIDs ({repeated} UIDs)")
        queued = set(self._uids())
        missing = [u for u in uids if u not in queued]
        if missing:
            raise QueueError(f"The queue does not contain items with the following UIDs: {missing}")

    def _check_nothing_running(self) -> None:
        if self._running is not None:
            raise QueueError(f"Another item is already running (UID '{self.running_item_uid}')")

    def _check_running(self, item_uid: str | None) -> Item:
        running = self._running
        if running is None:
            raise QueueError("No item is running")
        if item_uid is not None and item_uid != running["item_uid"]:
            raise QueueError(
                f"The item with UID '{item_uid}' is not running (running: '{running['item_uid']}')"
            )
        return running

    def _set_running(self, item: Item, rec: _Recorder) -> Item:
        running = {**item, "properties": {**_properties(item), "time_start": self._clock()}}
        self._running = running
        rec.set_running(running)
        return running

    def _end_running(
        self,
        running: Item,
        result: Mapping[str, Any],
        *,
        requeue: Literal["front", "back"] | None,
        continues: bool,
    ) -> Finished:
        cleaned = _without_run_properties(running)
        full = {
            "exit_status": result["exit_status"],
            "run_uids": [],
            "scan_ids": [],
            "time_start": _properties(running).get("time_start"),
            "time_stop": self._clock(),
            "msg": "",
            "traceback": "",
            **_copied(dict(result)),
        }
        history_item = {**cleaned, "result": full}
        rec = _Recorder()
        self._running = None
        rec.set_running(None)
        self._history.append(history_item)
        rec.appended.append(history_item)
        requeued = None
        if _properties(running).get("immediate_execution"):
            continues = False  # run once: never re-queued, never looped, the queue is not started
        elif requeue == "front":  # carries its `result`, as bluesky-queueserver shows failed items
            requeued = _with_new_uid(history_item)
            self._insert(0, [requeued], rec)
        elif requeue == "back":  # a fresh copy: a `result` of an earlier failure would be stale
            requeued = _with_new_uid(_filtered(cleaned))
            self._insert(len(self._queue), [requeued], rec)
        return Finished(history_item, requeued, continues, self._commit(rec))


# -- helpers ----------------------------------------------------------------------------------------------
def _new_uid() -> str:
    return str(uuid.uuid4())


_ATOMS = (str, int, float, bool, type(None))


def _copied(value: Any) -> Any:
    """A deep copy of an item's value: what a request decodes to (dicts, lists, scalars) is copied here, which
    is several times faster than `copy.deepcopy` (its memo of shared references costs more than the copy);
    anything else (tuples, arrays, ...) goes to `copy.deepcopy`."""
    kind = type(value)
    if kind is dict:
        return {k: _copied(v) for k, v in value.items()}
    if kind is list:
        return [_copied(v) for v in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


def _with_new_uid(item: Item) -> Item:
    return {**_copied(item), "item_uid": _new_uid()}


def _filtered(item: Item) -> Item:
    """A deep copy of `item` with only the allowed keys (`result` and unknown keys dropped)."""
    return {k: _copied(v) for k, v in item.items() if k in ALLOWED_ITEM_KEYS}


def _properties(item: Item) -> dict[str, Any]:
    props = item.get("properties")
    return dict(props) if isinstance(props, dict) else {}


def _without_run_properties(item: Item) -> Item:
    """`item` without the server's run-time properties (`time_start`, `immediate_execution`)."""
    props = {k: v for k, v in _properties(item).items() if k not in ("time_start", "immediate_execution")}
    cleaned = {k: v for k, v in item.items() if k != "properties"}
    if props:
        cleaned["properties"] = props
    return _copied(cleaned)


def _kind_of(item: Item) -> StartKind:
    item_type = item.get("item_type")
    if item_type == "plan":
        return StartKind.PLAN
    if item_type == "instruction":
        if item.get("name") == "queue_stop":
            return StartKind.QUEUE_STOP
        raise QueueError(f"Unsupported action: '{item.get('name')}' (item {item})")
    raise QueueError(f"Unrecognized item type: '{item_type}' (item {item})")


def _keys_between(lo: float | None, hi: float | None, count: int) -> list[float] | None:
    """`count` increasing order keys strictly between `lo` and `hi` (None: open end), or None if the
    floats leave no room (the caller then renumbers the queue)."""
    if lo is not None and hi is not None:
        step = (hi - lo) / (count + 1)
        keys = [lo + step * (i + 1) for i in range(count)]
    elif lo is not None:  # at the back: last + 1, + 2, ...
        keys = [lo + 1 + i for i in range(count)]
    elif hi is not None:  # at the front: ..., first - 2, first - 1
        keys = [hi - count + i for i in range(count)]
    else:
        keys = [float(i + 1) for i in range(count)]
    bounded = [k for k in (lo, *keys, hi) if k is not None]
    ok = all(math.isfinite(k) for k in keys) and all(a < b for a, b in itertools.pairwise(bounded))
    return keys if ok else None


def _placed(order: list[str], block: list[str], anchor: str, before: bool) -> list[str]:
    """`order` with `block` taken out and put back as one run before or after `anchor`."""
    moved = set(block)
    rest = [u for u in order if u not in moved]
    at = rest.index(anchor) + (0 if before else 1)
    return rest[:at] + block + rest[at:]


def _checked_mode(mode: Mapping[str, Any]) -> dict[str, bool]:
    for key, value in mode.items():
        if key not in DEFAULT_MODE:
            raise QueueError(
                f"Unsupported plan queue mode parameter '{key}': supported parameters {list(DEFAULT_MODE)}"
            )
        if not isinstance(value, bool):
            raise QueueError(
                f"Unsupported type '{type(value)}' of the parameter '{key}': expected type '{bool}'"
            )
    return dict(mode)


def _check_is_dict(item: object) -> None:
    if not isinstance(item, dict):
        raise QueueError(f"Parameter 'item' should be a dictionary: '{item}', (type '{type(item)}')")


def _check_uid_list(uids: object) -> None:
    if not isinstance(uids, list):
        raise QueueError(f"Parameter 'uids' must be a list: type(uids) = {type(uids)}")


def _check_batch_destination(pos_dest: Pos, before_uid: str | None, after_uid: str | None) -> None:
    n_dest = sum(p is not None for p in (pos_dest, before_uid, after_uid))
    if n_dest < 1:
        raise QueueError(
            "Destination for the batch is not specified: "
            "use parameters 'pos_dest', 'before_uid' or 'after_uid'"
        )
    if n_dest > 1:
        raise QueueError(
            "The function was called with more than one mutually exclusive parameter "
            "('pos_dest', 'before_uid', 'after_uid')"
        )


def _check_move_params(
    pos: Pos, uid: str | None, pos_dest: Pos, before_uid: str | None, after_uid: str | None
) -> None:
    if pos is None and uid is None:
        raise QueueError("Source position or UID is not specified.")
    if pos_dest is None and before_uid is None and after_uid is None:
        raise QueueError("Destination position or UID is not specified.")
    if pos is not None and uid is not None:
        raise QueueError("Ambiguous parameters: Both position and uid is specified for the source plan.")
    if pos_dest is not None and (before_uid is not None or after_uid is not None):
        raise QueueError("Ambiguous parameters: Both position and uid is specified for the destination plan.")
    if before_uid is not None and after_uid is not None:
        raise QueueError("Ambiguous parameters: source should be moved 'before' and 'after' the destination.")

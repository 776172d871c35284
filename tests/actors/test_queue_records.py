"""QueueRecords on a real SQLite file: what the queue manager persists is the queue it reloads, whether an
item was just added (inserted), moved (rewritten) or removed, and several changes written as one unit."""

from __future__ import annotations

from pathlib import Path

from stationd.actors.queue_manager.records import QueueRecords


def plan(name: str) -> dict[str, object]:
    return {"item_type": "plan", "name": name, "args": [], "kwargs": {}, "user": "u", "user_group": "primary"}


async def reloaded(path: Path) -> list[str]:
    records = QueueRecords(path)
    await records.open()
    try:
        queue, _ = await records.load()
        return [item["name"] for item in queue.items]
    finally:
        await records.close()


async def test_adds_moves_and_removes_are_what_a_restart_loads(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    records = QueueRecords(path)
    await records.open()
    queue, _ = await records.load()
    added = []
    for name in ("a", "b", "c", "d"):
        item, changes = queue.add_item(plan(name))
        await records.write([changes])
        added.append(item["item_uid"])
    _, moved = queue.move_item(uid=added[3], pos_dest="front")  # d: rewritten with a new position key
    _, removed = queue.remove_item(uid=added[1])  # b
    _, front = queue.add_item(plan("e"), pos="front")
    await records.write([moved, removed, front])  # one unit: a delete, an update and an insert
    await records.close()
    assert await reloaded(path) == ["e", "d", "a", "c"]

    records = QueueRecords(path)  # after a restart, the reloaded items are known to be stored: a move of
    await records.open()  # one is an update, not a second insert of its uid
    queue, _ = await records.load()
    uid_of_c = next(i["item_uid"] for i in queue.items if i["name"] == "c")
    _, changes = queue.move_item(uid=uid_of_c, pos_dest="front")
    await records.write([changes])
    await records.close()
    assert await reloaded(path) == ["c", "e", "d", "a"]

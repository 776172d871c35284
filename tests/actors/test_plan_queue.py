"""PlanQueue: bluesky-queueserver's queue semantics and error texts, change reports and order keys."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from stationd.actors.queue_manager.plan_queue import (
    Changes,
    PlanQueue,
    QueueEntry,
    QueueError,
    StartKind,
)

Item = dict[str, Any]


def plan(name: str, **extra: Any) -> Item:
    return {"item_type": "plan", "name": name, "user": "u", "user_group": "primary", **extra}


STOP: Item = {"item_type": "instruction", "name": "queue_stop"}


def names(pq: PlanQueue) -> list[str]:
    return [i["name"] if i["item_type"] == "plan" else "STOP" for i in pq.items]


def uid(pq: PlanQueue, name: str) -> str:
    return next(i["item_uid"] for i in pq.items if i["name"] == name)


def make(*plans: str, clock_start: float = 100.0) -> PlanQueue:
    pq = PlanQueue(clock=itertools.count(clock_start).__next__)
    pq.add_batch([plan(n) for n in plans])
    return pq


class Store:
    """A stand-in for the storage layer: applies `Changes` exactly as the actor would write them."""

    def __init__(self) -> None:
        self.queue: dict[str, QueueEntry] = {}
        self.running: Item | None = None
        self.history: list[Item] = []
        self.mode: dict[str, bool] | None = None

    def apply(self, changes: Changes) -> None:
        assert not set(changes.queue_removed) & {e.uid for e in changes.queue_upserted}
        for removed in changes.queue_removed:
            self.queue.pop(removed, None)
        for entry in changes.queue_upserted:
            self.queue[entry.uid] = entry
        if changes.running_changed:
            self.running = changes.running_item
        del self.history[: changes.history_removed]
        self.history.extend(changes.history_appended)
        if changes.mode is not None:
            self.mode = dict(changes.mode)

    def rebuild(self) -> PlanQueue:
        return PlanQueue.restore(
            queue=self.queue.values(), running_item=self.running, history=self.history, mode=self.mode
        )


def assert_same_state(a: PlanQueue, b: PlanQueue) -> None:
    assert a.entries == b.entries
    assert a.running_item == b.running_item
    assert a.history == b.history
    assert a.mode == b.mode


# -- adding: positions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pos", "expected"),
    [
        (None, "abcX"),
        ("back", "abcX"),
        ("front", "Xabc"),
        (0, "Xabc"),
        (1, "aXbc"),
        (2, "abXc"),
        (3, "abcX"),
        (99, "abcX"),
        (-1, "abcX"),
        (-2, "abXc"),
        (-3, "aXbc"),
        (-4, "Xabc"),
        (-99, "Xabc"),
    ],
)
def test_add_places_the_item_like_bluesky_queueserver(pos: int | str | None, expected: str) -> None:
    pq = make("a", "b", "c")
    pq.add_item(plan("X"), pos=pos)
    assert "".join(names(pq)) == expected


@pytest.mark.parametrize("pos", [None, "front", "back", 0, 5, -1, -5])
def test_add_to_an_empty_queue_accepts_any_position(pos: int | str | None) -> None:
    pq = make()
    pq.add_item(plan("X"), pos=pos)
    assert names(pq) == ["X"]


def test_add_before_and_after_a_uid() -> None:
    pq = make("a", "b")
    pq.add_item(plan("X"), before_uid=uid(pq, "b"))
    pq.add_item(plan("Y"), after_uid=uid(pq, "b"))
    assert names(pq) == ["a", "X", "b", "Y"]


def test_add_after_the_running_item_goes_to_the_front() -> None:
    pq = make("a", "b")
    running = pq.start_next().item
    assert running is not None
    pq.add_item(plan("X"), after_uid=running["item_uid"])
    assert names(pq) == ["X", "b"]


def test_add_before_the_running_item_is_refused() -> None:
    pq = make("a", "b")
    running = pq.start_next().item
    assert running is not None
    with pytest.raises(
        QueueError, match=r"^Can not insert a plan in the queue before a currently running plan\.$"
    ):
        pq.add_item(plan("X"), before_uid=running["item_uid"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pos": 1, "before_uid": "u"}, "Ambiguous parameters: plan position and UID is specified"),
        ({"pos": "front", "after_uid": "u"}, "Ambiguous parameters: plan position and UID is specified"),
        (
            {"before_uid": "u", "after_uid": "v"},
            "Ambiguous parameters: request to insert the plan before and after the reference plan",
        ),
        ({"before_uid": "nope"}, "Plan with UID 'nope' is not in the queue."),
        ({"after_uid": "nope"}, "Plan with UID 'nope' is not in the queue."),
        ({"pos": "middle"}, "Parameter 'pos' has incorrect value: pos='middle' (type=<class 'str'>)"),
    ],
)
def test_add_refuses_bad_placement_with_the_incumbent_text(kwargs: dict[str, Any], message: str) -> None:
    pq = make("a")
    token = pq.plan_queue_uid
    with pytest.raises(QueueError) as info:
        pq.add_item(plan("X"), **kwargs)
    assert str(info.value) == message
    assert names(pq) == ["a"]
    assert pq.plan_queue_uid == token


def test_add_refuses_an_item_that_is_not_a_dict() -> None:
    with pytest.raises(
        QueueError, match=r"^Parameter 'item' should be a dictionary: 'x', \(type '<class 'str'>'\)$"
    ):
        make().add_item("x")  # type: ignore[arg-type]


def test_add_assigns_a_new_uid_and_drops_unknown_keys() -> None:
    pq = make()
    item, changes = pq.add_item(plan("a", item_uid="mine", result={"exit_status": "failed"}, junk=1))
    assert item["item_uid"] != "mine"
    assert "result" not in item and "junk" not in item
    assert changes.queue_upserted == (QueueEntry(item, 1.0),)
    assert pq.items == [item]


def test_add_does_not_keep_a_reference_to_the_callers_dict() -> None:
    pq = make()
    mine = plan("a", kwargs={"num": 1})
    pq.add_item(mine)
    mine["kwargs"]["num"] = 2
    assert pq.items[0]["kwargs"] == {"num": 1}


# -- batches ------------------------------------------------------------------------------------------------
def test_add_batch_inserts_the_items_in_order_as_one_block() -> None:
    pq = make("a", "b")
    added, changes = pq.add_batch([plan("X"), plan("Y"), STOP], pos=1)
    assert names(pq) == ["a", "X", "Y", "STOP", "b"]
    assert len({i["item_uid"] for i in added}) == 3
    assert [e.item for e in changes.queue_upserted] == added


def test_add_batch_after_a_uid() -> None:
    pq = make("a", "b")
    pq.add_batch([plan("X"), plan("Y")], after_uid=uid(pq, "a"))
    assert names(pq) == ["a", "X", "Y", "b"]


def test_add_batch_is_all_or_nothing() -> None:
    pq = make("a")
    token = pq.plan_queue_uid
    with pytest.raises(QueueError, match="should be a dictionary"):
        pq.add_batch([plan("X"), 5, plan("Y")])  # type: ignore[list-item]
    with pytest.raises(QueueError, match="is not in the queue"):
        pq.add_batch([plan("X"), plan("Y")], before_uid="nope")
    assert names(pq) == ["a"]
    assert pq.plan_queue_uid == token


def test_an_empty_batch_changes_nothing_even_with_odd_parameters() -> None:
    pq = make("a")
    token = pq.plan_queue_uid
    assert pq.add_batch([], before_uid="nope") == ([], Changes())
    assert pq.plan_queue_uid == token


# -- reading and removing -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pos", "expected"),
    [(None, "c"), ("back", "c"), ("front", "a"), (0, "a"), (2, "c"), (-1, "c"), (-3, "a")],
)
def test_get_item_by_position(pos: int | str | None, expected: str) -> None:
    assert make("a", "b", "c").get_item(pos=pos)["name"] == expected


@pytest.mark.parametrize(
    ("pos", "message"),
    [
        (3, "Index '3' is out of range (parameter pos = '3')"),
        (-4, "Index '-4' is out of range (parameter pos = '-4')"),
        ("middle", "Parameter 'pos' has incorrect type: pos=middle (type=<class 'str'>)"),
    ],
)
def test_get_item_refuses_a_bad_position(pos: int | str, message: str) -> None:
    with pytest.raises(QueueError) as info:
        make("a", "b", "c").get_item(pos=pos)
    assert str(info.value) == message


def test_get_item_on_an_empty_queue_names_the_back_index() -> None:
    with pytest.raises(QueueError, match=r"^Index '-1' is out of range \(parameter pos = 'back'\)$"):
        make().get_item()


def test_get_item_by_uid_and_its_errors() -> None:
    pq = make("a", "b")
    assert pq.get_item(uid=uid(pq, "b"))["name"] == "b"
    with pytest.raises(QueueError, match=r"^Item with UID 'nope' is not in the queue\.$"):
        pq.get_item(uid="nope")
    with pytest.raises(QueueError, match=r"^Ambiguous parameters: plan position and UID is specified$"):
        pq.get_item(pos=0, uid="nope")
    running = pq.start_next().item
    assert running is not None
    with pytest.raises(
        QueueError, match=rf"^The item with UID '{running['item_uid']}' is currently running\.$"
    ):
        pq.get_item(uid=running["item_uid"])


@pytest.mark.parametrize(
    ("pos", "left"), [(None, "ab"), ("back", "ab"), ("front", "bc"), (1, "ac"), (-3, "bc")]
)
def test_remove_item_by_position(pos: int | str | None, left: str) -> None:
    pq = make("a", "b", "c")
    item, changes = pq.remove_item(pos=pos)
    assert "".join(names(pq)) == left
    assert changes.queue_removed == (item["item_uid"],)


def test_remove_item_errors() -> None:
    pq = make()
    for pos in (None, "front", "back"):
        with pytest.raises(QueueError, match=r"^Queue is empty$"):
            pq.remove_item(pos=pos)
    with pytest.raises(QueueError, match=r"^Index '0' is out of range \(parameter pos = '0'\)$"):
        pq.remove_item(pos=0)
    with pytest.raises(
        QueueError, match=r"^Parameter 'pos' has incorrect value: pos=x \(type=<class 'str'>\)$"
    ):
        pq.remove_item(pos="x")
    with pytest.raises(QueueError, match=r"^Plan with UID 'nope' is not in the queue\.$"):
        pq.remove_item(uid="nope")


def test_the_running_item_cannot_be_removed() -> None:
    pq = make("a")
    running = pq.start_next().item
    assert running is not None
    with pytest.raises(QueueError, match=r"^Can not remove an item which is currently running\.$"):
        pq.remove_item(uid=running["item_uid"])


def test_remove_batch_ignores_missing_and_repeated_uids_by_default() -> None:
    pq = make("a", "b", "c")
    a, c = uid(pq, "a"), uid(pq, "c")
    removed, changes = pq.remove_batch([c, "nope", a, a])
    assert [i["name"] for i in removed] == ["c", "a"]
    assert names(pq) == ["b"]
    assert set(changes.queue_removed) == {a, c}


def test_remove_batch_without_ignore_missing_removes_nothing_on_a_bad_list() -> None:
    pq = make("a", "b")
    a = uid(pq, "a")
    with pytest.raises(QueueError, match=r"^The list of contains repeated UIDs \(1 UIDs\)$"):
        pq.remove_batch([a, a], ignore_missing=False)
    with pytest.raises(
        QueueError, match=r"^The queue does not contain items with the following UIDs: \['nope'\]$"
    ):
        pq.remove_batch([a, "nope"], ignore_missing=False)
    with pytest.raises(QueueError, match=r"^Parameter 'uids' must be a list: type\(uids\) = <class 'str'>$"):
        pq.remove_batch(a)  # type: ignore[arg-type]
    assert names(pq) == ["a", "b"]


def test_remove_batch_counts_the_running_item_as_missing() -> None:
    pq = make("a", "b")
    running = pq.start_next().item
    assert running is not None
    with pytest.raises(QueueError, match="does not contain"):
        pq.remove_batch([uid(pq, "b"), running["item_uid"]], ignore_missing=False)
    assert names(pq) == ["b"]


def test_clear_empties_the_queue_but_keeps_the_running_item() -> None:
    pq = make("a", "b", "c")
    pq.start_next()
    b, c = uid(pq, "b"), uid(pq, "c")
    changes = pq.clear()
    assert pq.items == [] and pq.running_item is not None
    assert set(changes.queue_removed) == {b, c} and not changes.running_changed


# -- moving -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("src", "dest", "expected"),
    [
        (0, 2, "bca"),
        (2, 0, "cab"),
        (0, "back", "bca"),
        (2, "front", "cab"),
        ("front", -1, "bca"),
        (-1, 1, "acb"),
        (1, 1, "abc"),
        ("back", "back", "abc"),
    ],
)
def test_move_item_puts_it_at_the_destination_index(src: int | str, dest: int | str, expected: str) -> None:
    pq = make("a", "b", "c")
    pq.move_item(pos=src, pos_dest=dest)
    assert "".join(names(pq)) == expected


def test_move_item_by_uid_before_and_after_another() -> None:
    pq = make("a", "b", "c", "d")
    pq.move_item(uid=uid(pq, "a"), after_uid=uid(pq, "c"))
    assert names(pq) == ["b", "c", "a", "d"]
    pq.move_item(uid=uid(pq, "d"), before_uid=uid(pq, "b"))
    assert names(pq) == ["d", "b", "c", "a"]


def test_moving_an_item_onto_its_own_place_changes_nothing() -> None:
    pq = make("a", "b", "c")
    token = pq.plan_queue_uid
    _, changes = pq.move_item(uid=uid(pq, "b"), before_uid=uid(pq, "c"))
    _, changes2 = pq.move_item(pos=1, pos_dest=1)
    assert not changes and not changes2
    assert pq.plan_queue_uid == token


def test_a_move_rewrites_only_the_moved_item() -> None:
    pq = make("a", "b", "c")
    item, changes = pq.move_item(pos=0, pos_dest="back")
    assert [e.uid for e in changes.queue_upserted] == [item["item_uid"]]
    assert changes.queue_upserted[0].order == 4.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pos_dest": 0}, "Source position or UID is not specified."),
        ({"pos": 0}, "Destination position or UID is not specified."),
        (
            {"pos": 0, "uid": "u", "pos_dest": 1},
            "Ambiguous parameters: Both position and uid is specified for the source plan.",
        ),
        (
            {"pos": 0, "pos_dest": 1, "before_uid": "u"},
            "Ambiguous parameters: Both position and uid is specified for the destination plan.",
        ),
        (
            {"pos": 0, "before_uid": "u", "after_uid": "v"},
            "Ambiguous parameters: source should be moved 'before' and 'after' the destination.",
        ),
        (
            {"uid": "nope", "pos_dest": 0},
            "Source plan (UID 'nope') was not found: Item with UID 'nope' is not in the queue..",
        ),
        (
            {"pos": 5, "pos_dest": 0},
            "Source plan (position 5) was not found: Index '5' is out of range (parameter pos = '5').",
        ),
        (
            {"pos": 0, "before_uid": "nope"},
            "Destination plan (UID 'nope') was not found: Item with UID 'nope' is not in the queue..",
        ),
        (
            {"pos": 0, "pos_dest": -9},
            "Destination plan (position -9) was not found: "
            "Index '-9' is out of range (parameter pos = '-9').",
        ),
    ],
)
def test_move_item_errors_use_the_incumbent_text(kwargs: dict[str, Any], message: str) -> None:
    pq = make("a", "b")
    with pytest.raises(QueueError) as info:
        pq.move_item(**kwargs)
    assert str(info.value) == message
    assert names(pq) == ["a", "b"]


@pytest.mark.parametrize(
    ("batch", "dest", "reorder", "expected"),
    [
        ("db", {"pos_dest": "front"}, False, "dbace"),
        ("db", {"pos_dest": "front"}, True, "bdace"),
        ("db", {"pos_dest": "back"}, False, "acedb"),
        ("eb", {"before_uid": "c"}, False, "aebcd"),
        ("eb", {"after_uid": "c"}, True, "acbed"),
        ("ab", {"before_uid": "c"}, False, "abcde"),
        ("", {"pos_dest": "front"}, False, "abcde"),
    ],
)
def test_move_batch_places_the_items_as_one_block(
    batch: str, dest: dict[str, str], reorder: bool, expected: str
) -> None:
    pq = make("a", "b", "c", "d", "e")
    dest = {k: (v if k == "pos_dest" else uid(pq, v)) for k, v in dest.items()}
    moved, _ = pq.move_batch([uid(pq, n) for n in batch], reorder=reorder, **dest)
    assert "".join(names(pq)) == expected
    assert "".join(i["name"] for i in moved) == ("".join(sorted(batch)) if reorder else batch)


def test_move_batch_with_an_integer_destination_follows_move_item() -> None:
    pq = make("a", "b", "c", "d")
    pq.move_batch([uid(pq, "a"), uid(pq, "c")], pos_dest=2)
    assert names(pq) == ["b", "a", "c", "d"]


@pytest.mark.parametrize(
    ("uids", "dest", "message"),
    [
        (
            ["a"],
            {},
            "Destination for the batch is not specified: "
            "use parameters 'pos_dest', 'before_uid' or 'after_uid'",
        ),
        (
            ["a"],
            {"pos_dest": "front", "after_uid": "b"},
            "The function was called with more than one mutually exclusive parameter "
            "('pos_dest', 'before_uid', 'after_uid')",
        ),
        (["a", "a"], {"pos_dest": "front"}, "The list of contains repeated UIDs (1 UIDs)"),
        (
            ["a", "nope"],
            {"pos_dest": "front"},
            "The queue does not contain items with the following UIDs: ['nope']",
        ),
        (["a", "b"], {"before_uid": "b"}, "Parameter 'before_uid': item with UID '{b}' is in the batch"),
        (["a"], {"after_uid": "a"}, "Parameter 'after_uid': item with UID '{a}' is in the batch"),
        (
            ["a"],
            {"before_uid": "nope"},
            "Destination plan (UID 'nope') was not found: Item with UID 'nope' is not in the queue..",
        ),
    ],
)
def test_move_batch_errors_move_nothing(uids: list[str], dest: dict[str, str], message: str) -> None:
    pq = make("a", "b", "c")
    ids = {n: uid(pq, n) for n in "abc"}
    real = [ids.get(u, u) for u in uids]
    dest = {k: ids.get(v, v) for k, v in dest.items()}
    with pytest.raises(QueueError) as info:
        pq.move_batch(real, **dest)  # type: ignore[arg-type]
    assert str(info.value) == message.format(**ids)
    assert names(pq) == ["a", "b", "c"]


# -- replacing ----------------------------------------------------------------------------------------------
def test_replace_keeps_the_uid_and_the_place() -> None:
    pq = make("a", "b", "c")
    b = uid(pq, "b")
    item, changes = pq.replace_item(plan("B", item_uid=b))
    assert item["item_uid"] == b and names(pq) == ["a", "B", "c"]
    assert changes.queue_upserted == (QueueEntry(item, 2.0),) and not changes.queue_removed


def test_replace_with_a_new_uid_reports_the_old_one_removed() -> None:
    pq = make("a", "b")
    b = uid(pq, "b")
    item, changes = pq.replace_item(plan("B", item_uid=b), replace=True)
    assert item["item_uid"] != b and names(pq) == ["a", "B"]
    assert changes.queue_removed == (b,)


def test_replacing_with_an_identical_item_changes_nothing() -> None:
    pq = make("a")
    token = pq.plan_queue_uid
    _, changes = pq.replace_item(dict(pq.items[0]))
    assert not changes and pq.plan_queue_uid == token


def test_replace_errors() -> None:
    pq = make("a", "b")
    running = pq.start_next().item
    assert running is not None
    with pytest.raises(
        QueueError, match=r"^Failed to replace item: Item with UID 'nope' is not in the queue$"
    ):
        pq.replace_item(plan("x", item_uid="nope"))
    with pytest.raises(
        QueueError, match=r"^Failed to replace item: Item with UID '.*' is currently running$"
    ):
        pq.replace_item(plan("x", item_uid=running["item_uid"]))
    with pytest.raises(QueueError, match=r"^Item description contains no UID and UID generation is skipped$"):
        pq.replace_item(plan("x"))


# -- change tokens ------------------------------------------------------------------------------------------
def test_the_queue_token_changes_exactly_when_the_queue_or_the_running_item_changes() -> None:
    pq = make("a", "b")
    tokens = [pq.plan_queue_uid]

    def changed() -> bool:
        tokens.append(pq.plan_queue_uid)
        return tokens[-1] != tokens[-2]

    pq.get_item(pos=0)
    pq.queue_get()
    assert not changed()
    pq.set_mode({"loop": True})
    assert not changed()
    pq.add_item(plan("c"))
    assert changed()
    pq.move_item(pos=0, pos_dest="back")
    assert changed()
    pq.start_next()
    assert changed()
    pq.finish_running({"exit_status": "completed"})
    assert changed()
    pq.clear()
    assert changed()
    pq.clear()
    assert not changed()
    with pytest.raises(QueueError):
        pq.remove_item()
    assert not changed()


def test_the_history_token_changes_exactly_when_the_history_changes() -> None:
    pq = make("a", "b")
    token = pq.plan_history_uid
    pq.clear_history()
    pq.start_next()
    assert pq.plan_history_uid == token
    pq.finish_running({"exit_status": "completed"})
    assert pq.plan_history_uid != token
    token = pq.plan_history_uid
    pq.clear_history(size=5)
    assert pq.plan_history_uid == token
    pq.clear_history(size=0)
    assert pq.plan_history_uid != token


def test_queue_get_reports_an_empty_running_item_as_an_empty_dict() -> None:
    pq = make("a")
    assert pq.queue_get() == {"items": pq.items, "running_item": {}, "plan_queue_uid": pq.plan_queue_uid}
    running = pq.start_next().item
    assert pq.queue_get()["running_item"] == running


# -- execution ----------------------------------------------------------------------------------------------
def test_start_next_moves_the_front_plan_to_the_running_slot_with_its_start_time() -> None:
    pq = make("a", "b")
    a = uid(pq, "a")
    started = pq.start_next()
    assert started.kind is StartKind.PLAN and started.item is not None
    assert started.item["item_uid"] == a and started.item["properties"] == {"time_start": 100.0}
    assert names(pq) == ["b"]
    assert started.changes.queue_removed == (a,)
    assert started.changes.running_changed and started.changes.running_item == started.item


def test_start_next_on_an_empty_queue_starts_nothing() -> None:
    started = make().start_next()
    assert started.kind is StartKind.EMPTY and started.item is None and not started.changes


def test_start_next_refuses_while_an_item_runs() -> None:
    pq = make("a", "b")
    pq.start_next()
    with pytest.raises(QueueError, match="already running"):
        pq.start_next()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"item_type": "instruction", "name": "jump"}, "Unsupported action: 'jump'"),
        ({"item_type": "function", "name": "f"}, "Unrecognized item type: 'function'"),
    ],
)
def test_start_next_refuses_an_item_it_cannot_run_and_leaves_it_queued(item: Item, message: str) -> None:
    pq = make()
    pq.add_item(item)
    with pytest.raises(QueueError, match=message):
        pq.start_next()
    assert pq.queue_size == 1 and pq.running_item is None


def test_a_queue_stop_instruction_is_consumed_and_stops_the_queue() -> None:
    pq = make("a")
    stop, _ = pq.add_item(STOP, pos="front")
    started = pq.start_next()
    assert started.kind is StartKind.QUEUE_STOP and started.item == stop
    assert names(pq) == ["a"] and pq.running_item is None
    assert started.changes.queue_removed == (stop["item_uid"],)


def test_in_loop_mode_a_queue_stop_instruction_goes_to_the_back_with_a_new_uid() -> None:
    pq = make("a")
    pq.set_mode({"loop": True})
    stop, _ = pq.add_item(STOP, pos="front")
    started = pq.start_next()
    assert started.kind is StartKind.QUEUE_STOP
    assert names(pq) == ["a", "STOP"] and pq.items[1]["item_uid"] != stop["item_uid"]


# (exit status, loop, ignore_failures) -> (where the item goes, does the queue continue)
OUTCOMES = [
    ("completed", False, False, None, True),
    ("completed", True, False, "back", True),
    ("stopped", False, False, None, False),
    ("stopped", True, False, "back", False),
    ("failed", False, False, "front", False),
    ("failed", True, False, "front", False),
    ("failed", False, True, None, True),
    ("failed", True, True, "back", True),
    ("aborted", False, True, "front", False),
    ("aborted", True, False, "front", False),
    ("halted", False, False, "front", False),
    ("halted", True, True, "front", False),
    ("unknown", False, False, None, True),
    ("unknown", True, False, "back", True),
]


@pytest.mark.parametrize(("status", "loop", "ignore", "where", "continues"), OUTCOMES)
def test_finish_running_follows_the_outcome_table(
    status: str, loop: bool, ignore: bool, where: str | None, continues: bool
) -> None:
    pq = make("a", "b")
    pq.set_mode({"loop": loop, "ignore_failures": ignore})
    a = uid(pq, "a")
    pq.start_next()
    finished = pq.finish_running({"exit_status": status, "msg": "m"})
    assert finished.continues is continues
    assert pq.running_item is None and [h["item_uid"] for h in pq.history] == [a]
    assert names(pq) == {None: ["b"], "front": ["a", "b"], "back": ["b", "a"]}[where]
    if where is not None:
        assert finished.requeued_item is not None and finished.requeued_item["item_uid"] != a
        assert finished.requeued_item in pq.items
        assert ("result" in finished.requeued_item) is (where == "front")
    else:
        assert finished.requeued_item is None


def test_the_history_item_carries_the_result_without_run_time_properties() -> None:
    pq = make()
    pq.add_item(plan("a", properties={"note": "kept"}))
    pq.start_next()
    finished = pq.finish_running({"exit_status": "failed", "msg": "Plan failed: x", "run_uids": ["r1"]})
    history_item = finished.history_item
    assert history_item["properties"] == {"note": "kept"}
    assert history_item["result"] == {
        "exit_status": "failed",
        "run_uids": ["r1"],
        "scan_ids": [],
        "time_start": 100.0,
        "time_stop": 101.0,
        "msg": "Plan failed: x",
        "traceback": "",
    }
    assert finished.changes.history_appended == (history_item,)
    assert finished.changes.running_changed and finished.changes.running_item is None
    requeued = finished.requeued_item
    assert requeued is not None and requeued["result"] == history_item["result"]
    assert requeued["properties"] == {"note": "kept"}


def test_a_result_from_an_earlier_failure_is_not_copied_when_the_item_loops() -> None:
    pq = make("a")
    pq.set_mode({"loop": True})
    pq.start_next()
    pq.finish_running({"exit_status": "failed"})
    assert "result" in pq.items[0]
    pq.start_next()
    finished = pq.finish_running({"exit_status": "completed"})
    assert finished.history_item["result"]["exit_status"] == "completed"
    assert "result" not in pq.items[0]


def test_finish_running_checks_the_running_uid_and_the_status() -> None:
    pq = make("a")
    with pytest.raises(QueueError, match="No item is running"):
        pq.finish_running({"exit_status": "completed"})
    pq.start_next()
    with pytest.raises(QueueError, match="is not running"):
        pq.finish_running({"exit_status": "completed"}, item_uid="stale")
    with pytest.raises(QueueError, match="Unsupported exit status"):
        pq.finish_running({"exit_status": "exploded"})
    assert pq.running_item is not None


def test_an_immediate_item_runs_without_touching_the_queue_and_is_never_requeued() -> None:
    pq = make("a")
    pq.set_mode({"loop": True})
    queue_before = pq.entries
    started = pq.start_immediate(plan("now", item_uid="client"))
    assert started.kind is StartKind.PLAN and started.item is not None
    assert started.item["item_uid"] != "client"
    assert started.item["properties"] == {"immediate_execution": True, "time_start": 100.0}
    assert pq.entries == queue_before
    finished = pq.finish_running({"exit_status": "failed"})
    assert finished.requeued_item is None and finished.continues is False
    assert pq.entries == queue_before
    assert "properties" not in finished.history_item


def test_an_immediate_queue_stop_does_nothing() -> None:
    pq = make("a")
    started = pq.start_immediate(STOP)
    assert started.kind is StartKind.QUEUE_STOP and not started.changes
    assert names(pq) == ["a"] and pq.running_item is None


def test_recover_interrupted_keeps_the_item_in_history_and_at_the_front() -> None:
    pq = make("a", "b")
    a = uid(pq, "a")
    pq.start_next()
    finished = pq.recover_interrupted("Plan exit status was lost due to restart of the RE Manager process")
    assert finished.history_item["item_uid"] == a
    assert finished.history_item["result"]["exit_status"] == "unknown"
    assert finished.history_item["result"]["msg"].startswith("Plan exit status was lost")
    assert names(pq) == ["a", "b"] and pq.items[0]["item_uid"] != a
    assert finished.continues is False and pq.running_item is None


def test_recover_interrupted_does_not_requeue_an_immediate_item() -> None:
    pq = make("a")
    pq.start_immediate(plan("now"))
    finished = pq.recover_interrupted("lost")
    assert finished.requeued_item is None and names(pq) == ["a"]


def test_requeue_running_failed_puts_the_item_back_even_when_failures_are_ignored() -> None:
    pq = make("a", "b")
    pq.set_mode({"ignore_failures": True})
    pq.start_next()
    finished = pq.requeue_running_failed("RE Worker environment was destroyed")
    assert finished.history_item["result"]["exit_status"] == "failed"
    assert finished.history_item["result"]["msg"] == "RE Worker environment was destroyed"
    assert names(pq) == ["a", "b"] and finished.continues is False


# -- history and mode ---------------------------------------------------------------------------------------
def history_of(*statuses: str) -> PlanQueue:
    pq = make(*(f"p{i}" for i in range(len(statuses))))
    for status in statuses:
        pq.start_next()
        pq.finish_running({"exit_status": status})
    return pq


@pytest.mark.parametrize(("size", "left"), [(None, 0), (0, 0), (-1, 0), (2, 2), (4, 4), (9, 4)])
def test_clear_history_keeps_the_newest_size_items(size: int | None, left: int) -> None:
    pq = history_of("completed", "completed", "stopped", "completed")
    newest = pq.history[4 - left :]
    changes = pq.clear_history(size=size)
    assert pq.history == newest and changes.history_removed == 4 - left


def test_clear_history_up_to_an_item_uid() -> None:
    pq = history_of("completed", "completed", "completed")
    second = pq.history[1]["item_uid"]
    changes = pq.clear_history(item_uid=second)
    assert [h["name"] for h in pq.history] == ["p2"] and changes.history_removed == 2
    assert not pq.clear_history(item_uid="nope")


def test_clear_history_parameter_errors() -> None:
    pq = history_of("completed")
    with pytest.raises(QueueError, match=r"^Parameters 'size' and 'item_uid' are mutually exclusive\.$"):
        pq.clear_history(size=1, item_uid="u")
    with pytest.raises(QueueError, match=r"^The 'size' parameter must be an integer: size='1'$"):
        pq.clear_history(size="1")  # type: ignore[arg-type]


def test_history_get_pages_from_the_oldest_item() -> None:
    pq = history_of("completed", "completed", "completed")
    assert [h["name"] for h in pq.history_get()["items"]] == ["p0", "p1", "p2"]
    assert [h["name"] for h in pq.history_get(offset=1, limit=1)["items"]] == ["p1"]
    assert pq.history_get(offset=5)["items"] == []
    with pytest.raises(QueueError, match="non-negative"):
        pq.history_get(limit=-1)


def test_set_mode_updates_given_keys_resets_and_reports_only_real_changes() -> None:
    pq = make()
    assert pq.set_mode({"loop": True}).mode == {"loop": True, "ignore_failures": False}
    assert not pq.set_mode({"loop": True})
    assert pq.set_mode("default").mode == {"loop": False, "ignore_failures": False}


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (
            {"lop": True},
            "Unsupported plan queue mode parameter 'lop': supported parameters ['loop', 'ignore_failures']",
        ),
        (
            {"loop": 1},
            "Unsupported type '<class 'int'>' of the parameter 'loop': expected type '<class 'bool'>'",
        ),
        (
            5,
            "Queue mode is passed using object of unsupported type '<class 'int'>': (5). "
            "Supported types: ('dict', 'str'), supported string value: 'default'",
        ),
    ],
)
def test_set_mode_errors(mode: Any, message: str) -> None:
    pq = make()
    with pytest.raises(QueueError) as info:
        pq.set_mode(mode)
    assert str(info.value) == message
    assert pq.mode == {"loop": False, "ignore_failures": False}


# -- order keys and persistence -----------------------------------------------------------------------------
def test_order_keys_go_before_the_front_after_the_back_and_between_neighbours() -> None:
    pq = make("a", "b")
    pq.add_item(plan("f"), pos="front")
    pq.add_item(plan("m"), pos=2)
    assert [(e.item["name"], e.order) for e in pq.entries] == [("f", 0.0), ("a", 1.0), ("m", 1.5), ("b", 2.0)]


def test_when_no_float_fits_between_neighbours_the_whole_queue_is_renumbered() -> None:
    pq = make("a", "b")
    for i in range(80):
        _, changes = pq.add_item(plan(f"x{i}"), pos=1)
        if len(changes.queue_upserted) > 1:
            break
    else:
        pytest.fail("midpoints never ran out")
    assert [e.order for e in pq.entries] == [float(i + 1) for i in range(pq.queue_size)]
    assert {e.uid for e in changes.queue_upserted} == {e.uid for e in pq.entries}


def test_restore_sorts_by_order_key_and_reserves_the_running_uid() -> None:
    a, b = plan("a", item_uid="ua"), plan("b", item_uid="ub")
    running = plan("r", item_uid="ur", properties={"time_start": 1.0})
    pq = PlanQueue.restore(
        queue=[QueueEntry(b, 2.0), QueueEntry(a, -1.0)],
        running_item=running,
        history=[plan("h", item_uid="uh")],
        mode={"loop": True},
    )
    assert names(pq) == ["a", "b"] and pq.running_item == running
    assert pq.mode == {"loop": True, "ignore_failures": False} and pq.history_size == 1
    with pytest.raises(QueueError, match="repeated UIDs"):
        PlanQueue.restore(queue=[QueueEntry(a, 1.0)], running_item=plan("r", item_uid="ua"))


def test_a_restart_with_a_running_item_is_recovered_from_the_store() -> None:
    store = Store()
    pq = PlanQueue()
    for item in (plan("a"), plan("b")):
        store.apply(pq.add_item(item)[1])
    store.apply(pq.start_next().changes)
    restored = store.rebuild()
    store.apply(restored.recover_interrupted("lost").changes)
    assert names(store.rebuild()) == ["a", "b"]
    assert store.history[0]["result"]["exit_status"] == "unknown"


class QueueMachine(RuleBasedStateMachine):
    """Random operation sequences: the store fed with the reported changes always rebuilds the live queue,
    the order keys always sort into queue order, and the tokens change exactly when the lists do."""

    def __init__(self) -> None:
        super().__init__()
        self.pq = PlanQueue(clock=itertools.count().__next__)
        self.store = Store()
        self.n = 0

    def _uid(self, data: st.DataObject) -> str:
        known = [i["item_uid"] for i in self.pq.items] + [self.pq.running_item_uid or "nope", "nope"]
        return data.draw(st.sampled_from(known))

    def _pos(self, data: st.DataObject) -> int | str:
        return data.draw(st.one_of(st.sampled_from(["front", "back"]), st.integers(-6, 6)))

    def _new(self) -> Item:
        self.n += 1
        return STOP if self.n % 7 == 0 else plan(f"p{self.n}")

    def _do(self, op: Any, *args: Any, **kwargs: Any) -> None:
        queue = (self.pq.items, self.pq.running_item)
        history, tokens = self.pq.history, (self.pq.plan_queue_uid, self.pq.plan_history_uid)
        try:
            outcome = op(*args, **kwargs)
        except QueueError:
            outcome = Changes()
        if isinstance(outcome, tuple):
            outcome = outcome[1]
        self.store.apply(outcome if isinstance(outcome, Changes) else outcome.changes)
        assert (self.pq.plan_queue_uid != tokens[0]) is ((self.pq.items, self.pq.running_item) != queue)
        assert (self.pq.plan_history_uid != tokens[1]) is (self.pq.history != history)

    @rule(data=st.data(), where=st.sampled_from(["pos", "before_uid", "after_uid"]), batch=st.integers(0, 3))
    def add(self, data: st.DataObject, where: str, batch: int) -> None:
        place = {where: self._pos(data) if where == "pos" else self._uid(data)}
        if batch:
            self._do(self.pq.add_batch, [self._new() for _ in range(batch)], **place)
        else:
            self._do(self.pq.add_item, self._new(), **place)

    @rule(data=st.data(), by_uid=st.booleans())
    def remove(self, data: st.DataObject, by_uid: bool) -> None:
        self._do(self.pq.remove_item, **({"uid": self._uid(data)} if by_uid else {"pos": self._pos(data)}))

    @rule(data=st.data(), ignore_missing=st.booleans())
    def remove_batch(self, data: st.DataObject, ignore_missing: bool) -> None:
        uids = [self._uid(data) for _ in range(data.draw(st.integers(0, 3)))]
        self._do(self.pq.remove_batch, uids, ignore_missing=ignore_missing)

    @rule(data=st.data(), to_uid=st.booleans())
    def move(self, data: st.DataObject, to_uid: bool) -> None:
        dest = {"after_uid": self._uid(data)} if to_uid else {"pos_dest": self._pos(data)}
        self._do(self.pq.move_item, pos=self._pos(data), **dest)

    @rule(data=st.data(), reorder=st.booleans(), where=st.sampled_from(["front", "back", "before_uid"]))
    def move_batch(self, data: st.DataObject, reorder: bool, where: str) -> None:
        uids = data.draw(
            st.lists(st.sampled_from([i["item_uid"] for i in self.pq.items] or ["nope"]), max_size=4)
        )
        dest = {"before_uid": self._uid(data)} if where == "before_uid" else {"pos_dest": where}
        self._do(self.pq.move_batch, uids, reorder=reorder, **dest)

    @rule(data=st.data(), replace=st.booleans())
    def replace(self, data: st.DataObject, replace: bool) -> None:
        self._do(self.pq.replace_item, plan("edited", item_uid=self._uid(data)), replace=replace)

    @rule()
    def start(self) -> None:
        self._do(self.pq.start_next)

    @rule()
    def start_immediate(self) -> None:
        self._do(self.pq.start_immediate, plan("now"))

    @rule(status=st.sampled_from(sorted(["completed", "stopped", "failed", "aborted", "halted", "unknown"])))
    def finish(self, status: str) -> None:
        self._do(self.pq.finish_running, {"exit_status": status})

    @rule()
    def recover(self) -> None:
        self._do(self.pq.recover_interrupted, "lost")

    @rule(loop=st.booleans(), ignore=st.booleans())
    def mode(self, loop: bool, ignore: bool) -> None:
        self._do(self.pq.set_mode, {"loop": loop, "ignore_failures": ignore})

    @rule(size=st.integers(-1, 3))
    def trim_history(self, size: int) -> None:
        self._do(self.pq.clear_history, size=size)

    @rule()
    def clear(self) -> None:
        self._do(self.pq.clear)

    @invariant()
    def order_keys_sort_into_queue_order(self) -> None:
        keys = [e.order for e in self.pq.entries]
        assert all(a < b for a, b in itertools.pairwise(keys))

    @invariant()
    def the_store_rebuilds_the_live_queue(self) -> None:
        assert_same_state(self.store.rebuild(), self.pq)

    @invariant()
    def uids_are_unique(self) -> None:
        uids = [i["item_uid"] for i in self.pq.items] + [self.pq.running_item_uid] * bool(
            self.pq.running_item
        )
        assert len(set(uids)) == len(uids)


QueueMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_random_operation_sequences_keep_the_store_and_order_keys_consistent = QueueMachine.TestCase

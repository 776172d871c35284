"""`stationctl queue|history|environment|re|lock|unlock|manager|watch`: the queue server from the shell.

The commands mirror bluesky-queueserver's `qserver` CLI; `watch` is a live view fed by the status stream.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
from collections.abc import Callable
from typing import Any

import msgspec
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from stationd.protocol.client import CurveKeys
from stationd.protocol.codec import json_encoder
from stationd.protocol.queue_client import DEFAULT_USER, DEFAULT_USER_GROUP, QueueClient

from .ctl_queue_view import (
    MANAGER_STYLES,
    WatchView,
    call,
    compact,
    history_table,
    items_table,
    lock_grid,
    runs_table,
)

__all__ = ["QUEUE_COMMANDS", "add_queue_parsers", "item_from_args", "run_queue"]

QUEUE_COMMANDS = frozenset({"queue", "history", "environment", "re", "lock", "unlock", "manager", "watch"})
_JSON = json_encoder()
Reply = dict[str, Any]


def _number(kind: Callable[[str], float], *, zero: bool) -> Callable[[str], Any]:
    """argparse type: a number (`int` or `float`) above zero, or from zero on."""

    def convert(text: str) -> float:
        value = kind(text)
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if zero else '>'} 0, not {text}")
        return value

    convert.__name__ = kind.__name__  # argparse names it in "invalid int value: 'x'"
    return convert


_count = _number(int, zero=True)
_positive_int = _number(int, zero=False)
_seconds = _number(float, zero=False)


def add_queue_parsers(sub: Any, add_globals: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the queue-server commands on `stationctl`'s sub-parsers."""
    made: list[argparse.ArgumentParser] = []

    def parser(owner: Any, name: str, text: str) -> argparse.ArgumentParser:
        made.append(owner.add_parser(name, help=text, description=text))
        return made[-1]

    def options(
        p: argparse.ArgumentParser, *, lock: bool = True, user: bool = False, wait: bool = False
    ) -> None:
        if lock:
            p.add_argument("--lock-key", metavar="KEY", help="the key, while the queue/environment is locked")
        if user:
            p.add_argument("--user", default=DEFAULT_USER, help=f"user name (default: {DEFAULT_USER})")
            p.add_argument("--user-group", default=DEFAULT_USER_GROUP, help="user group (default: primary)")
        if wait:
            p.add_argument("--wait", action="store_true", help="return when it has finished")
            p.add_argument(
                "--wait-timeout", type=_seconds, default=600.0, metavar="S", help="give up after S s (600)"
            )

    def paging(p: argparse.ArgumentParser) -> None:
        p.add_argument("--offset", type=_count, default=0, help="skip the first N items")
        p.add_argument("--limit", type=_count, help="show at most N items")

    queue = parser(sub, "queue", "the plan queue (as `qserver queue`)")
    actions = queue.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    paging(parser(actions, "get", "the queued items and the running one"))
    for name, text in [("add", "add a plan or an instruction"), ("execute", "run a plan now, not queued")]:
        p = parser(actions, name, f"{text}: plan '{{\"name\": ...}}' | plan NAME [ARG ...] [KEY=VALUE ...]")
        p.add_argument("kind", choices=["plan", "instruction"])
        p.add_argument("spec", nargs="+", metavar="ITEM", help="JSON/Python dict, or NAME ARGS KEY=VALUE")
        options(p, user=True, wait=name == "execute")
    add = made[-2]
    add.add_argument("--pos", help="front, back or an index (qserver's `add plan front ...` works too)")
    add.add_argument("--before-uid", metavar="UID")
    add.add_argument("--after-uid", metavar="UID")
    item = parser(actions, "item", "get, remove or move one item: by position (front, back, N) or uid")
    item.add_argument("item_action", choices=["get", "remove", "move"])
    item.add_argument(
        "refs", nargs="*", metavar="REF", help="[ITEM] or: move ITEM DEST | ITEM before|after UID"
    )
    options(item)
    options(parser(actions, "clear", "remove every queued item"))
    options(parser(actions, "start", "start the queue"), wait=True)
    options(parser(actions, "stop", "stop the queue after the running plan"))
    options(parser(actions, "stop-cancel", "cancel a pending stop"))
    autostart = parser(actions, "autostart", "start the queue by itself whenever it has items")
    autostart.add_argument("state", choices=["on", "off"])
    options(autostart)
    mode = parser(actions, "mode", "set the queue mode: mode set loop=true ignore_failures=false | default")
    mode.add_argument("set", choices=["set"])
    mode.add_argument("pairs", nargs="+", metavar="KEY=VALUE")
    options(mode)

    history = parser(sub, "history", "finished items and their results")
    actions = history.add_subparsers(dest="history_command", required=True, metavar="ACTION")
    paging(parser(actions, "get", "the history, oldest first"))
    clear = parser(
        actions, "clear", "clear the history (all, or --size N newest kept, or --item-uid and older)"
    )
    clear.add_argument("--size", type=_count)
    clear.add_argument("--item-uid", metavar="UID")
    options(clear)

    env = parser(sub, "environment", "open, close, destroy or update the RunEngine environment")
    env.add_argument("env_action", choices=["open", "close", "destroy", "update"], metavar="ACTION")
    env.add_argument("--background", action="store_true", help="update: run as a background task")
    options(env, wait=True)
    run_engine = parser(sub, "re", "RunEngine: pause [immediate|deferred], resume, stop, abort, halt, runs")
    run_engine.add_argument("re_action", choices=["pause", "resume", "stop", "abort", "halt", "runs"])
    run_engine.add_argument(
        "option", nargs="?", help="pause: deferred (default) | immediate; runs: active|open|closed"
    )
    options(run_engine, wait=True)
    lock = parser(sub, "lock", "lock the environment, the queue or all; `lock info` shows the lock")
    lock.add_argument("what", choices=["environment", "queue", "all", "info"])
    lock.add_argument("--key", help="the lock key (lock info: check it)")
    lock.add_argument("--note", help="why it is locked")
    lock.add_argument("--user", default=DEFAULT_USER, help=f"who locks (default: {DEFAULT_USER})")
    unlock = parser(sub, "unlock", "unlock with the lock key or the emergency key")
    unlock.add_argument("--key", required=True)
    manager = parser(sub, "manager", "stop the daemon: manager stop [safe_on|safe_off]")
    manager.add_argument("manager_action", choices=["stop"])
    manager.add_argument("option", nargs="?", default="safe_on", choices=["safe_on", "safe_off"])
    watch = parser(sub, "watch", "live view of the manager, the running item, the queue and the history")
    watch.add_argument("--count", type=_positive_int, metavar="N", help="exit after N status updates")
    watch.add_argument("--rows", type=_count, default=5, metavar="N", help="queued and history rows (5)")
    for p in made:
        add_globals(p)


# -- items from the command line -----------------------------------------------------------------------------
def _value(text: str) -> Any:
    """A JSON value, else a Python literal, else the text itself (`det1`)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def item_from_args(kind: str, tokens: list[str]) -> dict[str, Any]:
    """An item from `plan '{"name": "count", ...}'`, `plan count '["det1"]' num=3`, `instruction queue-stop`.

    Raises:
        ValueError: the tokens do not describe an item.
    """
    if kind == "instruction":
        if [t.replace("-", "_") for t in tokens] != ["queue_stop"]:
            raise ValueError(f"the only instruction is queue-stop, not {' '.join(tokens)!r}")
        return {"item_type": "instruction", "name": "queue_stop"}
    if tokens[0].lstrip().startswith("{"):
        value = _value(tokens[0])
        if not isinstance(value, dict) or len(tokens) > 1:
            raise ValueError(f"not one JSON (or Python) dict: {' '.join(tokens)!r}")
        return {"item_type": "plan", **value}
    name, *rest = tokens
    if not name.isidentifier():
        raise ValueError(f"{name!r} is not a plan name (or a JSON dict)")
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for token in rest:
        key, sep, text = token.partition("=")
        if sep and key.isidentifier():
            kwargs[key] = _value(text)
        elif kwargs:
            raise ValueError(f"positional argument {token!r} after keyword arguments")
        else:
            args.append(_value(token))
    extra = {"args": args, "kwargs": kwargs}
    return {"item_type": "plan", "name": name} | {k: v for k, v in extra.items() if v}


def _pos(text: str) -> str | int | None:
    """`front`, `back` or an int index; None for anything else (a uid)."""
    if text in ("front", "back"):
        return text
    try:
        return int(text)
    except ValueError:
        return None


def _placement(args: argparse.Namespace, tokens: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Where to add: the options, or qserver's leading `front|back|N` or `before_uid|after_uid UID`."""
    where = {"pos": _pos(args.pos) if args.pos else None, "before_uid": args.before_uid}
    where["after_uid"] = args.after_uid
    if len(tokens) > 2 and tokens[0] in ("before_uid", "after_uid"):
        where[tokens[0]], tokens = tokens[1], tokens[2:]
    elif len(tokens) > 1 and _pos(tokens[0]) is not None:
        where["pos"], tokens = _pos(tokens[0]), tokens[1:]
    return where, tokens


def _ref(text: str) -> dict[str, Any]:
    pos = _pos(text)
    return {"uid": text} if pos is None else {"pos": pos}


# -- commands -----------------------------------------------------------------------------------------------
class _Printer:
    """Where a command's output goes: the reply as JSON with `--json`, else rich text and tables."""

    def __init__(self, out: Console, as_json: bool) -> None:
        self.out, self.as_json = out, as_json

    def reply(self, reply: Reply) -> None:
        if self.as_json:
            print(msgspec.json.format(_JSON.encode(reply), indent=2).decode(), flush=True)

    def show(self, *shown: RenderableType) -> None:
        if not self.as_json:
            for one in shown:
                self.out.print(Text(one) if isinstance(one, str) else one, soft_wrap=True)


def _fail(text: str) -> int:
    Console(stderr=True, highlight=False).print(Text(text, "red"), soft_wrap=True)
    return 1


def _since(qc: QueueClient, args: argparse.Namespace) -> int:
    """With `--wait`: the history's size before the command, to show what finished by the end of the wait."""
    return qc.status()["items_in_history"] if getattr(args, "wait", False) else 0


def _finished(qc: QueueClient, args: argparse.Namespace, p: _Printer, since: int, *states: str) -> int:
    """`--wait`: wait for one of the manager `states`; show what finished since history had `since` items."""
    status = qc.wait_for_condition(lambda s: s.get("manager_state") in states, args.wait_timeout)
    state = str(status.get("manager_state"))
    p.show(Text.assemble("manager ", (state, MANAGER_STYLES.get(state, ""))))
    if status.get("items_in_history", 0) > since:
        done = qc.history_get(offset=since)["items"]
        p.show(history_table(f"{len(done)} finished", done, since))
    return 0


def _queue(qc: QueueClient, args: argparse.Namespace, p: _Printer, parser: argparse.ArgumentParser) -> int:
    key = getattr(args, "lock_key", None)
    match args.queue_command:
        case "get":
            reply = qc.queue_get(args.offset, args.limit)
            p.reply(reply)
            if not p.as_json:
                title = f"queue ({qc.status()['items_in_queue']} items)"
                p.show(items_table(title, reply["items"], args.offset, reply["running_item"] or None))
        case "add" | "execute":
            adding = args.queue_command == "add"
            where, tokens = _placement(args, args.spec) if adding else ({}, args.spec)
            try:
                item = item_from_args(args.kind, tokens)
            except ValueError as exc:
                parser.error(str(exc))
            since = _since(qc, args)
            user = {"user": args.user, "user_group": args.user_group, "lock_key": key}
            reply = qc.item_add(item, **where, **user) if adding else qc.item_execute(item, **user)
            p.reply(reply)
            added = reply["item"]
            p.show(
                f"added {call(added)} as {added['item_uid'][:8]}; {reply['qsize']} queued"
                if adding
                else f"executing {call(added)} as {added['item_uid'][:8]}"
            )
            if not adding and args.wait:
                return _finished(qc, args, p, since, "idle")
        case "item":
            reply = _item(qc, args, parser, key)
            p.reply(reply)
            p.show(
                items_table({"get": "", "remove": "removed"}.get(args.item_action, "moved"), [reply["item"]])
            )
        case "clear":
            p.reply(qc.queue_clear(lock_key=key))
            p.show("queue cleared")
        case "stop":
            p.reply(qc.queue_stop(lock_key=key))
            p.show("the queue stops after the running plan")
        case "stop-cancel":
            p.reply(qc.queue_stop_cancel(lock_key=key))
            p.show("queue stop cancelled")
        case "autostart":
            p.reply(qc.queue_autostart(args.state == "on", lock_key=key))
            p.show(f"autostart {args.state}")
        case "start":
            since = _since(qc, args)
            p.reply(qc.queue_start(lock_key=key))
            p.show("queue started")
            if args.wait:
                return _finished(qc, args, p, since, "idle")
        case "mode":
            p.reply(qc.queue_mode_set(mode=_mode(args.pairs, parser), lock_key=key))
            if not p.as_json:
                now = qc.status()["plan_queue_mode"]
                p.show("queue mode: " + ", ".join(f"{k}={compact(v)}" for k, v in now.items()))
        case _:
            raise AssertionError(args.queue_command)
    return 0


def _mode(pairs: list[str], parser: argparse.ArgumentParser) -> Any:
    """`loop=true ignore_failures=false` → a partial mode dict; `default` → "default"."""
    if pairs == ["default"]:
        return "default"
    mode = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            parser.error(f"the queue mode is set as KEY=VALUE (or `default`), not {pair!r}")
        mode[name] = _value(text)
    return mode


def _item(
    qc: QueueClient, args: argparse.Namespace, parser: argparse.ArgumentParser, key: str | None
) -> Reply:
    refs = args.refs
    if args.item_action in ("get", "remove"):
        if len(refs) > 1:
            parser.error(f"queue item {args.item_action} takes one ITEM: front, back, an index or a uid")
        where = _ref(refs[0]) if refs else {}
        return qc.item_get(**where) if args.item_action == "get" else qc.item_remove(**where, lock_key=key)
    if len(refs) == 2 and _pos(refs[1]) is not None:
        return qc.item_move(**_ref(refs[0]), pos_dest=_pos(refs[1]), lock_key=key)
    if len(refs) == 3 and refs[1] in ("before", "after"):
        return qc.item_move(**_ref(refs[0]), **{f"{refs[1]}_uid": refs[2]}, lock_key=key)
    parser.error("queue item move ITEM DEST, or ITEM before|after UID (DEST: front, back or an index)")


def _history(qc: QueueClient, args: argparse.Namespace, p: _Printer) -> int:
    if args.history_command == "get":
        reply = qc.history_get(args.offset, args.limit)
        p.reply(reply)
        if not p.as_json:
            total = qc.status()["items_in_history"]
            p.show(history_table(f"history ({total} items)", reply["items"], args.offset))
    else:
        p.reply(qc.history_clear(size=args.size, item_uid=args.item_uid, lock_key=args.lock_key))
        p.show("history cleared")
    return 0


_ENV_BUSY = dict(open="creating_environment", close="closing_environment", destroy="destroying_environment")
_ENV_DONE = dict(open="environment open", close="environment closed", destroy="environment destroyed")


def _environment(qc: QueueClient, args: argparse.Namespace, p: _Printer) -> int:
    action, key = args.env_action, args.lock_key
    if action == "update":
        reply = qc.environment_update(run_in_background=args.background or None, lock_key=key)
        p.reply(reply)
        if not args.wait:
            p.show(f"environment update started (task {reply['task_uid'][:8]})")
            return 0
        result = qc.wait_for_completed_task(reply["task_uid"], args.wait_timeout)["result"]
        if not result.get("success"):
            return _fail(f"error: the environment update failed: {result.get('msg')}")
        p.show("environment updated")
        return 0
    control = {"open": qc.environment_open, "close": qc.environment_close, "destroy": qc.environment_destroy}
    p.reply(control[action](lock_key=key))
    if not args.wait:
        p.show(f"environment {action} requested")
        return 0
    status = qc.wait_for_condition(lambda s: s.get("manager_state") != _ENV_BUSY[action], args.wait_timeout)
    exists = bool(status.get("worker_environment_exists"))
    if exists != (action == "open"):
        return _fail(f"error: the environment is {'open' if exists else 'closed'} now (see the daemon log)")
    p.show(_ENV_DONE[action])
    return 0


def _run_engine(
    qc: QueueClient, args: argparse.Namespace, p: _Printer, parser: argparse.ArgumentParser
) -> int:
    action, option, key = args.re_action, args.option, args.lock_key
    choices = {"pause": ("deferred", "immediate"), "runs": ("active", "open", "closed")}.get(action, ())
    if option is not None and option not in choices:
        parser.error(f"re {action} takes {' or '.join(choices) or 'no option'}, not {option!r}")
    if action == "runs":
        reply = qc.re_runs(option or "active")
        p.reply(reply)
        p.show(runs_table(reply["run_list"]))
        return 0
    since = _since(qc, args)
    if action == "pause":
        p.reply(qc.re_pause(option or "deferred", lock_key=key))
    else:
        control = {"resume": qc.re_resume, "stop": qc.re_stop, "abort": qc.re_abort, "halt": qc.re_halt}
        p.reply(control[action](lock_key=key))
    p.show(f"{action} requested")
    if args.wait:
        return _finished(qc, args, p, since, "idle", *(["paused"] if action == "pause" else []))
    return 0


def _lock(qc: QueueClient, args: argparse.Namespace, p: _Printer, parser: argparse.ArgumentParser) -> int:
    if args.command == "unlock":
        reply = qc.unlock(args.key)
    elif args.what == "info":
        reply = qc.lock_info(args.key)
    elif not args.key:
        parser.error(f"lock {args.what} needs --key")
    else:
        env, queue = args.what in ("environment", "all"), args.what in ("queue", "all")
        reply = qc.lock(args.key, environment=env, queue=queue, note=args.note, user=args.user)
    p.reply(reply)
    p.show(lock_grid(reply["lock_info"]))
    return 0


def _watch(qc: QueueClient, args: argparse.Namespace, out: Console) -> int:
    """`stationctl watch`: redrawn at each status update; lists are fetched again only when they changed."""
    view = WatchView()
    seen: dict[str, Any] = {}

    def update(status: Reply) -> Reply:
        fetched: Reply = {"status": status}
        if seen.get("queue") != (uid := status.get("plan_queue_uid")):
            seen["queue"], view.queue = uid, qc.queue_get(0, args.rows)
            fetched["queue"] = view.queue
        if seen.get("history") != (uid := status.get("plan_history_uid")):
            first = max(0, status.get("items_in_history", 0) - args.rows)
            seen["history"], view.history = uid, qc.history_get(first, args.rows)
            fetched["history"] = view.history
        if seen.get("runs") != (uid := status.get("run_list_uid")):
            seen["runs"], view.runs = uid, qc.re_runs()
            fetched["runs"] = view.runs
        view.status = status
        return fetched

    with contextlib.closing(qc.status_updates()) as updates, contextlib.ExitStack() as stack:
        live = None if args.json else stack.enter_context(Live(view, console=out, refresh_per_second=2))
        for n, status in enumerate(updates):
            fetched = update(status)
            if live is None:
                print(_JSON.encode(fetched).decode(), flush=True)
            else:
                live.refresh()
            if args.count is not None and n >= args.count:
                break
    return 0


def run_queue(
    args: argparse.Namespace, curve: CurveKeys | None, out: Console, parser: argparse.ArgumentParser
) -> int:
    """Run one queue-server command; daemon errors propagate to `stationctl`'s handler."""
    p = _Printer(out, args.json)
    with QueueClient(args.control_addr, info_addr=args.info_addr, timeout=args.timeout, curve=curve) as qc:
        match args.command:
            case "queue":
                return _queue(qc, args, p, parser)
            case "history":
                return _history(qc, args, p)
            case "environment":
                return _environment(qc, args, p)
            case "re":
                return _run_engine(qc, args, p, parser)
            case "lock" | "unlock":
                return _lock(qc, args, p, parser)
            case "manager":
                p.reply(qc.manager_stop(args.option))
                p.show(f"stationd is stopping ({args.option})")
                return 0
            case "watch":
                return _watch(qc, args, out)
            case _:
                raise AssertionError(args.command)

"""Rich rendering of the queue server for `stationctl`: tables of items, history and runs, status and lock
grids, and the `watch` view."""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from stationd.protocol.codec import json_encoder

__all__ = ["EXIT_STYLES", "MANAGER_STYLES", "WatchView"]

EXIT_STYLES = dict(
    completed="green", stopped="yellow", failed="red", aborted="red", halted="red", unknown="magenta"
)
MANAGER_STYLES = {"idle": "green", "paused": "yellow", "executing_queue": "cyan", "executing_task": "cyan"}
Reply = dict[str, Any]
_JSON = json_encoder()


def compact(value: Any) -> str:
    return _JSON.encode(value).decode()


def arguments(item: Reply) -> str:
    """`["det1"], num=3`: the args and kwargs of an item."""
    parts = [compact(a) for a in item.get("args") or []]
    return ", ".join(parts + [f"{k}={compact(v)}" for k, v in (item.get("kwargs") or {}).items()])


def call(item: Reply) -> str:
    """`count(["det1"], num=3)`, or an instruction's name."""
    plan = item.get("item_type") == "plan"
    return f"{item.get('name', '?')}({arguments(item)})" if plan else str(item.get("name", "?"))


def when(stamp: Any) -> str:
    is_time = isinstance(stamp, int | float)
    return datetime.datetime.fromtimestamp(stamp).strftime("%m-%d %H:%M:%S") if is_time else ""


def duration(start: Any, stop: Any) -> str:
    from .ctl import format_duration  # imported here: ctl imports this module

    is_time = isinstance(start, int | float) and isinstance(stop, int | float)
    return format_duration(max(0.0, stop - start)) if is_time else ""


def new_table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def add_row(table: Table, *cells: RenderableType | None) -> None:
    """A row whose text is shown as it is: names and arguments come from users, not rich markup."""
    table.add_row(*(Text(c) if isinstance(c, str) else c for c in cells))


def items_table(title: str, items: list[Reply], offset: int = 0, running: Reply | None = None) -> Table:
    table = new_table(title, "#", "uid", "name", "args/kwargs", "user")
    if running:
        took = duration((running.get("properties") or {}).get("time_start"), time.time())
        name = Text.assemble((running.get("name", "?"), "bold cyan"), f" (running {took})")
        add_row(table, "▶", running.get("item_uid", "")[:8], name, arguments(running), running.get("user"))
    for n, item in enumerate(items, start=offset):
        name = item.get("name", "?") if item.get("item_type") == "plan" else f"[{item.get('name')}]"
        add_row(table, str(n), item.get("item_uid", "")[:8], name, arguments(item), item.get("user", ""))
    return table


def history_table(title: str, items: list[Reply], offset: int = 0) -> Table:
    columns = ("#", "uid", "name", "args/kwargs", "user", "exit status", "started", "duration", "msg")
    table = new_table(title, *columns)
    for n, item in enumerate(items, start=offset):
        result = item.get("result") or {}
        status, start = str(result.get("exit_status", "?")), result.get("time_start")
        add_row(
            table,
            str(n),
            item.get("item_uid", "")[:8],
            item.get("name", "?"),
            arguments(item),
            item.get("user"),
            Text(status, EXIT_STYLES.get(status, "")),
            when(start),
            duration(start, result.get("time_stop")),
            Text(result.get("msg", ""), "red"),
        )
    return table


def runs_table(runs: list[Reply]) -> Table:
    title = f"{len(runs)} run{'' if len(runs) == 1 else 's'} of the running plan"
    table = new_table(title, "uid", "scan_id", "state", "exit status")
    for run in runs:
        status = str(run.get("exit_status") or "")
        state = Text("open", "cyan") if run.get("is_open") else Text("closed")
        add_row(
            table,
            run.get("uid", ""),
            str(run.get("scan_id", "")),
            state,
            Text(status, EXIT_STYLES.get(status, "")),
        )
    return table


def on(flag: Any) -> str:
    return "on" if flag else "off"


def grid(rows: list[tuple[str, RenderableType]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in rows:
        grid.add_row(name, Text(value) if isinstance(value, str) else value)
    return grid


def status_grid(s: Reply) -> Table:
    state, mode = str(s.get("manager_state", "?")), s.get("plan_queue_mode") or {}
    flags = [f"({f.replace('_', ' ')})" for f in ("queue_stop_pending", "pause_pending") if s.get(f)]
    locked = [k for k, v in (s.get("lock") or {}).items() if v]
    queue = f"{s.get('items_in_queue', 0)} items, autostart {on(s.get('queue_autostart_enabled'))}, "
    queue += f"loop {on(mode.get('loop'))}, ignore failures {on(mode.get('ignore_failures'))}"
    manager = Text.assemble((state, MANAGER_STYLES.get(state, "yellow")), " ", (" ".join(flags), "yellow"))
    env = f"open ({s.get('worker_environment_state')})" if s.get("worker_environment_exists") else "closed"
    lock = Text(", ".join(locked), "yellow") if locked else "none"
    rows = [("manager", manager), ("environment", env), ("RunEngine", str(s.get("re_state") or "-"))]
    return grid([*rows, ("queue", queue), ("lock", lock)])


def lock_grid(info: Reply) -> Table:
    rows = [
        (f"{k} locked", Text(on(info.get(k)), "yellow" if info.get(k) else ""))
        for k in ("environment", "queue")
    ]
    rows += [
        ("by", f"{info.get('user') or '-'} at {info.get('time_str') or '-'}"),
        ("note", str(info.get("note") or "-")),
        ("emergency key", "set" if info.get("emergency_lock_key_is_set") else "not set"),
    ]
    return grid(rows)


@dataclass
class WatchView:
    """What `watch` shows; rendered anew at each refresh, so the running item's elapsed time moves."""

    status: Reply = field(default_factory=dict)
    queue: Reply = field(default_factory=dict)
    history: Reply = field(default_factory=dict)
    runs: Reply = field(default_factory=dict)

    def __rich__(self) -> RenderableType:
        s, queued, done = self.status, self.queue.get("items") or [], self.history.get("items") or []
        in_queue, in_history = s.get("items_in_queue", 0), s.get("items_in_history", 0)
        head = Text.assemble(("stationd ", "bold"), f"{s.get('version', '')}  daemon {s.get('daemon_state')}")
        parts: list[RenderableType] = [head, status_grid(s)]
        running = self.queue.get("running_item") or None
        if running and self.runs.get("run_list"):
            parts.append(runs_table(self.runs["run_list"]))
        parts.append(items_table(f"queue: next {len(queued)} of {in_queue}", queued, 0, running))
        first = max(0, in_history - len(done))
        parts.append(history_table(f"history: last {len(done)} of {in_history}", done, first))
        return Group(*parts)

"""`stationctl daq …`: OCM's `daqOcmCtl` commands (start, stop, abort, status, await, list, keywords) with
readable output (rich tables) or `--json`."""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from stationd.protocol.client import Client, CurveKeys
from stationd.protocol.daq import DaqState, DaqStatus, DaqSubState, SourceState
from stationd.protocol.daq_client import DaqClient

__all__ = ["add_daq_parser", "run_daq"]

_STYLES = {
    DaqSubState.ACQUIRING: "green",
    DaqSubState.COMPLETED: "green",
    DaqSubState.ABORTING: "yellow",
    DaqSubState.ABORTED: "red",
    SourceState.FAILED: "red",
    SourceState.ABORTED: "red",
}


def _text_arg(value: str) -> str:
    """JSON given inline, from a file (`@start.json`) or from stdin (`@-` or `-`), as daqOcmCtl reads it."""
    if value in ("-", "@-"):
        return sys.stdin.read()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {value[1:]}: {exc.strerror}") from exc
    return value


def _state(value: str) -> DaqState:
    """`StateCompleted`, `completed` or `Completed`."""
    wanted = value.lower().removeprefix("state")
    for state in DaqState:
        if state.value.lower().removeprefix("state") == wanted:
            return state
    raise argparse.ArgumentTypeError(
        f"unknown state {value!r} (one of {', '.join(s.value for s in DaqState)})"
    )


def _substate(value: str) -> DaqSubState:
    for substate in DaqSubState:
        if substate.value.lower() == value.lower():
            return substate
    known = ", ".join(s.value for s in DaqSubState)
    raise argparse.ArgumentTypeError(f"unknown substate {value!r} (one of {known})")


def add_daq_parser(sub: Any, add_globals: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `daq` and its actions on `stationctl`'s sub-parsers."""
    daq = sub.add_parser("daq", help="data acquisitions (ESO OCM's daqOcmCtl)")
    actions = daq.add_subparsers(dest="daq_command", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start a DAQ: PRIMARY-SOURCES [METADATA-SOURCES] (name@uri ...)")
    start.add_argument("prim_sources", help='space-separated name@uri, e.g. "cam@sim://cam?rate=100"')
    start.add_argument("meta_sources", nargs="?", default="", help="space-separated name@uri")
    start.add_argument("--id", default="", help="DAQ id (default: generated)")
    start.add_argument("--file-prefix", default="", help="prefix of the DAQ's file names")
    start.add_argument("--properties", type=_text_arg, help="OCM properties JSON: inline, @file or - (stdin)")
    stop = actions.add_parser("stop", help="stop a DAQ and keep its data")
    abort = actions.add_parser("abort", help="abort a DAQ and discard its data")
    for p in (stop, abort):
        p.add_argument("id")
        p.add_argument("--force", action="store_true", help="mark it done even when sources fail")
    status = actions.add_parser("status", help="the status of one DAQ")
    status.add_argument("id")
    wait = actions.add_parser("await", help="wait for a state (or until it can no longer come)")
    wait.add_argument("id")
    wait.add_argument("state", type=_state, help="StateAcquiring, StateMerging or StateCompleted")
    wait.add_argument("substate", type=_substate, help="e.g. Acquiring, Stopped, Completed, Aborted")
    wait.add_argument("--wait-timeout", type=float, default=60.0, help="seconds to wait (default 60)")
    listing = actions.add_parser("list", help="the DAQs not completed")
    keywords = actions.add_parser("keywords", help="add or replace user keywords (OCM keyword JSON)")
    keywords.add_argument("id")
    keywords.add_argument("keywords", type=_text_arg, help="JSON list: inline, @file or - (stdin)")
    for p in (daq, start, stop, abort, status, wait, listing, keywords):
        add_globals(p)


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _phase(status: DaqStatus) -> Text:
    return Text.assemble(
        f"{status.state.value} / ", (status.substate.value, _STYLES.get(status.substate, ""))
    )


def _list_table(daqs: list[DaqStatus]) -> Table:
    table = Table(title=f"{len(daqs)} active DAQ{'' if len(daqs) == 1 else 's'}", title_justify="left")
    for column in ("id", "state / substate", "error", "sources", "since", "message"):
        table.add_column(column, overflow="fold")
    for s in daqs:
        table.add_row(
            s.id,
            _phase(s),
            Text("yes", "red") if s.error else "",
            str(len(s.sources)),
            _when(s.timestamp),
            s.message,
        )
    return table


def _status_view(s: DaqStatus) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column(overflow="fold")
    head.add_row("id", s.id)
    head.add_row("state", _phase(s))
    head.add_row("error", Text("yes", "red") if s.error else "no")
    if s.message:
        head.add_row("message", s.message)
    head.add_row("file id", s.file_id)
    if s.result:
        head.add_row("product", s.result)
    head.add_row("created", _when(s.created))
    head.add_row("last change", _when(s.timestamp))
    sources = Table(title="sources", title_justify="left")
    for column in ("name", "kind", "uri", "state", "rows", "last error"):
        sources.add_column(column, overflow="fold")
    for src in s.sources:
        state = Text(src.state.value, _STYLES.get(src.state, ""))
        sources.add_row(src.name, src.kind, src.uri, state, str(src.rows) if src.rows else "", src.error)
    parts: list[Any] = [head, sources]
    if s.keywords:
        keywords = Table(title="user keywords", title_justify="left")
        for column in ("type", "name", "value", "comment"):
            keywords.add_column(column, overflow="fold")
        for k in s.keywords:
            fields = msgspec.to_builtins(k)
            keywords.add_row(
                fields["type"], fields.get("name", ""), str(fields["value"]), fields.get("comment", "")
            )
        parts.append(keywords)
    history = Table(title="history", title_justify="left")
    for column in ("time", "state", "substate"):
        history.add_column(column)
    for step in s.history:
        history.add_row(_when(step.timestamp), step.state.value, step.substate.value)
    parts.append(history)
    return Group(*parts)


def run_daq(args: argparse.Namespace, curve: CurveKeys | None, out: Console) -> int:
    """Run one `stationctl daq` action; errors propagate to `stationctl`'s handler."""
    code = 0
    with DaqClient(client=Client(args.control_addr, timeout=args.timeout, curve=curve)) as daq:
        match args.daq_command:
            case "start":
                result: Any = daq.start_daq(
                    args.id,
                    prim_sources=args.prim_sources,
                    meta_sources=args.meta_sources,
                    file_prefix=args.file_prefix,
                    properties=args.properties,
                )
                view: Any = Text.assemble("started ", (result.id, "bold"))
            case "stop" | "abort":
                command = {
                    ("stop", False): daq.stop_daq,
                    ("stop", True): daq.force_stop_daq,
                    ("abort", False): daq.abort_daq,
                    ("abort", True): daq.force_abort_daq,
                }[(args.daq_command, args.force)]
                result = command(args.id)
                done = "stopped" if args.daq_command == "stop" else "aborted"
                view = Text.assemble(f"{done} ", (result.id, "bold"))
                if result.error:
                    view.append(" with errors (see `stationctl daq status`)", "yellow")
            case "status":
                result = daq.get_daq_status(args.id)
                view = _status_view(result)
            case "await":
                result = daq.await_daq_state(args.id, args.state, args.substate, args.wait_timeout)
                if result.timeout:
                    code = 1
                    view = Text.assemble(
                        (f"timed out after {args.wait_timeout:g} s", "yellow"), ": ", _phase(result.status)
                    )
                else:
                    view = Text.assemble(f"{result.status.id}: ", _phase(result.status))
            case "list":
                result = daq.get_active_list()
                view = _list_table(result)
            case "keywords":
                result = daq.update_keywords(args.id, args.keywords)
                view = Text.assemble("keywords updated for ", (result.id, "bold"))
            case _:
                raise AssertionError(args.daq_command)
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(result), indent=2).decode(), flush=True)
    else:
        out.print(view, soft_wrap=True)
    return code

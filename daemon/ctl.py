"""`stationctl`: ping a running daemon, show its status and actor tree, follow its info stream."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from stationd.protocol.client import (
    DEFAULT_CONTROL_ADDR,
    DEFAULT_INFO_ADDR,
    Client,
    CurveKeys,
    InfoEvent,
    Subscriber,
)
from stationd.protocol.codec import json_encoder
from stationd.protocol.errors import DeadlineExceeded, StationError
from stationd.protocol.pubsub import CONSOLE, EVENT_PREFIX, INFO, LOG
from stationd.protocol.queue_client import WaitTimeout
from stationd.protocol.supervision import ActorInfo
from stationd.protocol.system import Status
from stationd.protocol.version import VERSION

from .ctl_daq import add_daq_parser, run_daq
from .ctl_obs import add_obs_parser, run_obs
from .ctl_queue import QUEUE_COMMANDS, add_queue_parsers, run_queue

__all__ = ["format_duration", "format_event", "main"]

STATE_STYLES = {
    "running": "green",
    "failed": "red",
    "starting": "yellow",
    "restarting": "yellow",
    "stopping": "yellow",
    "stopped": "dim",
}
LEVEL_STYLES = {"debug": "dim", "info": "green", "warning": "yellow", "error": "red", "critical": "bold red"}
_JSON = json_encoder()


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    """argparse type: a number (`int` or `float`) greater than zero."""

    def convert(text: str) -> float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
        return value

    convert.__name__ = kind.__name__  # argparse names it in "invalid float value: 'x'"
    return convert


def _add_global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options valid before or after the command; after it (`suppress`) they only override when given."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    control = os.environ.get("STATIOND_CONTROL_ADDR", DEFAULT_CONTROL_ADDR)
    info = os.environ.get("STATIOND_INFO_ADDR", DEFAULT_INFO_ADDR)
    parser.add_argument(
        "--control-addr", default=default(control), help=f"control socket (default: {control})"
    )
    parser.add_argument("--info-addr", default=default(info), help=f"info socket (default: {info})")
    parser.add_argument(
        "--timeout",
        type=_positive(float),
        default=default(5.0),
        help="seconds to wait for a reply (default: 5)",
    )
    parser.add_argument("--server-key", default=default(None), metavar="FILE", help="server's public .key")
    parser.add_argument(
        "--client-key", default=default(None), metavar="FILE", help="client's .key_secret (CurveZMQ)"
    )
    parser.add_argument("--json", action="store_true", default=default(False), help="print raw JSON")


def _parser() -> argparse.ArgumentParser:
    """The command line: global options, then `ping`, `status`, `monitor`, `obs`, `daq` or a queue command."""
    parser = argparse.ArgumentParser(prog="stationctl", description="Talk to a running stationd daemon.")
    parser.add_argument("--version", action="version", version=f"stationctl {VERSION}")
    _add_global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {
        "ping": sub.add_parser("ping", help="check that the daemon answers"),
        "status": sub.add_parser("status", help="daemon state and the actor tree"),
        "monitor": sub.add_parser("monitor", help="print the info stream (Ctrl-C stops)"),
    }
    for command in commands.values():
        _add_global_options(command, suppress=True)
    add_obs_parser(sub, lambda p: _add_global_options(p, suppress=True))
    add_daq_parser(sub, lambda p: _add_global_options(p, suppress=True))
    add_queue_parsers(sub, lambda p: _add_global_options(p, suppress=True))
    monitor = commands["monitor"]
    topic_help = "topic prefix (repeatable; default: all)"
    monitor.add_argument("--topic", action="append", default=[], metavar="PREFIX", help=topic_help)
    monitor.add_argument("--count", type=_positive(int), metavar="N", help="stop after N messages")
    return parser


def format_duration(seconds: float) -> str:
    """Human-readable duration: `4.2 s`, `3m 07s`, `2h 05m 09s`, `1d 0h 00m 00s`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes:02d}m {secs:02d}s"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def _compact(value: Any) -> str:
    """Strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else _JSON.encode(value).decode()


def _actor_label(actor: ActorInfo) -> Text:
    """One node of the actor tree."""
    label = Text.assemble(
        (actor.name, "bold"),
        f"  {actor.kind} {actor.mode}  ",
        (str(actor.state), STATE_STYLES.get(actor.state, "")),
        ("  restarts ", "dim"),
        (str(actor.restarts), "yellow" if actor.restarts else ""),
    )
    if actor.pid is not None:
        label.append("  pid ", "dim").append(str(actor.pid))
    if actor.last_exit:
        label.append("  last exit ", "dim").append(actor.last_exit, "red")
    return label


def _actor_tree(actors: list[ActorInfo]) -> Tree:
    """The supervision tree; actors whose parent is unknown hang from the root."""
    names = {a.name for a in actors}
    children: dict[str | None, list[ActorInfo]] = {}
    for actor in actors:
        children.setdefault(actor.parent if actor.parent in names else None, []).append(actor)
    tree = Tree(Text(f"actors ({len(actors)})", "bold"), guide_style="dim")

    def add(branch: Tree, parent: str | None) -> None:
        for actor in children.get(parent, []):
            add(branch.add(_actor_label(actor)), actor.name)

    add(tree, None)
    return tree


def format_event(event: InfoEvent) -> Text:
    """One info-stream message as one line: time, topic and a compact rendering of the payload."""
    p = event.payload
    when = p.get("time")
    stamp = datetime.datetime.fromtimestamp(when if isinstance(when, int | float) else time.time())
    line = Text.assemble(
        (stamp.strftime("%H:%M:%S.%f")[:-3], "dim"), " ", (f"{event.topic:<10}", "cyan"), " "
    )
    if event.topic == LOG:
        level = str(p.get("level", "?"))
        line.append(f"{level:<7}", LEVEL_STYLES.get(level.lower(), ""))
        line.append(f" {p.get('actor', '?')}", "bold").append(f" {p.get('event', '')}")
        fields = p.get("fields") or {}
        if isinstance(fields, dict):
            for key, value in fields.items():
                line.append(f" {key}=", "dim").append(_compact(value))
    elif event.topic == CONSOLE:
        line.append(str(p.get("msg", "")).rstrip("\n"))
    elif event.topic == INFO:
        msg = p.get("msg")
        status = msg.get("status") if isinstance(msg, dict) else None
        status = status if isinstance(status, dict) else {}
        state = str(status.get("daemon_state", "?"))
        actors = status.get("actors") or []
        line.append("daemon ").append(state, STATE_STYLES.get(state, ""))
        line.append(f", {len(actors)} actor{'' if len(actors) == 1 else 's'}")
        line.append(f", uid {str(status.get('status_uid', '?'))[:8]}", "dim")
    elif event.topic.startswith(EVENT_PREFIX):
        actor, _, name = event.topic.removeprefix(EVENT_PREFIX).partition(".")
        line.append(f"{p.get('actor', actor)}.{p.get('name', name)}", "bold")
        line.append(" ").append(_compact(p.get("data")))
    else:
        line.append(_compact({k: v for k, v in p.items() if k not in ("seq", "time")}))
    return line


def _print_json(value: Any) -> None:
    """Pretty-printed JSON on stdout, without rich's highlighting or wrapping."""
    print(msgspec.json.format(_JSON.encode(value), indent=2).decode(), flush=True)


def _ping(args: argparse.Namespace, curve: CurveKeys | None, out: Console) -> int:
    """`stationctl ping`."""
    with Client(args.control_addr, timeout=args.timeout, curve=curve) as client:
        started = time.perf_counter()
        reply = client.request("ping")
        elapsed_ms = (time.perf_counter() - started) * 1000
    if args.json:
        _print_json(reply)
        return 0
    status = msgspec.convert(reply, Status)
    out.print(
        Text.assemble(
            f"stationd {status.version} at {args.control_addr}: ", ("ok", "green"), f" ({elapsed_ms:.1f} ms)"
        ),
        soft_wrap=True,
    )
    return 0


def _status(args: argparse.Namespace, curve: CurveKeys | None, out: Console) -> int:
    """`stationctl status`."""
    with Client(args.control_addr, timeout=args.timeout, curve=curve) as client:
        reply = client.request("status")
    if args.json:
        _print_json(reply)
        return 0
    status = msgspec.convert(reply, Status)
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("daemon", f"stationd {status.version} at {args.control_addr}")
    head.add_row("protocol", str(status.protocol_version))
    head.add_row("pid", str(status.pid))
    head.add_row("state", Text(status.daemon_state, STATE_STYLES.get(status.daemon_state, "")))
    head.add_row("uptime", format_duration(status.uptime))
    out.print(head)
    out.print(_actor_tree(status.actors))
    return 0


def _monitor(args: argparse.Namespace, curve: CurveKeys | None, out: Console) -> int:
    """`stationctl monitor`: one line per message until Ctrl-C or `--count` messages."""
    seen = 0
    warn = Console(stderr=True, highlight=False)
    with Subscriber(args.info_addr, args.topic or [""], curve=curve) as sub:
        while args.count is None or seen < args.count:
            try:
                event = sub.recv()
            except ValueError as exc:  # msgspec.DecodeError, or not two frames: skip that one message
                warn.print(Text(f"undecodable message skipped: {exc}", "yellow"), soft_wrap=True)
                continue
            seen += 1
            if args.json:
                record = {"topic": event.topic, "payload": event.payload, "missed": event.missed}
                print(_JSON.encode(record).decode(), flush=True)
                continue
            if event.missed > 0:
                out.print(Text(f"missed {event.missed} messages on {event.topic}", "yellow"), soft_wrap=True)
            out.print(format_event(event), soft_wrap=True)
    return 0


Command = Callable[[argparse.Namespace, CurveKeys | None, Console], int]
COMMANDS: dict[str, Command] = {"ping": _ping, "status": _status, "monitor": _monitor}


def _curve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> CurveKeys | None:
    """CurveZMQ keys from `--server-key` and `--client-key`, or None when neither is given."""
    if args.server_key is None and args.client_key is None:
        return None
    if args.server_key is None or args.client_key is None:
        parser.error("--server-key and --client-key go together")
    try:
        return CurveKeys.from_files(args.server_key, args.client_key)
    except (OSError, ValueError) as exc:
        parser.error(f"cannot load CurveZMQ keys: {exc}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of `stationctl`."""
    parser = _parser()
    args = parser.parse_args(argv)
    curve = _curve(parser, args)
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)

    def fail(text: str) -> int:
        err.print(Text(text, "red"), soft_wrap=True)
        return 1

    try:
        if args.command == "obs":
            code = run_obs(args, curve, out, parser)
        elif args.command == "daq":
            code = run_daq(args, curve, out)
        elif args.command in QUEUE_COMMANDS:
            code = run_queue(args, curve, out, parser)
        else:
            code = COMMANDS[args.command](args, curve, out)
    except WaitTimeout as exc:  # the daemon answers, but the awaited state did not come (`--wait`)
        code = fail(f"error [{exc.code}]: {exc.msg}")
    except DeadlineExceeded:
        code = fail(
            f"error: stationd did not answer at {args.control_addr} within {args.timeout:g} s "
            "(is it running there, with matching keys?)"
        )
    except StationError as exc:
        code = fail(f"error [{exc.code}]: {exc.msg}")
    except msgspec.ValidationError as exc:
        code = fail(f"error: unexpected reply from {args.control_addr}: {exc}")
    except KeyboardInterrupt:
        code = 0 if args.command in ("monitor", "watch") else 130
    except BrokenPipeError:  # e.g. `stationctl monitor | head`: the reader is gone; leave quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()

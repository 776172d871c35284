"""`stationctl obs …`: query and create observations and observation sets from the shell (rich tables)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from stationd.protocol.client import Client, CurveKeys
from stationd.protocol.codec import json_encoder
from stationd.protocol.observations import ObservationData, ObservationSetData
from stationd.protocol.station import StationControlClient

__all__ = ["add_obs_parser", "run_obs"]


def _lookups(pairs: list[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """`dut_label=QB1 tags__overlap=a,b limit=0` → lookups (comma lists are split by the server)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            parser.error(f"lookups are written FIELD[__LOOKUP]=VALUE, not {pair!r}")
        out[key] = value
    return out


def add_obs_parser(sub: Any, add_globals: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register `obs` and its sub-commands on `stationctl`'s sub-parsers."""
    obs = sub.add_parser("obs", help="observations and observation sets")
    actions = obs.add_subparsers(dest="obs_command", required=True, metavar="ACTION")
    query = actions.add_parser("query", help="query observations: FIELD[__LOOKUP]=VALUE ...")
    sets = actions.add_parser("sets", help="query observation sets: FIELD[__LOOKUP]=VALUE ...")
    for p in (query, sets):
        p.add_argument("lookups", nargs="*", metavar="LOOKUP", help="e.g. dut_label=QB1 tags__overlap=a,b")
        p.add_argument("--limit", type=int, help="page size (default 20; 0: everything)")
        p.add_argument("--offset", type=int)
        p.add_argument("--order-by", help="field, `-field` for descending; comma-separated")
        p.add_argument("--include-invalid", action="store_true", help="also invalid ones (invalid=null)")
    query.add_argument("--latest", metavar="FIELD", help="newest per distinct value of FIELD")
    create = actions.add_parser(
        "create", help="create observations from a JSON file (a list, or - for stdin)"
    )
    create.add_argument("file")
    set_create = actions.add_parser("set-create", help="create an observation set")
    set_create.add_argument(
        "type", choices=["calibration-set", "characterization-set", "generic-set", "quality-metric-set"]
    )
    set_create.add_argument("observation_ids", nargs="*", type=int)
    set_create.add_argument("--describes", metavar="SET_ID")
    finalize = actions.add_parser("set-finalize", help="finalize an observation set")
    finalize.add_argument("observation_set_id")
    show = actions.add_parser("set-show", help="an observation set and its observations")
    show.add_argument("observation_set_id")
    for p in (obs, query, sets, create, set_create, finalize, show):
        add_globals(p)


def _value(value: Any) -> str:
    if type(value).__name__ == "ndarray":
        return f"array{tuple(value.shape)} {value.dtype}"
    return str(value)


def _observation_table(items: list[ObservationData], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in (
        "id",
        "dut_label",
        "dut_field",
        "value",
        "unit",
        "uncertainty",
        "tags",
        "source",
        "created (UTC)",
    ):
        table.add_column(column, overflow="fold")
    for o in items:
        table.add_row(
            str(o.observation_id),
            o.dut_label,
            o.dut_field,
            _value(o.value) + (" [red](invalid)[/]" if o.invalid else ""),
            o.unit,
            "" if o.uncertainty is None else _value(o.uncertainty),
            ", ".join(o.tags),
            str(o.source.get("type", "")),
            o.created_timestamp.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def _set_table(items: list[ObservationSetData], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("observation_set_id", "type", "dut_label", "observations", "state", "created (UTC)"):
        table.add_column(column, overflow="fold")
    for s in items:
        state = "invalid" if s.invalid else ("finalized" if s.end_timestamp else "open")
        table.add_row(
            str(s.observation_set_id),
            s.observation_set_type,
            s.dut_label or "",
            str(len(s.observation_ids)),
            state,
            s.created_timestamp.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def _page_params(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    lookups = _lookups(args.lookups, parser)
    for name in ("limit", "offset", "order_by", "latest"):
        if getattr(args, name, None) is not None:
            lookups[name] = getattr(args, name)
    if args.include_invalid:
        lookups["invalid"] = None
    return lookups


def run_obs(
    args: argparse.Namespace, curve: CurveKeys | None, out: Console, parser: argparse.ArgumentParser
) -> int:
    """Run one `stationctl obs` action; errors propagate to `stationctl`'s handler."""
    with StationControlClient(client=Client(args.control_addr, timeout=args.timeout, curve=curve)) as station:
        match args.obs_command:
            case "query":
                found = station.query_observations(**_page_params(args, parser))
                title = f"{len(found)} of {found.meta.count} observations"
                result: Any = found
                table = _observation_table(found, title)
            case "sets":
                found_sets = station.query_observation_sets(**_page_params(args, parser))
                result, table = (
                    found_sets,
                    _set_table(found_sets, f"{len(found_sets)} of {found_sets.meta.count} sets"),
                )
            case "create":
                text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
                definitions = json.loads(text)
                if isinstance(definitions, dict):
                    definitions = definitions.get("observations", [definitions])
                created = station.create_observations(definitions)
                result, table = created, _observation_table(created, f"created {len(created)} observations")
            case "set-create":
                definition = {"observation_set_type": args.type, "observation_ids": args.observation_ids}
                if args.describes:
                    definition["describes_id"] = args.describes
                made = station.create_observation_set(definition)
                result, table = made, _set_table([made], "created")
            case "set-finalize":
                final = station.finalize_observation_set(args.observation_set_id)
                result, table = final, _set_table([final], "finalized")
            case "set-show":
                one = station.get_observation_set(args.observation_set_id)
                members = station.query_observations(
                    observation_id__in=one.observation_ids, invalid=None, limit=0
                )
                result = {"observation_set": one, "observations": list(members)}
                table = _set_table([one], "observation set")
                if not args.json:
                    out.print(table)
                    table = _observation_table(members, "its observations")
            case _:
                raise AssertionError(args.obs_command)
    if args.json:
        print(msgspec.json.format(json_encoder().encode(result), indent=2).decode(), flush=True)
    else:
        out.print(table)
    return 0

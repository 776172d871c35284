"""The sources of a DAQ: OCM's `name@uri` lists, URI checks, and one `Source` class per transport.

| URI | class | what answers |
|---|---|---|
| `sim://<device>?rate=&duration=&fail=&hang=` | `SimSource` | a simulated detector or instrument |
| `tcp://<host>:<port>`, `ipc://<path>` | `ZmqSource` | an external process (`examples/daq_source.py`) |
| `actor://<actor_name>` | `ActorSource` | an actor of this daemon (a device poller) |
"""

from __future__ import annotations

from urllib.parse import urlsplit

import zmq.asyncio

from stationd.protocol.daq import SourceKind
from stationd.protocol.errors import InvalidParams

from .actor_source import ActorSource, AskFn, actor_name_of
from .base import Source, SourceAddress, SourceFailed
from .sim import SimSource, parse_sim_uri
from .zmq_source import ZmqSource, check_zmq_uri

__all__ = [
    "SCHEMES",
    "ActorSource",
    "AskFn",
    "SimSource",
    "Source",
    "SourceAddress",
    "SourceFailed",
    "ZmqSource",
    "check_address",
    "open_source",
    "parse_daq_sources",
    "parse_sources",
]

SCHEMES = ("sim", "tcp", "ipc", "actor")


def parse_sources(text: str, kind: SourceKind) -> list[SourceAddress]:
    """Read OCM's source list: `name@uri` entries separated by any whitespace, in order.

    Only the syntax is checked here (see `check_address` for the URI). Raises `InvalidParams` naming the
    entry for one without `@`, with an empty name or URI, or with a name already in the list.
    """
    out: list[SourceAddress] = []
    names: set[str] = set()
    for entry in text.split():
        name, at, uri = entry.partition("@")
        if not at:
            raise InvalidParams(f"{kind} source {entry!r}: expected <name>@<uri>")
        if not name or not uri:
            raise InvalidParams(f"{kind} source {entry!r}: empty {'name' if not name else 'URI'}")
        if name in names:
            raise InvalidParams(f"{kind} source {entry!r}: the name {name!r} is used twice in this DAQ")
        names.add(name)
        out.append(SourceAddress(name=name, uri=uri, kind=kind))
    return out


def parse_daq_sources(prim_sources: str, meta_sources: str) -> list[SourceAddress]:
    """All sources of a DAQ, primary then metadata, with every URI checked: what `daq_start` accepts.

    Raises `InvalidParams` for a bad entry or URI, a name used twice across both lists, or no source at all.
    """
    sources = parse_sources(prim_sources, "primary") + parse_sources(meta_sources, "metadata")
    if not sources:
        raise InvalidParams("a DAQ needs at least one source (prim_sources or meta_sources)")
    seen: set[str] = set()
    for address in sources:
        if address.name in seen:
            raise InvalidParams(
                f"{address.kind} source {address.name}@{address.uri}: the name {address.name!r} is used "
                "twice in this DAQ"
            )
        seen.add(address.name)
        check_address(address)
    return sources


def check_address(address: SourceAddress) -> None:
    """Refuse, with `InvalidParams` naming the source, a URI that `open_source` could not open; opens
    nothing and contacts nobody (a reachable URI may still fail at start)."""
    scheme = urlsplit(address.uri).scheme
    try:
        match scheme:
            case "sim":
                parse_sim_uri(address.uri)
            case "tcp" | "ipc":
                check_zmq_uri(address.uri)
            case "actor":
                actor_name_of(address.uri)
            case _:
                raise InvalidParams(f"{address.uri}: unknown scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    except InvalidParams as exc:
        raise InvalidParams(f"{address.kind} source {address.name!r}: {exc.msg}") from exc


def open_source(address: SourceAddress, daq_id: str, *, ask: AskFn, zctx: zmq.asyncio.Context) -> Source:
    """The `Source` for `address` in DAQ `daq_id`, chosen by URI scheme (`InvalidParams` for a bad URI).

    Opening contacts nobody: a ZMQ connect succeeds even when nobody listens, so an unreachable external
    source fails only by the coordinator's request timeout.
    """
    check_address(address)
    match urlsplit(address.uri).scheme:
        case "sim":
            return SimSource(address, daq_id)
        case "tcp" | "ipc":
            return ZmqSource(address, daq_id, zctx)
        case _:  # "actor": check_address accepted nothing else
            return ActorSource(address, daq_id, ask)

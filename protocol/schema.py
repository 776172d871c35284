"""JSON schema of every message of the protocol (`stationd protocol-schema`), checked against schema.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from . import documents, envelope, errors, observations, pubsub, runtime, supervision, system
from .frontdoor import ErrorReply, Request
from .methods import METHODS
from .version import PROTOCOL_VERSION

__all__ = ["SCHEMA_FILE", "all_message_types", "protocol_schema", "render"]

SCHEMA_FILE = Path(__file__).with_name("schema.json")


def all_message_types() -> list[type]:
    """Every Struct that travels on a socket: front-door params and replies, bus and info-stream messages."""
    types: list[type] = [Request, ErrorReply, envelope.Envelope, errors.ErrorInfo]
    for method in METHODS.values():
        types += [method.params, method.reply]
    for module in (runtime, supervision, pubsub, system, observations, documents):
        types += [
            obj
            for name in module.__all__
            if isinstance(obj := getattr(module, name), type) and issubclass(obj, msgspec.Struct)
        ]
    unique: dict[str, type] = {}
    for t in types:
        unique.setdefault(f"{t.__module__}.{t.__qualname__}", t)
    return list(unique.values())


def protocol_schema() -> dict[str, Any]:
    """`{"protocol_version", "methods": {name: {params, reply, owner}}, "components": {...}}`."""
    types = all_message_types()
    _, components = msgspec.json.schema_components(types, ref_template="#/components/{name}")
    methods = {
        name: {
            "params": m.params.__name__,
            "reply": m.reply.__name__,
            "owner": m.owner,
            "doc": m.doc,
            **({"params_are_lookups": True} if m.lookups else {}),
        }
        for name, m in sorted(METHODS.items())
    }
    return {"protocol_version": PROTOCOL_VERSION, "methods": methods, "components": components}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"

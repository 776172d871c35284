"""The committed protocol schema matches the code, and cannot change without a version bump."""

from __future__ import annotations

import json
import subprocess
import sys

from stationd.protocol.methods import METHODS
from stationd.protocol.schema import SCHEMA_FILE, protocol_schema
from stationd.protocol.version import PROTOCOL_VERSION


def test_the_committed_schema_matches_the_messages_and_the_version() -> None:
    committed = json.loads(SCHEMA_FILE.read_text())
    current = protocol_schema()
    if committed != current:
        same_version = committed.get("protocol_version") == PROTOCOL_VERSION
        hint = (
            "the protocol changed without a version bump: bump PROTOCOL_VERSION in protocol/version.py"
            if same_version
            else "PROTOCOL_VERSION was bumped: regenerate protocol/schema.json"
        )
        raise AssertionError(f"{hint}, then run `make schema`")


def test_query_methods_are_marked_as_taking_lookups() -> None:
    methods = protocol_schema()["methods"]
    assert methods["observations_query"]["params_are_lookups"] is True
    assert "params_are_lookups" not in methods["observations_create"]


def test_every_front_door_method_is_in_the_schema_with_its_owner() -> None:
    methods = protocol_schema()["methods"]
    assert set(methods) == set(METHODS)
    assert methods["status"] == {
        "params": "StatusParams",
        "reply": "Status",
        "owner": "front_door",
        "doc": METHODS["status"].doc,
    }


def test_writing_a_changed_schema_without_a_version_bump_is_refused(tmp_path, monkeypatch) -> None:
    import stationd.protocol.schema as schema_module
    from stationd.daemon import cli

    stale = tmp_path / "schema.json"
    stale.write_text(json.dumps({"protocol_version": PROTOCOL_VERSION, "methods": {}, "components": {}}))
    monkeypatch.setattr(schema_module, "SCHEMA_FILE", stale)
    try:
        cli.main(["protocol-schema", "--write"])
    except SystemExit as exit_:
        assert exit_.code == 1
    assert json.loads(stale.read_text())["methods"] == {}  # left untouched


def test_protocol_schema_command_prints_the_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stationd.daemon", "protocol-schema"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == protocol_schema()

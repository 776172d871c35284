"""Layering (DESIGN.md): daemon -> actors -> protocol; actors never import each other; protocol is light."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"daemon": "stationd.daemon", "actors": "stationd.actors", "protocol": "stationd.protocol"}
PROTOCOL_THIRD_PARTY = {"msgspec", "numpy"}
PROTOCOL_CLIENT_EXTRA = {"zmq"}  # the clients in protocol/client.py speak ZMQ, nothing else in protocol does


def module_name(path: Path) -> str:
    folder = path.relative_to(ROOT).parts[0]
    rel = path.relative_to(ROOT / folder).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join([PACKAGES[folder], *parts])


def imports_of(path: Path) -> set[str]:
    """Absolute names of everything a module imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
                found.update(f"{prefix}.{a.name}" if not node.module else prefix for a in node.names)
            else:
                found.add(node.module or "")
    return found


def sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def actor_modules() -> set[str]:
    """Modules of actors/ that define an actor (a subclass of Actor); the rest are shared libraries."""
    out = set()
    for path in sources("actors"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            bases = [getattr(b, "id", getattr(b, "attr", "")) for b in getattr(node, "bases", [])]
            if isinstance(node, ast.ClassDef) and "Actor" in bases:
                out.add(module_name(path))
    return out


@pytest.mark.parametrize("path", sources("protocol"), ids=lambda p: p.name)
def test_protocol_imports_only_the_standard_library_msgspec_and_numpy(path: Path) -> None:
    allowed = PROTOCOL_THIRD_PARTY | (PROTOCOL_CLIENT_EXTRA if path.name == "client.py" else set())
    for name in imports_of(path):
        top = name.split(".")[0]
        assert top in sys.stdlib_module_names or top in allowed or name.startswith("stationd.protocol"), (
            f"{path.name} imports {name}"
        )


@pytest.mark.parametrize("path", sources("actors"), ids=lambda p: p.name)
def test_actors_import_protocol_and_shared_libraries_but_never_another_actor_or_the_daemon(
    path: Path,
) -> None:
    me = module_name(path)
    mine = ".".join(me.split(".")[:3])  # stationd.actors.<actor>: an actor package's modules may share code
    others = {m for m in actor_modules() if ".".join(m.split(".")[:3]) != mine}
    for name in imports_of(path):
        assert not name.startswith("stationd.daemon"), f"{path.name} imports the daemon ({name})"
        assert not any(name == o or name.startswith(o + ".") for o in others), (
            f"{path.name} imports actor {name}"
        )


def test_the_checker_sees_actor_modules_and_relative_imports() -> None:
    assert "stationd.actors.supervisor" in actor_modules()
    assert "stationd.actors.base.Actor" in imports_of(ROOT / "actors" / "supervisor.py") or any(
        n.startswith("stationd.actors.base") for n in imports_of(ROOT / "actors" / "supervisor.py")
    )

"""User group permissions, allowed plans and devices, and item validation at enqueue time.

The formats and rules are bluesky-queueserver's own (its `profile_ops`), so that GUIs and clients read the
same descriptions and get the same verdicts, with one difference: device names passed in `__DEVICE__`,
`__READABLE__`, `__MOVABLE__` and `__FLYABLE__` parameters are checked against the group's allowed devices
here, at enqueue time (the incumbent accepts any string and the plan fails at run time).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

__all__ = [
    "ItemValidator",
    "PermissionsError",
    "allowed_lists",
    "default_permissions_path",
    "load_permissions",
    "validate_item",
    "validate_permissions",
    "warm_up",
]

_KIND_FLAGS = {"__READABLE__": "is_readable", "__MOVABLE__": "is_movable", "__FLYABLE__": "is_flyable"}
_DEVICE_TYPES = ("__DEVICE__", *_KIND_FLAGS, "__PLAN_OR_DEVICE__")


class PermissionsError(ValueError):
    """A permissions document or an item that is not acceptable; the text says why."""


def _profile_ops() -> Any:
    # imported on first use: it pulls pydantic, which the daemon's launch does not need
    from bluesky_queueserver.manager import profile_ops

    return profile_ops


def default_permissions_path() -> Path:
    """bluesky-queueserver's default permissions file (groups `root`, `primary`, `test_user`)."""
    return Path(_profile_ops().get_default_startup_dir()) / "user_group_permissions.yaml"


def load_permissions(path: Path) -> dict[str, Any]:
    """Read and validate a permissions YAML file; `PermissionsError` with the reason when it is not valid."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PermissionsError(f"cannot read user group permissions from {path}: {exc}") from exc
    return validate_permissions(document)


def validate_permissions(document: Any) -> dict[str, Any]:
    """The document if it is valid user group permissions (schema, `root` group, patterns)."""
    try:
        _profile_ops().validate_user_group_permissions(document)
    except Exception as exc:  # profile_ops raises plain exceptions (jsonschema, KeyError, ValueError)
        raise PermissionsError(str(exc)) from exc
    return document


def allowed_lists(
    permissions: Mapping[str, Any], existing_plans: Mapping[str, Any], existing_devices: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(allowed plans, allowed devices), each keyed by user group."""
    return _profile_ops().load_allowed_plans_and_devices(
        existing_plans=dict(existing_plans),
        existing_devices=dict(existing_devices),
        user_group_permissions=dict(permissions),
    )


def warm_up(existing_plans: Mapping[str, Any], existing_devices: Mapping[str, Any]) -> None:
    """Validate one plan once, so that what validation imports on first use (pydantic models, bluesky's
    annotation types: over a second) is imported now, by the caller's thread, not by the first request."""
    if not existing_plans:
        return
    name = "count" if "count" in existing_plans else next(iter(existing_plans))
    item = {"item_type": "plan", "name": name, "args": [], "kwargs": {}}
    _profile_ops().validate_plan(item, allowed_plans=existing_plans, allowed_devices=existing_devices)


def validate_item(item: Mapping[str, Any], plans: Mapping[str, Any], devices: Mapping[str, Any]) -> None:
    """Check a plan item against one group's allowed plans and devices; `PermissionsError` says what is
    wrong (the incumbent's texts, plus unknown or unfit device names)."""
    ok, msg = _profile_ops().validate_plan(dict(item), allowed_plans=plans, allowed_devices=devices)
    if not ok:
        raise PermissionsError(msg)
    description = plans[item["name"]]
    try:
        bound = _profile_ops().bind_plan_arguments(
            plan_args=item.get("args", []), plan_kwargs=item.get("kwargs", {}), plan_parameters=description
        )
    except TypeError as exc:  # validate_plan bound them already: this cannot fail, but say so if it does
        raise PermissionsError(f"Plan validation failed: {exc}") from exc
    for param in description.get("parameters", []):
        if not param.get("convert_device_names") or param["name"] not in bound.arguments:
            continue
        kinds = [t for t in _DEVICE_TYPES if t in param.get("annotation", {}).get("type", "")]
        for name in _strings(bound.arguments[param["name"]]):
            _check_device(name, param["name"], kinds, devices, plans)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def _check_device(
    name: str, param: str, kinds: list[str], devices: Mapping[str, Any], plans: Mapping[str, Any]
) -> None:
    if "__PLAN_OR_DEVICE__" in kinds and name in plans:
        return
    description = _device(name, devices)
    if description is None:
        raise PermissionsError(
            f"Plan validation failed: device '{name}' in parameter '{param}' is not in the list of "
            "allowed devices"
        )
    for kind, flag in _KIND_FLAGS.items():
        if kinds == [kind] and not description.get(flag, False):
            raise PermissionsError(
                f"Plan validation failed: device '{name}' in parameter '{param}' is not "
                f"{flag.removeprefix('is_')} (the parameter takes {kind} devices)"
            )


def _device(name: str, devices: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The description of `name`, dotted names reaching into components (`det1.val`)."""
    head, *rest = name.split(".")
    found = devices.get(head)
    for part in rest:
        if found is None:
            return None
        found = found.get("components", {}).get(part)
    return found


class ItemValidator:
    """`validate_item` for every user group, remembering verdicts: a plan item's verdict depends only on its
    name, args and kwargs and on the group's allowed lists, and the incumbent's check costs ~0.7 ms (it
    builds a pydantic model per call), which would cap sequential adds near 1,400/s."""

    def __init__(
        self, allowed_plans: Mapping[str, Any], allowed_devices: Mapping[str, Any], size: int = 4096
    ):
        self.allowed_plans = allowed_plans
        self.allowed_devices = allowed_devices
        self._size = size
        self._verdicts: dict[bytes, str] = {}  # "" = valid, else the error text

    def check(self, item: Mapping[str, Any], user_group: str) -> None:
        """`PermissionsError` if the group may not queue this plan item as it is."""
        if user_group not in self.allowed_plans:
            raise PermissionsError(f"Unknown user group: '{user_group}'")
        try:
            key = msgspec.msgpack.encode(
                (user_group, item.get("name"), item.get("args", []), item.get("kwargs", {}))
            )
        except (TypeError, msgspec.EncodeError):
            key = None
        verdict = self._verdicts.get(key) if key is not None else None
        if verdict is None:
            try:
                validate_item(item, self.allowed_plans[user_group], self.allowed_devices[user_group])
                verdict = ""
            except PermissionsError as exc:
                verdict = str(exc)
            if key is not None:
                if len(self._verdicts) >= self._size:
                    self._verdicts.pop(next(iter(self._verdicts)))
                self._verdicts[key] = verdict
        if verdict:
            raise PermissionsError(verdict)

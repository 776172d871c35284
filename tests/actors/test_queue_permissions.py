"""Permissions, allowed lists and enqueue validation, on bluesky-queueserver's own simulated descriptions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from stationd.actors.queue_manager.permissions import (
    PermissionsError,
    allowed_lists,
    default_permissions_path,
    load_permissions,
    validate_item,
    validate_permissions,
)


@pytest.fixture(scope="module")
def allowed() -> tuple[dict[str, Any], dict[str, Any]]:
    existing = yaml.safe_load(
        (default_permissions_path().parent / "existing_plans_and_devices.yaml").read_text()
    )
    permissions = load_permissions(default_permissions_path())
    return allowed_lists(permissions, existing["existing_plans"], existing["existing_devices"])


def plan(name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"item_type": "plan", "name": name, "args": list(args), "kwargs": kwargs}


def test_groups_see_the_plans_and_devices_their_rules_allow(allowed: tuple[dict, dict]) -> None:
    plans, devices = allowed
    assert {"root", "primary", "test_user"} <= set(plans)
    assert "count" in plans["primary"] and "det1" in devices["primary"]
    assert "count" in plans["test_user"] and "adaptive_scan" not in plans["test_user"]
    assert "det1" in devices["test_user"] and "det3" not in devices["test_user"]


def test_a_valid_plan_passes(allowed: tuple[dict, dict]) -> None:
    plans, devices = allowed
    validate_item(plan("count", ["det1", "det2"], num=2, delay=0.1), plans["primary"], devices["primary"])
    validate_item(plan("scan", ["det1"], "motor1", -1, 1, 10), plans["primary"], devices["primary"])
    validate_item(plan("count", ["det1.val"]), plans["primary"], devices["primary"])  # a component


@pytest.mark.parametrize(
    ("item", "group", "error"),
    [
        (
            plan("count", ["nonexistent_det"]),
            "primary",
            "device 'nonexistent_det' in parameter 'detectors' is not",
        ),
        (plan("count", ["det3"]), "test_user", "device 'det3' in parameter 'detectors' is not in the list"),
        (
            plan("scan", ["det1"], "det2", -1, 1, 10),
            "primary",
            "device 'det2' in parameter 'args' is not movable",
        ),
        (plan("no_such_plan"), "primary", "Plan 'no_such_plan' is not in the list of allowed plans."),
        (plan("count", ["det1"], nmu=3), "primary", "got an unexpected keyword argument 'nmu'"),
        (plan("adaptive_scan"), "test_user", "Plan 'adaptive_scan' is not in the list of allowed plans."),
    ],
)
def test_bad_items_are_refused_with_a_message_naming_the_problem(
    allowed: tuple[dict, dict], item: dict[str, Any], group: str, error: str
) -> None:
    plans, devices = allowed
    with pytest.raises(PermissionsError, match="Plan validation failed") as info:
        validate_item(item, plans[group], devices[group])
    assert error in str(info.value)


def test_permissions_without_root_or_with_unknown_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PermissionsError, match="root"):
        validate_permissions({"user_groups": {"primary": {"allowed_plans": [None]}}})
    with pytest.raises(PermissionsError):
        validate_permissions({"user_groups": {"root": {"allowed_plans": [None], "bogus": []}}})
    bad = tmp_path / "p.yaml"
    bad.write_text("user_groups: [unclosed")
    with pytest.raises(PermissionsError, match="cannot read user group permissions"):
        load_permissions(bad)

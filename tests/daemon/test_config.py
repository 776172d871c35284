"""Configuration: the example file, the schema's documentation, precedence, env parsing, error messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stationd.actors.specs import ActorSpec, Mode, Strategy, SupervisorSpec
from stationd.daemon.config import Config, config_schema, load_config
from stationd.protocol.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "stationd.toml"
ENV_EXAMPLE = ROOT / "systemd" / "stationd.env"


def _write(tmp_path: Path, text: str, name: str = "stationd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- the example files -------------------------------------------------------------------------------


def test_example_config_loads_with_the_defaults() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.control_addr == "tcp://127.0.0.1:60615"
    assert config.info_addr == "tcp://127.0.0.1:60625"
    assert config.shutdown_timeout == 30.0
    assert config.logging.level == "info"
    assert config.logging.actors == {}
    assert config.security.server_secret_key is None  # CurveZMQ off
    assert config.security.server_secret_key_file is None
    assert config.supervisor.strategy is Strategy.ONE_FOR_ONE
    assert config.supervisor.children == []
    # The example documents the defaults: loading it is the same as loading no file.
    assert config == Config()


def test_example_config_mentions_every_field() -> None:
    """Every field of every config section appears in the example (set or in a comment)."""
    text = EXAMPLE.read_text()
    schema = config_schema()
    sections = {
        "Config": "",
        "LoggingConfig": "[logging]",
        "SecurityConfig": "[security]",
        "RuntimeConfig": "[runtime]",
        "SupervisorConfig": "[supervisor]",
        "QueueManagerOptions": "[queue_manager]",
        "ClientKey": "",
        "ActorSpec": "",
        "SupervisorSpec": "",
    }
    missing = []
    for struct, header in sections.items():
        if header:
            assert header in text, header
        for field in schema["$defs"][struct]["properties"]:
            as_key = re.search(rf"^[#\s]*{field}\s*=", text, re.MULTILINE)
            as_table = re.search(rf"^[#\s]*\[+[a-z_.]*\b{field}\]+", text, re.MULTILINE)
            if not (as_key or as_table):
                missing.append(f"{struct}.{field}")
    assert not missing, f"fields not mentioned in {EXAMPLE.name}: {missing}"


def test_example_children_block_is_valid_once_uncommented(tmp_path: Path) -> None:
    """The commented-out `[[supervisor.children]]` example is real config, not pseudo-code."""
    text = EXAMPLE.read_text()
    head, marker, block = text.partition("# [[supervisor.children]]")
    assert marker
    uncommented = "\n".join(re.sub(r"^# ?", "", line) for line in (marker + block).splitlines())
    config = load_config(_write(tmp_path, head + uncommented), environ={})
    probe, detectors = config.supervisor.children
    assert isinstance(probe, ActorSpec)
    assert (probe.name, probe.actor, probe.mode) == ("probe", "tests.support.actors:Probe", Mode.PROCESS)
    assert isinstance(detectors, SupervisorSpec)
    assert [c.name for c in detectors.children] == ["camera"]


def _env_file_examples() -> dict[str, str]:
    """The `#STATIOND_X=value` lines of systemd/stationd.env, unquoted as systemd's EnvironmentFile does."""
    env: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#(STATIOND_[A-Z_]+)=(.*)$", line)
        if m:
            value = m.group(2)
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[m.group(1)] = value
    return env


def test_env_example_names_real_fields(tmp_path: Path) -> None:
    env = _env_file_examples()
    assert env["STATIOND_CONFIG"] == "/etc/stationd/stationd.toml"
    assert {"STATIOND_LOGGING__LEVEL", "STATIOND_CONTROL_ADDR", "STATIOND_LOGGING__ACTORS"} <= env.keys()
    del env["STATIOND_CONFIG"]  # names a file that need not exist here
    # Config structs forbid unknown fields: a misspelt variable name would raise here.
    config = load_config(_write(tmp_path, ""), environ=env)
    assert config.logging.actors == {"my_actor": "debug"}
    assert config.max_request_bytes == 16777216
    assert config.security.server_secret_key_file == "/etc/stationd/server.key_secret"
    assert config.security.admit_qserver_client_key is False


# --- schema ------------------------------------------------------------------------------------------


def test_every_config_field_has_a_description() -> None:
    """`stationd config-schema` documents every field (editors show these descriptions)."""
    schema = config_schema()
    undocumented = []
    for struct, definition in schema["$defs"].items():
        for field, prop in definition.get("properties", {}).items():
            if field == "kind" and set(prop) == {"enum"}:
                continue  # msgspec's tag field of ActorSpec/SupervisorSpec, not a declared field
            if not prop.get("description"):
                undocumented.append(f"{struct}.{field}")
    assert not undocumented, f"config fields without a description in config_schema(): {undocumented}"


def test_config_schema_command_prints_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stationd.daemon", "config-schema"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    schema = json.loads(out.stdout)
    config = schema["$defs"]["Config"]
    assert "properties" in config
    assert {"control_addr", "logging", "supervisor"} <= config["properties"].keys()


# --- precedence and the environment ------------------------------------------------------------------


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
control_addr = "tcp://127.0.0.1:1001"
info_addr = "tcp://127.0.0.1:2001"
request_timeout = 3.0
[logging]
level = "warning"
format = "console"
""",
    )
    environ = {
        "STATIOND_INFO_ADDR": "tcp://127.0.0.1:2002",
        "STATIOND_REQUEST_TIMEOUT": "4.5",
        "STATIOND_LOGGING__LEVEL": "error",
    }
    overrides: dict[str, Any] = {"request_timeout": 6.0, "logging": {"level": "debug"}, "state_dir": None}
    config = load_config(path, environ=environ, overrides=overrides)
    assert config.control_addr == "tcp://127.0.0.1:1001"  # file only
    assert config.info_addr == "tcp://127.0.0.1:2002"  # env beats file
    assert config.request_timeout == 6.0  # overrides beat env and file
    assert config.logging.level == "debug"  # overrides beat env (nested)
    assert config.logging.format == "console"  # a nested override keeps the file's siblings
    assert config.state_dir == ""  # None in overrides means "not given"


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, 'control_addr = "tcp://127.0.0.1:3001"\n')
    config = load_config(environ={"STATIOND_CONFIG": str(path)})
    assert config.control_addr == "tcp://127.0.0.1:3001"


def test_env_nested_keys_and_json_values(tmp_path: Path) -> None:
    environ = {
        "STATIOND_LOGGING__ACTORS": '{"probe": "debug", "camera": "warning"}',
        "STATIOND_RUNTIME__HEARTBEAT_TIMEOUT": "0.9",
        "STATIOND_SUPERVISOR__INTENSITY": "7",
        "STATIOND_SECURITY__ADMIT_QSERVER_CLIENT_KEY": "true",
        "STATIOND_SUPERVISOR__CHILDREN": json.dumps(
            [{"kind": "actor", "name": "probe", "actor": "tests.support.actors:Probe"}]
        ),
        "OTHER_VARIABLE": "ignored",
    }
    config = load_config(_write(tmp_path, ""), environ=environ)
    assert config.logging.actors == {"probe": "debug", "camera": "warning"}
    assert config.runtime.heartbeat_timeout == 0.9
    assert config.supervisor.intensity == 7
    assert config.security.admit_qserver_client_key is True
    assert config.supervisor.children == [ActorSpec(name="probe", actor="tests.support.actors:Probe")]


def test_env_invalid_json_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, ""), environ={"STATIOND_LOGGING__ACTORS": "{probe: debug}"})
    assert "STATIOND_LOGGING__ACTORS" in err.value.msg


def test_env_bad_value_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, ""), environ={"STATIOND_LOGGING__LEVEL": "verbose"})
    assert "level" in err.value.msg


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("control_addr = 5\n", "control_addr"),
        ("contol_addr = 'tcp://127.0.0.1:1'\n", "contol_addr"),
        ("[logging]\nlevel = 'loud'\n", "logging.level"),
        ("[runtime]\nheartbeat_timeout = 0\n", "runtime.heartbeat_timeout"),
        ("[logging]\nlevle = 'info'\n", "levle"),
    ],
)
def test_config_error_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(path) in err.value.msg
    assert field in err.value.msg


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "control_addr = \n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(path) in err.value.msg
    assert "TOML" in err.value.msg


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(path) in err.value.msg


def test_duplicate_actor_names_rejected(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[[supervisor.children]]
kind = "actor"
name = "probe"
actor = "tests.support.actors:Probe"

[[supervisor.children]]
kind = "supervisor"
name = "group"

[[supervisor.children.children]]
kind = "actor"
name = "probe"
actor = "tests.support.actors:Probe"
""",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "'probe'" in err.value.msg
    assert "twice" in err.value.msg


def test_child_named_like_the_root_rejected(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[[supervisor.children]]\nkind = "actor"\nname = "supervisor"\nactor = "a.b:C"\n',
    )
    with pytest.raises(ConfigError, match="supervisor"):
        load_config(path, environ={})


def test_actor_without_module_colon_class_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[supervisor.children]]\nkind = "actor"\nname = "probe"\nactor = "Probe"\n')
    with pytest.raises(ConfigError, match=re.escape("package.module:Class")):
        load_config(path, environ={})

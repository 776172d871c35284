"""Daemon configuration: typed msgspec models; TOML file < `STATIOND_*` environment < command line."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from stationd.actors.daq_coordinator.core import DaqCoordinatorOptions
from stationd.actors.observation_store.actor import ObservationStoreOptions
from stationd.actors.queue_manager.actor import QueueManagerOptions
from stationd.actors.specs import ActorSpec, Strategy, SupervisorSpec
from stationd.protocol.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "ClientKey",
    "Config",
    "LoggingConfig",
    "RuntimeConfig",
    "SecurityConfig",
    "SupervisorConfig",
    "config_schema",
    "default_state_dir",
    "load_config",
]

DEFAULT_CONFIG_PATH = Path("/etc/stationd/stationd.toml")
ENV_PREFIX = "STATIOND_"

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


def _doc(text: str) -> Meta:
    return Meta(description=text)


class LoggingConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Logging of the daemon and its actors."""

    level: Annotated[LogLevel, _doc("Default log level.")] = "info"
    format: Annotated[
        Literal["auto", "json", "console"],
        _doc("`json` (one object per line, for journald), `console` (readable), `auto`: json unless a tty."),
    ] = "auto"
    actors: Annotated[
        dict[str, LogLevel], _doc("Log level per actor name, overriding `level`; reloaded on SIGHUP.")
    ] = {}


class ClientKey(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A client allowed to connect when CurveZMQ is on, and who it is."""

    public_key: Annotated[str, Meta(min_length=40, max_length=40, description="Client's z85 public key.")]
    user: Annotated[str, _doc("User name requests with this key act as.")]
    user_group: Annotated[str, _doc("User group of `user` (permissions are per group).")] = "primary"


class SecurityConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """CurveZMQ encryption and client authentication of the control and info sockets."""

    server_secret_key: Annotated[
        str | None,
        _doc("Server's z85 secret key; setting it (or the file) turns CurveZMQ on for both sockets."),
    ] = None
    server_secret_key_file: Annotated[
        str | None, _doc("File holding the server key pair (`stationd keys generate` writes `*.key_secret`).")
    ] = None
    clients: Annotated[
        list[ClientKey], _doc("Allow-list of client public keys; any other key gets nothing.")
    ] = []
    admit_qserver_client_key: Annotated[
        bool,
        _doc(
            "Also admit the fixed client key pair that bluesky-queueserver's clients (qserver, "
            "bluesky-queueserver-api) always use. Anyone can use that published key: off by default."
        ),
    ] = False
    qserver_user: Annotated[str, _doc("User for requests made with bluesky-queueserver's client key.")] = (
        "qserver"
    )
    qserver_user_group: Annotated[str, _doc("User group for bluesky-queueserver's client key.")] = "primary"


class RuntimeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The actor runtime: asks, process actors, heartbeats."""

    ask_timeout: Annotated[float, Meta(gt=0, description="Default deadline of an ask, in seconds.")] = 10.0
    heartbeat_interval: Annotated[
        float, Meta(gt=0, description="Seconds between heartbeats of a process actor.")
    ] = 0.1
    heartbeat_timeout: Annotated[
        float, Meta(gt=0, description="A process actor silent this long is killed and restarted.")
    ] = 0.45
    start_timeout: Annotated[
        float, Meta(gt=0, description="Seconds a process actor may take to start before it is killed.")
    ] = 30.0
    gil_switch_interval: Annotated[
        float,
        Meta(
            gt=0,
            le=0.1,
            description="Seconds a worker thread (SQLite writer, FITS merge) may run Python code before the "
            "event loop gets the interpreter back (sys.setswitchinterval; Python's default 0.005 delays "
            "replies by up to 5 ms while a thread works).",
        ),
    ] = 0.0005
    busy_poll: Annotated[
        float,
        Meta(
            ge=0,
            le=0.01,
            description="Seconds the event loop keeps polling without sleeping after a client's request, so "
            "that a client's next request finds it awake (waking it costs ~0.1 ms on a virtual machine); "
            "0: off.",
        ),
    ] = 0.0003


class SupervisorConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The root supervisor of the actor tree."""

    strategy: Annotated[Strategy, _doc("`one_for_one`, `one_for_all` or `rest_for_one`.")] = (
        Strategy.ONE_FOR_ONE
    )
    intensity: Annotated[
        int, Meta(ge=0, description="Restarts allowed within `period` before giving up.")
    ] = 5
    period: Annotated[float, Meta(gt=0, description="Window in seconds over which restarts are counted.")] = (
        30.0
    )
    children: Annotated[
        list[ActorSpec | SupervisorSpec],
        _doc(
            'Extra children (each with `kind = "actor"` or `"supervisor"`), started after the built-in ones.'
        ),
    ] = []


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """stationd configuration."""

    state_dir: Annotated[
        str,
        _doc(
            "Directory of the daemon's state; empty: $STATE_DIRECTORY (systemd) or ~/.local/state/stationd."
        ),
    ] = ""
    control_addr: Annotated[str, _doc("ZMQ address of the control (request/reply) socket.")] = (
        "tcp://127.0.0.1:60615"
    )
    info_addr: Annotated[str, _doc("ZMQ address of the info (pub/sub) socket.")] = "tcp://127.0.0.1:60625"
    info_encoding: Annotated[Literal["json", "msgpack"], _doc("Encoding of info-stream payloads.")] = "json"
    max_request_bytes: Annotated[
        int,
        Meta(
            ge=1024,
            description="Largest request answered; larger ones get a `request_too_large` error. "
            "Above 4x this size the connection is dropped unread.",
        ),
    ] = 16 * 1024 * 1024
    request_timeout: Annotated[
        float, Meta(gt=0, description="Seconds the front door waits for the actor owning a method.")
    ] = 10.0
    shutdown_timeout: Annotated[
        float,
        Meta(gt=0, description="Seconds a graceful stop (SIGTERM) may take before children are killed."),
    ] = 30.0
    status_publish_period: Annotated[
        float,
        Meta(
            ge=0,
            description="Publish the status on QS_Info at least this often (seconds; 0: only on change).",
        ),
    ] = 1.0
    logging: Annotated[LoggingConfig, _doc("Log levels and format.")] = msgspec.field(
        default_factory=LoggingConfig
    )
    security: Annotated[SecurityConfig, _doc("CurveZMQ keys and the client allow-list.")] = msgspec.field(
        default_factory=SecurityConfig
    )
    runtime: Annotated[RuntimeConfig, _doc("Asks, process actors and heartbeats.")] = msgspec.field(
        default_factory=RuntimeConfig
    )
    supervisor: Annotated[SupervisorConfig, _doc("The root supervisor and extra children.")] = msgspec.field(
        default_factory=SupervisorConfig
    )
    observation_store: Annotated[
        ObservationStoreOptions,
        _doc("The observation store: backend (SQLite or MongoDB), DUTs, settings tree."),
    ] = msgspec.field(default_factory=ObservationStoreOptions)
    queue_manager: Annotated[
        QueueManagerOptions,
        _doc("The queue manager (bluesky-queueserver's RE Manager): profile, permissions, lock key."),
    ] = msgspec.field(default_factory=QueueManagerOptions)
    daq_coordinator: Annotated[
        DaqCoordinatorOptions,
        _doc("The DAQ coordinator (ESO OCM's data acquisitions): source timeout, data directory, file ids."),
    ] = msgspec.field(default_factory=DaqCoordinatorOptions)

    def resolved_state_dir(self) -> Path:
        return Path(self.state_dir).expanduser() if self.state_dir else default_state_dir()


def default_state_dir() -> Path:
    """$STATE_DIRECTORY (set by systemd's StateDirectory=), else $XDG_STATE_HOME/stationd."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stationd"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`STATIOND_CONTROL_ADDR=...` -> control_addr; `STATIOND_LOGGING__LEVEL=debug` -> logging.level.

    Values starting with `[` or `{` are parsed as JSON (lists, tables); others are converted by type.
    """
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        parsed: Any = value
        if value[:1] in ("[", "{"):
            try:
                parsed = msgspec.json.decode(value)
            except msgspec.DecodeError as exc:
                raise ConfigError(f"{key}: not valid JSON: {exc}") from exc
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = parsed
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the config: file (`path`, $STATIOND_CONFIG or /etc/stationd/stationd.toml if it exists), then
    `STATIOND_*` variables, then `overrides` (command-line flags). Errors name the file and the field."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    source = path or environ.get(ENV_PREFIX + "CONFIG")
    if source is None and DEFAULT_CONFIG_PATH.exists():
        source = DEFAULT_CONFIG_PATH
    if source is not None:
        try:
            with open(source, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {source}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    data = _merge(data, _env_overrides(environ))
    data = _merge(data, {k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        config = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}invalid configuration: {exc}") from exc
    _check_tree(config)
    return config


def _check_tree(config: Config) -> None:
    from stationd.actors.specs import walk

    seen: set[str] = {"supervisor", "observation_store", "queue_manager", "re_worker", "daq_coordinator"}
    for child in config.supervisor.children:
        for spec in walk(child):
            if spec.name in seen:
                raise ConfigError(f"actor name {spec.name!r} is used twice in the supervision tree")
            seen.add(spec.name)
            if isinstance(spec, ActorSpec) and ":" not in spec.actor:
                raise ConfigError(
                    f"actor {spec.name!r}: `actor` must be 'package.module:Class', got {spec.actor!r}"
                )


def config_schema() -> dict[str, Any]:
    """JSON schema of the configuration file (`stationd config-schema`)."""
    return msgspec.json.schema(Config)

"""`stationd`: run the daemon and print its schemas; generate CurveZMQ keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from stationd.protocol.errors import ConfigError
from stationd.protocol.version import VERSION

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stationd", description="Control daemon of an experiment station.")
    parser.add_argument("--version", action="version", version=f"stationd {VERSION}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon (Ctrl-C or SIGTERM stops it)")
    serve.add_argument(
        "--config", help="TOML config file (default: $STATIOND_CONFIG, /etc/stationd/stationd.toml)"
    )
    serve.add_argument(
        "--state-dir", help="state directory (default: $STATE_DIRECTORY or ~/.local/state/stationd)"
    )
    serve.add_argument(
        "--control-addr", help="ZMQ address of the control socket (default tcp://127.0.0.1:60615)"
    )
    serve.add_argument("--info-addr", help="ZMQ address of the info socket (default tcp://127.0.0.1:60625)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error", "critical"])
    serve.add_argument("--log-format", choices=["auto", "json", "console"])

    sub.add_parser("config-schema", help="print the JSON schema of the config file")
    schema = sub.add_parser("protocol-schema", help="print the JSON schema of every protocol message")
    mode = schema.add_mutually_exclusive_group()
    mode.add_argument(
        "--write", action="store_true", help="update protocol/schema.json (needs a version bump)"
    )
    mode.add_argument("--check", action="store_true", help="exit 1 if protocol/schema.json is out of date")

    keys = sub.add_parser("keys", help="CurveZMQ key pairs")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    gen = keys_sub.add_parser("generate", help="write NAME.key (public) and NAME.key_secret (0600)")
    gen.add_argument("--dir", default=".", help="directory for the key files (default: .)")
    gen.add_argument("--name", default="server", help="base name of the files (default: server)")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from .busy_poll import BusyPollSelector
    from .config import load_config
    from .serve import serve

    overrides: dict[str, Any] = {
        "state_dir": args.state_dir,
        "control_addr": args.control_addr,
        "info_addr": args.info_addr,
    }
    if args.log_level or args.log_format:
        overrides["logging"] = {
            k: v for k, v in (("level", args.log_level), ("format", args.log_format)) if v
        }

    def load() -> Any:
        return load_config(args.config, overrides=overrides)

    try:
        config = load()
    except ConfigError as exc:
        print(f"stationd: {exc.msg}", file=sys.stderr)
        return 2
    window = config.runtime.busy_poll
    loop_factory = (lambda: asyncio.SelectorEventLoop(BusyPollSelector(window))) if window > 0 else None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(serve(config, reload=load))


def _protocol_schema(args: argparse.Namespace) -> int:
    from stationd.protocol.schema import SCHEMA_FILE, protocol_schema, render
    from stationd.protocol.version import PROTOCOL_VERSION

    current = protocol_schema()
    text = render(current)
    if not (args.write or args.check):
        sys.stdout.write(text)
        return 0
    committed = json.loads(SCHEMA_FILE.read_text()) if SCHEMA_FILE.exists() else None
    if args.check:
        if committed == current:
            return 0
        print(f"stationd: {SCHEMA_FILE} is out of date; run `make schema`", file=sys.stderr)
        return 1
    if (
        committed is not None
        and committed != current
        and committed.get("protocol_version") == PROTOCOL_VERSION
    ):
        print(
            f"stationd: the protocol schema changed but PROTOCOL_VERSION is still {PROTOCOL_VERSION}: "
            "bump it in protocol/version.py, then run this again",
            file=sys.stderr,
        )
        return 1
    SCHEMA_FILE.write_text(text)
    print(f"wrote {SCHEMA_FILE} (protocol version {PROTOCOL_VERSION})")
    return 0


def _keys(args: argparse.Namespace) -> int:
    from .security import generate_keys

    public_file, secret_file = generate_keys(Path(args.dir), args.name)
    public_key = public_file.read_text().split('public-key = "')[1].split('"')[0]
    print(f"public key : {public_key}")
    print(f"public file: {public_file}")
    print(f"secret file: {secret_file}  (keep it private)")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    match args.command:
        case "serve":
            code = _serve(args)
        case "config-schema":
            from .config import config_schema

            print(json.dumps(config_schema(), indent=2))
            code = 0
        case "protocol-schema":
            code = _protocol_schema(args)
        case "keys":
            code = _keys(args)
        case _:
            raise AssertionError(args.command)
    sys.exit(code)

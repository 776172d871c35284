"""Run the real daemon as a subprocess on free loopback ports, ready when it says READY=1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from stationd.protocol.client import Client, Subscriber

from .notify import NotifySocket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    control_addr: str
    info_addr: str
    state_dir: Path
    log_path: Path
    notify: NotifySocket
    extra_env: dict[str, str] = field(default_factory=dict)

    def client(self, **kw: object) -> Client:
        return Client(self.control_addr, timeout=kw.pop("timeout", 5.0), **kw)  # type: ignore[arg-type]

    def subscriber(self, *topics: str, **kw: object) -> Subscriber:
        return Subscriber(self.info_addr, topics or ("",), **kw)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text()

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # the test fails on the timeout; no daemon is left behind
            self.proc.wait()
            raise
        finally:
            self.notify.close()


def start_daemon(
    tmp_path: Path,
    *,
    config: str | None = None,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    wait_ready: bool = True,
) -> DaemonProcess:
    """Start `stationd serve` with its own state dir, ports and notify socket; wait for READY=1."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    control = f"tcp://127.0.0.1:{free_port()}"
    info = f"tcp://127.0.0.1:{free_port()}"
    state_dir = tmp_path / "state"
    cmd = [
        sys.executable,
        "-m",
        "stationd.daemon",
        "serve",
        "--state-dir",
        str(state_dir),
        "--control-addr",
        control,
        "--info-addr",
        info,
        *args,
    ]
    if config is not None:
        cfg = tmp_path / "stationd.toml"
        cfg.write_text(config)
        cmd += ["--config", str(cfg)]
    notify = NotifySocket()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STATIOND_")}
    full_env.update(env or {})
    full_env["NOTIFY_SOCKET"] = notify.path
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    daemon = DaemonProcess(proc, control, info, state_dir, log_path, notify, env or {})
    if wait_ready:
        try:
            notify.wait_for("READY=1", timeout=20)
        except TimeoutError:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"daemon did not become ready:\n{log_path.read_text()}") from None
    return daemon

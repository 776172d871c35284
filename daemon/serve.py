"""The daemon: binds the sockets, starts the supervision tree, talks to systemd, stops in reverse order."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from stationd.protocol.codec import Encoding
from stationd.protocol.envelope import Kind
from stationd.protocol.errors import ActorFailed, ConfigError, UnsupportedMessage
from stationd.protocol.methods import METHODS

from . import logs
from .config import Config
from .frontdoor import FrontDoor
from .mailbox import Mailbox, Request
from .notify import notify, watchdog_interval
from .publisher import Publisher
from .runtime import Runtime, RuntimeSettings
from .security import curve_server
from .status import StatusBoard
from .tree import build_tree

__all__ = ["EXIT_ESCALATED", "EXIT_FORCED", "EXIT_OK", "EXIT_START_FAILED", "serve"]

EXIT_OK = 0
EXIT_START_FAILED = 1
EXIT_ESCALATED = 2
"""The root supervisor gave up (restart intensity exceeded): systemd's Restart=on-failure takes over."""
EXIT_FORCED = 3
"""A second SIGTERM/SIGINT cut the graceful stop short: children were killed."""


def config_view(config: Config, state_dir: Path) -> dict[str, Any]:
    """The effective configuration as `config_get` shows it: secrets removed."""
    view = msgspec.to_builtins(config)
    view["state_dir"] = str(state_dir)
    security = view["security"]
    if security.get("server_secret_key"):
        security["server_secret_key"] = "<secret>"
    return view


class _Daemon:
    def __init__(self, config: Config, reload: Callable[[], Config] | None) -> None:
        self.config = config
        self._reload = reload
        self.stop_requested = asyncio.Event()
        self.force_requested = asyncio.Event()
        self.exit_code = EXIT_OK

    async def run(self) -> int:
        config = self.config
        state_dir = config.resolved_state_dir()
        state_dir.mkdir(parents=True, exist_ok=True)
        run_dir = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0] or tempfile.mkdtemp(
            prefix="stationd-"
        )
        owns_run_dir = "RUNTIME_DIRECTORY" not in os.environ
        zctx = zmq.asyncio.Context()
        curve = curve_server(config.security)
        auth = await curve.start_authenticator(zctx) if curve is not None else None

        pub_sock = zmq.Context.shadow(zctx.underlying).socket(zmq.PUB)
        pub_sock.setsockopt(zmq.SNDHWM, 100_000)
        pub_sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.apply(pub_sock)
        publisher = Publisher(pub_sock, Encoding(config.info_encoding))
        logs.configure(config.logging.level, config.logging.format, forward=publisher.publish_log)
        log = logs.actor_logger("daemon", config.logging.level)
        self.log = log
        board = StatusBoard(publisher, publish_period=config.status_publish_period)
        settings = RuntimeSettings(
            state_dir=state_dir,
            inproc_addr="inproc://stationd-bus",
            ipc_addr=f"ipc://{run_dir}/bus.sock",
            heartbeat_interval=config.runtime.heartbeat_interval,
            heartbeat_timeout=config.runtime.heartbeat_timeout,
            start_timeout=config.runtime.start_timeout,
            ask_timeout=config.runtime.ask_timeout,
            log_level=config.logging.level,
            log_format=_resolved_format(config.logging.format),
            actor_log_levels=dict(config.logging.actors),
        )
        runtime = Runtime(zctx, settings, publisher, log)
        self._runtime, self._publisher = runtime, publisher
        front: FrontDoor | None = None
        mailbox: Mailbox | None = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            pub_sock.bind(config.info_addr)
            runtime.start()

            def refuse(req: Request) -> None:
                if req.envelope.kind == Kind.ASK and mailbox is not None:
                    mailbox.reply_error(req, UnsupportedMessage("the front door accepts no messages"))

            mailbox = Mailbox(zctx, settings.inproc_addr, "front_door", on_request=refuse)
            mailbox.start()
            runtime.register_mailbox(mailbox)
            front = FrontDoor(
                zctx,
                config.control_addr,
                methods=METHODS,
                board=board,
                config_view=config_view(config, state_dir),
                mailbox=mailbox,
                max_request_bytes=config.max_request_bytes,
                request_timeout=config.request_timeout,
                curve=curve,
                log=log,
            )
            front.start()
            self._install_signals()
            notify("STATUS=starting the actor tree")
            log.info(
                "daemon_starting",
                pid=os.getpid(),
                state_dir=str(state_dir),
                control=front.addr,
                info=config.info_addr,
                curve=curve is not None,
            )
            try:
                await runtime.start_root(build_tree(config))
            except ActorFailed as exc:
                log.error("start_failed", error=exc.msg)
                self.exit_code = EXIT_START_FAILED
                return self.exit_code
            board.set_daemon_state("running")
            pids = runtime.running_pids()
            notify(
                "READY=1",
                f"STATUS=running: control {front.addr}, info {config.info_addr}, {len(pids)} child processes",
            )
            log.info("daemon_ready", control=front.addr, info=config.info_addr)

            loop = asyncio.get_running_loop()
            tasks.append(loop.create_task(board.publish_periodically(), name="qs_info"))
            interval = watchdog_interval()
            if interval is not None:
                tasks.append(loop.create_task(self._watchdog(interval, runtime, front), name="watchdog"))
            stop_wait = loop.create_task(self.stop_requested.wait())
            vital = [t for t in (runtime.bus.task, front.task, mailbox.task) if t is not None]
            done, _ = await asyncio.wait(
                [stop_wait, runtime.root_exit, *vital], return_when=asyncio.FIRST_COMPLETED
            )
            stop_wait.cancel()
            if runtime.root_exit in done:
                reason = runtime.root_exit.result()
                log.error("tree_failed", reason=reason.reason)
                notify(f"STATUS=stopping: {reason.reason}")
                self.exit_code = EXIT_ESCALATED if reason.abnormal else EXIT_OK
            elif not self.stop_requested.is_set():
                crashed = next(t for t in vital if t in done)
                log.error("runtime_failed", task=crashed.get_name(), error=repr(crashed.exception()))
                self.exit_code = EXIT_ESCALATED
            notify("STOPPING=1", "STATUS=stopping")
            board.set_daemon_state("stopping")
            log.info("daemon_stopping", timeout=config.shutdown_timeout)
            if not await self._stop_tree(runtime, config.shutdown_timeout):
                self.exit_code = EXIT_FORCED
            log.info("daemon_stopped", exit_code=self.exit_code)
            return self.exit_code
        finally:
            for task in tasks:
                task.cancel()
            if front is not None:
                await front.close()
            if mailbox is not None:
                await mailbox.close()
            await runtime.close()
            if auth is not None:
                auth.stop()
            pub_sock.close()
            zctx.destroy(linger=0)
            if owns_run_dir:
                shutil.rmtree(run_dir, ignore_errors=True)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)

    def _on_stop_signal(self, sig: signal.Signals) -> None:
        if self.stop_requested.is_set():
            self.log.warning("forced_stop", signal=sig.name)
            self.force_requested.set()
            return
        self.log.info("signal_received", signal=sig.name)
        self.stop_requested.set()

    async def _stop_tree(self, runtime: Runtime, timeout: float) -> bool:
        """Stop the tree in reverse order; a second stop signal kills what is left. True if graceful."""
        loop = asyncio.get_running_loop()
        stopping = loop.create_task(runtime.stop_root(timeout))
        forced = loop.create_task(self.force_requested.wait())
        await asyncio.wait([stopping, forced], return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if stopping.done():
            return True
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        runtime.kill_processes("forced stop")
        return False

    def _on_reload(self) -> None:
        if self._reload is None:
            return
        try:
            new = self._reload()
        except ConfigError as exc:
            self.log.error("reload_failed", error=exc.msg)
            return
        logs.configure(new.logging.level, new.logging.format, forward=self._publisher.publish_log)
        self.log = logs.actor_logger("daemon", new.logging.level)
        self._runtime.set_log_levels(new.logging.level, dict(new.logging.actors))
        self.log.info("log_levels_reloaded", default_level=new.logging.level, actors=dict(new.logging.actors))

    async def _watchdog(self, interval: float, runtime: Runtime, front: FrontDoor) -> None:
        """WATCHDOG=1 only while the bus routes messages and the front door's loop runs."""
        while True:
            healthy = (
                front.task is not None
                and not front.task.done()
                and await runtime.bus_round_trip(timeout=interval)
            )
            if healthy:
                notify("WATCHDOG=1")
            else:
                self.log.error("watchdog_unhealthy")
            await asyncio.sleep(interval)


def _resolved_format(fmt: str) -> str:
    import sys

    if fmt != "auto":
        return fmt
    return "console" if sys.stdout.isatty() else "json"


async def serve(config: Config, *, reload: Callable[[], Config] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT (exit 0) or until the tree gives up (non-zero)."""
    return await _Daemon(config, reload).run()

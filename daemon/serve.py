"""The daemon: binds the sockets, starts the supervision tree, talks to systemd, stops in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import signal
import sys
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
"""A socket could not be bound, the security settings are unusable, or the tree failed to start."""
EXIT_ESCALATED = 2
"""The root supervisor gave up (restart intensity exceeded): systemd's Restart=on-failure takes over."""
EXIT_FORCED = 3
"""A second SIGTERM/SIGINT cut the graceful stop short: children were killed."""
_GC_YOUNG_THRESHOLD = 10_000
"""Allocations between two young-generation collections once running (Python's default: 700)."""


def config_view(config: Config, state_dir: Path) -> dict[str, Any]:
    """The effective configuration as `config_get` shows it: secrets removed."""
    view = msgspec.to_builtins(config)
    view["state_dir"] = str(state_dir)
    security = view["security"]
    if security.get("server_secret_key"):
        security["server_secret_key"] = "<secret>"
    return view


def _resolved_format(fmt: str) -> str:
    if fmt != "auto":
        return fmt
    return "console" if sys.stdout.isatty() else "json"


class _Daemon:
    """One run of the daemon: open, start the tree, wait for a reason to stop, stop in reverse order."""

    def __init__(self, config: Config, reload: Callable[[], Config] | None) -> None:
        self.config = config
        self._reload = reload
        self.stop_requested = asyncio.Event()
        self.force_requested = asyncio.Event()
        self.exit_code = EXIT_OK
        self.zctx = zmq.asyncio.Context()
        pub_sock = self.zctx.socket(zmq.PUB, socket_class=zmq.Socket)
        pub_sock.setsockopt(zmq.SNDHWM, 100_000)
        pub_sock.setsockopt(zmq.LINGER, 0)
        self.pub_sock = pub_sock
        self.publisher = Publisher(pub_sock, Encoding(config.info_encoding))
        logs.configure(config.logging.level, config.logging.format, forward=self.publisher.publish_log)
        self.log = logs.actor_logger("daemon", config.logging.level)
        self.board = StatusBoard(self.publisher, publish_period=config.status_publish_period)

    async def run(self) -> int:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self.zctx.destroy, linger=0)
            stack.callback(self.pub_sock.close)
            try:
                await self._open(stack)
            except (zmq.ZMQError, OSError, ConfigError) as exc:
                self.log.error("start_failed", error=getattr(exc, "msg", None) or str(exc))
                return EXIT_START_FAILED
            try:
                await self.runtime.start_root(build_tree(self.config))
            except ActorFailed as exc:
                self.log.error("start_failed", error=exc.msg)
                return EXIT_START_FAILED
            self._ready()
            await self._wait_for_a_reason_to_stop(stack)
            notify("STOPPING=1", "STATUS=stopping")
            self.board.set_daemon_state("stopping")
            self.log.info("daemon_stopping", timeout=self.config.shutdown_timeout)
            if not await self._stop_tree():
                self.exit_code = EXIT_FORCED
            self.log.info("daemon_stopped", exit_code=self.exit_code)
        return self.exit_code

    async def _open(self, stack: contextlib.AsyncExitStack) -> None:
        """Bind every socket and start the runtime; each part is closed by `stack` in reverse order."""
        config = self.config
        state_dir = config.resolved_state_dir()
        state_dir.mkdir(parents=True, exist_ok=True)
        run_dir = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
        if not run_dir:  # outside systemd: a private directory for the ipc:// bus of process actors
            run_dir = tempfile.mkdtemp(prefix="stationd-")
            stack.callback(shutil.rmtree, run_dir, ignore_errors=True)
        curve = curve_server(config.security)
        if curve is not None:
            auth = await curve.start_authenticator(self.zctx)
            stack.callback(auth.stop)
            curve.apply(self.pub_sock)
        self.pub_sock.bind(config.info_addr)

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
        self.runtime = Runtime(self.zctx, settings, self.publisher, self.log)
        stack.push_async_callback(self.runtime.close)
        self.runtime.start()

        def refuse(req: Request) -> None:
            if req.envelope.kind == Kind.ASK:
                self.mailbox.reply_error(req, UnsupportedMessage("the front door accepts no messages"))

        self.mailbox = Mailbox(self.zctx, settings.inproc_addr, "front_door", on_request=refuse)
        stack.push_async_callback(self.mailbox.close)
        self.mailbox.start()
        self.runtime.register_mailbox(self.mailbox)
        self.front = FrontDoor(
            self.zctx,
            config.control_addr,
            methods=METHODS,
            board=self.board,
            config_view=config_view(config, state_dir),
            mailbox=self.mailbox,
            max_request_bytes=config.max_request_bytes,
            request_timeout=config.request_timeout,
            curve=curve,
            log=self.log,
        )
        stack.push_async_callback(self.front.close)
        self.front.start()
        self._install_signals()
        notify("STATUS=starting the actor tree")
        self.log.info(
            "daemon_starting",
            pid=os.getpid(),
            state_dir=str(state_dir),
            control=self.front.addr,
            info=config.info_addr,
            curve=curve is not None,
        )

    def _ready(self) -> None:
        # What startup created (modules, the actor tree) lives as long as the daemon: frozen, the garbage
        # collector stops scanning it again and again; and a request allocates a few hundred objects, so a
        # young-generation pass every 700 allocations (Python's default) ran several times per request.
        gc.freeze()
        gc.set_threshold(_GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        self.board.set_daemon_state("running")
        self.front.open()
        processes = len(self.runtime.running_pids())
        control, info = self.front.addr, self.config.info_addr
        notify("READY=1", f"STATUS=running: control {control}, info {info}, {processes} child processes")
        self.log.info("daemon_ready", control=control, info=info)

    async def _wait_for_a_reason_to_stop(self, stack: contextlib.AsyncExitStack) -> None:
        """Until a stop signal, the tree giving up, or a vital task of the runtime dying."""
        loop = asyncio.get_running_loop()
        background = [loop.create_task(self.board.publish_periodically(), name="qs_info")]
        interval = watchdog_interval()
        if interval is not None:
            background.append(loop.create_task(self._watchdog(interval), name="watchdog"))
        for task in background:
            stack.callback(task.cancel)
        stop_wait = loop.create_task(self.stop_requested.wait())
        vital = [t for t in (self.runtime.bus.task, self.front.task, self.mailbox.task) if t is not None]
        done, _ = await asyncio.wait(
            [stop_wait, self.runtime.root_exit, *vital], return_when=asyncio.FIRST_COMPLETED
        )
        stop_wait.cancel()
        if self.runtime.root_exit in done:
            reason = self.runtime.root_exit.result()
            self.log.error("tree_failed", reason=reason.reason)
            notify(f"STATUS=stopping: {reason.reason}")
            self.exit_code = EXIT_ESCALATED if reason.abnormal else EXIT_OK
        elif not self.stop_requested.is_set():
            crashed = next(t for t in vital if t in done)
            self.log.error("runtime_failed", task=crashed.get_name(), error=repr(crashed.exception()))
            self.exit_code = EXIT_ESCALATED

    async def _stop_tree(self) -> bool:
        """Stop the tree in reverse order; a second stop signal kills what is left. True if graceful."""
        loop = asyncio.get_running_loop()
        stopping = loop.create_task(self.runtime.stop_root(self.config.shutdown_timeout))
        forced = loop.create_task(self.force_requested.wait())
        await asyncio.wait([stopping, forced], return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        if stopping.done():
            return True
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        self.runtime.kill_processes("forced stop")
        return False

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

    def _on_reload(self) -> None:
        """SIGHUP: read the config again and apply its log levels (the rest needs a restart)."""
        if self._reload is None:
            return
        try:
            new = self._reload()
        except ConfigError as exc:
            self.log.error("reload_failed", error=exc.msg)
            return
        logs.configure(new.logging.level, new.logging.format, forward=self.publisher.publish_log)
        self.log = logs.actor_logger("daemon", new.logging.level)
        self.runtime.set_log_levels(new.logging.level, dict(new.logging.actors))
        self.log.info("log_levels_reloaded", default_level=new.logging.level, actors=dict(new.logging.actors))

    async def _watchdog(self, interval: float) -> None:
        """WATCHDOG=1 only while the bus routes messages and the front door's loop runs."""
        while True:
            front = self.front.task
            healthy = front is not None and not front.done() and await self.runtime.bus_round_trip(interval)
            if healthy:
                notify("WATCHDOG=1")
            else:
                self.log.error("watchdog_unhealthy")
            await asyncio.sleep(interval)


async def serve(config: Config, *, reload: Callable[[], Config] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT (exit 0) or until the tree gives up (non-zero)."""
    sys.setswitchinterval(config.runtime.gil_switch_interval)
    return await _Daemon(config, reload).run()

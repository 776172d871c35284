"""The runtime in-process, on the test's event loop: real ZMQ bus, real cells, real child processes."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq.asyncio

from stationd.actors.specs import ChildSpec, Strategy, SupervisorSpec
from stationd.daemon import logs
from stationd.daemon.mailbox import Mailbox
from stationd.daemon.publisher import Publisher
from stationd.daemon.runtime import Runtime, RuntimeSettings
from stationd.protocol.pubsub import EventMessage


class Events:
    """Every event published in-process, and a way to await the next one that matches."""

    def __init__(self, publisher: Publisher) -> None:
        self.items: list[tuple[str, Any]] = []
        self._waiters: list[tuple[int, Callable[[str, Any], bool], asyncio.Future[Any]]] = []
        publisher.add_listener("", self._on_message)

    def mark(self) -> int:
        return len(self.items)

    def _on_message(self, topic: str, msg: Any) -> None:
        self.items.append((topic, msg))
        for _since, pred, fut in list(self._waiters):
            if not fut.done() and pred(topic, msg):
                fut.set_result(msg)

    async def wait_for(
        self, pred: Callable[[str, Any], bool], *, since: int = 0, timeout: float = 5.0
    ) -> Any:
        for topic, msg in self.items[since:]:
            if pred(topic, msg):
                return msg
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        entry = (since, pred, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._waiters.remove(entry)

    async def wait_event(
        self, actor: str, name: str, /, *, since: int = 0, timeout: float = 5.0, **data: Any
    ) -> Any:
        """Await `event.<actor>.<name>` whose data has the given attributes/keys."""

        def match(topic: str, msg: Any) -> bool:
            if topic != f"event.{actor}.{name}" or not isinstance(msg, EventMessage):
                return False
            d = msg.data
            get = d.get if isinstance(d, dict) else lambda k, _d=d: getattr(_d, k, None)
            return all(get(k) == v for k, v in data.items())

        return (await self.wait_for(match, since=since, timeout=timeout)).data

    def named(self, actor: str, name: str) -> list[Any]:
        return [m.data for t, m in self.items if t == f"event.{actor}.{name}"]


class Harness:
    """A Runtime with a tester mailbox; start a tree, then ask/tell its actors."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.zctx = zmq.asyncio.Context()
        self.publisher = Publisher(None)
        self.events = Events(self.publisher)
        logs.configure("info", "json", forward=self.publisher.publish_log)  # as the daemon does
        self._run_dir = tempfile.mkdtemp(prefix="sdt-")  # short: ipc paths are limited to 107 bytes
        self.settings = RuntimeSettings(
            state_dir=tmp_path,
            inproc_addr="inproc://test-bus",
            ipc_addr=f"ipc://{self._run_dir}/bus.sock",
            log_format="json",
            **settings,
        )
        self.runtime = Runtime(self.zctx, self.settings, self.publisher, logs.actor_logger("test", "info"))
        self.runtime.start()
        self.tester = Mailbox(self.zctx, self.settings.inproc_addr, "tester", on_request=lambda _r: None)
        self.tester.start()
        self.runtime.register_mailbox(self.tester)

    async def start_tree(
        self,
        *children: ChildSpec,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        intensity: int = 5,
        period: float = 30.0,
        name: str = "root",
    ) -> None:
        await self.runtime.start_root(
            SupervisorSpec(
                name=name, strategy=strategy, intensity=intensity, period=period, children=list(children)
            )
        )

    async def ask(self, to: str, msg: Any, timeout: float = 5.0) -> Any:
        return await self.tester.ask(to, msg, timeout=timeout)

    def tell(self, to: str, msg: Any) -> None:
        self.tester.tell(to, msg)

    def pid(self, name: str) -> int:
        return self.runtime.running_pids()[name]

    async def close(self) -> None:
        await self.runtime.stop_root(5.0)
        await self.tester.close()
        await self.runtime.close()
        self.zctx.destroy(linger=0)
        shutil.rmtree(self._run_dir, ignore_errors=True)

"""`QueueClient` and `AsyncQueueClient`: bluesky-queueserver-api's `REManagerAPI` method names over stationd.

qc = QueueClient("tcp://127.0.0.1:60615", info_addr="tcp://127.0.0.1:60625")
qc.environment_open()
qc.wait_for_condition(lambda s: s["manager_state"] != "creating_environment", timeout=30)
qc.item_add({"item_type": "plan", "name": "count", "args": [["det1"]], "kwargs": {"num": 3}})
qc.queue_start()
qc.wait_for_idle(timeout=60)
qc.history_get(offset=0, limit=10)["items"]

Every method returns the daemon's reply dict and raises the typed `StationError` when `success` is false.
Items are plain dicts. The waits follow the daemon's `QS_Info` status stream instead of polling `status`.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar, cast

from .client import AsyncClient, AsyncSubscriber, Client, CurveKeys, InfoEvent, Subscriber
from .errors import DeadlineExceeded
from .pubsub import INFO

__all__ = [
    "DEFAULT_USER",
    "DEFAULT_USER_GROUP",
    "AsyncQueueClient",
    "QueueClient",
    "WaitTimeout",
]

DEFAULT_USER = "stationctl"
DEFAULT_USER_GROUP = "primary"
DEFAULT_WAIT_TIMEOUT = 600.0

_SILENCE = 5.0
"""The daemon publishes its status at least every second; this long without a message means the stream is
not reaching us (wrong info address, periodic publishing off), so a wait asks `status` once more."""

R = TypeVar("R")
Status = dict[str, Any]
Predicate = Callable[[Status], bool]


class WaitTimeout(DeadlineExceeded):
    """A wait's condition was not met in time (the daemon itself answered)."""


def _stamp(status: Status) -> datetime.datetime | None:
    """When the daemon built this status (its `time`), to tell a late stream message from a newer one."""
    try:
        return datetime.datetime.fromisoformat(status["time"])
    except (KeyError, TypeError, ValueError):
        return None


def _status_of(event: InfoEvent) -> Status | None:
    msg = event.payload.get("msg")
    status = msg.get("status") if isinstance(msg, dict) else None
    return status if isinstance(status, dict) else None


def _is_newer(status: Status, newest: datetime.datetime | None) -> bool:
    stamp = _stamp(status)
    return newest is None or stamp is None or stamp >= newest


def _given(**params: Any) -> dict[str, Any]:
    """The parameters that were given: None means "the daemon's default", so it is not sent."""
    return {k: v for k, v in params.items() if v is not None}


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _wait_limit(remaining: float | None) -> float:
    return _SILENCE if remaining is None else max(0.0, min(remaining, _SILENCE))


def _timed_out(timeout: float | None) -> WaitTimeout:
    limit = "in time" if timeout is None else f"within {timeout:g} s"
    return WaitTimeout(f"the queue manager did not reach the awaited state {limit}")


def _idle(status: Status) -> bool:
    return status.get("manager_state") == "idle"


def _idle_or_paused(status: Status) -> bool:
    return status.get("manager_state") in ("idle", "paused")


class _QueueApi(Generic[R]):
    """The request methods, shared by both clients: `R` is the reply dict, or an awaitable of it."""

    def __init__(
        self,
        client: Client | AsyncClient,
        *,
        owned: bool,
        info_addr: str | None,
        user: str,
        user_group: str,
        lock_key: str | None,
        curve: CurveKeys | None,
    ) -> None:
        self.client = client
        self._owned = owned
        self.info_addr = info_addr
        self.user, self.user_group, self.lock_key = user, user_group, lock_key
        self._curve = curve

    def _call(self, method: str, params: dict[str, Any] | None = None) -> R:
        return cast(R, self.client.request(method, params))

    def _locked(self, method: str, lock_key: str | None, **params: Any) -> R:
        """A request that needs the lock key while locked: the given key, else the client's, else none."""
        return self._call(
            method, _given(**params, lock_key=lock_key if lock_key is not None else self.lock_key)
        )

    def _by_user(
        self, method: str, user: str | None, user_group: str | None, lock_key: str | None, **params: Any
    ) -> R:
        """A request that names its user and group: the given ones, else the client's."""
        return self._locked(
            method, lock_key, user=user or self.user, user_group=user_group or self.user_group, **params
        )

    # -- status and lists ------------------------------------------------------------------------------------
    def status(self) -> R:
        """The status dict (bluesky-queueserver's fields plus the daemon's)."""
        return self._call("status")

    def ping(self) -> R:
        return self._call("ping")

    def config_get(self) -> R:
        return self._call("config_get")

    def plans_allowed(self, *, user_group: str | None = None) -> R:
        return self._call("plans_allowed", {"user_group": user_group or self.user_group})

    def devices_allowed(self, *, user_group: str | None = None) -> R:
        return self._call("devices_allowed", {"user_group": user_group or self.user_group})

    def plans_existing(self) -> R:
        return self._call("plans_existing")

    def devices_existing(self) -> R:
        return self._call("devices_existing")

    def permissions_get(self) -> R:
        return self._call("permissions_get")

    def permissions_set(self, user_group_permissions: dict[str, Any], *, lock_key: str | None = None) -> R:
        return self._locked("permissions_set", lock_key, user_group_permissions=user_group_permissions)

    def permissions_reload(
        self,
        *,
        restore_plans_devices: bool | None = None,
        restore_permissions: bool | None = None,
        lock_key: str | None = None,
    ) -> R:
        return self._locked(
            "permissions_reload",
            lock_key,
            restore_plans_devices=restore_plans_devices,
            restore_permissions=restore_permissions,
        )

    # -- queue -----------------------------------------------------------------------------------------------
    def queue_get(self, offset: int = 0, limit: int | None = None) -> R:
        """`items` (from `offset`, at most `limit`), `running_item` and `plan_queue_uid`."""
        return self._call("queue_get", _given(offset=offset, limit=limit))

    def item_add(
        self,
        item: dict[str, Any],
        *,
        pos: str | int | None = None,
        before_uid: str | None = None,
        after_uid: str | None = None,
        user: str | None = None,
        user_group: str | None = None,
        lock_key: str | None = None,
    ) -> R:
        """Add an item (back of the queue unless `pos`, `before_uid` or `after_uid` says otherwise)."""
        return self._by_user(
            "queue_item_add",
            user,
            user_group,
            lock_key,
            item=item,
            pos=pos,
            before_uid=before_uid,
            after_uid=after_uid,
        )

    def item_add_batch(
        self,
        items: list[dict[str, Any]],
        *,
        pos: str | int | None = None,
        before_uid: str | None = None,
        after_uid: str | None = None,
        user: str | None = None,
        user_group: str | None = None,
        lock_key: str | None = None,
    ) -> R:
        """Add several items: all of them or, if one fails validation, none."""
        return self._by_user(
            "queue_item_add_batch",
            user,
            user_group,
            lock_key,
            items=items,
            pos=pos,
            before_uid=before_uid,
            after_uid=after_uid,
        )

    def item_update(
        self,
        item: dict[str, Any],
        *,
        replace: bool | None = None,
        user: str | None = None,
        user_group: str | None = None,
        lock_key: str | None = None,
    ) -> R:
        """Replace the queued item with the same `item_uid` (`replace=True`: it gets a new uid)."""
        return self._by_user("queue_item_update", user, user_group, lock_key, item=item, replace=replace)

    def item_get(self, *, pos: str | int | None = None, uid: str | None = None) -> R:
        """One queued item by position (default: the back) or uid."""
        return self._call("queue_item_get", _given(pos=pos, uid=uid))

    def item_remove(
        self, *, pos: str | int | None = None, uid: str | None = None, lock_key: str | None = None
    ) -> R:
        return self._locked("queue_item_remove", lock_key, pos=pos, uid=uid)

    def item_remove_batch(
        self, *, uids: list[str], ignore_missing: bool | None = None, lock_key: str | None = None
    ) -> R:
        return self._locked("queue_item_remove_batch", lock_key, uids=uids, ignore_missing=ignore_missing)

    def item_move(
        self,
        *,
        pos: str | int | None = None,
        uid: str | None = None,
        pos_dest: str | int | None = None,
        before_uid: str | None = None,
        after_uid: str | None = None,
        lock_key: str | None = None,
    ) -> R:
        """Move one item (by `pos` or `uid`) to `pos_dest`, or before/after another item."""
        return self._locked(
            "queue_item_move",
            lock_key,
            pos=pos,
            uid=uid,
            pos_dest=pos_dest,
            before_uid=before_uid,
            after_uid=after_uid,
        )

    def item_move_batch(
        self,
        *,
        uids: list[str],
        pos_dest: str | None = None,
        before_uid: str | None = None,
        after_uid: str | None = None,
        reorder: bool | None = None,
        lock_key: str | None = None,
    ) -> R:
        return self._locked(
            "queue_item_move_batch",
            lock_key,
            uids=uids,
            pos_dest=pos_dest,
            before_uid=before_uid,
            after_uid=after_uid,
            reorder=reorder,
        )

    def item_execute(
        self,
        item: dict[str, Any],
        *,
        user: str | None = None,
        user_group: str | None = None,
        lock_key: str | None = None,
    ) -> R:
        """Run one item now, bypassing the queue."""
        return self._by_user("queue_item_execute", user, user_group, lock_key, item=item)

    def queue_clear(self, *, lock_key: str | None = None) -> R:
        return self._locked("queue_clear", lock_key)

    def queue_start(self, *, lock_key: str | None = None) -> R:
        return self._locked("queue_start", lock_key)

    def queue_stop(self, *, lock_key: str | None = None) -> R:
        """Stop the queue once the running plan ends."""
        return self._locked("queue_stop", lock_key)

    def queue_stop_cancel(self, *, lock_key: str | None = None) -> R:
        return self._locked("queue_stop_cancel", lock_key)

    def queue_autostart(self, enable: bool, *, lock_key: str | None = None) -> R:
        return self._locked("queue_autostart", lock_key, enable=enable)

    def queue_mode_set(self, *, lock_key: str | None = None, **mode: Any) -> R:
        """`queue_mode_set(loop=True, ignore_failures=False)`, or `queue_mode_set(mode="default")`."""
        return self._locked("queue_mode_set", lock_key, mode=mode.get("mode", mode))

    # -- history ---------------------------------------------------------------------------------------------
    def history_get(self, offset: int = 0, limit: int | None = None) -> R:
        """Finished items, oldest first, each with its `result`; `offset`/`limit` page them."""
        return self._call("history_get", _given(offset=offset, limit=limit))

    def history_clear(
        self, *, size: int | None = None, item_uid: str | None = None, lock_key: str | None = None
    ) -> R:
        """Clear all, keep the newest `size`, or drop `item_uid` and everything older."""
        return self._locked("history_clear", lock_key, size=size, item_uid=item_uid)

    # -- environment, tasks ----------------------------------------------------------------------------------
    def environment_open(self, *, lock_key: str | None = None) -> R:
        """Accepted at once; `manager_state` is `creating_environment` until the worker is ready."""
        return self._locked("environment_open", lock_key)

    def environment_close(self, *, lock_key: str | None = None) -> R:
        return self._locked("environment_close", lock_key)

    def environment_destroy(self, *, lock_key: str | None = None) -> R:
        return self._locked("environment_destroy", lock_key)

    def environment_update(self, *, run_in_background: bool | None = None, lock_key: str | None = None) -> R:
        return self._locked("environment_update", lock_key, run_in_background=run_in_background)

    def function_execute(
        self,
        item: dict[str, Any],
        *,
        run_in_background: bool | None = None,
        user: str | None = None,
        user_group: str | None = None,
        lock_key: str | None = None,
    ) -> R:
        """Call a function of the worker namespace; the reply's `task_uid` leads to `task_result`."""
        return self._by_user(
            "function_execute", user, user_group, lock_key, item=item, run_in_background=run_in_background
        )

    def script_upload(
        self,
        script: str,
        *,
        update_lists: bool | None = None,
        update_re: bool | None = None,
        run_in_background: bool | None = None,
        lock_key: str | None = None,
    ) -> R:
        return self._locked(
            "script_upload",
            lock_key,
            script=script,
            update_lists=update_lists,
            update_re=update_re,
            run_in_background=run_in_background,
        )

    def task_status(self, task_uid: str | list[str]) -> R:
        return self._call("task_status", {"task_uid": task_uid})

    def task_result(self, task_uid: str) -> R:
        return self._call("task_result", {"task_uid": task_uid})

    # -- RunEngine -------------------------------------------------------------------------------------------
    def re_pause(self, option: str = "deferred", *, lock_key: str | None = None) -> R:
        """Pause the running plan: `deferred` (at the next checkpoint) or `immediate`."""
        return self._locked("re_pause", lock_key, option=option)

    def re_resume(self, *, lock_key: str | None = None) -> R:
        return self._locked("re_resume", lock_key)

    def re_stop(self, *, lock_key: str | None = None) -> R:
        return self._locked("re_stop", lock_key)

    def re_abort(self, *, lock_key: str | None = None) -> R:
        return self._locked("re_abort", lock_key)

    def re_halt(self, *, lock_key: str | None = None) -> R:
        return self._locked("re_halt", lock_key)

    def re_runs(self, option: str = "active") -> R:
        """Runs of the running plan: `active` (all), `open` or `closed`."""
        return self._call("re_runs", {"option": option})

    def re_metadata(self) -> R:
        return self._call("re_metadata")

    # -- locks, manager --------------------------------------------------------------------------------------
    def lock(
        self,
        lock_key: str | None = None,
        *,
        environment: bool = False,
        queue: bool = False,
        note: str | None = None,
        user: str | None = None,
    ) -> R:
        """Lock the environment and/or the queue with `lock_key` (default: the client's `lock_key`)."""
        key = self._key(lock_key, "lock")
        params = _given(lock_key=key, user=user or self.user, environment=environment, queue=queue, note=note)
        return self._call("lock", params)

    def lock_environment(self, lock_key: str | None = None, *, note: str | None = None) -> R:
        return self.lock(lock_key, environment=True, note=note)

    def lock_queue(self, lock_key: str | None = None, *, note: str | None = None) -> R:
        return self.lock(lock_key, queue=True, note=note)

    def lock_all(self, lock_key: str | None = None, *, note: str | None = None) -> R:
        return self.lock(lock_key, environment=True, queue=True, note=note)

    def lock_info(self, lock_key: str | None = None) -> R:
        """Who locked what; with `lock_key`, fails unless it is the key of the lock."""
        return self._call("lock_info", _given(lock_key=lock_key))

    def unlock(self, lock_key: str | None = None) -> R:
        """Unlock with `lock_key` (default: the client's) or the emergency key."""
        return self._call("unlock", {"lock_key": self._key(lock_key, "unlock")})

    def manager_stop(self, option: str = "safe_on") -> R:
        """Stop the daemon: `safe_on` only when idle, `safe_off` at once."""
        return self._call("manager_stop", {"option": option})

    def _key(self, lock_key: str | None, method: str) -> str:
        key = lock_key if lock_key is not None else self.lock_key
        if not key:
            raise ValueError(f"{method} needs a lock key: pass lock_key or set the client's lock_key")
        return key


class QueueClient(_QueueApi[dict[str, Any]]):
    """Synchronous queue-server client over a `Client`; the waits follow the info stream (`Subscriber`).

    Args:
        addr: control socket (default: `STATIOND_CONTROL_ADDR` or the standard one).
        info_addr: info socket, for the waits (default: `STATIOND_INFO_ADDR` or the standard one).
        client: an existing `Client` to use instead of opening one (it is not closed by `close`).
        user, user_group: sent with the methods that need them, unless a call passes its own.
        lock_key: sent with the methods that a lock guards, unless a call passes its own.
        curve: CurveZMQ keys, for the client opened here and for the info stream.
        client_options: more `Client` options (`timeout`, `encoding`).
    """

    def __init__(
        self,
        addr: str | None = None,
        *,
        info_addr: str | None = None,
        client: Client | None = None,
        user: str = DEFAULT_USER,
        user_group: str = DEFAULT_USER_GROUP,
        lock_key: str | None = None,
        curve: CurveKeys | None = None,
        **client_options: Any,
    ) -> None:
        super().__init__(
            client or Client(addr, curve=curve, **client_options),
            owned=client is None,
            info_addr=info_addr,
            user=user,
            user_group=user_group,
            lock_key=lock_key,
            curve=curve,
        )
        self.client: Client

    def status_updates(self, *, timeout: float | None = None) -> Iterator[Status]:
        """The current status, then every newer one the daemon publishes (`WaitTimeout` after `timeout` s).

        The stream is joined before `status` is asked, so no change after that answer is missed; a message
        built before the answer (late in the socket) is skipped.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with Subscriber(self.info_addr, [INFO], curve=self._curve) as sub:
            current = self.status()
            yield current
            while True:
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    raise _timed_out(timeout)
                try:
                    status = _status_of(sub.recv(_wait_limit(remaining)))
                except DeadlineExceeded:
                    if _expired(deadline):
                        raise _timed_out(timeout) from None
                    status = self.status()  # the stream fell silent: ask
                except ValueError:  # an undecodable message: the next one will do
                    continue
                if status is not None and _is_newer(status, _stamp(current)):
                    current = status
                    yield current

    def wait_for_condition(
        self, predicate: Predicate, timeout: float | None = DEFAULT_WAIT_TIMEOUT
    ) -> Status:
        """Return the first status (the current one included) for which `predicate` is true."""
        with contextlib.closing(self.status_updates(timeout=timeout)) as updates:
            for status in updates:
                if predicate(status):
                    return status
        raise AssertionError("status_updates ended")  # it never does: it raises WaitTimeout

    def wait_for_idle(self, timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> Status:
        return self.wait_for_condition(_idle, timeout)

    def wait_for_idle_or_paused(self, timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> Status:
        return self.wait_for_condition(_idle_or_paused, timeout)

    def wait_for_completed_task(self, task_uid: str, timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> Status:
        """Wait until a task is no longer running; return its `task_result` reply."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            results_uid = self.status().get("task_results_uid")
            if self.task_status(task_uid)["status"] != "running":
                return self.task_result(task_uid)
            remaining = _remaining(deadline)
            try:
                self.wait_for_condition(
                    lambda s, seen=results_uid: s.get("task_results_uid") != seen, remaining
                )
            except WaitTimeout:
                raise _timed_out(timeout) from None

    def close(self) -> None:
        if self._owned:
            self.client.close()

    def __enter__(self) -> QueueClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncQueueClient(_QueueApi[Awaitable[dict[str, Any]]]):
    """asyncio queue-server client over an `AsyncClient`; arguments as `QueueClient`'s."""

    def __init__(
        self,
        addr: str | None = None,
        *,
        info_addr: str | None = None,
        client: AsyncClient | None = None,
        user: str = DEFAULT_USER,
        user_group: str = DEFAULT_USER_GROUP,
        lock_key: str | None = None,
        curve: CurveKeys | None = None,
        **client_options: Any,
    ) -> None:
        super().__init__(
            client or AsyncClient(addr, curve=curve, **client_options),
            owned=client is None,
            info_addr=info_addr,
            user=user,
            user_group=user_group,
            lock_key=lock_key,
            curve=curve,
        )
        self.client: AsyncClient

    async def status_updates(self, *, timeout: float | None = None) -> AsyncIterator[Status]:
        """As `QueueClient.status_updates`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        async with AsyncSubscriber(self.info_addr, [INFO], curve=self._curve) as sub:
            current = await self.status()
            yield current
            while True:
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    raise _timed_out(timeout)
                try:
                    status = _status_of(await sub.recv(_wait_limit(remaining)))
                except DeadlineExceeded:
                    if _expired(deadline):
                        raise _timed_out(timeout) from None
                    status = await self.status()  # the stream fell silent: ask
                except ValueError:  # an undecodable message: the next one will do
                    continue
                if status is not None and _is_newer(status, _stamp(current)):
                    current = status
                    yield current

    async def wait_for_condition(
        self, predicate: Predicate, timeout: float | None = DEFAULT_WAIT_TIMEOUT
    ) -> Status:
        async with contextlib.aclosing(self.status_updates(timeout=timeout)) as updates:
            async for status in updates:
                if predicate(status):
                    return status
        raise AssertionError("status_updates ended")  # it never does: it raises WaitTimeout

    async def wait_for_idle(self, timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> Status:
        return await self.wait_for_condition(_idle, timeout)

    async def wait_for_idle_or_paused(self, timeout: float | None = DEFAULT_WAIT_TIMEOUT) -> Status:
        return await self.wait_for_condition(_idle_or_paused, timeout)

    async def wait_for_completed_task(
        self, task_uid: str, timeout: float | None = DEFAULT_WAIT_TIMEOUT
    ) -> Status:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            results_uid = (await self.status()).get("task_results_uid")
            if (await self.task_status(task_uid))["status"] != "running":
                return await self.task_result(task_uid)
            try:
                await self.wait_for_condition(
                    lambda s, seen=results_uid: s.get("task_results_uid") != seen, _remaining(deadline)
                )
            except WaitTimeout:
                raise _timed_out(timeout) from None

    async def close(self) -> None:
        if self._owned:
            await self.client.close()

    async def __aenter__(self) -> AsyncQueueClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

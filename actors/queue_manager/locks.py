"""bluesky-queueserver's locks (environment and/or queue, one key), with the key stored hashed."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import time
from typing import Any

import msgspec

__all__ = ["LockState", "describe", "lock_info"]


class LockState(msgspec.Struct, kw_only=True):
    environment: bool = False
    queue: bool = False
    user: str | None = None
    time: float | None = None
    note: str | None = None
    key_hash: str | None = None
    """`salt$sha256` of the key: the key itself is never stored."""

    @property
    def locked(self) -> bool:
        return self.environment or self.queue


def hash_key(key: str) -> str:
    salt = os.urandom(16).hex()
    return f"{salt}${hashlib.sha256((salt + key).encode()).hexdigest()}"


def key_matches(state: LockState, key: str | None) -> bool:
    if key is None or state.key_hash is None:
        return False
    salt, digest = state.key_hash.split("$", 1)
    return hmac.compare_digest(digest, hashlib.sha256((salt + key).encode()).hexdigest())


def _time_str(t: float | None) -> str:
    return "" if t is None else datetime.datetime.fromtimestamp(t).strftime("%m/%d/%Y %H:%M:%S")


def lock_info(state: LockState, emergency_key_set: bool) -> dict[str, Any]:
    """The `lock_info` reply object."""
    return {
        "environment": state.environment,
        "queue": state.queue,
        "user": state.user if state.locked else None,
        "time": state.time if state.locked else None,
        "time_str": _time_str(state.time) if state.locked else "",
        "note": state.note if state.locked else None,
        "emergency_lock_key_is_set": emergency_key_set,
    }


def describe(state: LockState, emergency_key_set: bool) -> str:
    """The incumbent's lock description, shown after `Invalid lock key:`."""
    return (
        f"RE Manager is locked by {state.user} at {_time_str(state.time)}\n"
        f"Environment is locked: {state.environment}\n"
        f"Queue is locked:       {state.queue}\n"
        f"Emergency lock key:    {'set' if emergency_key_set else 'not set'}\n"
        f"Note: {state.note or '---'}"
    )


def new_lock(key: str, user: str, environment: bool, queue: bool, note: str | None) -> LockState:
    return LockState(
        environment=environment, queue=queue, user=user, time=time.time(), note=note, key_hash=hash_key(key)
    )

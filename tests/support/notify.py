"""A fake systemd notify socket: what `Type=notify` services send, received as systemd would."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time


class NotifySocket:
    """AF_UNIX datagram socket; its path goes into the daemon's $NOTIFY_SOCKET."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="sdn-")  # short path: AF_UNIX paths are limited to 107 bytes
        self.path = os.path.join(self._dir, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self.messages: list[str] = []

    def wait_for(self, field: str, timeout: float = 10.0) -> list[str]:
        """Block until a datagram holding `field` (e.g. `READY=1`) arrives; return all fields seen so far."""
        deadline = time.monotonic() + timeout
        while not any(field in m.split("\n") for m in self.messages):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{field} not received within {timeout} s; got {self.messages}")
            self._sock.settimeout(remaining)
            try:
                self.messages.append(self._sock.recv(4096).decode())
            except TimeoutError:
                continue
        return [f for m in self.messages for f in m.split("\n")]

    def close(self) -> None:
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

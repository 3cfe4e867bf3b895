"""sd_notify over the ``NOTIFY_SOCKET`` datagram socket; silent without it.

A small own implementation (the protocol is one datagram per message) so
that batond needs no libsystemd binding. WATCHDOG=1 is sent from a task on
the event loop itself: a loop that is stuck stops the pings and systemd
kills the service, which is the point of the watchdog.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

__all__ = ["Notifier"]

_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        if environ is None:
            # Taken out of the process environment, as sd_notify(unset_environment=1)
            # does: the commands that actions run must not inherit our channel.
            env = {k: os.environ.pop(k) for k in _VARIABLES if k in os.environ}
        else:
            env = environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if address.startswith("@"):  # abstract namespace
            self._address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self._address = address
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        enabled = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        #: seconds between WATCHDOG=1 pings (half the timeout), or None when no watchdog
        self.watchdog_interval: float | None = int(usec) / 2e6 if enabled else None

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError:
            return False  # the manager went away; nothing useful to do
        return True

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "") -> None:
        self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    async def watchdog(self) -> None:
        """Ping until cancelled; returns at once when no watchdog is configured."""
        if self.watchdog_interval is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

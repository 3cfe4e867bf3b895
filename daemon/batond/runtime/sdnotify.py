"""sd_notify over the ``NOTIFY_SOCKET`` datagram socket; silent without it.

A small own implementation (the protocol is one datagram per message) so
that batond needs no libsystemd binding. WATCHDOG=1 is sent from a thread
(:class:`WatchdogThread`) that pings only while the event loop's heartbeat
(:class:`~batond.runtime.looplag.LoopLag`) is recent. A loop busy for a few
seconds keeps its pings; a loop stuck for nearly the whole ``WatchdogSec``
stops them, and systemd kills the service, which is the point of the watchdog.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

__all__ = ["Notifier", "WatchdogThread"]

log = logging.getLogger(__name__)

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
        #: systemd's WatchdogSec in seconds, or None when no watchdog is configured
        self.watchdog_timeout: float | None = int(usec) / 1e6 if enabled else None

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

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WatchdogThread:
    """Sends WATCHDOG=1 from a thread while ``heartbeat()`` (monotonic seconds) is recent.

    A ping goes out every ``period`` (a quarter of the timeout, at most 1 s) as long
    as the loop beat within ``stale_after`` (the timeout less two periods): the
    loop may be held for almost the whole timeout before systemd acts, and not a
    moment longer, since the last ping then is at most two periods old.
    """

    def __init__(
        self,
        notifier: Notifier,
        timeout: float,
        heartbeat: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self._heartbeat = heartbeat
        self._clock = clock
        self.period = min(1.0, timeout / 4)
        self.stale_after = timeout - 2 * self.period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batond-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        withheld = False
        while not self._stop.wait(self.period):
            silent_for = self._clock() - self._heartbeat()
            if silent_for <= self.stale_after:
                self._notifier.send("WATCHDOG=1")
                if withheld:
                    log.warning(
                        "event loop answers again after %.1f s; watchdog pings resume", silent_for
                    )
                withheld = False
            elif not withheld:
                log.error(
                    "event loop stuck for %.1f s: WATCHDOG=1 withheld, systemd will restart batond",
                    silent_for,
                )
                withheld = True

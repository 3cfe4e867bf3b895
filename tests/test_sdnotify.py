"""sd_notify over a real AF_UNIX datagram socket, as systemd provides it."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batond.runtime.looplag import LoopLag
from batond.runtime.sdnotify import Notifier, WatchdogThread


class Manager:
    """The receiving end systemd would hold: a bound datagram socket."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address  # the NOTIFY_SOCKET value

    def receive(self, timeout: float = 10.0) -> list[str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096)
        return data.decode().split("\n")

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        return False


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield Manager(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_manager() -> Iterator[Manager]:
    name = f"batond-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    yield Manager(sock, "@" + name)
    sock.close()


def test_ready_with_status(manager: Manager) -> None:
    n = Notifier({"NOTIFY_SOCKET": manager.address})
    assert n.enabled
    n.ready("enforce: 3 rules")
    assert manager.receive() == ["READY=1", "STATUS=enforce: 3 rules"]
    n.close()


def test_ready_without_status(manager: Manager) -> None:
    n = Notifier({"NOTIFY_SOCKET": manager.address})
    n.ready()
    assert manager.receive() == ["READY=1"]


def test_status(manager: Manager) -> None:
    n = Notifier({"NOTIFY_SOCKET": manager.address})
    n.status("opening journal")
    assert manager.receive() == ["STATUS=opening journal"]


def test_reloading_carries_the_monotonic_clock(manager: Manager) -> None:
    n = Notifier({"NOTIFY_SOCKET": manager.address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = manager.receive()
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    # systemd compares it with CLOCK_MONOTONIC in microseconds
    assert before <= int(value) <= after


def test_stopping(manager: Manager) -> None:
    n = Notifier({"NOTIFY_SOCKET": manager.address})
    n.stopping("stopping: intake closed")
    assert manager.receive() == ["STOPPING=1", "STATUS=stopping: intake closed"]


def test_abstract_socket_address(abstract_manager: Manager) -> None:
    n = Notifier({"NOTIFY_SOCKET": abstract_manager.address})
    n.ready()
    assert abstract_manager.receive() == ["READY=1"]


def test_silent_without_notify_socket() -> None:
    n = Notifier({})
    assert not n.enabled
    assert n.send("READY=1") is False
    n.ready("x")
    n.status("x")
    n.reloading()
    n.stopping()
    n.close()


def test_unsupported_address_is_ignored() -> None:
    n = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled


def test_gone_manager_is_not_an_error(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.enabled
    assert n.send("READY=1") is False


def test_watchdog_timeout_and_the_threads_schedule() -> None:
    n = Notifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "30000000"})
    assert n.watchdog_timeout == 30.0
    thread = WatchdogThread(n, 30.0, time.monotonic)
    # a ping a second; withheld once the loop has been silent for 28 s
    assert (thread.period, thread.stale_after) == (1.0, 28.0)
    short = WatchdogThread(n, 2.0, time.monotonic)
    assert (short.period, short.stale_after) == (0.5, 1.0)


def test_watchdog_for_another_pid_is_not_ours() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}
    assert Notifier(env).watchdog_timeout is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier(env).watchdog_timeout == 2.0


def test_no_watchdog_without_watchdog_usec() -> None:
    assert Notifier({"NOTIFY_SOCKET": "/x"}).watchdog_timeout is None


def test_a_zero_watchdog_timeout_is_no_watchdog() -> None:
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "0"}).watchdog_timeout is None


class PingLog:
    """Receives WATCHDOG=1 in a thread of its own and notes when each arrived."""

    def __init__(self, manager: Manager) -> None:
        self.times: list[float] = []
        self._manager = manager
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._manager.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                data = self._manager.sock.recv(4096)
            except TimeoutError:
                continue
            if data == b"WATCHDOG=1":
                self.times.append(time.monotonic())

    def between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for t in self.times)

    async def wait_for_one_after(self, start: float, within: float = 10.0) -> None:
        """Awaited, so that the loop keeps beating meanwhile."""
        deadline = time.monotonic() + within
        while not any(t > start for t in self.times):
            assert time.monotonic() < deadline, "no WATCHDOG=1 after the loop came back"
            await asyncio.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def hold_the_loop(seconds: float) -> tuple[float, float]:
    start = time.monotonic()
    time.sleep(seconds)  # the loop itself is held: this is what the watchdog watches
    return start, time.monotonic()


async def test_pings_go_on_through_a_short_stall_and_stop_when_the_loop_is_stuck(
    manager: Manager, caplog: pytest.LogCaptureFixture
) -> None:
    # WatchdogSec=2s: a ping every 0.5 s while the loop beat within the last 1 s
    n = Notifier({"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "2000000"})
    lag = LoopLag(interval=0.02)
    lag_task = asyncio.create_task(lag.run(asyncio.Event()))
    pings = PingLog(manager)
    watchdog = WatchdogThread(n, 2.0, lambda: lag.last_beat)
    watchdog.start()
    try:
        await pings.wait_for_one_after(time.monotonic())
        await asyncio.sleep(0.1)  # the loop beats again before the stall
        short = hold_the_loop(0.8)
        assert pings.between(*short) >= 1, pings.times  # a busy loop is not a stuck loop
        await asyncio.sleep(0.1)
        stuck = hold_the_loop(3.0)
        # silent for 1 s, then the last ping that saw a beat is at most a period old
        assert pings.between(stuck[0] + 1.8, stuck[1]) == 0, pings.times
        await pings.wait_for_one_after(stuck[1])
    finally:
        watchdog.stop()
        pings.close()
        lag_task.cancel()
        await asyncio.gather(lag_task, return_exceptions=True)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("WATCHDOG=1 withheld" in m for m in messages) == 1, messages
    assert any("watchdog pings resume" in m for m in messages), messages


def test_the_process_environment_is_cleaned_for_children(
    manager: Manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", manager.address)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier()
    assert n.watchdog_timeout == 4.0
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ  # commands started by actions do not inherit them
    n.ready()
    assert manager.receive() == ["READY=1"]

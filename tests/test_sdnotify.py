"""sd_notify over a real AF_UNIX datagram socket, as systemd provides it."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batond.runtime.sdnotify import Notifier


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


def test_watchdog_interval_is_half_the_timeout() -> None:
    n = Notifier({"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "30000000"})
    assert n.watchdog_interval == 15.0


def test_watchdog_for_another_pid_is_not_ours() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}
    assert Notifier(env).watchdog_interval is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier(env).watchdog_interval == 1.0


def test_no_watchdog_without_watchdog_usec() -> None:
    assert Notifier({"NOTIFY_SOCKET": "/x"}).watchdog_interval is None


async def test_watchdog_pings_from_the_event_loop(manager: Manager) -> None:
    # 200 ms timeout -> a ping every 100 ms
    n = Notifier({"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "200000"})
    task = asyncio.create_task(n.watchdog())
    try:
        for _ in range(3):
            lines = await asyncio.to_thread(manager.receive)
            assert lines == ["WATCHDOG=1"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_blocked_loop_sends_no_pings(manager: Manager) -> None:
    n = Notifier({"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "100000"})
    task = asyncio.create_task(n.watchdog())
    await asyncio.to_thread(manager.receive)  # the first ping
    while not manager.nothing_pending():  # drain
        pass
    time.sleep(0.5)  # noqa: ASYNC251 - block the loop itself: what the watchdog must notice
    assert manager.nothing_pending()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_watchdog_returns_at_once_when_not_configured(manager: Manager) -> None:
    n = Notifier({"NOTIFY_SOCKET": manager.address})
    await asyncio.wait_for(n.watchdog(), 5)
    assert manager.nothing_pending()


def test_a_zero_watchdog_timeout_is_no_watchdog() -> None:
    # (a ping loop with interval 0 would spin the event loop)
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "0"}).watchdog_interval is None


def test_the_process_environment_is_cleaned_for_children(
    manager: Manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", manager.address)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier()
    assert n.watchdog_interval == 2.0
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        assert name not in os.environ  # commands started by actions do not inherit them
    n.ready()
    assert manager.receive() == ["READY=1"]

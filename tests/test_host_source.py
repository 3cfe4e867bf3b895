"""Host metrics (psutil) and the process watch with real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from batond.events import Event, Sample
from batond.intake.bus import Bus
from batond.intake.host import HostSource
from batond.intake.procwatch import ProcessWatch, process_names
from batond.load.config import HostConfig
from batond.metrics import Metrics
from support import wait_until

AGREED = {
    "cpu_percent",
    "memory_percent",
    "swap_percent",
    "load_1m",
    "load_5m",
    "load_15m",
    "disk_used_percent",
    "disk_read_bytes_per_s",
    "disk_write_bytes_per_s",
    "net_recv_bytes_per_s",
    "net_sent_bytes_per_s",
}


def unique(prefix: str = "bt") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def spawn(
    argv: list[str], procs: list[subprocess.Popen[bytes]], executable: str | None = None
) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(argv, executable=executable)
    procs.append(p)
    return p


def spawn_named(name: str, procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """A ``sleep`` whose argv[0] is ``name`` (like ``exec -a``)."""
    return spawn([name, "300"], procs, "/bin/sleep")


def wait_zombie(pid: int, within: float = 30.0) -> None:
    def zombie() -> bool:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"

    wait_until(zombie, within, f"{pid} to become a zombie", every=0.01)


@asynccontextmanager
async def watching(names: list[str], interval: float) -> AsyncIterator[tuple[ProcessWatch, Bus]]:
    metrics = Metrics(CollectorRegistry())
    bus = Bus(metrics)
    watch = ProcessWatch(names, "node-1", bus, metrics, interval=interval)
    started = asyncio.Event()
    task = asyncio.create_task(watch.run(started))
    await asyncio.wait_for(started.wait(), 30)
    try:
        yield watch, bus
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def next_event(bus: Bus, within: float = 30.0) -> Event:
    item, _ = await asyncio.wait_for(bus.get(), within)
    assert isinstance(item, Event)
    return item


def test_host_samples_have_the_agreed_names_and_host_label() -> None:
    metrics = Metrics(CollectorRegistry())
    source = HostSource(HostConfig(interval=1.0), "node-1", Bus(metrics), metrics)
    source.read()
    time.sleep(0.05)  # rates need two readings some time apart
    samples = source.read()
    names = {s.metric for s in samples}
    assert names <= AGREED
    assert AGREED - {"disk_used_percent"} <= names
    for s in samples:
        assert s.labels["host"] == "node-1" and s.source == "host"
        assert s.raw["metric"] == s.metric and s.raw["host"] == "node-1"
    for s in samples:
        if s.metric == "disk_used_percent":
            assert s.labels["mount"].startswith("/") and 0 <= s.value <= 100
        if s.metric.endswith("_per_s"):
            assert s.value >= 0


async def test_host_source_runs_and_samples_every_interval() -> None:
    metrics = Metrics(CollectorRegistry())
    bus = Bus(metrics)
    source = HostSource(HostConfig(interval=0.1), "node-1", bus, metrics)
    started = asyncio.Event()
    task = asyncio.create_task(source.run(started))
    try:
        await asyncio.wait_for(started.wait(), 30)
        seen: set[str] = set()
        while not AGREED - {"disk_used_percent"} <= seen:
            item, _ = await asyncio.wait_for(bus.get(), 30)
            assert isinstance(item, Sample)
            seen.add(item.metric)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    received = metrics.registry.get_sample_value("batond_events_received_total", {"source": "host"})
    assert received is not None and received >= len(seen)


def test_process_names() -> None:
    assert process_names("sleep", ["nginx", "300"]) == {"sleep", "nginx"}
    assert process_names("python3", ["/usr/bin/python3", "/opt/app/worker.py", "-v"]) == {
        "python3",
        "worker.py",
        "worker",
    }
    assert process_names("python3", ["python3", "-m", "http.server"]) == {"python3"}
    assert process_names("cat", ["cat", "nginx.conf"]) == {"cat"}  # not an interpreter


async def test_missing_process_at_start_is_exited_with_null_code() -> None:
    name = unique()
    async with watching([name], interval=60) as (_, bus):
        event = await next_event(bus)
    assert event.name == "process.exited"
    assert event.labels == {"host": "node-1", "name": name}
    assert event.raw["exit_code"] is None and event.raw["pid"] is None


async def test_kill_is_seen_at_once_not_at_the_next_scan(
    children: list[subprocess.Popen[bytes]],
) -> None:
    name = unique()
    child = spawn_named(name, children)
    await asyncio.sleep(0)  # nothing to wait for: the child exists once Popen returns
    async with watching([name], interval=60) as (watch, bus):
        assert watch.watched() == {child.pid: name}
        assert bus.depth() == 0  # running: no start-up exited event
        t0 = time.monotonic()
        child.send_signal(signal.SIGKILL)  # stays a zombie: we do not reap it
        event = await next_event(bus)
        latency = time.monotonic() - t0
    assert event.name == "process.exited"
    assert event.labels == {
        "host": "node-1",
        "name": name,
        "pid": str(child.pid),
        "exit_code": "-9",
    }
    assert event.raw["exit_code"] == -9
    assert latency < 10  # the scan interval is 60 s: only the pidfd can explain this
    assert child.wait(10) == -9  # the status was peeked, not reaped


async def test_exit_of_a_process_that_is_not_ours_has_null_code(
    children: list[subprocess.Popen[bytes]],
) -> None:
    name = unique()
    # bash is our child; the watched sleep is bash's child, and bash reaps it
    spawn(["bash", "-c", f"exec -a {name} sleep 300 & wait; sleep 300"], children)
    async with watching([name], interval=0.2) as (watch, bus):
        while not watch.watched():  # bash may not have forked yet at start
            event = await next_event(bus)
            if event.name == "process.started":
                break
        (pid,) = watch.watched()
        os.kill(pid, signal.SIGTERM)
        event = await next_event(bus)
        while event.name != "process.exited":
            event = await next_event(bus)
    assert event.labels["pid"] == str(pid)
    assert event.raw["exit_code"] is None and "exit_code" not in event.labels


async def test_new_process_of_a_watched_name_is_started(
    children: list[subprocess.Popen[bytes]],
) -> None:
    name = unique()
    async with watching([name], interval=0.2) as (_, bus):
        assert (await next_event(bus)).name == "process.exited"  # none at start
        child = spawn_named(name, children)
        event = await next_event(bus)
        assert event.name == "process.started"
        assert event.labels == {"host": "node-1", "name": name, "pid": str(child.pid)}
        child.kill()
        event = await next_event(bus)
        assert (event.name, event.labels["pid"]) == ("process.exited", str(child.pid))


async def test_interpreter_scripts_and_renamed_binaries_match(
    tmp_path: Path, children: list[subprocess.Popen[bytes]]
) -> None:
    script_name = unique("w")
    script = tmp_path / f"{script_name}.py"
    script.write_text("import time\ntime.sleep(300)\n")
    binary = tmp_path / unique("b")
    binary.symlink_to("/bin/sleep")
    py = spawn([sys.executable, str(script)], children)
    sl = spawn([str(binary), "300"], children)
    async with watching([script_name, binary.name], interval=60) as (watch, bus):
        assert watch.watched() == {py.pid: script_name, sl.pid: binary.name}
        assert bus.depth() == 0


async def test_zombie_counts_as_dead_at_start(children: list[subprocess.Popen[bytes]]) -> None:
    name = unique()
    child = spawn_named(name, children)
    child.kill()
    await asyncio.to_thread(wait_zombie, child.pid)
    async with watching([name], interval=60) as (watch, bus):
        event = await next_event(bus)
        assert watch.watched() == {}
    assert (event.name, event.raw["exit_code"]) == ("process.exited", None)

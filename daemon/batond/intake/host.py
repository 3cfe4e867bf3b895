"""Host metrics from psutil, every ``host.interval``, and the process watch.

Samples (all with label ``host`` = node, source ``host``): ``cpu_percent``,
``memory_percent``, ``swap_percent``, ``load_1m``, ``load_5m``, ``load_15m``,
``disk_used_percent`` (label ``mount``, real filesystems only),
``disk_read_bytes_per_s``, ``disk_write_bytes_per_s``, ``net_recv_bytes_per_s``,
``net_sent_bytes_per_s``. Rates need two readings, so they start with the second
interval. psutil blocks (disk usage of a hung NFS mount can take long), so each
reading runs in a worker thread and a slow one is skipped, not queued up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from batond.events import Sample
from batond.intake.bus import Bus
from batond.intake.procwatch import ProcessWatch
from batond.load.config import HostConfig
from batond.metrics import Metrics

__all__ = ["HostSource", "read_host"]

log = logging.getLogger("batond.host")


@dataclass(frozen=True, slots=True)
class _Counters:
    at: float  # monotonic
    disk_read: int
    disk_write: int
    net_recv: int
    net_sent: int


class HostSource:
    def __init__(
        self,
        cfg: HostConfig,
        node: str,
        bus: Bus,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cfg = cfg
        self._node = node
        self._bus = bus
        self._clock = clock
        self._previous: _Counters | None = None
        self.watch = ProcessWatch(
            cfg.processes, node, bus, metrics, interval=cfg.interval, clock=clock
        )

    @property
    def state(self) -> str:
        return "running"

    async def run(self, started: asyncio.Event) -> None:
        """Sample until cancelled; the process watch runs alongside."""
        psutil.cpu_percent(None)  # primes the counter: the first real reading is a delta
        async with asyncio.TaskGroup() as tg:
            watch_started = asyncio.Event()
            tg.create_task(self.watch.run(watch_started))
            await watch_started.wait()
            started.set()
            log.info("host source: sampling every %.3gs as host %s", self._cfg.interval, self._node)
            while True:
                await asyncio.sleep(self._cfg.interval)
                try:
                    samples = await asyncio.to_thread(self.read)
                except Exception:  # psutil surprises must not end host monitoring
                    log.exception("host metrics reading failed")
                    continue
                for sample in samples:
                    self._bus.offer(sample)

    def read(self) -> list[Sample]:
        """One reading of every host metric (blocking: run it in a thread)."""
        now = self._clock()
        values, counters = read_host()
        previous, self._previous = self._previous, counters
        out = [self._sample(name, value, now) for name, value in values]
        for mount, used in _disk_usage():
            out.append(self._sample("disk_used_percent", used, now, mount=mount))
        if previous is not None and counters.at > previous.at:
            dt = counters.at - previous.at
            for name, cur, old in (
                ("disk_read_bytes_per_s", counters.disk_read, previous.disk_read),
                ("disk_write_bytes_per_s", counters.disk_write, previous.disk_write),
                ("net_recv_bytes_per_s", counters.net_recv, previous.net_recv),
                ("net_sent_bytes_per_s", counters.net_sent, previous.net_sent),
            ):
                out.append(self._sample(name, max(0, cur - old) / dt, now))
        return out

    def _sample(self, metric: str, value: float, now: float, **extra: str) -> Sample:
        labels = {"host": self._node, **extra}
        raw: dict[str, object] = {"metric": metric, "value": value, "ts": now, **labels}
        return Sample(metric, float(value), now, labels, raw, "host")


def read_host() -> tuple[list[tuple[str, float]], _Counters]:
    """Gauges (cpu, memory, swap, load) and the I/O counters that rates come from."""
    load1, load5, load15 = os.getloadavg()
    values = [
        ("cpu_percent", psutil.cpu_percent(None)),
        ("memory_percent", psutil.virtual_memory().percent),
        ("swap_percent", psutil.swap_memory().percent),
        ("load_1m", load1),
        ("load_5m", load5),
        ("load_15m", load15),
    ]
    disk = psutil.disk_io_counters()
    net = psutil.net_io_counters()
    counters = _Counters(
        time.monotonic(),
        disk.read_bytes if disk is not None else 0,
        disk.write_bytes if disk is not None else 0,
        net.bytes_recv if net is not None else 0,
        net.bytes_sent if net is not None else 0,
    )
    return values, counters


def _disk_usage() -> list[tuple[str, float]]:
    """Used percent of each mounted real filesystem (psutil's physical devices)."""
    seen: set[str] = set()
    out: list[tuple[str, float]] = []
    for part in psutil.disk_partitions(all=False):
        if part.mountpoint in seen or part.fstype in ("squashfs", "overlay", "tmpfs"):
            continue
        seen.add(part.mountpoint)
        try:
            out.append((part.mountpoint, psutil.disk_usage(part.mountpoint).percent))
        except OSError:
            continue  # gone, or not ours to read
    return out

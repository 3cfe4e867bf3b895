"""Process exit -> ``process.exited`` on the bus: latency of the pidfd watch.

Each run spawns one process of a watched name, starts a watch (scan interval
60 s, so scans play no part), kills the process with SIGKILL and takes the
time from the kill to the event's arrival on the bus (the bus stamps each item
with its monotonic arrival time).

Run: .venv/bin/python bench/bench_procwatch.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid

from prometheus_client import CollectorRegistry

from batond.events import Event
from batond.intake.bus import Bus
from batond.intake.procwatch import ProcessWatch
from batond.metrics import Metrics
from headline import emit


def spawn(name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([name, "300"], executable="/bin/sleep")


async def one_run(name: str) -> float:
    """Seconds from SIGKILL to process.exited on the bus, for one watched process."""
    child = spawn(name)
    metrics = Metrics(CollectorRegistry())
    bus = Bus(metrics)
    watch = ProcessWatch([name], "bench", bus, metrics, interval=60)
    started = asyncio.Event()
    task = asyncio.create_task(watch.run(started))
    try:
        await started.wait()
        assert watch.watched() == {child.pid: name}
        t0 = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        item, arrived = await bus.get()
        assert isinstance(item, Event) and item.name == "process.exited"
        return arrived - t0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        child.wait()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    name = f"bw{uuid.uuid4().hex[:10]}"
    ms = sorted([await one_run(name) * 1000 for _ in range(args.runs)])
    print(f"python {sys.version.split()[0]}; SIGKILL -> process.exited on bus; {args.runs} runs")
    p50, p99 = statistics.median(ms), ms[int(len(ms) * 0.99) - 1]
    print(
        f"p50_ms={p50:.3f} p90_ms={ms[int(len(ms) * 0.9)]:.3f} p99_ms={p99:.3f} max_ms={ms[-1]:.3f}"
    )
    emit("procwatch", {"runs": args.runs, "p50 ms": round(p50, 3), "p99 ms": round(p99, 3)})


if __name__ == "__main__":
    asyncio.run(main())

#!/usr/bin/env python3
"""Soak: a real ``batond run`` under steady MQTT load with decisions and runs.

    .venv/bin/python bench/soak.py [--minutes 10] [--warmup 5]
        [--rate 20000] [--batch 100] [--hosts 100]

A private Mosquitto; batond subscribed to ``soak/#``; a publisher in this
process sends ``--rate`` samples/s as JSON arrays of ``--batch`` samples, spread
evenly over each second. Each of ``--hosts`` hosts spikes above the rule's
threshold once every 10 s, so the rule decides and a playbook (``exec true``)
runs about ``hosts / 10`` times a second. Every second the daemon's RSS, open
fds and ``/metrics`` are read.

The load runs ``--warmup`` minutes before the ``--minutes`` measured. A cold
daemon grows into stores that are bounded by design and fill under load: the
journal's SQLite page cache (``cache_size``, 2 MiB, full after about five
minutes at this rate), the anomaly models' histories, and the high-water mark
of the 10k-item input queue, whose memory the allocator keeps after a backlog.
A leak keeps growing after those are full; the warm-up tells the two apart.

Printed: RSS, fds and runs once a minute (the curve); then for the first and
the last minute of the measured period (or tenth, for short runs): RSS, fds,
the p99 of ``batond_loop_lag_seconds`` and the p99 of
``batond_event_to_action_seconds`` (from its histogram's growth in that
window); then the growth from the end of the warm-up and, for reference, from
the cold start. Goals: RSS growth over the measured period at most 5 %, no fd
growth. Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import aiomqtt
import orjson
import psutil
from prometheus_client.parser import text_string_to_metric_families

from daemon_proc import DaemonProcess, write_config
from mqtt_broker import Mosquitto
from support import free_port

RULES = """
rules:
  - name: hot
    match: {metric: load}
    when: value > 90
    group_by: [host]
    run: fix
playbooks:
  - name: fix
    steps:
      - {name: noop, action: exec, with: {argv: ["true"]}, timeout: 10s}
"""


_LOST = ("batond_events_dropped_total", "batond_events_rejected_total")


@dataclass
class Tick:
    at: float
    rss: int
    fds: int
    lag: float
    buckets: dict[float, float] = field(default_factory=dict)
    received: float = 0.0
    dropped: float = 0.0  # queue full, or rejected as invalid
    runs: float = 0.0
    cpu: float = 0.0  # the daemon's CPU seconds so far


def scrape(daemon: DaemonProcess, proc: psutil.Process, t0: float) -> Tick:
    tick = Tick(time.monotonic() - t0, proc.memory_info().rss, proc.num_fds(), 0.0)
    times = proc.cpu_times()
    tick.cpu = times.user + times.system
    for family in text_string_to_metric_families(daemon.get("/metrics", timeout=30).text):
        for s in family.samples:
            if s.name == "batond_loop_lag_seconds":
                tick.lag = s.value
            elif s.name == "batond_event_to_action_seconds_bucket":
                tick.buckets[float(s.labels["le"])] = s.value
            elif s.name == "batond_events_received_total" and s.labels.get("source") == "mqtt":
                tick.received = s.value
            elif s.name in _LOST and s.labels.get("source") == "mqtt":
                tick.dropped += s.value
            elif s.name == "batond_runs_total":
                tick.runs += s.value
    return tick


def p99_between(a: Tick, b: Tick) -> float | None:
    """The upper bound of the bucket holding the 99th percentile of what arrived in between."""
    grown = {le: b.buckets.get(le, 0) - a.buckets.get(le, 0) for le in b.buckets}
    total = grown.get(float("inf"), 0)
    if total <= 0:
        return None
    for le in sorted(grown):
        if grown[le] >= 0.99 * total:
            return le
    return None


async def publish(port: int, rate: int, batch: int, hosts: int, until: float) -> int:
    sent = 0
    per_second = max(1, rate // batch)
    async with aiomqtt.Client("127.0.0.1", port, max_queued_outgoing_messages=0) as client:
        start = time.monotonic()
        while time.monotonic() < until:
            second = int(time.monotonic() - start)
            for i in range(per_second):
                samples = []
                for j in range(batch):
                    host = (i * batch + j) % hosts
                    spike = second % 10 == host % 10 and i < hosts // batch + 1
                    samples.append(
                        {"metric": "load", "value": 95 if spike else 10, "host": f"h{host}"}
                    )
                await client.publish("soak/load", orjson.dumps(samples), qos=0)
                sent += batch
                # spread over the second, as a fleet's hosts report: not one burst a second
                # (a burst of 20k samples overflows the 10k input queue: counted, logged)
                due = start + second + (i + 1) / per_second
                await asyncio.sleep(max(0.0, due - time.monotonic()))
    return sent


def report(name: str, window: list[Tick]) -> tuple[float, int]:
    a, b = window[0], window[-1]
    lag99 = statistics.quantiles([t.lag for t in window], n=100)[98] if len(window) > 1 else a.lag
    e2a = p99_between(a, b)
    span = max(1e-9, b.at - a.at)
    rate = (b.received - a.received) / span
    print(
        f"{name:<6} t={a.at:6.0f}-{b.at:4.0f}s rss={b.rss / 1e6:7.1f} MB fds={b.fds:4d} "
        f"loop_lag_p99={lag99:.3f}s event_to_action_p99<={e2a}s in={rate:,.0f}/s "
        f"dropped={(b.dropped - a.dropped) / span:,.0f}/s cpu={(b.cpu - a.cpu) / span:.2f} core"
    )
    return b.rss, b.fds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0, help="measured, after the warm-up")
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes of load before")
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--hosts", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        port = free_port()
        # The rate windows hold a timestamp per run within `per`, state by design that each
        # save of the rule state writes: with `per: 1h` they would fill for an hour (36k
        # timestamps at 10 runs/s) and pass for growth; a minute's window fills in the warm-up.
        extra = (
            f"mqtt:\n  url: mqtt://127.0.0.1:{broker.port}\n"
            '  subscribe: [{topic: "soak/#", format: json, qos: 0}]\n'
            "governor:\n  max_concurrent_runs: 8\n  max_runs: {count: 1000000, per: 1m}\n"
            "  per_target: {count: 1000000, per: 1m}\n  max_targets_fraction: 1.0\n"
        )
        daemon = DaemonProcess(write_config(Path(tmp), port, rules=RULES, extra=extra), port)
        try:
            daemon.wait_ready()
            ticks = asyncio.run(soak(daemon, broker.port, args))
        finally:
            daemon.stop(timeout=120)
    return verdict(ticks, args.warmup * 60)


def verdict(ticks: list[Tick], warmup_s: float) -> int:
    for tick in ticks[::60]:
        mb = tick.rss / 1e6
        print(f"  t={tick.at:5.0f}s rss={mb:6.1f} MB fds={tick.fds} runs={tick.runs:.0f}")
    measured = [t for t in ticks if t.at >= warmup_s]
    window = max(2, min(60, len(measured) // 10))
    rss0, fds0 = report("start", measured[:window])
    rss1, fds1 = report("end", measured[-window:])
    growth = (rss1 - rss0) / rss0 * 100
    cold = ticks[1].rss  # the first tick sees a daemon not yet loaded
    print(
        f"RSS growth {growth:+.1f} % over the measured period (goal <= 5 %), "
        f"{(rss1 - cold) / cold * 100:+.1f} % from the cold start ({cold / 1e6:.1f} MB); "
        f"fds {fds0} -> {fds1}; runs {ticks[-1].runs:.0f}"
    )
    return 0 if growth <= 5 and fds1 <= fds0 + 2 else 1


async def soak(daemon: DaemonProcess, broker_port: int, args: argparse.Namespace) -> list[Tick]:
    proc = psutil.Process(daemon.pid)
    t0 = time.monotonic()
    until = t0 + (args.warmup + args.minutes) * 60
    publisher = asyncio.create_task(publish(broker_port, args.rate, args.batch, args.hosts, until))
    ticks: list[Tick] = []
    loop = asyncio.get_running_loop()
    while not publisher.done():
        ticks.append(await loop.run_in_executor(None, scrape, daemon, proc, t0))
        await asyncio.sleep(1.0)
    sent = await publisher
    print(f"published {sent:,} samples in {args.warmup + args.minutes:g} min")
    return ticks


if __name__ == "__main__":
    sys.exit(main())

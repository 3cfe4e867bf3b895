"""The anomaly model at fleet scale: memory and time per series, loop stalls.

For each fleet size (default 1k, 10k and 100k series of the built-in model,
one ``cpu_percent`` series per host), in a fresh process:

- feeds every series through its warm-up and first fit (the fits run as
  training jobs, inline here), then ``--rounds`` more samples per series;
- **RSS per series**: the process's resident set after the feed minus before
  the first series, divided by the series (and the 200k-series projection);
  the model's own estimate (``series_bytes``, what the budget counts) beside it;
- **µs per sample**: ``ModelSet.observe`` over the timed rounds, every series
  once a round (sample objects built beforehand, training excluded), as CPU
  time of the process (what it costs; robust to other load on the machine)
  and as wall time;
- **loop stalls**: the same model set on an asyncio loop as the daemon runs it
  (samples in batches of 50 between awaits, made as they are fed; every 0.1 s
  ``training_jobs``, each job in a worker thread, its apply back on the loop;
  series state frozen out of the collector's walks as the daemon's engine
  loop does, ``--no-freeze`` to see what that saves) with a ticker recording
  the longest time the loop did not run it.  Series drift so their range
  moves and retraining (``retrain`` 60 s of event time) really happens.

    .venv/bin/python bench/bench_anomaly_fleet.py [--series 1000,10000,100000] [--rounds 40]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import replace

from batond.anomaly import DEFAULT_SPEC, ModelSet
from batond.anomaly.modelset import series_bytes
from batond.events import Sample
from batond.runtime.heap import CHECK_EVERY_INPUTS, FREEZE_EVERY_SERIES, LongLivedHeap
from headline import emit

SPEC = replace(DEFAULT_SPEC, name="fleet", match_metrics=("cpu_percent",), retrain=60.0)
STEP = 5.0  # seconds of event time between a series' samples


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def value(k: int, i: int) -> float:
    """Host k at round i: a daily-ish wave, a slow drift (moves the range), some jitter."""
    phase = (k * 7919) % 288
    jitter = ((k * 31 + i * 17) % 23) / 23.0
    return 40.0 + 20.0 * math.sin(2 * math.pi * (i + phase) / 288) + 0.01 * i + 3.0 * jitter


def round_samples(
    n: int, i: int, hosts: list[dict[str, str]], lo: int = 0, hi: int | None = None
) -> list[Sample]:
    ts = 1.7e9 + i * STEP
    return [Sample("cpu_percent", value(k, i), ts, hosts[k]) for k in range(lo, hi or n)]


def feed_round(models: ModelSet, samples: list[Sample], heap: LongLivedHeap) -> None:
    for k, sample in enumerate(samples, 1):
        models.observe(sample)
        if not k % CHECK_EVERY_INPUTS:
            heap.settle()  # as the daemon's engine loop does
    for job in models.training_jobs(samples[0].ts, limit=len(samples)):
        job()()


def measure(n: int, rounds: int, freeze: bool = True) -> dict[str, float]:
    hosts = [{"host": f"host-{k:06d}"} for k in range(n)]
    models = ModelSet([SPEC], max_series=10**7, max_bytes_total=1 << 40)
    models.prepare()
    gc.collect()
    gc.freeze()  # what start-up made, as the daemon does after READY
    heap = LongLivedHeap(models.series_count, FREEZE_EVERY_SERIES if freeze else 1 << 62)
    base = rss()
    warm = SPEC.warmup + 20
    for i in range(warm):
        feed_round(models, round_samples(n, i, hosts), heap)
    gc.collect()
    held = rss() - base
    elapsed = cpu = 0.0
    for i in range(warm, warm + rounds):
        samples = round_samples(n, i, hosts)
        started, started_cpu = time.perf_counter(), time.process_time()
        for sample in samples:
            models.observe(sample)
        elapsed += time.perf_counter() - started
        cpu += time.process_time() - started_cpu
        for job in models.training_jobs(samples[0].ts, limit=len(samples)):
            job()()
    stall, longest, longest_cpu, jobs = asyncio.run(stalls(models, n, hosts, warm + rounds, rounds))
    return {
        "series": n,
        "rss_per_series": held / n,
        "estimate": series_bytes(SPEC),
        "us_per_sample": elapsed / (n * rounds) * 1e6,
        "cpu_us_per_sample": cpu / (n * rounds) * 1e6,
        "max_stall_ms": stall * 1e3,
        "max_training_ms": longest * 1e3,
        "max_training_cpu_ms": longest_cpu * 1e3,
        "retrain_jobs": jobs,
    }


async def stalls(
    models: ModelSet, n: int, hosts: list[dict[str, str]], first: int, rounds: int
) -> tuple[float, float, float, int]:
    """Longest loop stall while feeding ``rounds`` rounds and training as the daemon does.

    Two figures: the ticker's longest gap (anything: the feed's batches, the
    GIL held by a worker's fit, the OS descheduling the process on a loaded
    machine), and the longest single piece of training work on the loop (a
    ``training_jobs`` call or an apply), as the loop thread's CPU time and wall.
    """
    worst = 0.0
    longest = longest_cpu = 0.0
    jobs = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    async def housekeeping() -> None:
        nonlocal jobs, longest, longest_cpu
        while not done.is_set():
            started, cpu = time.perf_counter(), time.thread_time()
            due = models.training_jobs(clock)
            longest = max(longest, time.perf_counter() - started)
            longest_cpu = max(longest_cpu, time.thread_time() - cpu)
            for job in due:
                apply = await asyncio.to_thread(job)
                started, cpu = time.perf_counter(), time.thread_time()
                apply()
                longest = max(longest, time.perf_counter() - started)
                longest_cpu = max(longest_cpu, time.thread_time() - cpu)
                jobs += 1
            await asyncio.sleep(0.1)  # event time runs ahead of the wall clock here

    clock = 1.7e9 + first * STEP
    tasks = [asyncio.create_task(ticker()), asyncio.create_task(housekeeping())]
    for i in range(first, first + rounds):
        clock = 1.7e9 + i * STEP
        # batches of 50 made as they are fed, as MQTT messages arrive: a whole round
        # held as one list would survive into the collector's oldest generation
        for start in range(0, n, 50):
            for sample in round_samples(n, i, hosts, start, start + 50):
                models.observe(sample)
            await asyncio.sleep(0)
    done.set()
    await asyncio.gather(*tasks)
    return worst, longest, longest_cpu, jobs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", default="1000,10000,100000")
    ap.add_argument("--rounds", type=int, default=40, help="timed rounds per size")
    ap.add_argument(
        "--no-freeze", action="store_true", help="series not frozen (what freezing saves)"
    )
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: one size
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.rounds, not args.no_freeze)))
        return 0
    print(f"model: built-in default (history {SPEC.params.history}), retrain 60 s event time")
    figures: dict[str, float] = {}
    for n in (int(x) for x in args.series.split(",")):
        cmd = [sys.executable, __file__, "--one", str(n), "--rounds", str(args.rounds)]
        cmd += ["--no-freeze"] if args.no_freeze else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{n:>7} series: RSS {r['rss_per_series'] / 1024:5.1f} KiB/series"
            f" (estimate {r['estimate'] / 1024:.1f} KiB; 200k series ->"
            f" {r['rss_per_series'] * 200_000 / 1024**3:.2f} GiB),"
            f" observe {r['cpu_us_per_sample']:.2f} us/sample CPU"
            f" ({r['us_per_sample']:.2f} wall),"
            f" longest training step on the loop {r['max_training_cpu_ms']:.2f} ms CPU"
            f" ({r['max_training_ms']:.2f} wall)"
            f" ({r['retrain_jobs']} jobs), longest loop gap {r['max_stall_ms']:.1f} ms",
            flush=True,
        )
        figures[f"{n} series: KiB/series RSS"] = round(r["rss_per_series"] / 1024, 1)
        figures[f"{n} series: observe us/sample CPU"] = round(r["cpu_us_per_sample"], 2)
        figures[f"{n} series: longest training step ms CPU"] = round(r["max_training_cpu_ms"], 2)
    emit("anomaly fleet", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())

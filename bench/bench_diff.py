#!/usr/bin/env python3
"""What-if replay benchmark: ``batond replay --diff`` over a recorded day.

    .venv/bin/python bench/bench_diff.py [--hosts 100] [--metrics 20] [--step 10] [--hours 24]

Generates (once; kept in bench/out/, not committed) a day of input as the daemon's
recorder writes it: HOSTS hosts x METRICS metrics every STEP seconds (the defaults:
17,280,000 samples, about 1.3 GB), with excursions above 90 and 95 so that rules
fire. Then runs ``batond replay --diff OLD NEW FILE --json`` as a subprocess (process
start, imports and rule loading included) and reports wall time and CPU time (user +
system of the child): the machine may be shared, so CPU time is the steadier figure,
and the goal is judged on it (both are printed, with the load average before the run).
OLD is a host rule set like rules/host.yaml (five threshold rules, ``for:`` and
cooldowns); NEW raises two thresholds from 90 to 95. A second run diffs OLD against
itself (``--same``) and must find no difference. Goal: the diff of a day in under 90 s
(scaled for ``--hours``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from headline import emit

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
BATOND = Path(sys.executable).with_name("batond")
START = 1767225600  # 2026-01-01T00:00:00Z
GOAL_S = 90.0
METRICS = [
    "cpu_percent", "memory_percent", "swap_percent", "load_5m", "disk_used_percent",
    "load_1m", "load_15m", "disk_read_bytes_per_s", "disk_write_bytes_per_s",
    "net_recv_bytes_per_s", "net_sent_bytes_per_s", "net_errors", "processes", "threads",
    "open_files", "tcp_connections", "context_switches", "interrupts",
    "temperature_celsius", "uptime_seconds",
]  # fmt: skip

OLD_RULES = """
rules:
  - {name: disk-almost-full, match: {metric: disk_used_percent}, when: value > 90, for: 5m,
     group_by: [host, mount], cooldown: 30m, run: record}
  - {name: memory-pressure, match: {metric: memory_percent}, when: value > 95, for: 5m,
     cooldown: 30m, run: record}
  - {name: swap-heavy, match: {metric: swap_percent}, when: value > 80, for: 10m,
     cooldown: 1h, run: record}
  - {name: load-high, match: {metric: load_5m}, when: value > 16, for: 10m, cooldown: 30m,
     run: record}
  - {name: cpu-hot, match: {metric: cpu_percent}, when: value > 90, for: 2m, cooldown: 1h,
     run: record}
playbooks:
  - name: record
    steps: [{name: ps, action: exec, with: {argv: [ps, -e]}}]
"""
NEW_RULES = OLD_RULES.replace("value > 90, for: 5m", "value > 95, for: 5m").replace(
    "value > 90, for: 2m", "value > 95, for: 2m"
)
#: metric -> (normal low, normal high, excursion low, excursion high)
RANGES = {
    "cpu_percent": (5.0, 60.0, 91.0, 99.0),
    "memory_percent": (30.0, 80.0, 93.0, 99.0),
    "swap_percent": (0.0, 20.0, 81.0, 95.0),
    "load_5m": (0.1, 8.0, 16.5, 30.0),
    "disk_used_percent": (40.0, 85.0, 91.0, 99.0),
}


def _episodes(hosts: int, ticks: int, step: int, rnd: random.Random) -> dict[int, list[Any]]:
    """tick -> [(host, metric index, value)]: a few excursions per host and rule metric."""
    out: dict[int, list[Any]] = {}
    for h in range(hosts):
        for mi, metric in enumerate(METRICS[:5]):
            lo, hi = RANGES[metric][2:]
            for _ in range(rnd.randint(0, 3)):
                first = rnd.randrange(ticks)
                length = rnd.randint(60, 1500) // step  # 1 to 25 minutes
                level = rnd.uniform(lo, hi)
                for t in range(first, min(ticks, first + length)):
                    out.setdefault(t, []).append((h, mi, level + rnd.uniform(-0.5, 0.5)))
    return out


def generate(path: Path, hosts: int, metrics: int, step: int, hours: float) -> int:
    """The recorded day as JSON lines (what journal.record writes); the sample count."""
    rnd = random.Random(15)
    ticks = int(hours * 3600) // step
    prefixes = []
    for h in range(hosts):
        row = []
        for m in METRICS[:metrics]:
            extra = ',"mount":"/"' if m == "disk_used_percent" else ""
            lo, hi = RANGES.get(m, (0.0, 1000.0, 0, 0))[:2]
            row.append((f'{{"metric":"{m}","host":"host-{h:03d}"{extra},"value":'.encode(), lo, hi))
        prefixes.append(row)
    excursions = _episodes(hosts, ticks, step, rnd)
    uniform = rnd.uniform
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        for t in range(ticks):
            ts = START + t * step
            values = [[uniform(lo, hi) for _, lo, hi in row] for row in prefixes]
            for h, mi, v in excursions.get(t, ()):
                if mi < metrics:
                    values[h][mi] = v
            f.write(
                b"".join(
                    b'%s%.2f,"ts":%d}\n' % (pre, v, ts)
                    for row, vals in zip(prefixes, values, strict=True)
                    for (pre, _, _), v in zip(row, vals, strict=True)
                )
            )
    tmp.rename(path)
    return ticks * hosts * metrics


def diff_once(old: Path, new: Path, data: Path) -> tuple[float, float, str, str]:
    """(wall s, CPU s of the child, stdout, last stderr line)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [str(BATOND), "replay", "--diff", str(old), str(new), str(data), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout, done.stderr.splitlines()[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--metrics", type=int, default=20, choices=range(5, 21), metavar="5..20")
    ap.add_argument("--step", type=int, default=10, help="seconds between samples")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--same", action="store_true", help="also diff OLD against itself")
    a = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    data = OUT / f"diff-day-{a.hosts}x{a.metrics}x{a.step}s-{a.hours:g}h.jsonl"
    if not data.exists():
        t0 = time.perf_counter()
        n = generate(data, a.hosts, a.metrics, a.step, a.hours)
        print(f"generated {data.name}: {n:,} samples in {time.perf_counter() - t0:.0f} s")
    samples = a.hosts * a.metrics * int(a.hours * 3600) // a.step
    old, new = OUT / "diff-old.yaml", OUT / "diff-new.yaml"
    old.write_text(OLD_RULES)
    new.write_text(NEW_RULES)
    load = os.getloadavg()[0]
    wall, cpu, stdout, summary = diff_once(old, new, data)
    changes: dict[str, int] = {}
    for line in stdout.splitlines():
        change = json.loads(line)["change"]
        changes[change] = changes.get(change, 0) + 1
    goal = GOAL_S * a.hours / 24  # the goal is for a day
    print(f"input: {samples:,} samples ({data.stat().st_size / 1e9:.2f} GB); {os.cpu_count()} CPUs")
    print(f"load average before: {load:.1f} (a shared machine: wall time includes waiting)")
    print(f"replay --diff:   wall {wall:.1f} s, CPU {cpu:.1f} s (goal: under {goal:.0f} s)")
    print(f"  {samples / wall:,.0f} samples/s wall, {samples / cpu:,.0f} samples/s CPU")
    print(f"  differences: {changes}")
    print(f"  replay's own line: {summary}")
    figures: dict[str, object] = {
        "samples": samples,
        "diff wall s": round(wall, 1),
        "diff CPU s": round(cpu, 1),
        "load average": round(load, 1),
        "differences": sum(changes.values()),
    }
    print(
        f"goal: CPU time {'met' if cpu < goal else 'MISSED'}, "
        f"wall time {'met' if wall < goal else 'missed'}"
    )
    # judged on CPU time: on a shared machine the wall time measures the other load too
    ok = cpu < goal and summary.startswith(f"events={samples} ")
    if a.same:
        wall2, cpu2, stdout2, summary2 = diff_once(old, old, data)
        print(f"OLD against OLD: wall {wall2:.1f} s, CPU {cpu2:.1f} s; {summary2}")
        figures["same-rules differences"] = len(stdout2.splitlines())
        ok = ok and not stdout2
    print("goal met" if ok else "GOAL MISSED")
    emit("diff", figures)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

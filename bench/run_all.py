"""Run every benchmark of bench/ and print one table of their headline figures.

    .venv/bin/python bench/run_all.py [--full] [--only NAME ...]   (also: make bench)

Quick settings by default: fewer runs, shorter streams, smaller backlogs, so
the whole set takes a few minutes on 2 cores; the figures are the same kind
but noisier. ``--full`` uses the settings the README's performance table was
measured with. Each benchmark runs as its own process, as the README's
commands do; its output goes to the terminal as it comes, and its last line
(``BENCH-HEADLINE``, see bench/headline.py) feeds the table. A benchmark that
cannot run here (not root, data missing) or fails gets a row that says so,
and the exit status is 1 when one failed. A ``bench_*.py`` not listed in
BENCHES still runs, with its own defaults.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headline import parse

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared"
TIMEOUT_S = 3600


def _root() -> str | None:
    return None if os.geteuid() == 0 else "needs root"


def _shared(name: str) -> Callable[[], str | None]:
    def check() -> str | None:
        return None if (SHARED / name).exists() else f"{SHARED / name} is missing"

    return check


def _restart_args(kills: int) -> Callable[[], list[str]]:
    """monit is compared only where it is installed (the bench would apt-get it otherwise)."""

    def args() -> list[str]:
        only = [] if shutil.which("monit") else ["--only", "batond"]
        return ["--kills", str(kills), *only]

    return args


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    quick: list[str] | Callable[[], list[str]]
    full: list[str] | Callable[[], list[str]] = field(default_factory=list)
    needs: Callable[[], str | None] = lambda: None

    def args(self, full: bool) -> list[str]:
        chosen = self.full if full else self.quick
        return chosen() if callable(chosen) else list(chosen)


BENCHES = [
    Bench("startup", "bench_startup.py", ["--runs", "5"], ["--runs", "10"]),
    Bench("rules", "bench_rules.py", ["--repeat", "1"], ["--repeat", "3"], _shared("workload")),
    Bench("mqtt", "bench_mqtt.py", ["--messages", "20000", "--batch-messages", "1000"]),
    Bench(
        "mqtt, plain client",
        "bench_mqtt.py",
        ["--messages", "20000", "--batch-messages", "1000", "--client-path", "plain"],
        ["--client-path", "plain"],
    ),
    Bench(
        "mqtt, ack on receipt",
        "bench_mqtt.py",
        ["--messages", "20000", "--batch-messages", "1000", "--ack", "received"],
        ["--ack", "received"],
    ),
    Bench(
        "ack after the decision",
        "bench_ack.py",
        ["--messages", "50000", "--requests", "500", "--repeat", "1"],
    ),
    Bench("restart", "bench_restart.py", _restart_args(10), _restart_args(50), _root),
    Bench("runner", "bench_runner.py", ["--seconds", "3"]),
    Bench("daemon path", "bench_daemon_path.py", ["--seconds", "3"], ["--seconds", "10"]),
    Bench("nab", "bench_nab.py", [], [], _shared("nab-data")),
    Bench("nab cv", "bench_nab_cv.py", [], [], _shared("nab-data")),
    Bench(
        "anomaly fleet",
        "bench_anomaly_fleet.py",
        ["--series", "1000,10000", "--rounds", "10"],
        ["--series", "1000,10000,100000", "--rounds", "20"],
    ),
    Bench("smd host", "bench_smd_host.py", [], [], _shared("smd-data")),
    Bench("smd backtest host", "bench_smd_backtest.py", [], [], _shared("smd-data")),
    Bench(
        "journal",
        "bench_journal.py",
        ["--runs", "500", "--inputs", "50000", "--engine-inputs", "20000"],
    ),
    Bench("procwatch", "bench_procwatch.py", ["--runs", "50"]),
    Bench("orchestration", "bench_orchestration.py", ["--runs", "100"], ["--runs", "500"]),
    Bench("replay --diff", "bench_diff.py", ["--hours", "2"], ["--same"]),
    Bench("fleet agent", "bench_fleet_agent.py", ["--rounds", "20"], ["--rounds", "50"]),
    Bench("fleet central", "bench_fleet_central.py", ["--hosts", "2000", "--seconds", "10"], []),
    Bench(
        "fleet, 1 2 4 instances",
        "bench_fleet.py",
        ["--instances", "1,2", "--hosts", "2000", "--seconds", "5"],
        [],
    ),
    Bench("fleet agents", "bench_fleet_agents.py", ["--hosts", "2000"], []),
]


@dataclass
class Row:
    bench: str
    command: str
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None  # cannot run here: not a failure
    problem: str | None = None  # ran and failed, or missed its goal (exit status 1)


def every_bench() -> list[Bench]:
    """BENCHES, then any benchmark file the list does not know (with its own defaults)."""
    known = {b.script for b in BENCHES}
    extra = [
        Bench(p.stem.removeprefix("bench_"), p.name, [])
        for p in sorted(HERE.glob("bench_*.py"))
        if p.name not in known
    ]
    return [b for b in BENCHES if (HERE / b.script).exists()] + extra


def run_one(bench: Bench, full: bool) -> Row:
    args = bench.args(full)
    row = Row(bench.name, " ".join([f"bench/{bench.script}", *args]))
    row.skipped = bench.needs()
    if row.skipped is not None:
        print(f"== {bench.name}: skipped, {row.skipped}", flush=True)
        return row
    print(f"== {bench.name}: {row.command}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / bench.script), *args],
            stdout=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        row.problem = f"no result within {TIMEOUT_S} s"
        return row
    finally:
        row.seconds = time.monotonic() - started
    print(done.stdout, end="", flush=True)
    headlines = parse(done.stdout)
    if done.returncode != 0:  # a crash, or a goal the benchmark checks was missed
        row.problem = f"exit status {done.returncode}"
    if headlines:
        row.figures = headlines[-1]["figures"]
    elif row.problem is None:
        row.problem = "no BENCH-HEADLINE line"
    return row


def table(rows: list[Row]) -> str:
    """One Markdown table: a line per figure, the command on each benchmark's first line."""
    lines = ["| benchmark | figure | value | command (seconds) |", "| --- | --- | --- | --- |"]
    for row in rows:
        cells = [(figure, _shown(value)) for figure, value in row.figures.items()]
        if row.skipped is not None:
            cells.append((f"skipped: {row.skipped}", ""))
        if row.problem is not None:
            cells.append((f"**{row.problem}** (its output is above)", ""))
        for i, (figure, value) in enumerate(cells):
            name, command = (
                (row.bench, f"`{row.command}` ({row.seconds:.0f} s)") if i == 0 else ("", "")
            )
            lines.append(f"| {name} | {figure} | {value} | {command} |")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    return (
        f"{value:,}"
        if isinstance(value, int | float) and not isinstance(value, bool)
        else str(value)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the README's settings (slower)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="these benchmarks only")
    args = parser.parse_args()
    benches = [b for b in every_bench() if not args.only or b.name in args.only]
    if args.only and len(benches) != len(args.only):
        names = ", ".join(b.name for b in every_bench())
        parser.error(f"unknown benchmark among {args.only}; known: {names}")
    started = time.monotonic()
    rows = [run_one(bench, args.full) for bench in benches]
    settings = "full (the README's)" if args.full else "quick (--full for the README's)"
    print(f"\n## batond benchmarks: {settings} settings, {os.cpu_count()} CPUs, ", end="")
    print(f"python {sys.version.split()[0]}, {time.monotonic() - started:.0f} s in all, ", end="")
    print(f"load average {os.getloadavg()[0]:.2f} at the end\n")
    print(table(rows))
    return 1 if any(row.problem is not None for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Journal and recorder costs.

    .venv/bin/python bench/bench_journal.py [--runs 2000] [--inputs 200000]

Prints:
- the write-ahead latency the runner pays before a first action
  (``run_created`` + ``step_started``, awaited from the event loop), idle and
  while 8 other tasks write runs concurrently, p50/p99/max;
- the cost of one whole run record (create, running, 3 steps, finish) and of
  one decision (with its incident);
- the recorder's cost per input (``append``, flushes included) and the
  input path with and without it (JSON parse + recorder);
- pruning: rows deleted per second and the worst event-loop lag meanwhile.

Everything runs against a real SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from batond.engine.types import Decision
from batond.events import item_from_json
from batond.intake.recorder import Recorder
from batond.journal.facade import PRUNE_BATCH, Journal
from batond.load.config import RecordConfig
from headline import emit

WORKLOAD = Path(
    os.environ.get("BATOND_WORKLOAD", Path(__file__).resolve().parents[2] / "shared" / "workload")
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(values: list[float]) -> str:
    return (
        f"p50={pct(values, 0.5) * 1e3:.3f}ms p99={pct(values, 0.99) * 1e3:.3f}ms "
        f"max={max(values) * 1e3:.3f}ms"
    )


async def full_run(j: Journal, key: str) -> None:
    now = time.time()
    run = await j.run_created(
        rule="r", playbook="p", key=key, params={"unit": "x"}, labels={"host": "h"}, created_at=now
    )
    await j.run_state(run, "running", now)
    for name in ("stop", "start", "check"):
        step = await j.step_started(run, name, "exec", 1, time.time())
        await j.step_finished(step, status="ok", ended_at=time.time(), exit_code=0, stdout="ok\n")
    await j.run_finished(run, "resolved", time.time())


async def write_ahead(j: Journal, n: int) -> list[float]:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        run = await j.run_created(
            rule="r", playbook="p", key="k", params={}, labels={}, created_at=time.time()
        )
        await j.step_started(run, "first", "exec", 1, time.time())
        lat.append(time.perf_counter() - t)
        await j.run_finished(run, "resolved", time.time())
    return lat


async def bench_journal(state: Path, runs: int) -> dict[str, float]:
    j = Journal.open(state)
    await write_ahead(j, 200)  # warm up
    idle = await write_ahead(j, runs)
    print(f"write-ahead (run_created+step_started), idle:      {ms(idle)}")

    stop = asyncio.Event()

    async def background(i: int) -> None:
        while not stop.is_set():
            await full_run(j, f"bg{i}")

    tasks = [asyncio.create_task(background(i)) for i in range(8)]
    loaded = await write_ahead(j, runs)
    stop.set()
    await asyncio.gather(*tasks)
    print(f"write-ahead, 8 concurrent writers:                 {ms(loaded)}")

    t = time.perf_counter()
    for i in range(runs):
        await full_run(j, f"k{i}")
    per_run = (time.perf_counter() - t) / runs
    print(f"whole run record (7 writes):                       {per_run * 1e3:.3f}ms per run")

    decisions = []
    for i in range(runs):
        d = Decision(
            ts=time.time(), rule="r", key=f"host=h{i}", target=f"host=h{i}",
            labels={"host": f"h{i}"}, candidates=("p",), playbook="p", suppressed=None,
        )  # fmt: skip
        t = time.perf_counter()
        await j.record_decision(d)
        decisions.append(time.perf_counter() - t)
    print(f"record_decision (+ incident):                      {ms(decisions)}")
    t = time.perf_counter()
    for _ in range(200):
        await j.save_rule_state({"rules": {f"r{i}": {"cooldowns": {"k": 1.0}} for i in range(200)}})
    took = (time.perf_counter() - t) / 200
    print(f"save_rule_state (200 rules):                       {took * 1e3:.3f}ms")

    listing = []
    for _ in range(50):
        t = time.perf_counter()
        await j.list_runs(100)
        listing.append(time.perf_counter() - t)
    print(f"list_runs(100) with steps:                         {ms(listing)}")
    await bench_prune(j)
    await j.close()
    print(f"journal files after pruning: {journal_size(state) / 1e6:.1f} MB")
    return {
        "write-ahead idle p50 ms": round(pct(idle, 0.5) * 1e3, 3),
        "write-ahead idle p99 ms": round(pct(idle, 0.99) * 1e3, 3),
        "write-ahead, 8 writers, p50 ms": round(pct(loaded, 0.5) * 1e3, 3),
        "write-ahead, 8 writers, p99 ms": round(pct(loaded, 0.99) * 1e3, 3),
        "record_decision p50 us": round(pct(decisions, 0.5) * 1e6, 1),
    }


def journal_size(state: Path) -> int:
    return sum(p.stat().st_size for p in state.glob("journal.db*"))


async def bench_prune(j: Journal) -> None:
    old = 1000.0

    def fill(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO runs (rule, playbook, key, state, outcome, created_at, ended_at)"
            " VALUES ('r', 'p', 'k', 'done', 'resolved', ?, ?)",
            [(old, old + 1)] * 50_000,
        )
        conn.execute(
            "INSERT INTO steps (run_id, path, action, attempt, status, started_at, stdout)"
            " SELECT id, 's', 'exec', 1, 'ok', ?, ? FROM runs WHERE created_at = ?",
            (old, "y" * 500, old),
        )

    await j._write(fill)
    lags: list[float] = []

    async def probe() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t - 0.001)

    task = asyncio.create_task(probe())
    t = time.perf_counter()
    counts = await j.prune(86400.0, time.time())
    took = time.perf_counter() - t
    task.cancel()
    print(
        f"prune: {counts['runs']} runs (+ their steps) in {took:.2f}s "
        f"({counts['runs'] / took:.0f} runs/s, batches of {PRUNE_BATCH}); "
        f"max loop lag {max(lags) * 1e3:.1f}ms"
    )


def bench_recorder(directory: Path, n: int) -> float:
    """Prints the recorder's costs; returns microseconds per appended input."""
    payloads = [
        orjson.dumps({"metric": "cpu_percent", "value": 50.0 + i % 50, "host": f"web-{i % 100}"})
        for i in range(1000)
    ]
    items = [item_from_json(orjson.loads(p), 1.0e9 + i, "mqtt") for i, p in enumerate(payloads)]

    t = time.perf_counter()
    for i in range(n):
        item_from_json(orjson.loads(payloads[i % 1000]), 1.0e9 + i, "mqtt")
    parse = (time.perf_counter() - t) / n

    rec = Recorder(directory, RecordConfig(max_age=86400, max_size=256 << 20))
    t = time.perf_counter()
    for i in range(n):
        rec.append(items[i % 1000])
    append = (time.perf_counter() - t) / n
    rec.close()
    size = sum(p.stat().st_size for p in directory.glob("*.jsonl"))
    print(
        f"recorder append: {append * 1e6:.2f}us per input "
        f"({1 / append:,.0f} inputs/s; {size / n:.0f} bytes/input on disk)"
    )
    both = (parse + append) * 1e6
    print(
        f"input path parse only: {parse * 1e6:.2f}us; parse + record: {both:.2f}us"
        f" (+{append / parse * 100:.0f}%)"
    )
    return append * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--inputs", type=int, default=200_000)
    parser.add_argument("--engine-inputs", type=int, default=100_000)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}; runs={args.runs} inputs={args.inputs}")
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(bench_journal(Path(tmp) / "state", args.runs))
        figures["recorder us/input"] = round(bench_recorder(Path(tmp) / "record", args.inputs), 2)
        t = Path(tmp)
        workloads = [
            synthetic(t, args.engine_inputs, False),
            synthetic(t, args.engine_inputs, True),
        ]
        if WORKLOAD.exists():
            workloads.insert(0, shared_workload(t, args.engine_inputs, 100))
        for name, rules, objs in workloads:
            asyncio.run(bench_engine_path(name, t, rules, objs))
    emit("journal", figures)


RULES = """
rules:
  - name: cpu-hot
    match: {metric: cpu_percent}
    when: value > 97
    for: 30s
    cooldown: 10m
    run: noop
  - name: disk-full
    match: {metric: disk_used_percent, mount: /}
    when: value > 99
    cooldown: 30m
    run: noop
  - name: nginx-down
    match: {event: process.exited, name: nginx}
    cooldown: 5m
    run: noop
playbooks:
  - name: noop
    steps:
      - {name: go, action: exec, with: {argv: ["true"]}}
"""


def engine_inputs(n: int, storm: bool = True) -> list[dict[str, object]]:
    """Synthetic input; ``storm``: ~1.5% of inputs make a decision, else ~0.2%."""
    import random

    rng = random.Random(1)
    out: list[dict[str, object]] = []
    ts = 1.7e9
    for i in range(n):
        ts += 0.01
        host = f"web-{rng.randrange(500)}"
        r = rng.random()
        if r < 0.7:
            out.append(
                {"metric": "cpu_percent", "value": rng.uniform(0, 100), "host": host, "ts": ts}
            )
        elif r < (0.99 if storm else 0.9995):
            value = rng.uniform(50, 100 if storm else 99.2)
            out.append(
                {
                    "metric": "disk_used_percent",
                    "value": value,
                    "mount": "/",
                    "host": host,
                    "ts": ts,
                }
            )
        else:
            out.append({"event": "process.exited", "name": "nginx", "host": host, "ts": ts, "i": i})
    return out


def synthetic(tmp: Path, n: int, storm: bool) -> tuple[str, Path, list[dict[str, object]]]:
    rules = tmp / f"rules-{storm}.yaml"
    rules.write_text(RULES)
    return f"synthetic {'storm' if storm else 'typical'}", rules, engine_inputs(n, storm)


def shared_workload(tmp: Path, n: int, k: int) -> tuple[str, Path, list[dict[str, object]]]:
    """The rules benchmark's workload (bench/bench_rules.py), generated the same way."""
    import json
    import subprocess

    def gen(name: str, *args: str) -> Path:
        target = tmp / name
        with target.open("w") as f:
            subprocess.run([sys.executable, *args], stdout=f, check=True, cwd=WORKLOAD)
        return target

    events = gen("events.jsonl", "gen_events.py", str(n), "7")
    rules = gen("workload-rules.yaml", "gen_rules.py", str(k), "--format", "batond")
    objs = [json.loads(line) for line in events.open("rb")]
    return f"shared workload ({k} rules)", rules, objs


async def engine_pass(
    ruleset: Any,
    objs: list[dict[str, object]],
    journal: Journal | None,
    recorder: Recorder | None,
    state: str,
) -> tuple[float, float, int]:
    """One pass of the inputs through a fresh engine: wall s, CPU s, decisions."""
    from batond.engine.engine import Engine
    from batond.engine.governor import Governor

    engine = Engine(ruleset, Governor())
    decisions = 0
    t = time.perf_counter()
    cpu = time.process_time()
    for i, obj in enumerate(objs):
        if i % 100 == 0:
            await asyncio.sleep(0)  # the daemon's loop turns between source batches
        item = item_from_json(obj, float(obj["ts"]), "mqtt")  # type: ignore[arg-type]
        outputs = engine.evaluate(item, item.ts)
        if recorder is not None:
            recorder.append(item)
        for out in outputs:
            if isinstance(out, Decision):
                decisions += 1
                if journal is not None:
                    await journal.record_decision(out)
            elif journal is not None:
                await journal.resolve_incident(out.rule, out.key, out.ts)
        if outputs and journal is not None:
            if state == "soon":
                # as the daemon's RuleStateSaver: hosts_seen is saved apart, every 30 s
                journal.save_rule_state_soon(lambda: engine.export_state(hosts_seen=False))
            elif state == "each":
                await journal.save_rule_state(engine.export_state())
    if journal is not None:
        await journal.flush()  # count the commits too
    return time.perf_counter() - t, time.process_time() - cpu, decisions


async def bench_engine_path(
    name: str, tmp: Path, rules: Path, objs: list[dict[str, object]], rounds: int = 5
) -> None:
    """The daemon's input path (engine.evaluate, as in the runtime's engine loop) with and
    without journaling of decisions + rule state, and with the recorder."""
    from batond.load.rulefiles import load_rules

    ruleset = load_rules([rules])
    n = len(objs)
    storm = name.replace(" ", "-")
    j = Journal.open(tmp / f"engine-state-{storm}")
    rec = Recorder(tmp / f"engine-record-{storm}", RecordConfig(max_age=86400, max_size=1 << 30))
    variants: dict[str, tuple[Journal | None, Recorder | None, str]] = {
        "no journal": (None, None, ""),
        "journal: decisions + incidents only": (j, None, ""),
        "  + export_state() per output batch": (j, None, "each"),
        "  + save_rule_state_soon instead": (j, None, "soon"),
        "  + save_rule_state_soon + recorder": (j, rec, "soon"),
    }
    best = dict.fromkeys(variants, float("inf"))
    best_cpu = dict.fromkeys(variants, float("inf"))
    decisions = 0
    for _ in range(rounds):  # interleaved, best of each: a shared machine is noisy
        for variant, (journal, recorder, state) in variants.items():
            took, cpu, decisions = await engine_pass(ruleset, objs, journal, recorder, state)
            best[variant] = min(best[variant], took)
            best_cpu[variant] = min(best_cpu[variant], cpu)
    bare, bare_cpu = best["no journal"], best_cpu["no journal"]
    rec.close()
    await j.close()
    print(
        f"engine path, {name}: {n} inputs, {decisions} decisions"
        f" ({decisions / n * 100:.2f}% of inputs),"
        f" best of {rounds}; wall time, and CPU time of all threads:"
    )
    for variant, took in best.items():
        cpu = best_cpu[variant]
        print(
            f"  {variant:<40} {n / took:>9,.0f} inputs/s ({(took / bare - 1) * 100:+5.1f}% wall,"
            f" {(cpu / bare_cpu - 1) * 100:+5.1f}% cpu)"
        )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Rules-engine benchmark: ``batond replay`` on the shared threshold workload.

    .venv/bin/python bench/bench_rules.py [--events 200000] [--rules 100] [--repeat 3]

Generates the workload with ``/work/shared/workload`` (``gen_events.py N 7``,
``gen_rules.py K --format batond`` and ``--format json``), then:

1. times a bare ``json.loads`` loop over the file (the baseline),
2. times ``batond replay EVENTS --rules RULES --json`` end to end as a
   subprocess of the venv's ``batond`` (process start, imports and rule
   loading included), best of ``--repeat``,
3. checks that the decisions (the seq of each deciding event) equal
   ``expected_decisions.py``'s,

and prints events/s and the ratio to the baseline. Goal: at least 200,000
events/s end to end and at most 3x the ``json.loads`` loop. Exit status 1
when the decisions differ or a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from headline import emit

WORKLOAD = Path(
    os.environ.get("BATOND_WORKLOAD", Path(__file__).resolve().parents[2] / "shared" / "workload")
)
BATOND = Path(sys.executable).with_name("batond")
BASE_TS = 1767225600.0
GOAL_EVENTS_PER_S = 200_000
GOAL_RATIO = 3.0


def generate(out: Path, n: int, k: int) -> tuple[Path, Path, Path]:
    def gen(target: Path, *args: str) -> Path:
        with target.open("w") as f:
            subprocess.run([sys.executable, *args], stdout=f, check=True, cwd=WORKLOAD)
        return target

    events = gen(out / "events.jsonl", "gen_events.py", str(n), "7")
    rules = gen(out / "rules.yaml", "gen_rules.py", str(k), "--format", "batond")
    spec = gen(out / "rules.json", "gen_rules.py", str(k), "--format", "json")
    return events, rules, spec


def json_loads_loop(events: Path) -> float:
    started = time.perf_counter()
    with events.open("rb") as f:
        for line in f:
            json.loads(line)
    return time.perf_counter() - started


def replay_once(events: Path, rules: Path) -> tuple[float, str, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [str(BATOND), "replay", str(events), "--rules", str(rules), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return time.perf_counter() - started, done.stdout, done.stderr.splitlines()[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rules", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        events, rules, spec = generate(Path(tmp), a.events, a.rules)
        expected = subprocess.run(
            [
                sys.executable,
                str(WORKLOAD / "expected_decisions.py"),
                str(events),
                str(spec),
                "--seqs",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        baseline = min(json_loads_loop(events) for _ in range(a.repeat))
        runs = [replay_once(events, rules) for _ in range(a.repeat)]
    elapsed, stdout, summary = min(runs)
    got = [str(round((json.loads(x)["ts"] - BASE_TS) * 1000)) for x in stdout.split()]
    rate = a.events / elapsed
    ratio = elapsed / baseline
    version = sys.version.split()[0]
    print(f"workload: {a.events} events, {a.rules} rules; {os.cpu_count()} CPUs; python {version}")
    print(f"json.loads loop:       {baseline:.3f} s ({a.events / baseline:,.0f} events/s)")
    print(f"batond replay (e2e):   {elapsed:.3f} s ({rate:,.0f} events/s), best of {a.repeat}")
    print(f"  all runs (s):        {', '.join(f'{r[0]:.3f}' for r in runs)}")
    print(f"  replay's own line:   {summary}")
    print(f"ratio to json.loads:   {ratio:.2f}x (goal <= {GOAL_RATIO}x)")
    verdict = "EQUAL" if got == expected else "DIFFERENT"
    print(f"decisions:             {len(got)} (expected {len(expected)}): {verdict}")
    ok = got == expected and rate >= GOAL_EVENTS_PER_S and ratio <= GOAL_RATIO
    print("goal met" if ok else "GOAL MISSED")
    emit(
        "rules",
        {
            "events": a.events,
            "rules": a.rules,
            "replay e2e events/s": round(rate),
            "time / json.loads loop": round(ratio, 2),
            "decisions": f"{len(got)} ({verdict.lower()} to expected)",
        },
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Fuzzing at depth: every parser target of tests/fuzz_targets.py at 10^5 cases each.

    .venv/bin/python bench/fuzz.py [--cases 100000] [--only NAME ...]

The test suite runs the same targets at 300 cases (tests/test_fuzz.py). This
prints, per target, the cases run, the time taken and cases/s, and exits 1 at
the first property that fails (hypothesis shrinks it and prints the input).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hypothesis import HealthCheck, given, settings

from fuzz_targets import TARGETS, Target


def run(target: Target, cases: int) -> tuple[int, float]:
    seen = 0

    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(target.strategy)
    def prop(value: Any) -> None:
        nonlocal seen
        seen += 1
        target.check(value)

    t0 = time.perf_counter()
    prop()
    return seen, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="cases per target")
    parser.add_argument("--only", nargs="*", default=None, help="target names")
    args = parser.parse_args()
    chosen = [t for t in TARGETS if args.only is None or t.name in args.only]
    print(f"{'target':<14} {'cases':>8} {'seconds':>8} {'cases/s':>8}")
    for target in chosen:
        try:
            seen, took = run(target, args.cases)
        except Exception as exc:  # hypothesis has printed the shrunk input
            print(f"{target.name:<14} FAILED: {type(exc).__name__}: {exc}")
            return 1
        print(f"{target.name:<14} {seen:>8} {took:>8.1f} {seen / took:>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

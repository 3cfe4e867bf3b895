"""Event -> first action at a given input rate: the engine's and the runner's share.

Inputs arrive at ``--rate`` per second (by default 1,000): samples that the
rules evaluate and that fire nothing, and every ``--run-every``-th input an
event that makes the real Engine decide a run (each for its own incident key,
the governor's limits opened wide). Each decision goes to a real Runner (real
SQLite journal in a temp dir, the real ``exec`` of ``true``). The time is taken
from the input's arrival (``time.monotonic()`` just before the engine sees it,
as the bus stamps it) to the moment the exec action is called, after the run's
intent and the step's start are journaled (the write-ahead path). The service's
own ``record_decision`` write before ``Runner.start`` is not part of this path.

Run: .venv/bin/python bench/bench_runner.py [--rate 1000] [--seconds 10] [--run-every 100]
     [--store journal|memory]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from types import MappingProxyType
from typing import Any

from prometheus_client import CollectorRegistry

import batond.remedy.actions
import batond.remedy.steps
from batond.engine.engine import Engine
from batond.engine.governor import Governor
from batond.engine.types import Decision
from batond.events import Event, Input, Sample
from batond.journal.facade import Journal
from batond.load.config import GovernorConfig, RateLimit
from batond.load.rulefiles import load_rules
from batond.metrics import Metrics
from batond.remedy.actions import ActionContext, ActionResult, StepCall
from batond.remedy.actions.execute import run as exec_run
from batond.remedy.runner import RunEnded, Runner
from headline import emit

RULES = """\
rules:
  - name: bench-fail
    match: {event: bench.fail}
    group_by: [seq]
    run: bench
  - name: bench-high
    match: {metric: bench_value}
    when: value > 1000000
    run: bench

playbooks:
  - name: bench
    mode: single
    steps:
      - {name: act, action: exec, with: {argv: ["true", "{{ labels.seq }}"]}, timeout: 30s}
"""
WIDE = RateLimit(10**9, 1.0)


class MemoryStore:
    """Records nothing: the write-ahead records cost zero here."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    async def run_created(self, **kw: Any) -> int:
        return next(self._ids)

    async def run_state(self, run_id: int, state: str, at: float) -> None:
        return None

    async def step_started(self, *args: Any, **kw: Any) -> int:
        return next(self._ids)

    async def step_finished(self, step_id: int, **kw: Any) -> None:
        return None

    async def run_finished(self, run_id: int, outcome: str, ended_at: float) -> None:
        return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def make_input(i: int, run_every: int) -> Input:
    now = time.time()
    if i % run_every == 0:
        labels = {"host": "bench", "seq": str(i)}
        return Event("bench.fail", now, labels, {"event": "bench.fail", **labels}, "http")
    labels = {"host": "bench"}
    raw = {"metric": "bench_value", "value": 1.0, **labels}
    return Sample("bench_value", 1.0, now, labels, raw, "http")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="inputs per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--run-every", type=int, default=100, help="one input in N starts a run")
    parser.add_argument(
        "--store",
        choices=["journal", "memory"],
        default="journal",
        help="memory: no journal writes, to show the engine's and runner's own share",
    )
    return parser.parse_args()


class Timing:
    """Arrival of each input that starts a run, the time to its first action, the ends."""

    def __init__(self) -> None:
        self.to_action: list[float] = []
        self.arrivals: dict[str, float] = {}
        self.ended: list[RunEnded] = []
        self.all_ended = asyncio.Condition()

    async def timed_exec(self, call: StepCall) -> ActionResult:
        self.to_action.append(time.monotonic() - self.arrivals[call.args["argv"][1]])
        return await exec_run(call)

    # the runner's listener (remedy.runner.RunListener)
    def candidate_started(self, rule: str, playbook: str, key: str, at: float) -> None:
        pass

    def run_ended(self, run: RunEnded) -> None:
        self.ended.append(run)

        async def note() -> None:
            async with self.all_ended:
                self.all_ended.notify_all()

        asyncio.get_running_loop().create_task(note())

    async def wait_ended(self, n: int) -> None:
        async with self.all_ended:
            await self.all_ended.wait_for(lambda: len(self.ended) >= n)


def build(tmp: Path, store: str, timing: Timing) -> tuple[Engine, Runner, Journal]:
    rules_file = tmp / "bench.yaml"
    rules_file.write_text(RULES)
    ruleset = load_rules([rules_file])
    governor = Governor(
        GovernorConfig(
            max_concurrent_runs=256, max_runs=WIDE, per_target=WIDE,
            max_targets_fraction=1.0, min_fleet=10**9,
        )
    )  # fmt: skip
    journal = Journal.open(tmp / "state")
    runner = Runner(
        playbooks=ruleset.playbooks,
        store=journal if store == "journal" else MemoryStore(),
        metrics=Metrics(CollectorRegistry()),
        actions=ActionContext(),
        max_concurrent=256,
    )
    runner.listen(timing)
    return Engine(ruleset, governor), runner, journal


async def feed(args: argparse.Namespace, engine: Engine, runner: Runner, timing: Timing) -> int:
    """Inputs at the rate asked for; the number of runs started."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    decisions = 0
    for i in range(int(args.rate * args.seconds)):
        delay = t0 + i / args.rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        item = make_input(i, args.run_every)
        arrived = time.monotonic()
        timing.arrivals[str(i)] = arrived
        for out in engine.evaluate(item, time.time()):
            if isinstance(out, Decision) and out.playbook is not None:
                decisions += 1
                runner.start(out, arrived=arrived, verify_by_run=True)
    return decisions


async def main() -> None:
    args = parse_args()
    timing = Timing()
    # the step executor looks actions up in its module's read-only table at each step
    timed = {**batond.remedy.actions.ACTIONS, "exec": timing.timed_exec}
    batond.remedy.steps.ACTIONS = MappingProxyType(timed)  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        engine, runner, journal = build(Path(tmp), args.store, timing)
        started = time.perf_counter()
        decisions = await feed(args, engine, runner, timing)
        await timing.wait_ended(decisions)
        elapsed = time.perf_counter() - started
        await runner.shutdown(5)
        await journal.close()
    ms = [v * 1000 for v in timing.to_action]
    print(
        f"store={args.store} inputs={int(args.rate * args.seconds)} rate={args.rate:.0f}/s "
        f"run_every={args.run_every} decisions={decisions} "
        f"first_actions={len(ms)} elapsed_s={elapsed:.2f}"
    )
    p50, p95, p99 = statistics.median(ms), pct(ms, 0.95), pct(ms, 0.99)
    print(f"event->first action (ms): p50={p50:.3f} p95={p95:.3f} p99={p99:.3f} max={max(ms):.3f}")
    emit(
        "runner",
        {
            "inputs/s": round(args.rate),
            "first actions": len(ms),
            "p50 ms": round(p50, 2),
            "p95 ms": round(p95, 2),
            "p99 ms": round(p99, 2),
        },
    )


if __name__ == "__main__":
    asyncio.run(main())

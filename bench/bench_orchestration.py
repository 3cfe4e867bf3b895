"""Engine time of a data-carrying playbook: 20 steps of set/assert/foreach over 100 items.

The playbook (PLAYBOOK below) has 20 steps: 14 `set` and `assert` steps that
shape and check the 100 items of its params (comprehensions, sorted with a key,
max/min with a key, sums, joins, splits), and 2 `foreach` steps over the 100
items, each with a block of 2 steps (a `set` and an `assert`) run per item: one
run executes 16 + 2 x 100 x 2 = 416 steps. No step does I/O: what is measured
is the step executor (templates rendered, expressions evaluated, results kept,
each step recorded through the RunStore protocol) and the expression language,
with a store that keeps nothing (``MemoryStore``), on one event loop; as CPU
time of the process (what the engine costs, whatever else the machine runs)
and as wall time. Templates are compiled once, when the playbook is loaded
(the load is timed separately and not part of a run).

Run: .venv/bin/python bench/bench_orchestration.py [--runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from typing import Any

from prometheus_client import CollectorRegistry

from batond.load.yamlfile import compose_text
from batond.metrics import Metrics
from batond.remedy.actions import ActionContext
from batond.remedy.run import Origin, Run
from batond.remedy.steps import StepExecutor
from headline import emit

ITEMS = 100
FOREACH = 2
BLOCK = """
          steps:
            - name: line{n}
              action: set
              with: {{cost: "{{{{ item.qty * item.price }}}}", sku: "{{{{ upper(item.sku) }}}}"}}
            - name: positive{n}
              action: assert
              with:
                that: vars.cost >= 0 and len(vars.sku) > 1
                message: "bad {{{{ vars.sku }}}}"
"""


def _playbook() -> str:
    steps = """
      - name: items
        action: set
        with: {all: "{{ [i for i in params.items if i.qty >= 0] }}"}
      - name: count
        action: assert
        with: {that: len(vars.all) == 100, message: "{{ len(vars.all) }} items"}
      - name: totals
        action: set
        with:
          qty: "{{ sum([i.qty for i in vars.all]) }}"
          value: "{{ sum([i.qty * i.price for i in vars.all]) }}"
      - name: sane
        action: assert
        with: {that: vars.qty > 0 and vars.value > 0}
      - name: ranked
        action: set
        with: {top: "{{ [i.sku for i in sorted(vars.all, key='price', reverse=true)][:10] }}"}
      - name: biggest
        action: set
        with:
          sku: "{{ max(vars.all, key='qty').sku }}"
          cheap: "{{ min(vars.all, key='price').sku }}"
      - name: listed
        action: set
        with: {csv: "{{ join([i.sku for i in vars.all], ',') }}"}
      - name: parsed
        action: assert
        with: {that: "len(split(vars.csv, ',')) == 100"}
"""
    for n in range(FOREACH):
        steps += f"""
      - name: each{n}
        action: foreach
        with:
          items: "{{{{ vars.all }}}}"
""" + BLOCK.format(n=n)
    for n in range(6):
        what = "set" if n % 2 == 0 else "assert"
        if what == "set":
            body = f'with: {{v{n}: "{{{{ len(steps.each{n % FOREACH}.items) + {n} }}}}"}}'
        else:
            body = f"with: {{that: vars.v{n - 1} == {100 + n - 1}}}"
        steps += f"""
      - name: tail{n}
        action: {what}
        {body}
"""
    return "playbooks:\n  - name: orchestrate\n    steps:" + steps


PLAYBOOK = _playbook()


class MemoryStore:
    """Records nothing: the journal's cost is bench_journal's, not this one's."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    async def run_created(self, **kw: Any) -> int:
        return next(self._ids)

    async def run_state(self, *args: Any) -> None:
        return None

    async def step_started(self, *args: Any, **kw: Any) -> int:
        return next(self._ids)

    async def step_finished(self, step_id: int, **kw: Any) -> None:
        return None

    async def run_finished(self, *args: Any) -> None:
        return None


def load() -> tuple[Any, float]:
    from batond.load.playbooks import read_playbooks

    t0 = time.perf_counter()
    node, reader = compose_text(PLAYBOOK, "bench.yaml")
    assert node is not None
    fields = reader.mapping(node, ("playbooks",), ("playbooks",))
    assert fields is not None
    (pb,) = read_playbooks(reader, fields["playbooks"])
    reader.raise_if_problems()
    return pb, time.perf_counter() - t0


async def measure(runs: int) -> tuple[list[float], list[float], int]:
    pb, _ = load()
    items = [{"sku": f"sku-{i:03d}", "qty": i % 7, "price": 1.0 + i * 0.25} for i in range(ITEMS)]
    executor = StepExecutor(
        store=MemoryStore(),
        metrics=Metrics(CollectorRegistry()),
        ctx=ActionContext(),
        clock=time.time,
        closing=lambda: False,
    )
    origin = Origin("bench", "k", "k", {}, {"items": items})
    cpu: list[float] = []
    wall: list[float] = []
    for i in range(runs + 5):
        run = Run(origin, pb, {pb.name: pb})
        run.id = i + 1
        run.started_at = time.time()
        c0, t0 = time.process_time(), time.perf_counter()
        outcome = await executor.execute(run)
        c1, t1 = time.process_time(), time.perf_counter()
        # set and assert only compute: no action step ran, so the outcome is "skipped"
        assert outcome == "skipped" and run.failed_step is None, (outcome, run.failed_step)
        if i >= 5:  # warm-up runs are not counted
            cpu.append(c1 - c0)
            wall.append(t1 - t0)
    return cpu, wall, len(pb.steps) - FOREACH + FOREACH * ITEMS * 2 + FOREACH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    pb, load_s = load()
    defined = len(pb.steps) + sum(len(b) for s in pb.steps for b in s.branches)
    cpu, wall, steps = asyncio.run(measure(args.runs))
    median = statistics.median(cpu) * 1000
    p95 = sorted(cpu)[int(0.95 * len(cpu))] * 1000
    print(f"playbook: {defined} steps (set/assert/foreach), {ITEMS} items: {steps} steps run")
    print(f"load and compile once: {load_s * 1000:.1f} ms")
    print(f"engine CPU time per run over {len(cpu)} runs: median {median:.2f} ms, p95 {p95:.2f} ms")
    print(f"wall time per run: median {statistics.median(wall) * 1000:.2f} ms")
    print(f"per step run: {median * 1000 / steps:.1f} us")
    emit("orchestration", {"run median ms": round(median, 2), "run p95 ms": round(p95, 2)})


if __name__ == "__main__":
    main()

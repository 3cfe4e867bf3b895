"""The host model: a host's metrics scored jointly, exposed to rules as host_anomaly."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from batond.anomaly import DEFAULT_SPEC, HostParams, ModelSet
from batond.anomaly.host import ratio_score
from batond.engine.types import Decision
from batond.events import Sample
from batond.runtime.pipeline import NoRuns, Pipeline, run_now
from engine_support import make_engine

METRICS = ("cpu_percent", "load_1m", "disk_io_percent")
SPEC = replace(
    DEFAULT_SPEC,
    name="host",
    detector="host",
    match_metrics=METRICS,
    host=HostParams(history=1000),
    warmup=300,
)


def busy_host(rng: random.Random) -> tuple[float, float, float]:
    """CPU, load and I/O all follow how busy the host is (plus a little noise)."""
    busy = rng.random()
    return (
        20 + 60 * busy + rng.gauss(0, 2),
        0.5 + 4 * busy + rng.gauss(0, 0.15),
        5 + 40 * busy + rng.gauss(0, 1.5),
    )


class Decisions:
    """A ledger that keeps the decisions (replay's role, in memory)."""

    def __init__(self) -> None:
        self.made: list[Decision] = []

    async def record_decision(self, decision: Decision) -> tuple[int | None, int | None]:
        self.made.append(decision)
        return None, None

    async def resolve_incident(self, rule: str, key: str, ts: float) -> int | None:
        return None


def feed(pipeline: Pipeline, vector: tuple[float, ...], ts: float, host: str = "web-1") -> None:
    for metric, value in zip(METRICS, vector, strict=True):
        run_now(pipeline.observe(Sample(metric, value, ts, {"host": host}), ts))


def test_a_joint_anomaly_of_normal_metrics_reaches_a_rule_with_its_top_metric(
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    engine = make_engine(
        tmp_path,
        """
        rules:
          - {name: host-odd, match: {metric: host_anomaly}, when: anomaly > 0.99, run: fix}
        """,
    )
    models = ModelSet([SPEC])
    ledger = Decisions()
    pipeline = Pipeline(engine, ledger, NoRuns(), models=models)
    history = [busy_host(rng) for _ in range(SPEC.warmup)]
    for i, vector in enumerate(history):
        feed(pipeline, vector, 1e9 + 10 * i)
    jobs = models.training_jobs(1e9 + 10 * SPEC.warmup)
    assert len(jobs) == 1  # the host's first fit, one job for its whole vector
    jobs[0]()()
    joint = (25.0, 4.0, 40.0)  # CPU low while load and I/O are high
    for column, value in enumerate(joint):  # each metric alone is well inside its range
        seen = [v[column] for v in history]
        assert min(seen) < value < max(seen)
    feed(pipeline, joint, 2e9)
    assert ledger.made, "the joint anomaly made no decision"
    decision = ledger.made[-1]
    assert (decision.rule, decision.ts) == ("host-odd", 2e9)
    assert decision.labels["host"] == "web-1"
    assert decision.labels["top_metric"] == "cpu_percent"  # the one out of line with the rest
    assert decision.labels["top_metrics"].split(",")[0] == "cpu_percent"
    assert set(decision.labels["top_metrics"].split(",")) == set(METRICS)
    (series,) = models.series(metric="host_anomaly")
    assert series["points"][-1][2] >= 0.99 and series["labels"] == {"host": "web-1"}


def test_a_vector_is_scored_once_per_round_and_a_missing_metric_is_carried_forward() -> None:
    models = ModelSet([SPEC])
    labels = {"host": "h"}
    for metric in METRICS[:2]:
        models.observe(Sample(metric, 1.0, 1.0, labels))
    assert models.take_synthetic() == []  # disk_io_percent never reported: no vector yet
    models.observe(Sample(METRICS[2], 1.0, 1.0, labels))
    (first,) = models.take_synthetic()
    assert (first.metric, first.value, first.labels["top_metric"]) == ("host_anomaly", 0.0, "")
    models.observe(Sample(METRICS[0], 2.0, 2.0, labels))
    models.observe(Sample(METRICS[0], 3.0, 3.0, labels))  # a new round before the vector filled
    (carried,) = models.take_synthetic()
    assert carried.ts == 3.0


async def test_the_host_models_fit_runs_in_a_thread_while_the_loop_keeps_serving() -> None:
    metrics = tuple(f"m{i}" for i in range(40))
    spec = replace(SPEC, match_metrics=metrics, host=HostParams(history=6000), warmup=6000)
    models = ModelSet([spec])
    await asyncio.to_thread(models.prepare)  # imports numpy and scikit-learn, as the daemon does
    rng = random.Random(3)
    labels = {"host": "db-1"}
    for i in range(spec.warmup):
        busy = rng.random()
        for k, metric in enumerate(metrics):
            models.observe(Sample(metric, busy * (k + 1) + rng.random(), float(i), labels))
    models.take_synthetic()
    ticks: list[float] = []
    stop = asyncio.Event()

    async def serve() -> None:  # stands in for the loop's other work (HTTP, the bus)
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.001)

    server = asyncio.create_task(serve())
    await asyncio.sleep(0.01)
    step = time.perf_counter()
    jobs = models.training_jobs(float(spec.warmup))
    on_loop = time.perf_counter() - step
    assert len(jobs) == 1
    before = len(ticks)
    apply: Any = await asyncio.to_thread(jobs[0])  # the scikit-learn fit, in a worker thread
    served = len(ticks) - before
    step = time.perf_counter()
    apply()
    on_loop = max(on_loop, time.perf_counter() - step)
    stop.set()
    await server
    assert served > 0  # the loop served while the fit ran
    longest = max(b - a for a, b in itertools.pairwise(ticks))
    assert longest < 0.2, f"the loop stalled {longest:.3f} s"
    assert on_loop < 0.05, f"a training step took {on_loop:.3f} s on the loop"
    models.observe(Sample(metrics[0], 1.0, 1e6, labels))
    for metric in metrics[1:]:
        models.observe(Sample(metric, 2.0, 1e6, labels))
    (scored,) = models.take_synthetic()
    assert scored.labels["top_metric"] in metrics  # the fit was applied: vectors score


def test_false_positive_feedback_lowers_a_hosts_sensitivity() -> None:
    models = ModelSet([SPEC])
    for metric in METRICS:
        models.observe(Sample(metric, 1.0, 1.0, {"host": "h"}))
    assert models.feedback_false_positive("host_anomaly", {"host": "h", "top_metric": "x"})
    (series,) = models.series(metric="host_anomaly")
    assert series["sensitivity"] < series["model_sensitivity"]


def test_the_score_is_099_at_a_ratio_of_1_and_never_ties_strong_anomalies() -> None:
    ratios = [0.0, 0.5, 1.0, 2.0, 8.0, 10.0, 1e3, 1e6]
    scores = [ratio_score(r) for r in ratios]
    assert scores[2] == 0.99 and scores[5] == 0.999
    assert all(a < b < 1.0 for a, b in itertools.pairwise(scores))

"""The host model: a host's metrics scored jointly, exposed to rules as host_anomaly."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from batond.anomaly import DEFAULT_SPEC, HostParams, ModelSet
from batond.anomaly.host import ratio_score
from batond.engine.types import Decision
from batond.errors import StateError
from batond.events import Sample
from batond.journal.model_state import load_state, save_state
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


def feed_models(models: ModelSet, vectors: list[tuple[float, ...]], start: float) -> list[Sample]:
    """Feed vectors (a minute apart) with training jobs run inline; the host_anomaly samples."""
    out: list[Sample] = []
    for i, vector in enumerate(vectors):
        ts = start + 60.0 * i
        for metric, value in zip(METRICS, vector, strict=True):
            models.observe(Sample(metric, value, ts, {"host": "h"}))
        out.extend(models.take_synthetic())
        for job in models.training_jobs(ts):
            job()()
    return out


def odd_vectors(rng: random.Random, n: int) -> list[tuple[float, ...]]:
    """Busy-host vectors, one in ten with CPU out of line with load and I/O by 5-20 %."""
    out = []
    for _ in range(n):
        cpu, load, io = busy_host(rng)
        out.append((cpu + rng.uniform(5, 20) * (rng.random() < 0.1), load, io))
    return out


def test_a_hosts_fit_and_history_survive_a_restart_so_it_scores_without_retraining(
    tmp_path: Path,
) -> None:
    rng = random.Random(11)
    models = ModelSet([SPEC])
    feed_models(models, [busy_host(rng) for _ in range(1500)], 0.0)
    save_state(models, tmp_path)
    restored = ModelSet([SPEC])
    load_state(restored, tmp_path)
    assert restored.state_notes == []

    # the restored host scores its very first vector with the saved fit: no job ran
    later = odd_vectors(rng, 600)
    first = feed_models(restored, later[:1], 90_000.0)
    assert first[0].labels["top_metric"] in METRICS and first[0].value > 0.0
    # and it goes on exactly as the original would (same history, reservoir, retraining)
    original = feed_models(models, later, 90_000.0)
    again = first + feed_models(restored, later[1:], 90_000.0 + 60.0)
    assert [(s.value, s.labels) for s in again] == [(s.value, s.labels) for s in original]


def test_a_host_state_of_a_changed_model_is_set_aside_with_a_note(tmp_path: Path) -> None:
    models = ModelSet([SPEC])
    rng = random.Random(3)
    feed_models(models, [busy_host(rng) for _ in range(400)], 0.0)
    save_state(models, tmp_path)
    changed = ModelSet([replace(SPEC, host=HostParams(history=1000, variance=0.8))])
    load_state(changed, tmp_path)
    assert len(changed.state_notes) == 1 and "learns afresh" in changed.state_notes[0]
    (host,) = feed_models(changed, [busy_host(rng)], 30_000.0)
    assert host.value == 0.0 and host.labels["top_metric"] == ""  # not fitted yet


def test_a_malformed_host_entry_is_a_state_error() -> None:
    models, rng = ModelSet([SPEC]), random.Random(1)
    feed_models(models, [busy_host(rng) for _ in range(400)], 0.0)
    header, _, body = models.export_state().partition(b"\n")
    data = json.loads(body)
    data["hosts"][0]["history"] = data["hosts"][0]["history"][:-8]
    with pytest.raises(StateError, match="malformed host entry"):
        ModelSet([SPEC]).import_state(header + b"\n" + json.dumps(data).encode())


def test_false_positive_feedback_makes_the_same_host_vectors_score_below_the_threshold() -> None:
    rng = random.Random(7)
    models = ModelSet([SPEC])
    feed_models(models, [busy_host(rng) for _ in range(1500)], 0.0)
    snapshot = models.export_state()
    before = ModelSet([SPEC])
    before.import_state(snapshot)
    # two false_positive verdicts on the host's incident (labels as the decision carries them)
    for _ in range(2):
        assert models.feedback_false_positive("host_anomaly", {"host": "h", "top_metric": "x"})
    assert not models.feedback_false_positive("host_anomaly", {"host": "nobody"})

    replayed = odd_vectors(rng, 800)
    scores_before = [s.value for s in feed_models(before, replayed, 90_000.0)]
    scores_after = [s.value for s in feed_models(models, replayed, 90_000.0)]
    alerts = [i for i, s in enumerate(scores_before) if s >= SPEC.threshold]
    assert alerts, "the replayed vectors must alert without feedback"
    # the mildest alert's input now scores below the threshold (a strong one still alerts:
    # feedback scales the ratio, it does not mute the host), and fewer vectors alert
    mildest = min(alerts, key=scores_before.__getitem__)
    assert scores_after[mildest] < SPEC.threshold
    assert sum(s >= SPEC.threshold for s in scores_after) < len(alerts)
    (page,) = models.series(metric="host_anomaly")
    assert page["sensitivity"] == SPEC.sensitivity * 0.7 * 0.7  # the page shows both
    assert page["model_sensitivity"] == SPEC.sensitivity


def test_an_incident_is_not_learned_but_a_lasting_change_is_learned_afresh() -> None:
    rng = random.Random(5)
    models = ModelSet([SPEC])  # history 1000, warmup 300, retrain 1h (every 60 vectors)
    feed_models(models, [busy_host(rng) for _ in range(1500)], 0.0)

    # an incident: the load far above its range for 500 vectors (8 h of refits)
    def shifted() -> tuple[float, ...]:
        cpu, load, io = busy_host(rng)
        return cpu, load + 10.0, io

    incident = feed_models(models, [shifted() for _ in range(500)], 90_000.0)
    assert all(s.value >= SPEC.threshold for s in incident)  # never learned as normal
    normal = feed_models(models, [busy_host(rng) for _ in range(100)], 120_000.0)
    assert sum(s.value >= SPEC.threshold for s in normal) <= 5

    # the same shift lasting: after `history` vectors in a row it is the new normal
    lasting = feed_models(models, [shifted() for _ in range(2000)], 130_000.0)
    assert all(s.value >= SPEC.threshold for s in lasting[:1000])
    settled = lasting[1000 + SPEC.warmup + 60 :]
    assert sum(s.value >= SPEC.threshold for s in settled) < 0.05 * len(settled)

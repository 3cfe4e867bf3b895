"""Memory of the anomaly model: compact history, bounded totals, ring buffers."""

from __future__ import annotations

import gc
import math
import random
import tracemalloc
from collections import Counter, deque
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_series import points, wave
from batond.anomaly import DEFAULT_SPEC, ContextParams, ModelSet
from batond.anomaly.detector import _MAX_TRANSITIONS, ContextDetector, _key, _level
from batond.anomaly.modelset import series_points
from batond.anomaly.ring import Ring
from batond.events import Sample

SPEC = replace(DEFAULT_SPEC, name="cpu", match_metrics=("cpu_percent",))
# models/host.yaml keeps a day of 5 s samples per series
HOST = replace(SPEC, params=ContextParams(history=17280), retrain=3600.0)


def feed(models: ModelSet, data: list[tuple[float, float]], hosts: list[str]) -> None:
    for ts, value in data:
        for host in hosts:
            models.observe(Sample("cpu_percent", value, ts, {"host": host}))
        for job in models.training_jobs(ts):
            job()()


def test_a_series_with_a_full_day_of_history_costs_under_400_kb() -> None:
    rng = random.Random(1)
    values = [30 + 20 * math.sin(i / 500) + rng.gauss(0, 2) for i in range(17280)]
    data = points(values, step=5.0)
    hosts = [f"h{k}" for k in range(5)]
    models = ModelSet([HOST])
    models.prepare()  # numpy's own allocations are not the series'
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        feed(models, data, hosts)
        gc.collect()
        per_series = (tracemalloc.get_traced_memory()[0] - before) / len(hosts)
    finally:
        tracemalloc.stop()
    # ~160 KB measured (138 KB of it the 17,280 values); a deque of floats was ~1.8 MB
    assert per_series < 400_000
    assert models.series(host="h0", limit=3)[0]["points"][-1][1] == values[-1]


def test_new_series_beyond_the_point_budget_are_refused_and_counted() -> None:
    heard: list[str] = []
    budget = 2 * series_points(SPEC) + 10  # room for two series, not three
    models = ModelSet([SPEC], max_points_total=budget, notify=heard.append)
    for i in range(12):
        for host in "abc":
            models.observe(Sample("cpu_percent", 1.0, float(i), {"host": host}))
    assert models.series_count() == 2
    assert models.points_reserved() == 2 * series_points(SPEC) <= budget
    assert models.refused_count() == 12  # every sample of host c
    assert [m.split(";")[1] for m in heard] == [
        " 1 sample(s) refused so far (further refusals are reported at 10x counts)",
        " 10 sample(s) refused so far (further refusals are reported at 10x counts)",
    ]
    assert heard[0].startswith("cpu_percent {'host': 'c'}: not scored: it would need")
    assert "max_points_total" in heard[0]


def test_the_series_cap_is_reported_too() -> None:
    heard: list[str] = []
    models = ModelSet([SPEC], max_series=1, notify=heard.append)
    for host in "ab":
        models.observe(Sample("cpu_percent", 1.0, 1.0, {"host": host}))
    assert models.refused_count() == 1
    assert heard == [
        "cpu_percent {'host': 'b'}: not scored: the series cap (1 series) is reached;"
        " 1 sample(s) refused so far (further refusals are reported at 10x counts)"
    ]


def test_imported_state_respects_the_point_budget() -> None:
    models = ModelSet([SPEC])
    feed(models, points(wave(300)), ["a", "b", "c"])
    small = ModelSet([SPEC], max_points_total=2 * series_points(SPEC))
    small.import_state(models.export_state())
    assert small.series_count() == 2
    assert len(small.state_notes) == 1
    assert "state dropped: it would need" in small.state_notes[0]
    # importing the same file again replaces the series instead of reserving twice
    small.import_state(models.export_state())
    assert small.points_reserved() == 2 * series_points(SPEC)


def test_reload_recounts_the_points_of_the_kept_series() -> None:
    models = ModelSet([SPEC])
    feed(models, points(wave(50)), ["a", "b"])
    models.replace_specs([SPEC])
    assert models.points_reserved() == 2 * series_points(SPEC)
    models.replace_specs([])
    assert models.points_reserved() == 0


def test_recent_points_are_capped_at_a_short_history() -> None:
    spec = replace(SPEC, params=ContextParams(history=10), warmup=10)
    models = ModelSet([spec])
    for i in range(30):
        models.observe(Sample("cpu_percent", float(i), float(i), {"host": "a"}))
    [series] = models.series(limit=100)
    assert [p[:2] for p in series["points"]] == [[float(i), float(i)] for i in range(20, 30)]


@settings(max_examples=80, deadline=None)
@given(
    st.integers(min_value=1, max_value=9),
    st.lists(st.floats(allow_nan=False), max_size=40),
    st.integers(min_value=0, max_value=12),
)
def test_a_ring_holds_the_newest_values_in_order(
    capacity: int, values: list[float], last: int
) -> None:
    ring = Ring(capacity)
    dropped = [ring.append(v) for v in values]
    kept = values[-capacity:]
    assert list(ring) == kept and list(ring.to_array()) == kept and len(ring) == len(kept)
    assert list(ring.last(last)) == (kept[-last:] if last else [])
    assert dropped == [values[i - capacity] if i >= capacity else None for i in range(len(values))]
    if kept:
        assert ring.oldest() == kept[0]
    assert list(Ring(capacity, ring.to_array())) == kept


def test_transition_memories_are_capped_for_a_pathological_series() -> None:
    rng = random.Random(3)
    params = ContextParams(context=3, history=20_000)
    detector = ContextDetector(params, warmup=20_000, threshold=0.99, sensitivity=0.5)
    values = [rng.random() for _ in range(20_000)]
    for value in values:  # the warm-up ends in a numpy fit of all 20,000
        detector.step(value)
    fitted = [dict(m) for m in detector.memories]
    for value in values[:5000]:  # then streaming learns more distinct transitions
        detector.step(value * 1000.0 - 500.0)
    for fit, memory in zip(fitted, detector.memories, strict=True):
        assert 1000 < len(fit) <= _MAX_TRANSITIONS  # 8**4 possible, ~4000 seen
        assert len(memory) == _MAX_TRANSITIONS
    # the fit kept the most frequent transitions: none dropped is more frequent than one kept
    levels = [_level((v - detector.lo) / detector.span, params.bins, 0.0) for v in values]
    counts = Counter(_key(deque(levels[i - 3 : i]), levels[i]) for i in range(3, len(levels)))
    kept, dropped = fitted[0], set(counts) - set(fitted[0])
    assert dropped and all(kept[k] == counts[k] for k in kept)
    assert min(kept.values()) >= max(counts[k] for k in dropped)

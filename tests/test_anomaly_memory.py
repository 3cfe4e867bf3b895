"""Memory of the anomaly model: compact state, bounded totals, ring buffers."""

from __future__ import annotations

import gc
import math
import random
import tracemalloc
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_series import points, wave
from batond.anomaly import DEFAULT_SPEC, ContextParams, ModelSet
from batond.anomaly.detector import _MAX_TRANSITIONS, ContextDetector
from batond.anomaly.modelset import series_bytes
from batond.anomaly.ring import Ring
from batond.events import Sample

SPEC = replace(DEFAULT_SPEC, name="cpu", match_metrics=("cpu_percent",))


def feed(models: ModelSet, data: list[tuple[float, float]], hosts: list[str]) -> None:
    for ts, value in data:
        for host in hosts:
            models.observe(Sample("cpu_percent", value, ts, {"host": host}))
        for job in models.training_jobs(ts):
            job()()


def test_a_default_series_costs_under_16_kib_and_its_estimate_covers_it() -> None:
    rng = random.Random(1)
    values = [30 + 20 * math.sin(i / 500) + rng.gauss(0, 2) for i in range(6000)]
    data = points(values, step=5.0)
    hosts = [f"host-{k:05d}" for k in range(20)]
    models = ModelSet([replace(SPEC, retrain=600.0)])
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
    # ~9 KB measured: 2-byte history codes, 1-byte windows, bitmaps, 240 recent points
    assert per_series <= 16 * 1024
    assert series_bytes(SPEC) >= per_series
    [latest] = models.series(host="host-00000", limit=1)
    assert math.isclose(latest["points"][-1][1], values[-1], rel_tol=1e-6)  # float32


def test_new_series_beyond_the_byte_budget_are_refused_counted_and_logged_once() -> None:
    heard: list[str] = []
    budget = 2 * series_bytes(SPEC) + 10  # room for two series, not three or four
    models = ModelSet([SPEC], max_bytes_total=budget, notify=heard.append)
    for i in range(12):
        for host in "abcd":
            models.observe(Sample("cpu_percent", 1.0, float(i), {"host": host}))
    assert models.series_count() == 2
    assert models.bytes_reserved() == 2 * series_bytes(SPEC) <= budget
    assert models.refused_count() == 24  # every sample of hosts c and d
    assert models.refused_series_count() == 2
    assert len(heard) == 2  # once per refused series, not once per sample
    assert heard[0].startswith("cpu_percent {'host': 'c'}: not scored: it would need")
    assert "max_bytes_total" in heard[0]
    assert heard[0].endswith("1 series and 1 sample(s) refused so far (each series is logged once)")
    assert heard[1].startswith("cpu_percent {'host': 'd'}: not scored")
    assert heard[1].endswith("2 series and 2 sample(s) refused so far (each series is logged once)")


def test_the_series_cap_is_reported_too() -> None:
    heard: list[str] = []
    models = ModelSet([SPEC], max_series=1, notify=heard.append)
    for host in "abb":
        models.observe(Sample("cpu_percent", 1.0, 1.0, {"host": host}))
    assert models.refused_count() == 2
    assert heard == [
        "cpu_percent {'host': 'b'}: not scored: the series cap (1 series) is reached;"
        " 1 series and 1 sample(s) refused so far (each series is logged once)"
    ]


def test_imported_state_respects_the_byte_budget() -> None:
    models = ModelSet([SPEC])
    feed(models, points(wave(300)), ["a", "b", "c"])
    small = ModelSet([SPEC], max_bytes_total=2 * series_bytes(SPEC))
    small.import_state(models.export_state())
    assert small.series_count() == 2
    assert len(small.state_notes) == 1
    assert "state dropped: it would need" in small.state_notes[0]
    # importing the same file again replaces the series instead of reserving twice
    small.import_state(models.export_state())
    assert small.bytes_reserved() == 2 * series_bytes(SPEC)


def test_reload_recounts_the_bytes_of_the_kept_series() -> None:
    models = ModelSet([SPEC])
    feed(models, points(wave(50)), ["a", "b"])
    models.replace_specs([SPEC])
    assert models.bytes_reserved() == 2 * series_bytes(SPEC)
    models.replace_specs([])
    assert models.bytes_reserved() == 0


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
    st.lists(st.integers(min_value=0, max_value=65535), max_size=40),
    st.integers(min_value=0, max_value=12),
    st.sampled_from(["d", "f", "H", "I"]),
)
def test_a_ring_holds_the_newest_values_in_order(
    capacity: int, values: list[int], last: int, typecode: str
) -> None:
    ring = Ring(capacity, typecode=typecode)
    dropped = [ring.append(v) for v in values]
    kept = values[-capacity:]
    assert list(ring) == kept and list(ring.to_array()) == kept and len(ring) == len(kept)
    assert list(ring.last(last)) == (kept[-last:] if last else [])
    assert dropped == [values[i - capacity] if i >= capacity else None for i in range(len(values))]
    if kept:
        assert ring.oldest() == kept[0] and ring.newest() == kept[-1]
    slid = Ring(capacity, typecode=typecode)
    for i, v in enumerate(values):
        k = i % capacity
        assert slid.slide(v, k) == (
            values[i - capacity] if i >= capacity else 0,
            values[i - k] if i - k >= 0 else 0,
        )
    assert list(slid) == kept
    assert list(Ring(capacity, ring.to_array(), typecode)) == kept


def test_a_set_memory_is_capped_for_a_pathological_series() -> None:
    """context 3 has too many possible transitions for a bitmap: a capped set instead."""
    rng = random.Random(3)
    params = ContextParams(context=3, history=20_000)
    detector = ContextDetector(params, warmup=20_000, threshold=0.99, sensitivity=0.5)
    assert not detector.bitmap
    values = [rng.random() for _ in range(20_000)]
    for value in values:
        detector.step(value)
    detector.apply(detector.fit(detector.training_input()))  # the first fit: all 20,000
    fitted = [set(m) for m in detector.memories]
    for value in values[:5000]:  # then streaming meets more distinct transitions
        detector.step(value * 1000.0 - 500.0)
    for fit, memory in zip(fitted, detector.memories, strict=True):
        assert len(fit) == _MAX_TRANSITIONS  # 8**4 possible, ~4000 seen: the most frequent kept
        assert len(memory) == _MAX_TRANSITIONS

"""The detector and ModelSet: causality, range, equivalence, import cost."""

from __future__ import annotations

import random
import subprocess
import sys
from array import array
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly_series import points, wave
from batond.anomaly import DEFAULT_SPEC, ContextParams, ModelSet, ModelSpec
from batond.anomaly.detector import ContextDetector, _encode, _unit
from batond.commands.backtest import score_rows
from batond.events import Sample

SPEC = replace(DEFAULT_SPEC, name="cpu", match_metrics=("cpu_percent",), retrain=6 * 3600.0)


def test_scores_of_a_prefix_do_not_change_when_more_data_follows() -> None:
    data = points(wave(1500, spike_at=1200))
    full = score_rows(SPEC, data)
    for cut in (250, 901, 1199, 1250):
        assert score_rows(SPEC, data[:cut]) == full[:cut]
    # retraining happened inside the prefixes, so it is covered too
    assert retrainings(data[:1250]) >= 1


def retrainings(data: list[tuple[float, float]]) -> int:
    models = ModelSet([SPEC])
    count = 0
    for ts, value in data:
        models.observe(Sample("cpu_percent", value, ts, {"host": "a"}))
        for job in models.training_jobs(ts):
            job()()
            count += 1
    return count


def test_non_finite_values_score_zero_and_are_not_learned() -> None:
    models = ModelSet([SPEC])
    for value in (float("nan"), float("inf"), -float("inf")):
        assert models.observe(Sample("cpu_percent", value, 1.0, {"host": "a"})) == 0.0
    assert models.series_count() == 0


def test_a_spike_is_scored_above_the_threshold_and_quiet_data_below() -> None:
    scores = score_rows(SPEC, points(wave(1500, spike_at=1200)))
    assert max(scores[1200:1210]) >= SPEC.threshold
    quiet = scores[SPEC.warmup : 1200]
    assert sum(s >= SPEC.threshold for s in quiet) <= 2


def test_a_lone_spike_scores_highest_on_its_own_sample() -> None:
    """A rule ``value > X and anomaly > 0.99`` must see the spike itself, not the point after.

    Flat noise around 10 with one spike to 60.8: the transition into the spike
    used to score ~0.98 and the (equally novel) transition back ~0.9999.
    """
    for seed in range(4):
        rng = random.Random(seed)
        values = [10.0 + rng.gauss(0.0, 0.5) for _ in range(800)]
        values[700] = 60.8
        scores = score_rows(DEFAULT_SPEC, points(values))
        assert scores[700] >= DEFAULT_SPEC.threshold, seed
        assert scores[700] == max(scores[690:720]), seed


def test_warmup_points_score_zero() -> None:
    scores = score_rows(SPEC, points(wave(400, spike_at=100)))
    assert scores[: SPEC.warmup] == [0.0] * SPEC.warmup


def test_backtest_scores_equal_streaming_scores_with_training_off_the_loop() -> None:
    """The daemon's way: jobs run later (here: after 7 more samples), applied on the loop."""
    data = points(wave(1500, spike_at=1000))
    models = ModelSet([SPEC])
    pending: list[tuple[int, object]] = []
    streamed = []
    for i, (ts, value) in enumerate(data):
        streamed.append(models.observe(Sample("cpu_percent", value, ts, {"host": "a"})))
        pending.extend((i + 7, job) for job in models.training_jobs(ts))
        for _, job in [p for p in pending if p[0] == i]:
            apply = job()  # type: ignore[operator]
            apply()
        pending = [p for p in pending if p[0] != i]
    # equal up to the first retraining: afterwards the daemon's late apply
    # replays the missed points, which the backtest's inline apply never misses
    first_retrain = next(
        i for i, (ts, _) in enumerate(data) if ts - data[SPEC.warmup - 1][0] >= SPEC.retrain
    )
    assert streamed[:first_retrain] == score_rows(SPEC, data)[:first_retrain]
    assert all(0.0 <= s <= 1.0 for s in streamed)


def test_no_model_for_a_metric_scores_zero_and_creates_no_series() -> None:
    models = ModelSet([SPEC])
    assert models.observe(Sample("other", 5.0, 1.0, {"host": "a"})) == 0.0
    assert models.series_count() == 0


def test_series_by_keeps_other_labels_from_multiplying_series() -> None:
    models = ModelSet([SPEC])
    for seq in range(50):
        models.observe(Sample("cpu_percent", 1.0, seq, {"host": "a", "seq": str(seq)}))
    models.observe(Sample("cpu_percent", 1.0, 1.0, {"host": "b"}))
    assert models.series_count() == 2
    [a] = models.series(metric="cpu_percent", host="a", limit=3)
    assert a["labels"] == {"host": "a"}
    assert a["model"] == "cpu" and a["threshold"] == SPEC.threshold
    assert a["points"] == [[47, 1.0, 0.0], [48, 1.0, 0.0], [49, 1.0, 0.0]]


def test_label_match_picks_the_first_covering_model() -> None:
    web = ModelSpec(name="web", match_metrics=("cpu_percent",), match_labels={"role": "web"})
    models = ModelSet([web, SPEC])
    models.observe(Sample("cpu_percent", 1.0, 1.0, {"host": "a", "role": "web"}))
    models.observe(Sample("cpu_percent", 1.0, 1.0, {"host": "b", "role": "db"}))
    assert {s["labels"]["host"]: s["model"] for s in models.series()} == {"a": "web", "b": "cpu"}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12),
            st.floats(allow_nan=False, allow_infinity=False),
            st.sampled_from([0.0, 1.0, -1.0, 1e-300, 1e308, -1e308]),
        ),
        min_size=1,
        max_size=700,
    )
)
def test_scores_are_always_within_0_and_1(values: list[float]) -> None:
    spec = replace(SPEC, warmup=20, retrain=3000.0)
    scores = score_rows(spec, points(values))
    assert all(0.0 <= s <= 1.0 for s in scores)


def test_importing_the_package_does_not_import_sklearn_or_numpy() -> None:
    code = (
        "import sys, batond.anomaly as a\n"
        "heavy = lambda: sorted(m for m in ('sklearn', 'numpy') if m in sys.modules)\n"
        "print(heavy())\n"
        "a.ModelSet([a.DEFAULT_SPEC]).prepare()\n"
        "print(heavy())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "['numpy']"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=-5, max_value=5), min_size=1, max_size=120))
def test_tracked_extremes_are_those_of_the_history_window(values: list[int]) -> None:
    detector = ContextDetector(
        ContextParams(history=10), warmup=10, threshold=0.99, sensitivity=0.5
    )
    for value in values:
        detector.step(float(value))
        if detector.ready():  # the first fit (a training job in the daemon)
            detector.apply(detector.fit(detector.training_input()))
        if detector.warm is None:  # the history holds codes from the first fit on
            assert (detector.low, detector.high) == (min(detector.history), max(detector.history))
    assert len(values) < 10 or detector.warm is None


def test_the_number_of_series_is_capped() -> None:
    models = ModelSet([SPEC], max_series=3)
    for host in "abcde":
        models.observe(Sample("cpu_percent", 1.0, 1.0, {"host": host}))
    assert models.series_count() == 3
    assert models.observe(Sample("cpu_percent", 1.0, 2.0, {"host": "a"})) == 0.0
    assert [s["labels"]["host"] for s in models.series()] == ["a", "b", "c"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=5, max_size=200),
    st.integers(min_value=1, max_value=3),
)
def test_the_numpy_fit_learns_exactly_what_streaming_learning_learns(
    values: list[float], context: int
) -> None:
    """Retraining (numpy) and per-point learning (pure Python) must agree on every transition."""
    params = ContextParams(bins=7, offsets=(0.0, 0.5), context=context)
    detector = ContextDetector(params, warmup=10, threshold=0.99, sensitivity=0.5)
    fit = detector.fit_values(values, len(values))
    replay = ContextDetector(params, warmup=10, threshold=0.99, sensitivity=0.5)
    us = [_unit(v, fit.lo, fit.span) for v in values]
    for u in us[:context]:  # seed the contexts as the fit's first counted point sees them
        replay._learn(u)
    replay.memories = [replay._empty_memory() for _ in params.offsets]
    for u in us[context:]:
        replay._learn(u)
    assert [bytes(m) if replay.bitmap else set(m) for m in replay.memories] == [
        bytes(m) if replay.bitmap else set(m) for m in fit.memories
    ]
    assert replay.contexts == list(fit.contexts)


def test_one_episode_alerts_once_however_long_it_lasts() -> None:
    """A point that would alert during the rest restarts it (rest does not change learning).

    So the scores with the default rest are exactly those with ``rest: 0``, set to 0 for
    ``rest`` points after every point at or above the threshold.
    """
    values = wave(1600)
    for start, offset in ((1200, 80.0), (1225, -70.0)):  # one episode: two bursts
        for i in range(start, start + 3):
            values[i] += offset
    data = points(values)
    rest = SPEC.params.rest
    unrested = score_rows(replace(SPEC, params=replace(SPEC.params, rest=0)), data)
    scores = score_rows(SPEC, data)
    above = [s >= SPEC.threshold for s in unrested]
    expected = [0.0 if any(above[max(0, i - rest) : i]) else s for i, s in enumerate(unrested)]
    assert scores == expected
    alerts = [i for i, s in enumerate(scores) if s >= SPEC.threshold]
    assert [i for i in alerts if i >= 1200] == [1200]  # the episode alerted once
    # a rest counted from the alert alone would have alerted a second time: the
    # data holds the case this test is about
    assert any(above[i] for i in range(1200 + rest + 1, 1300))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=300),
    st.sampled_from([1, 2, 7, 10]),
)
def test_the_baseline_holds_the_older_sums_not_the_newest_half_window(
    values: list[int], short: int
) -> None:
    """The likelihood's baseline: up to ``long`` sums before the ``short // 2`` newest."""
    params = ContextParams(short=short, long=30, history=40)
    detector = ContextDetector(params, warmup=10, threshold=0.99, sensitivity=0.5)
    for value in values:
        detector.step(float(value))
        if detector.ready():
            detector.apply(detector.fit(detector.training_input()))
        sums = list(detector.long)
        baseline = sums[: max(len(sums) - short // 2, 0)][-30:]
        squares = sum(x * x for x in baseline)
        assert (detector.long_sum, detector.long_sq) == (sum(baseline), squares)
        assert len(sums) <= 30 + short // 2


def test_a_burst_is_judged_against_the_time_before_it_not_against_its_own_start() -> None:
    """The sums of a burst's first points join the baseline only ``short // 2`` points later.

    Before v2.2 they joined at once, so a burst building up over a few points raised
    its own baseline's mean and spread while it was being judged.
    """
    detector = ContextDetector(ContextParams(rest=0), warmup=200, threshold=0.99, sensitivity=0.5)
    for i in range(600):
        detector.step(float(i % 2))  # two levels, perfectly predictable: no novelty
        if detector.ready():
            detector.apply(detector.fit(detector.training_input()))
    assert detector.long_sum == 0
    assert detector.step(0.5) >= 0.99  # a level never seen: novel, alerts
    gap = detector.params.short // 2
    for value in [0.0, 1.0, 0.0, 1.0, 0.0][: gap - 1]:
        detector.step(value)
    assert detector.long_sum == 0  # the burst's sums wait: the baseline is the quiet past
    detector.step(1.0)
    assert detector.long_sum > 0  # and join it `gap` points after the burst began


def test_a_state_saved_before_the_baseline_gap_loads_with_its_newest_sums_waiting() -> None:
    """v2.1 saved ``long`` sums, all in the baseline; v2.2 reads the newest as waiting."""
    params = ContextParams()
    gap = params.short // 2
    rng = random.Random(7)
    detector = ContextDetector(params, warmup=200, threshold=0.99, sensitivity=0.5)
    for i in range(1500):
        detector.step(rng.gauss(10.0, 1.0) + (30.0 if i % 97 == 0 else 0.0))
        if detector.ready():
            detector.apply(detector.fit(detector.training_input()))
    state = detector.to_state()
    sums = list(detector.long)
    assert len(sums) == params.long + gap
    restored = ContextDetector(params, warmup=200, threshold=0.99, sensitivity=0.5)
    restored.load_state(state)
    legacy = ContextDetector(params, warmup=200, threshold=0.99, sensitivity=0.5)
    legacy_state = dict(state)  # as v2.1 wrote it: only the newest `long` sums
    legacy_state["long"] = _encode(array(detector.long.typecode, sums[-params.long :]))
    legacy.load_state(legacy_state)
    baseline = sums[-params.long : -gap]
    assert sum(baseline) > 0  # the spikes left novelty in the window: a sum to get wrong
    assert legacy.long_sum == sum(baseline) and len(legacy.long) == params.long
    assert restored.long_sum == detector.long_sum  # a v2.2 state continues exactly
    value = 42.0
    assert restored.step(value) == detector.step(value)
    legacy.step(value)  # and the v2.1 one goes on scoring
    assert len(legacy.long) == params.long + 1

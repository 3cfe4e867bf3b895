"""Operator feedback: a false positive lowers that series' sensitivity."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

from anomaly_series import points, wave
from batond.anomaly import DEFAULT_SPEC, ModelSet
from batond.events import Sample
from batond.journal.model_state import load_state, save_state

SPEC = replace(DEFAULT_SPEC, name="cpu", match_metrics=("cpu_percent",))


def feed(models: ModelSet, data: list[tuple[float, float]], host: str) -> list[float]:
    return [models.observe(Sample("cpu_percent", v, ts, {"host": host})) for ts, v in data]


def test_false_positive_lowers_scores_and_alerts_of_that_series_only(tmp_path: Path) -> None:
    data = points(wave(1600, spike_at=1300))
    # a twin with occasional moderate bumps: some of them alert, which an
    # operator calls a false positive (twice)
    rng = random.Random(5)
    noisy = points(
        [v + (rng.uniform(10, 30) if rng.random() < 0.01 else 0.0) for v in wave(1600, seed=3)]
    )
    models = ModelSet([SPEC])
    feed(models, data[:700], "a")
    feed(models, noisy[:700], "b")
    control = ModelSet([SPEC])
    feed(control, data[:700], "a")
    feed(control, noisy[:700], "b")

    assert models.feedback_false_positive("cpu_percent", {"host": "b", "seq": "7"})
    assert models.feedback_false_positive("cpu_percent", {"host": "b"})
    assert not models.feedback_false_positive("cpu_percent", {"host": "nobody"})
    assert not models.feedback_false_positive("mem_percent", {"host": "b"})

    lowered = feed(models, noisy[700:], "b")
    before = feed(control, noisy[700:], "b")
    alerts_before = sum(s >= SPEC.threshold for s in before)
    assert alerts_before >= 1
    assert sum(s >= SPEC.threshold for s in lowered) < alerts_before
    assert max(lowered) < max(before)
    # the other series is untouched
    assert feed(models, data[700:], "a") == feed(control, data[700:], "a")

    # and the lowered sensitivity survives a restart
    save_state(models, tmp_path)
    again = ModelSet([SPEC])
    load_state(again, tmp_path)
    [b] = again.series(host="b")
    assert b["sensitivity"] < SPEC.sensitivity

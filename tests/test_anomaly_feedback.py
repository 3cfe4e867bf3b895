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
    scores = []
    for ts, value in data:
        scores.append(models.observe(Sample("cpu_percent", value, ts, {"host": host})))
        for job in models.training_jobs(ts):
            job()()
    return scores


def bumpy(n: int) -> list[tuple[float, float]]:
    """A wave with occasional moderate bumps: some alert, which an operator calls false."""
    rng = random.Random(5)
    return points(
        [v + (rng.uniform(10, 30) if rng.random() < 0.01 else 0.0) for v in wave(n, seed=3)]
    )


def test_false_positive_feedback_makes_the_same_input_score_below_the_threshold(
    tmp_path: Path,
) -> None:
    noisy, other = bumpy(1600), points(wave(1600, spike_at=1300))
    models = ModelSet([SPEC])
    feed(models, noisy[:700], "b")
    feed(models, other[:700], "a")
    snapshot = models.export_state()

    # replay the rest of the same series twice from the same learned state:
    # as it was, and after two false_positive verdicts on series b
    before = ModelSet([SPEC])
    before.import_state(snapshot)
    assert models.feedback_false_positive("cpu_percent", {"host": "b", "seq": "7"})
    assert models.feedback_false_positive("cpu_percent", {"host": "b"})
    assert not models.feedback_false_positive("cpu_percent", {"host": "nobody"})
    assert not models.feedback_false_positive("mem_percent", {"host": "b"})
    scores_before = feed(before, noisy[700:], "b")
    scores_after = feed(models, noisy[700:], "b")

    alerts = [i for i, s in enumerate(scores_before) if s >= SPEC.threshold]
    assert alerts, "the replayed series must alert without feedback"
    # the first alert's input now scores below the threshold, and fewer points alert
    assert scores_after[alerts[0]] < SPEC.threshold
    assert sum(s >= SPEC.threshold for s in scores_after) < len(alerts)
    [b] = models.series(host="b")
    assert b["sensitivity"] == SPEC.sensitivity * 0.7 * 0.7  # the page shows both
    assert b["model_sensitivity"] == SPEC.sensitivity
    # the other series is untouched
    assert feed(models, other[700:], "a") == feed(before, other[700:], "a")

    # and the lowered sensitivity survives a restart
    save_state(models, tmp_path)
    again = ModelSet([SPEC])
    load_state(again, tmp_path)
    [b] = again.series(host="b")
    assert b["sensitivity"] < SPEC.sensitivity

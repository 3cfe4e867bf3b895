"""Learned state: persisted, reloaded, versioned."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from anomaly_series import points, wave
from batond.anomaly import DEFAULT_SPEC, ContextParams, ModelSet
from batond.errors import StateError
from batond.events import Sample
from batond.journal.model_state import STATE_FILE, load_state, save_state

SPEC = replace(DEFAULT_SPEC, name="cpu", match_metrics=("cpu_percent",))


def feed(models: ModelSet, data: list[tuple[float, float]], host: str = "a") -> list[float]:
    scores = []
    for ts, value in data:
        scores.append(models.observe(Sample("cpu_percent", value, ts, {"host": host})))
        for job in models.training_jobs(ts):
            job()()
    return scores


def test_state_round_trip_continues_exactly_where_it_stopped(tmp_path: Path) -> None:
    data = points(wave(1400, spike_at=1100))
    straight = feed(ModelSet([SPEC]), data)

    first = ModelSet([SPEC])
    feed(first, data[:800])
    save_state(first, tmp_path)
    second = ModelSet([SPEC])
    load_state(second, tmp_path)
    assert second.series_count() == 1
    assert feed(second, data[800:]) == straight[800:]
    assert max(straight[1100:1110]) >= SPEC.threshold  # the continuation is not trivial


def test_saving_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    models = ModelSet([SPEC])
    feed(models, points(wave(400)))
    save_state(models, tmp_path)
    save_state(models, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]


def test_missing_state_is_a_fresh_start(tmp_path: Path) -> None:
    models = ModelSet([SPEC])
    load_state(models, tmp_path)
    assert models.series_count() == 0


def test_another_format_version_is_rejected_with_a_clear_message(tmp_path: Path) -> None:
    models = ModelSet([SPEC])
    feed(models, points(wave(400)))
    save_state(models, tmp_path)
    path = tmp_path / STATE_FILE
    data = path.read_bytes()
    path.write_bytes(data.replace(b" v3\n", b" v99\n", 1))
    with pytest.raises(StateError) as info:
        load_state(ModelSet([SPEC]), tmp_path)
    message = str(info.value)
    assert str(path) in message
    assert "format version 99, this batond reads version 3" in message
    assert path.read_bytes() == data.replace(b" v3\n", b" v99\n", 1)  # nothing overwritten


def test_a_version_2_file_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    """v2 kept the history as float64; v3 keeps 2-byte codes and transition bitmaps."""
    (tmp_path / STATE_FILE).write_bytes(b'batond-anomaly-state v2\n{"series":[]}')
    with pytest.raises(StateError, match="format version 2, this batond reads version 3"):
        load_state(ModelSet([SPEC]), tmp_path)


def test_a_corrupt_float_array_is_a_state_error() -> None:
    models = ModelSet([SPEC])
    feed(models, points(wave(300)))
    header, body = models.export_state().split(b"\n", 1)
    data = json.loads(body)
    data["series"][0]["detector"]["history"] = "not base64!"
    with pytest.raises(StateError, match="malformed series entry"):
        ModelSet([SPEC]).import_state(header + b"\n" + json.dumps(data).encode())


@pytest.mark.parametrize("data", [b"", b"garbage\n{}", b"batond-anomaly-state v2\n{not json"])
def test_unreadable_state_is_a_state_error(tmp_path: Path, data: bytes) -> None:
    (tmp_path / STATE_FILE).write_bytes(data)
    with pytest.raises(StateError, match="anomaly state"):
        load_state(ModelSet([SPEC]), tmp_path)


def test_a_model_changed_since_learning_is_set_aside_with_a_note(tmp_path: Path) -> None:
    models = ModelSet([SPEC])
    feed(models, points(wave(400)))
    save_state(models, tmp_path)
    changed = replace(SPEC, params=ContextParams(bins=9))
    fresh = ModelSet([changed])
    load_state(fresh, tmp_path)
    assert fresh.series_count() == 0
    assert fresh.state_notes == [
        "cpu_percent {'host': 'a'}: model 'cpu' changed detector, params, warmup or threshold"
        " since this state was learned; the series learns afresh"
    ]
    # sensitivity is tuning, not learned structure: changing it keeps the state
    kept = ModelSet([replace(SPEC, sensitivity=0.3)])
    load_state(kept, tmp_path)
    assert kept.series_count() == 1 and kept.state_notes == []


def test_reload_keeps_learned_series_whose_model_still_applies() -> None:
    data = points(wave(600))
    other = replace(SPEC, name="mem", match_metrics=("memory_percent",))
    models = ModelSet([SPEC, other])
    feed(models, data[:500])
    models.observe(Sample("memory_percent", 1.0, 1.0, {"host": "a"}))
    models.feedback_false_positive("cpu_percent", {"host": "a"})
    lowered = models.series(metric="cpu_percent")[0]["sensitivity"]

    # same cpu model with a new sensitivity and an extra metric; mem model changed params
    models.replace_specs(
        ModelSet(
            [
                replace(SPEC, sensitivity=0.25, match_metrics=("cpu_percent", "load_1m")),
                replace(other, params=ContextParams(bins=5)),
            ]
        )
    )
    [cpu] = models.series(metric="cpu_percent")
    assert cpu["sensitivity"] == pytest.approx(lowered / 2)
    assert models.series(metric="memory_percent") == []
    assert models.state_notes == [
        "memory_percent {'host': 'a'}: model 'mem' is gone or changed; the series learns afresh"
    ]
    # the kept series goes on from what it learned: no new warm-up
    models.observe(Sample("cpu_percent", data[500][1], data[500][0], {"host": "a"}))
    body = json.loads(models.export_state().split(b"\n", 1)[1])
    [kept] = [s for s in body["series"] if s["metric"] == "cpu_percent"]
    assert kept["detector"]["seen"] == 501
    assert kept["detector"]["span"] > 0.0  # trained, not warming up again


def test_a_model_with_other_series_labels_starts_afresh(tmp_path: Path) -> None:
    models = ModelSet([SPEC])
    feed(models, points(wave(300)))
    save_state(models, tmp_path)
    regrouped = ModelSet([replace(SPEC, series_by=("host", "core"))])
    load_state(regrouped, tmp_path)
    assert regrouped.series_count() == 0
    assert regrouped.state_notes == [
        "cpu_percent {'host': 'a'}: model 'cpu' now tells series apart by ['host', 'core'];"
        " the series learns afresh"
    ]

"""models/*.yaml: validation with exact FILE:LINE:COL problems."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from batond.anomaly import DEFAULT_SPEC, ContextParams, HostParams
from batond.errors import ConfigError
from batond.load.modelfile import check_model_paths, load_models

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_host_models_load_and_cover_the_host_metrics() -> None:
    specs = load_models([REPO / "models"])
    covered = {m for s in specs for m in s.match_metrics}
    assert {"cpu_percent", "memory_percent", "load_1m", "disk_used_percent"} <= covered
    disk = next(s for s in specs if "disk_used_percent" in s.match_metrics)
    assert disk.series_by == ("host", "mount")


def test_a_full_model_is_read_and_omitted_keys_take_the_built_in_defaults(tmp_path: Path) -> None:
    write(
        tmp_path,
        "m.yaml",
        """\
models:
  - name: web-cpu
    match: {metric: [cpu_percent, load_1m], role: web}
    series_by: [host, core]
    params: {bins: 8, offsets: [0, 0.25, 0.5], rest: 10}
    sensitivity: 0.3
    warmup: 50
    retrain: 30m
    threshold: 0.95
  - name: minimal
    match: {metric: memory_percent}
""",
    )
    full, minimal = load_models([tmp_path])
    assert full.name == "web-cpu"
    assert full.match_metrics == ("cpu_percent", "load_1m")
    assert full.match_labels == {"role": "web"}
    assert full.series_by == ("host", "core")
    assert full.params == ContextParams(bins=8, offsets=(0.0, 0.25, 0.5), rest=10)
    assert (full.sensitivity, full.warmup, full.retrain, full.threshold) == (0.3, 50, 1800.0, 0.95)
    assert minimal.params == DEFAULT_SPEC.params
    assert minimal.series_by == ("host",) and minimal.threshold == DEFAULT_SPEC.threshold


def test_every_problem_is_reported_at_its_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        """\
models:
  - name: a
    match: {metric: cpu_percent}
    detector: forest
    sensitivity: 1.5
    warmup: 3
    retrain: 10
    params: {bins: 1, offsets: [0, 1.2], depth: 3}
    thresold: 0.9
  - name: a
    match: {role: web}
  - match: {metric: x}
    threshold: 0
""",
    )
    f = str(path)
    assert [str(p) for p in check_model_paths([path])] == [
        f"{f}:4:15: detector must be one of context, host; got 'forest'",
        f"{f}:5:18: must be greater than 0 and at most 1, got 1.5",
        f"{f}:6:13: must be at least 10, got 3",
        f"{f}:7:14: invalid duration '10': expected <integer><unit>... with units ms, s, m, h, d",
        f"{f}:8:20: must be at least 2, got 1",
        f"{f}:8:36: an offset is a fraction of a bin in [0, 1), got 1.2",
        f"{f}:8:42: unknown key 'depth'",
        f"{f}:9:5: unknown key 'thresold' (did you mean 'threshold'?)",
        f"{f}:10:11: duplicate model name 'a'",
        f"{f}:11:12: missing required key 'metric'",
        f"{f}:12:5: missing required key 'name'",
        f"{f}:13:16: must be greater than 0 and at most 1, got 0.0",
    ]
    with pytest.raises(ConfigError) as info:
        load_models([path])
    assert len(info.value.problems) == 12


def test_a_duplicate_name_across_files_is_reported_at_the_later_definition(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "models:\n  - name: x\n    match: {metric: m}\n")
    later = write(tmp_path, "b.yaml", "models:\n  - {name: x, match: {metric: n}}\n")
    assert [str(p) for p in check_model_paths([tmp_path])] == [
        f"{later}:2:12: duplicate model name 'x'"
    ]


def test_yaml_syntax_and_a_wrong_top_level_are_problems(tmp_path: Path) -> None:
    broken = write(tmp_path, "broken.yaml", "models:\n  - name: [\n")
    wrong = write(tmp_path, "wrong.yaml", "model: []\n")
    problems = [str(p) for p in check_model_paths([broken, wrong])]
    assert problems[0].startswith(f"{broken}:3:1: YAML syntax")
    assert problems[1:] == [
        f"{wrong}:1:1: missing required key 'models'",
        f"{wrong}:1:1: unknown key 'model' (did you mean 'models'?)",
    ]


def test_a_host_model_is_read_with_its_own_params(tmp_path: Path) -> None:
    write(
        tmp_path,
        "host.yaml",
        """\
models:
  - name: whole-host
    match: {metric: [cpu_percent, load_1m, disk_io_percent]}
    detector: host
    params: {variance: 0.9, history: 2000, top: 2}
  - name: defaults
    match: {metric: [a, b]}
    detector: host
""",
    )
    host, defaults = load_models([tmp_path])
    assert host.detector == "host" and host.params == DEFAULT_SPEC.params
    assert host.host == HostParams(variance=0.9, history=2000, top=2)
    assert defaults.host == HostParams() and defaults.series_by == ("host",)
    assert host.fingerprint() != replace(host, host=HostParams()).fingerprint()


def test_host_model_mistakes_are_reported_at_their_line_and_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "bad.yaml",
        """\
models:
  - name: one
    match: {metric: cpu_percent}
    detector: host
  - name: loop
    match: {metric: [cpu_percent, host_anomaly]}
    detector: host
  - name: params
    match: {metric: [a, b]}
    detector: host
    params: {variance: 1.5, bins: 7, top: 0}
""",
    )
    f = str(path)
    assert [str(p) for p in check_model_paths([path])] == [
        f"{f}:3:21: a host model scores metrics jointly: name at least 2 metrics",
        f"{f}:6:21: a host model cannot cover host_anomaly, the series it makes",
        f"{f}:11:24: must be above 0 and at most 1, got 1.5",
        f"{f}:11:29: unknown key 'bins'",
        f"{f}:11:43: must be at least 1, got 0",
    ]

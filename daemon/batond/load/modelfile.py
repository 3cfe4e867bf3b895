"""``models/*.yaml``: model definitions, validated with FILE:LINE:COL problems.

::

    models:
      - name: host-cpu                  # unique across all model files
        match:                          # required
          metric: cpu_percent           # a metric name or a list of names
          role: web                     # any other key: label that must be equal
        series_by: [host]               # labels that tell series apart (default [host])
        detector: context               # context (default) or host
        params: {bins: 7, offsets: [0, 0.5], context: 1, short: 10, long: 400,
                 rest: 30, history: 2000, beyond: 2}
        sensitivity: 0.5                # (0, 1]; lower needs stronger evidence
        warmup: 200                     # points learned before scoring
        retrain: 1h                     # re-learn range and memory this often
        threshold: 0.99                 # default alert threshold, (0, 1]

A ``detector: host`` model scores each host's vector of its metrics jointly;
its ``params`` are ``{variance: 0.95, history: 4000, min_std: 0.05, top: 3}``.

Every key but ``name`` and ``match`` defaults to the built-in model
(:data:`batond.anomaly.spec.DEFAULT_SPEC`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from batond.anomaly.hostset import HOST_METRIC
from batond.anomaly.spec import DEFAULT_SPEC, DETECTORS, ContextParams, HostParams, ModelSpec
from batond.errors import ConfigError, Problem
from batond.load.fields import INVALID, Field, Fields, Kind, SchemaBuilder, Section, read_section
from batond.load.kinds import (
    Choice,
    Duration,
    Integer,
    ListOf,
    Name,
    Nested,
    Number,
    Switch,
    Text,
)
from batond.load.yamlfile import MappingNode, Node, Reader, compose_file

__all__ = ["MODEL_FIELDS", "MODEL_FILE_FIELDS", "check_model_paths", "load_models", "model_files"]


class _ModelMatch(Kind):
    """``{metric: NAME or [NAMES], label: value...}`` as (metric names, labels)."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        f = r.mapping(node, None, required=("metric",), what="match mapping")
        if f is None or "metric" not in f:
            return INVALID
        mnode = f.pop("metric")
        metrics = [r.name(n, "metric name") for n in r.seq_or_one(mnode)]
        if not metrics:
            r.error(mnode, "expected at least one metric name")
        labels: dict[str, str] = {}
        for label, vnode in f.items():
            value = r.string(vnode, f"value of label {label!r}", empty_ok=True)
            if value is not None:
                labels[label] = value
        return tuple(m for m in metrics if m is not None), labels

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        name = {"type": "string", "minLength": 1}
        return {
            "type": "object",
            "required": ["metric"],
            "properties": {"metric": {"anyOf": [name, {"type": "array", "items": name}]}},
            "additionalProperties": {"type": ["string", "number", "boolean"]},
        }


def _params(f: Fields) -> Any:
    if not f.valid():
        return INVALID
    params = ContextParams(**f.values())
    if params.rest >= params.long:
        f.reader.error(f.nodes.get("rest", f.node), "rest must be shorter than long")
        return INVALID
    return params


#: The integer parameters of the context detector and their (lowest, highest) values.
_PARAM_LIMITS: dict[str, tuple[int, int]] = {
    "bins": (2, 100),
    "context": (1, 4),
    "short": (1, 1000),
    "long": (10, 100_000),
    "rest": (0, 100_000),
    "history": (10, 1_000_000),
    "beyond": (1, 3),
}
_OFFSETS = ListOf(
    Number(
        0.0, 1.0, high_open=True, message="an offset is a fraction of a bin in [0, 1), got {value}"
    ),
    "list of offsets",
    1,
    8,
    "expected 1 to 8 offsets, got {n}",
    partial=False,
    stop=True,
)
#: Every parameter of :class:`ContextParams`, none other.
PARAMS_FIELDS = Section(
    "params mapping",
    tuple(
        Field(p.name, _OFFSETS if p.name == "offsets" else Integer(*_PARAM_LIMITS[p.name]))
        for p in fields(ContextParams)
    ),
    build=_params,
)
#: The parameters of the ``host`` detector and their (lowest, highest) values.
_HOST_LIMITS: dict[str, tuple[float, float]] = {
    "variance": (0.0, 1.0),  # (low, high]: at least one component, at most all
    "history": (10, 1_000_000),
    "min_std": (0.0, 1e12),
    "top": (1, 50),
    "learn_below": (0.0, 1e12),  # a ratio; 1e12 learns every vector
}


def _host_param(name: str) -> Field:
    low, high = _HOST_LIMITS[name]
    if name in ("history", "top"):
        return Field(name, Integer(int(low), int(high), f"must be at most {high:g}, got {{value}}"))
    above = f"must be above {low:g} and at most {high:g}, got {{value}}"
    return Field(name, Number(low, high, low_open=True, message=above))


HOST_PARAMS_FIELDS = Section(
    "params mapping (detector host)",
    tuple(_host_param(name) for name in _HOST_LIMITS),
    build=lambda f: HostParams(**f.values()) if f.valid() else INVALID,
)
_FRACTION = Number(
    0.0, 1.0, low_open=True, message="must be greater than 0 and at most 1, got {value}"
)
MODEL_FIELDS = Section(
    "model",
    (
        Field("name", Name("model name"), True, "unique across all model files"),
        Field("match", _ModelMatch(), True, "a metric name or a list of names, and labels"),
        Field("series_by", ListOf(Text(), "list of strings"), doc="labels that tell series apart"),
        Field("detector", Choice(DETECTORS, "detector"), doc="context (default) or host"),
        Field(
            "params",
            Switch(
                "detector",
                {"context": Nested(PARAMS_FIELDS), "host": Nested(HOST_PARAMS_FIELDS)},
                default="context",
            ),
            doc="the detector's parameters",
        ),
        Field("sensitivity", _FRACTION, doc="lower needs stronger evidence"),
        Field("warmup", Integer(10), doc="points learned before scoring"),
        Field("retrain", Duration(1.0), doc="re-learn range and memory this often"),
        Field("threshold", _FRACTION, doc="default alert threshold"),
    ),
    ref="model",
)
MODEL_FILE_FIELDS = Section(
    "mapping",
    (Field("models", ListOf(Nested(MODEL_FIELDS), "list of models"), True),),
    doc="batond model file",
)


def model_files(paths: Sequence[Path]) -> list[Path]:
    """Files named by ``paths``: a file as is, a folder's ``*.yaml``/``*.yml`` sorted."""
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            out.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")))
        else:
            out.append(path)
    return out


def check_model_paths(paths: Sequence[Path]) -> list[Problem]:
    """Every problem of the model files under ``paths`` (empty when clean)."""
    problems, _ = _read_all(paths)
    return sorted(problems)


def load_models(paths: Sequence[Path]) -> list[ModelSpec]:
    """The models under ``paths``; ConfigError with every problem if any."""
    problems, specs = _read_all(paths)
    if problems:
        raise ConfigError(sorted(problems))
    return specs


def _read_all(paths: Sequence[Path]) -> tuple[list[Problem], list[ModelSpec]]:
    problems: list[Problem] = []
    specs: list[ModelSpec] = []
    names: set[str] = set()
    for path in model_files(paths):
        node, reader = compose_file(path)
        if node is not None:
            specs.extend(_read_file(node, reader, names))
        problems.extend(reader.problems)
    return problems, specs


def _read_file(node: Node, reader: Reader, names: set[str]) -> list[ModelSpec]:
    top = read_section(reader, node, MODEL_FILE_FIELDS)
    if top is None:
        return []
    specs = (_model(f, names) for f in top.get("models", ()))
    return [spec for spec in specs if spec is not None]


def _model(f: Fields, names: set[str]) -> ModelSpec | None:
    reader = f.reader
    before = len(reader.problems)
    name = f.get("name")
    if name is not None:
        if name in names:
            reader.error(f.nodes["name"], f"duplicate model name {name!r}")
        names.add(name)
    if f.get("detector") == "host" and "match" in f:
        _check_host_metrics(f, f.get("match", ((), {}))[0])
    values = f.values()
    if len(reader.problems) > before or name is None or "match" not in values:
        return None
    metrics, labels = values.pop("match")
    values.pop("name")
    if isinstance(values.get("params"), HostParams):
        values["host"] = values.pop("params")
    return replace(DEFAULT_SPEC, name=name, match_metrics=metrics, match_labels=labels, **values)


def _check_host_metrics(f: Fields, metrics: tuple[str, ...]) -> None:
    node = f.nodes["match"]
    at = node  # the metric list itself when the match is a mapping
    if isinstance(node, MappingNode):
        at = next((v for k, v in node.value if getattr(k, "value", None) == "metric"), node)
    if HOST_METRIC in metrics:
        f.reader.error(at, f"a host model cannot cover {HOST_METRIC}, the series it makes")
    elif len(set(metrics)) < 2:
        f.reader.error(at, "a host model scores metrics jointly: name at least 2 metrics")
    elif len(set(metrics)) != len(metrics):
        f.reader.error(at, "a host model names each metric once")

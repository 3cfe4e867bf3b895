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
from batond.load.yamlfile import MappingNode, Node, Reader, compose_file

__all__ = ["check_model_paths", "load_models", "model_files"]

_MODEL_KEYS = (
    "name", "match", "series_by", "detector", "params",
    "sensitivity", "warmup", "retrain", "threshold",
)  # fmt: skip
_PARAM_LIMITS: dict[str, tuple[int, int]] = {
    "bins": (2, 100),
    "context": (1, 4),
    "short": (1, 1000),
    "long": (10, 100_000),
    "rest": (0, 100_000),
    "history": (10, 1_000_000),
    "beyond": (1, 3),
}


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
    top = reader.mapping(node, ("models",), required=("models",))
    if top is None or "models" not in top:
        return []
    items = reader.seq(top["models"], "list of models")
    specs = []
    for item in items or ():
        spec = _read_model(item, reader, names)
        if spec is not None:
            specs.append(spec)
    return specs


def _read_model(node: Node, reader: Reader, names: set[str]) -> ModelSpec | None:
    before = len(reader.problems)
    f = reader.mapping(node, _MODEL_KEYS, required=("name", "match"), what="model")
    if f is None:
        return None
    name = reader.name(f["name"], "model name") if "name" in f else None
    if name is not None:
        if name in names:
            reader.error(f["name"], f"duplicate model name {name!r}")
        names.add(name)
    metrics, labels = _read_match(f["match"], reader) if "match" in f else ((), {})
    detector = _opt(f, "detector", lambda n: reader.one_of(n, DETECTORS, "detector"))
    host = detector == "host"
    if host and "match" in f:
        _check_host_metrics(f["match"], metrics, reader)
    values: dict[str, Any] = {
        "series_by": _opt(f, "series_by", reader.str_list),
        "detector": detector,
        "host" if host else "params": _opt(
            f, "params", lambda n: _read_host_params(n, reader) if host else _read_params(n, reader)
        ),
        "sensitivity": _opt(f, "sensitivity", lambda n: _fraction(n, reader)),
        "warmup": _opt(f, "warmup", lambda n: reader.integer(n, minimum=10)),
        "retrain": _opt(f, "retrain", lambda n: reader.duration(n, minimum=1.0)),
        "threshold": _opt(f, "threshold", lambda n: _fraction(n, reader)),
    }
    if len(reader.problems) > before or name is None:
        return None
    values = {k: v for k, v in values.items() if v is not None}
    if "series_by" in values:
        values["series_by"] = tuple(values["series_by"])
    return replace(DEFAULT_SPEC, name=name, match_metrics=metrics, match_labels=labels, **values)


def _opt(fields_: dict[str, Node], key: str, read: Any) -> Any:
    return read(fields_[key]) if key in fields_ else None


def _fraction(node: Node, reader: Reader) -> float | None:
    value = reader.number(node)
    if value is not None and not 0.0 < value <= 1.0:
        reader.error(node, f"must be greater than 0 and at most 1, got {value}")
        return None
    return value


def _read_match(node: Node, reader: Reader) -> tuple[tuple[str, ...], dict[str, str]]:
    f = reader.mapping(node, None, required=("metric",), what="match mapping")
    if f is None or "metric" not in f:
        return (), {}
    mnode = f.pop("metric")
    metrics = [reader.name(n, "metric name") for n in reader.seq_or_one(mnode)]
    if not metrics:
        reader.error(mnode, "expected at least one metric name")
    labels: dict[str, str] = {}
    for key, vnode in f.items():
        value = reader.string(vnode, f"value of label {key!r}", empty_ok=True)
        if value is not None:
            labels[key] = value
    return tuple(m for m in metrics if m is not None), labels


def _check_host_metrics(node: Node, metrics: tuple[str, ...], reader: Reader) -> None:
    at = node  # the metric list itself when the match is a mapping (it was read above)
    if isinstance(node, MappingNode):
        at = next((v for k, v in node.value if getattr(k, "value", None) == "metric"), node)
    if HOST_METRIC in metrics:
        reader.error(at, f"a host model cannot cover {HOST_METRIC}, the series it makes")
    elif len(set(metrics)) < 2:
        reader.error(at, "a host model scores metrics jointly: name at least 2 metrics")
    elif len(set(metrics)) != len(metrics):
        reader.error(at, "a host model names each metric once")


_HOST_LIMITS: dict[str, tuple[float, float]] = {
    "variance": (0.0, 1.0),  # (low, high]: at least one component, at most all
    "history": (10, 1_000_000),
    "min_std": (0.0, 1e12),
    "top": (1, 50),
}


def _read_host_params(node: Node, reader: Reader) -> HostParams | None:
    f = reader.mapping(node, list(_HOST_LIMITS), what="params mapping (detector host)")
    if f is None:
        return None
    values: dict[str, Any] = {}
    for key, vnode in f.items():
        low, high = _HOST_LIMITS[key]
        value: Any
        if key in ("history", "top"):
            value = reader.integer(vnode, minimum=int(low))
        else:
            value = reader.number(vnode)
            if value is not None and not low < value <= high:
                reader.error(vnode, f"must be above {low:g} and at most {high:g}, got {value}")
                value = None
        if value is not None and value > high:
            reader.error(vnode, f"must be at most {high:g}, got {value}")
            value = None
        values[key] = value
    if any(v is None for v in values.values()):
        return None
    return HostParams(**values)


def _read_params(node: Node, reader: Reader) -> ContextParams | None:
    allowed = [f.name for f in fields(ContextParams)]
    f = reader.mapping(node, allowed, what="params mapping")
    if f is None:
        return None
    values: dict[str, Any] = {}
    ok = True
    for key, vnode in f.items():
        if key == "offsets":
            value: Any = _read_offsets(vnode, reader)
        else:
            low, high = _PARAM_LIMITS[key]
            value = reader.integer(vnode, minimum=low)
            if value is not None and value > high:
                reader.error(vnode, f"must be at most {high}, got {value}")
                value = None
        ok = ok and value is not None
        values[key] = value
    if not ok:
        return None
    params = ContextParams(**values)
    if params.rest >= params.long:
        reader.error(f.get("rest", node), "rest must be shorter than long")
        return None
    return params


def _read_offsets(node: Node, reader: Reader) -> tuple[float, ...] | None:
    items = reader.seq(node, "list of offsets")
    if items is None:
        return None
    if not 1 <= len(items) <= 8:
        reader.error(node, f"expected 1 to 8 offsets, got {len(items)}")
        return None
    out = []
    for item in items:
        value = reader.number(item)
        if value is not None and not 0.0 <= value < 1.0:
            reader.error(item, f"an offset is a fraction of a bin in [0, 1), got {value}")
            value = None
        if value is None:
            return None
        out.append(value)
    return tuple(out)

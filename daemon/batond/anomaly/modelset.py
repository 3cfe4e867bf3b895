"""Every model and every series it covers: the anomaly side of the engine.

``observe`` runs for every sample, so the no-model case is one dict lookup
(metric -> models).  A series is the metric plus the values of the labels its
model names in ``series_by``; the first model (in file order) whose labels
match owns the series.

Training never runs on the event loop: :meth:`ModelSet.training_jobs` returns
jobs; a job runs in a worker thread (it only reads a copy of the history
taken when the job was made) and returns an *apply* callback, to be run back
on the loop, that swaps the new fit in.  ``batond backtest`` runs the same
jobs inline at event time, so its scores equal the daemon's.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batond.anomaly.detector import ContextDetector
from batond.anomaly.spec import ModelSpec
from batond.errors import StateError
from batond.events import Sample

__all__ = ["FEEDBACK_FACTOR", "MIN_SENSITIVITY", "STATE_VERSION", "ModelSet"]

STATE_VERSION = 1
STATE_MAGIC = b"batond-anomaly-state"
FEEDBACK_FACTOR = 0.7  # each false positive multiplies the series' sensitivity by this
MIN_SENSITIVITY = 0.05
RECENT_POINTS = 500  # per series, for GET /api/v1/series

SeriesKey = tuple[str, tuple[str, ...]]
Job = Callable[[], Callable[[], None]]


@dataclass(slots=True)
class _Series:
    spec: ModelSpec
    metric: str
    labels: dict[str, str]
    detector: ContextDetector
    recent: deque[tuple[float, float, float]] = field(
        default_factory=lambda: deque(maxlen=RECENT_POINTS)
    )
    trained_at: float | None = None  # event time of the last (re)training
    training: bool = False


class ModelSet:
    """Scores samples of the series its models cover."""

    def __init__(self, specs: Sequence[ModelSpec] = ()) -> None:
        self.specs = tuple(specs)
        self._by_metric: dict[str, list[ModelSpec]] = {}
        for spec in self.specs:
            for metric in spec.match_metrics:
                self._by_metric.setdefault(metric, []).append(spec)
        self._series: dict[SeriesKey, _Series] = {}
        self.state_notes: list[str] = []  # why learned state was set aside on import

    # -- scoring ---------------------------------------------------------
    def observe(self, sample: Sample) -> float:
        """Score of ``sample`` for its series, computed before learning from it."""
        specs = self._by_metric.get(sample.metric)
        if specs is None:
            return 0.0
        series = self._series_for(sample, specs)
        if series is None:
            return 0.0
        score = series.detector.step(sample.value)
        series.recent.append((sample.ts, sample.value, score))
        if series.trained_at is None and series.detector.span:
            series.trained_at = sample.ts
        return score

    def _series_for(self, sample: Sample, specs: list[ModelSpec]) -> _Series | None:
        for spec in specs:
            if not spec.covers(sample.labels):
                continue
            labels = {k: sample.labels.get(k, "") for k in spec.series_by}
            key = (sample.metric, tuple(labels.values()))
            series = self._series.get(key)
            if series is None:
                series = _Series(spec, sample.metric, labels, _new_detector(spec))
                self._series[key] = series
            return series
        return None

    def series_count(self) -> int:
        return len(self._series)

    def series(
        self, metric: str | None = None, host: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Recent points with their scores, for ``GET /api/v1/series``."""
        out: list[dict[str, Any]] = []
        for s in self._series.values():
            if metric is not None and s.metric != metric:
                continue
            if host is not None and s.labels.get("host") != host:
                continue
            points = list(s.recent)[-limit:] if limit > 0 else []
            out.append(
                {
                    "metric": s.metric,
                    "labels": dict(s.labels),
                    "model": s.spec.name,
                    "threshold": s.spec.threshold,
                    "sensitivity": s.detector.sensitivity,
                    "points": [[ts, v, sc] for ts, v, sc in points],
                }
            )
        out.sort(key=lambda d: (d["metric"], sorted(d["labels"].items())))
        return out

    # -- feedback --------------------------------------------------------
    def feedback_false_positive(self, metric: str, labels: Mapping[str, str]) -> bool:
        """Lower the sensitivity of the series of ``metric``/``labels``; False if unknown."""
        for spec in self._by_metric.get(metric, ()):
            if not spec.covers(labels):
                continue
            key = (metric, tuple(labels.get(k, "") for k in spec.series_by))
            series = self._series.get(key)
            if series is None:
                return False
            detector = series.detector
            detector.sensitivity = max(MIN_SENSITIVITY, detector.sensitivity * FEEDBACK_FACTOR)
            return True
        return False

    # -- training --------------------------------------------------------
    def training_jobs(self, now: float) -> list[Job]:
        """Retraining due at ``now`` (event time); run each job off the loop."""
        jobs: list[Job] = []
        for series in self._series.values():
            if series.training or series.trained_at is None:
                continue
            if now - series.trained_at < series.spec.retrain:
                continue
            series.trained_at = now
            if not series.detector.range_moved():
                continue  # the same range would re-learn the same memory
            series.training = True
            jobs.append(_job(series))
        return jobs

    # -- persistence -----------------------------------------------------
    def export_state(self) -> bytes:
        """Learned state of every series: a version line, then JSON."""
        body = {
            "series": [
                {
                    "metric": s.metric,
                    "labels": s.labels,
                    "model": s.spec.name,
                    "fingerprint": s.spec.fingerprint(),
                    "trained_at": s.trained_at,
                    "detector": s.detector.to_state(),
                }
                for s in self._series.values()
            ]
        }
        header = STATE_MAGIC + b" v%d\n" % STATE_VERSION
        return header + json.dumps(body, separators=(",", ":")).encode()

    def import_state(self, data: bytes) -> None:
        """Adopt :meth:`export_state` output.

        A file of another format version raises :class:`StateError`.  A series
        whose model is gone or has other parameters than when it learned is
        set aside (it learns afresh) and the reason is added to
        ``state_notes``.
        """
        body = _parse_state(data)
        by_name = {spec.name: spec for spec in self.specs}
        self.state_notes = []
        for item in body.get("series", []):
            try:
                self._import_series(item, by_name)
            except (KeyError, TypeError, ValueError) as exc:
                raise StateError(f"anomaly state: malformed series entry: {exc!r}") from exc

    def _import_series(self, item: dict[str, Any], by_name: dict[str, ModelSpec]) -> None:
        name = item["model"]
        spec = by_name.get(name)
        where = f"{item['metric']} {item['labels']}"
        if spec is None:
            self.state_notes.append(f"{where}: model {name!r} no longer exists; state dropped")
            return
        if item["fingerprint"] != spec.fingerprint():
            self.state_notes.append(
                f"{where}: model {name!r} changed detector, params, warmup or threshold"
                " since this state was learned; the series learns afresh"
            )
            return
        labels = {str(k): str(v) for k, v in item["labels"].items()}
        detector = _new_detector(spec)
        detector.load_state(item["detector"])
        key = (str(item["metric"]), tuple(labels.get(k, "") for k in spec.series_by))
        trained = item.get("trained_at")
        self._series[key] = _Series(
            spec, key[0], labels, detector, trained_at=None if trained is None else float(trained)
        )


def _new_detector(spec: ModelSpec) -> ContextDetector:
    return ContextDetector(spec.params, spec.warmup, spec.threshold, spec.sensitivity)


def _job(series: _Series) -> Job:
    detector = series.detector
    history, upto = detector.training_input()

    def work() -> Callable[[], None]:
        fit = detector.fit(history, upto)

        def apply() -> None:
            series.training = False
            if detector is series.detector:
                detector.apply(fit)

        return apply

    return work


def _parse_state(data: bytes) -> dict[str, Any]:
    header, _, rest = data.partition(b"\n")
    parts = header.split(b" ")
    if len(parts) != 2 or parts[0] != STATE_MAGIC or not parts[1].startswith(b"v"):
        raise StateError("anomaly state: not a batond anomaly state file (bad header)")
    version = parts[1][1:].decode(errors="replace")
    if version != str(STATE_VERSION):
        raise StateError(
            f"anomaly state: format version {version}, this batond reads version"
            f" {STATE_VERSION}; move the file aside to start learning afresh"
        )
    try:
        body = json.loads(rest)
    except ValueError as exc:
        raise StateError(f"anomaly state: unreadable JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise StateError("anomaly state: expected a JSON object after the header")
    return body

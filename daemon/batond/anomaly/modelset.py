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

Memory is bounded twice: by the number of series (``max_series``) and by the
points they may hold in total (``max_points_total``, 8 bytes a point: each
series reserves its history, its likelihood windows and its recent points
when it is created).  A sample of a series that would break either bound is
not scored; :meth:`ModelSet.refused_count` counts those samples and
``notify`` (if given) hears about the 1st, 10th, 100th... of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batond.anomaly.detector import ContextDetector
from batond.anomaly.ring import Ring
from batond.anomaly.spec import ModelSpec
from batond.errors import StateError
from batond.events import Sample

__all__ = [
    "FEEDBACK_FACTOR",
    "MAX_POINTS_TOTAL",
    "MAX_SERIES",
    "MIN_SENSITIVITY",
    "STATE_VERSION",
    "ModelSet",
    "series_points",
]

STATE_VERSION = 2  # v2: float arrays as base64 float64 (v1: JSON lists)
STATE_MAGIC = b"batond-anomaly-state"
FEEDBACK_FACTOR = 0.7  # each false positive multiplies the series' sensitivity by this
MIN_SENSITIVITY = 0.05
RECENT_POINTS = 500  # per series (at most its history), for GET /api/v1/series
MAX_SERIES = 10_000  # a label with unbounded values in series_by must not exhaust memory
# 8-byte points all series may reserve together (~400 MB): every series at the default
# history of 3000 fits under MAX_SERIES; at a history of 17280, about 2,600 series do
MAX_POINTS_TOTAL = 50_000_000

SeriesKey = tuple[str, str, tuple[str, ...]]  # model name, metric, series_by values
Job = Callable[[], Callable[[], None]]


@dataclass(slots=True)
class _Series:
    spec: ModelSpec
    metric: str
    labels: dict[str, str]
    detector: ContextDetector
    trained_at: float | None = None  # event time of the last (re)training
    training: bool = False
    # recent times and scores; their values are the newest of the detector's history
    recent_ts: Ring = field(init=False)
    recent_scores: Ring = field(init=False)

    def __post_init__(self) -> None:
        size = _recent_size(self.spec)
        self.recent_ts = Ring(size)
        self.recent_scores = Ring(size)

    def recent(self, limit: int) -> list[list[float]]:
        n = min(len(self.recent_ts), limit)
        if n <= 0:
            return []
        values = self.detector.history.last(n)
        return [
            [ts, value, score]
            for ts, value, score in zip(
                self.recent_ts.last(n), values, self.recent_scores.last(n), strict=True
            )
        ]


class ModelSet:
    """Scores samples of the series its models cover."""

    def __init__(
        self,
        specs: Sequence[ModelSpec] = (),
        max_series: int = MAX_SERIES,
        max_points_total: int = MAX_POINTS_TOTAL,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.max_series = max_series  # beyond it new series are not scored: bounded memory
        self.max_points_total = max_points_total
        self.notify = notify  # hears why samples go unscored (the daemon logs it)
        self._series: dict[SeriesKey, _Series] = {}
        self._points = 0  # reserved by the series, against max_points_total
        self._refused = 0
        self.state_notes: list[str] = []  # why learned state was set aside (import, reload)
        self._index(specs)

    def prepare(self) -> None:
        """Import numpy now (a one-off ~0.1 s) so a series' first fit never pays it.

        For a worker thread at start-up: the first fit of a series (at the end
        of its warm-up) runs inline in :meth:`observe`, and would otherwise
        import numpy on the event loop.
        """
        if self.specs:
            import numpy  # noqa: F401

    def _index(self, specs: Sequence[ModelSpec]) -> None:
        self.specs = tuple(specs)
        self._by_metric: dict[str, list[ModelSpec]] = {}
        for spec in self.specs:
            for metric in spec.match_metrics:
                self._by_metric.setdefault(metric, []).append(spec)

    def replace_specs(self, new: ModelSet | Sequence[ModelSpec]) -> None:
        """Adopt reloaded models, keeping what each series learned where it still applies.

        A series keeps its state when a model of the same name still covers its
        metric with the same ``series_by`` and the same learned-structure
        fingerprint; its feedback-lowered sensitivity keeps its ratio to the
        model's.  Other series start afresh (``state_notes`` says why).
        """
        specs = new.specs if isinstance(new, ModelSet) else tuple(new)
        old = self._series
        self._index(specs)
        self._series = {}
        self._points = 0
        self.state_notes = []
        by_name = {spec.name: spec for spec in specs}
        for key, series in old.items():
            spec = by_name.get(series.spec.name)
            if spec is None or not _still_applies(series, spec):
                self.state_notes.append(
                    f"{series.metric} {series.labels}: model {series.spec.name!r} is gone or"
                    " changed; the series learns afresh"
                )
                continue
            detector = series.detector
            scaled = detector.sensitivity * spec.sensitivity / series.spec.sensitivity
            detector.sensitivity = min(1.0, max(MIN_SENSITIVITY, scaled))
            series.spec = spec
            self._series[key] = series
            self._points += series_points(spec)

    # -- scoring ---------------------------------------------------------
    def observe(self, sample: Sample) -> float:
        """Score of ``sample`` for its series, computed before learning from it."""
        specs = self._by_metric.get(sample.metric)
        if specs is None:
            return 0.0
        if not math.isfinite(sample.value):
            return 0.0  # nothing to learn from; sources reject these anyway
        series = self._series_for(sample, specs)
        if series is None:
            return 0.0
        score = series.detector.step(sample.value)
        series.recent_ts.append(sample.ts)
        series.recent_scores.append(score)
        if series.trained_at is None and series.detector.span:
            series.trained_at = sample.ts
        return score

    def _series_for(self, sample: Sample, specs: list[ModelSpec]) -> _Series | None:
        labels = sample.labels
        for spec in specs:
            if spec.match_labels and not spec.covers(labels):
                continue
            key = (spec.name, sample.metric, tuple([labels.get(k, "") for k in spec.series_by]))
            series = self._series.get(key)
            if series is None:
                named = dict(zip(spec.series_by, key[2], strict=True))
                full = self._full(spec)
                if full:
                    self._refuse(f"{sample.metric} {named}", full)
                    return None
                series = _Series(spec, sample.metric, named, _new_detector(spec))
                self._add(key, series)
            return series
        return None

    def _full(self, spec: ModelSpec) -> str:
        """Why a new series of ``spec`` does not fit ("" if it does)."""
        if len(self._series) >= self.max_series:
            return f"the series cap ({self.max_series} series) is reached"
        if self._points + series_points(spec) > self.max_points_total:
            return (
                f"it would need {series_points(spec)} more points than the"
                f" {self.max_points_total - self._points} left of max_points_total"
                f" ({self.max_points_total})"
            )
        return ""

    def _add(self, key: SeriesKey, series: _Series) -> None:
        self._series[key] = series
        self._points += series_points(series.spec)

    def _refuse(self, where: str, why: str) -> None:
        self._refused += 1
        count = self._refused
        if self.notify is not None and count == 10 ** (len(str(count)) - 1):
            self.notify(
                f"{where}: not scored: {why}; {count} sample(s) refused so far"
                " (further refusals are reported at 10x counts)"
            )

    def series_count(self) -> int:
        return len(self._series)

    def points_reserved(self) -> int:
        """Points (8 bytes each) the series reserve, against ``max_points_total``."""
        return self._points

    def refused_count(self) -> int:
        """Samples not scored because their new series would break a memory bound."""
        return self._refused

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
            points = s.recent(limit)
            out.append(
                {
                    "metric": s.metric,
                    "labels": dict(s.labels),
                    "model": s.spec.name,
                    "threshold": s.spec.threshold,
                    "sensitivity": s.detector.sensitivity,
                    "points": points,
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
            key = (spec.name, metric, tuple(labels.get(k, "") for k in spec.series_by))
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
        if tuple(labels) != spec.series_by:
            self.state_notes.append(
                f"{where}: model {name!r} now tells series apart by {list(spec.series_by)};"
                " the series learns afresh"
            )
            return
        detector = _new_detector(spec)
        detector.load_state(item["detector"])
        metric = str(item["metric"])
        key = (spec.name, metric, tuple(labels.get(k, "") for k in spec.series_by))
        trained = item.get("trained_at")
        series = _Series(
            spec, metric, labels, detector, trained_at=None if trained is None else float(trained)
        )
        old = self._series.pop(key, None)
        if old is not None:
            self._points -= series_points(old.spec)
        full = self._full(spec)
        if full:
            self.state_notes.append(f"{where}: state dropped: {full}")
            return
        self._add(key, series)


def _still_applies(series: _Series, spec: ModelSpec) -> bool:
    return (
        series.metric in spec.match_metrics
        and tuple(series.labels) == spec.series_by
        and spec.fingerprint() == series.spec.fingerprint()
    )


def history_capacity(spec: ModelSpec) -> int:
    """Points of history a series of ``spec`` keeps (the detector's rule)."""
    return max(spec.params.history, spec.warmup, spec.params.context + 2)


def _recent_size(spec: ModelSpec) -> int:
    return min(RECENT_POINTS, history_capacity(spec))


def series_points(spec: ModelSpec) -> int:
    """8-byte points one series of ``spec`` reserves: history, windows, recent points."""
    params = spec.params
    return history_capacity(spec) + params.long + params.short + 2 * _recent_size(spec)


def _new_detector(spec: ModelSpec) -> ContextDetector:
    return ContextDetector(spec.params, spec.warmup, spec.threshold, spec.sensitivity)


def _job(series: _Series) -> Job:
    detector = series.detector
    history, upto = detector.training_input()

    def work() -> Callable[[], None]:
        try:
            fit = detector.fit(history, upto)
        except BaseException:
            series.training = False  # a plain flag: lets the next retrain try again
            raise

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

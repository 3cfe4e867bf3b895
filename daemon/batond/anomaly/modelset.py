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
bytes they may hold in total (``max_bytes_total``: each series reserves
:func:`series_bytes` of its model when it is created, its whole state, object
overheads included).  A sample of a series that would break either bound is
not scored; :meth:`ModelSet.refused_count` counts those samples,
:meth:`ModelSet.refused_series_count` the series, and ``notify`` (if given)
hears about each refused series once.
"""

from __future__ import annotations

import heapq
import itertools
import json
from array import array
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batond.anomaly.detector import ContextDetector
from batond.anomaly.hostset import HOST_METRIC, HostModels, host_series_bytes
from batond.anomaly.spec import ModelSpec, SeriesKey
from batond.errors import StateError
from batond.events import Sample

__all__ = [
    "FEEDBACK_FACTOR",
    "MAX_BYTES_TOTAL",
    "MAX_SERIES",
    "MIN_SENSITIVITY",
    "STATE_VERSION",
    "ModelSet",
    "series_bytes",
]

STATE_VERSION = 3  # v3: compact state (2-byte history codes, bitmaps); v2: float64 history
STATE_MAGIC = b"batond-anomaly-state"
FEEDBACK_FACTOR = 0.7  # each false positive multiplies the series' sensitivity by this
MIN_SENSITIVITY = 0.05
RECENT_POINTS = 240  # per series (at most its history), for GET /api/v1/series
# a label with unbounded values in series_by must not exhaust memory: 10k hosts x 20
# metrics fit under both bounds at the default model (~9.5 KB a series, about 1.9 GB)
MAX_SERIES = 250_000
MAX_BYTES_TOTAL = 3 * 1024**3
# series examined per training_jobs call: bounds its time on the loop (about 1 ms)
# when many series come due together (a restart, a fleet warming up at once); the
# daemon calls it every second, and 200 a second is 7x what 100k series need at 1h
TRAIN_BATCH = 200
NOTED_REFUSALS = 100_000  # refused series remembered (so each is logged once); then counted only
# per-series bytes beyond the arrays: the detector, series and ModelSet entry objects,
# key tuple, labels dict and label strings, measured with tracemalloc (bench_anomaly_fleet)
_OVERHEAD_BYTES = 4000

Job = Callable[[], Callable[[], None]]


@dataclass(slots=True)
class _Series:
    key: SeriesKey
    spec: ModelSpec
    metric: str
    labels: dict[str, str]
    detector: ContextDetector
    trained_at: float | None = None  # event time of the last (re)training
    training: bool = False
    # recent times, values (float32: 7 digits) and scores, for the API and the page
    recent_ts: array[float] = field(init=False)
    recent_values: array[float] = field(init=False)
    recent_scores: array[float] = field(init=False)
    recent_at: int = 0  # next slot; the arrays are preallocated (a fixed cost per series)
    recent_n: int = 0

    def __post_init__(self) -> None:
        size = _recent_size(self.spec)
        self.recent_ts = array("d", bytes(8 * size))
        self.recent_values = array("f", bytes(4 * size))
        self.recent_scores = array("f", bytes(4 * size))

    def note(self, ts: float, value: float, score: float) -> None:
        at = self.recent_at
        self.recent_ts[at] = ts
        self.recent_values[at] = value
        self.recent_scores[at] = score
        at += 1
        self.recent_at = at if at < len(self.recent_ts) else 0
        if self.recent_n <= at:
            self.recent_n = at if at else len(self.recent_ts)

    def recent(self, limit: int) -> list[list[float]]:
        n = min(self.recent_n, limit)
        if n <= 0:
            return []
        size, end = len(self.recent_ts), self.recent_at
        slots = [(end - n + k) % size for k in range(n)]
        ts, values, scores = self.recent_ts, self.recent_values, self.recent_scores
        return [[ts[i], values[i], scores[i]] for i in slots]


class ModelSet:
    """Scores samples of the series its models cover."""

    def __init__(
        self,
        specs: Sequence[ModelSpec] = (),
        max_series: int = MAX_SERIES,
        max_bytes_total: int = MAX_BYTES_TOTAL,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.max_series = max_series  # beyond it new series are not scored: bounded memory
        self.max_bytes_total = max_bytes_total
        self.notify = notify  # hears why samples go unscored (the daemon logs it)
        self._series: dict[SeriesKey, _Series] = {}
        self._bytes = 0  # reserved by the series, against max_bytes_total
        self._refused = 0  # samples
        self._refused_series: set[int] = set()  # hashes of refused series keys, so each logs once
        self._refused_unnoted = 0  # refused series beyond NOTED_REFUSALS: counted, not logged
        self.state_notes: list[str] = []  # why learned state was set aside (import, reload)
        # training: series whose warm-up ended (first fit due), and a heap of retrain
        # times, so finding due work never scans every series
        self._ready: list[_Series] = []
        self._due: list[tuple[float, int, _Series]] = []
        self._order = itertools.count()
        self._hosts = HostModels(self._reserve_host)
        # host -> metric -> ts of the latest sample of one of its series that scored at or
        # above its model's threshold: noted as samples are scored (a float comparison a
        # sample), so a fleet's central reads a host's without a scan; at most one entry
        # per (host, metric) with a series, so bounded as the series are
        self._anomalous: dict[str, dict[str, float]] = {}
        #: host_anomaly samples of the ``detector: host`` models, for the rules: the
        #: pipeline takes them (:meth:`take_synthetic`) after each sample it scores
        self.synthetic = self._hosts.pending
        self._index(specs)

    def prepare(self) -> None:
        """Import numpy now (a one-off ~0.1 s) so a series' first fit never pays it.

        For a worker thread at start-up: a job's *apply* runs on the event loop
        and would otherwise pay the import there.
        """
        if self.specs:
            import numpy  # noqa: F401
        if self._hosts.by_metric:
            import sklearn.decomposition  # noqa: F401  (a host model's first fit needs it)

    def _index(self, specs: Sequence[ModelSpec]) -> list[str]:
        self.specs = tuple(specs)
        self._by_metric: dict[str, list[ModelSpec]] = {}
        notes = self._hosts.index([s for s in self.specs if s.detector == "host"])
        self._host_metrics = self._hosts.by_metric
        for spec in self.specs:
            if spec.detector == "host":
                continue
            for metric in spec.match_metrics:
                self._by_metric.setdefault(metric, []).append(spec)
        # metric -> (model name, label) where one model owns the metric's series by one
        # label and matches no labels: the usual case, found with one dict lookup
        self._direct: dict[str, tuple[str, str]] = {
            metric: (specs[0].name, specs[0].series_by[0])
            for metric, specs in self._by_metric.items()
            if len(specs) == 1 and not specs[0].match_labels and len(specs[0].series_by) == 1
        }
        return notes

    def replace_specs(self, new: ModelSet | Sequence[ModelSpec]) -> None:
        """Adopt reloaded models, keeping what each series learned where it still applies.

        A series keeps its state when a model of the same name still covers its
        metric with the same ``series_by`` and the same learned-structure
        fingerprint; its feedback-lowered sensitivity keeps its ratio to the
        model's.  Other series start afresh (``state_notes`` says why).
        """
        specs = new.specs if isinstance(new, ModelSet) else tuple(new)
        old = self._series
        self._series = {}
        self.state_notes = self._index(specs)
        self._bytes = sum(series_bytes(spec) for spec in self._hosts.kept())
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
            self._bytes += series_bytes(spec)

    # -- scoring ---------------------------------------------------------
    def observe(self, sample: Sample) -> float:
        """Score of ``sample`` for its series, computed before learning from it."""
        metric = sample.metric
        hosts = self._host_metrics.get(metric)
        if hosts is not None and sample.value - sample.value == 0.0:
            self._hosts.observe(sample, hosts)
        specs = self._by_metric.get(metric)
        if specs is None:
            return 0.0
        value = sample.value
        if value - value != 0.0:  # NaN or infinite: nothing to learn from (sources reject them)
            return 0.0
        direct = self._direct.get(metric)
        series = None
        if direct is not None:
            series = self._series.get((direct[0], metric, (sample.labels.get(direct[1], ""),)))
        if series is None:
            series = self._series_for(sample, specs)
            if series is None:
                return 0.0
        score = series.detector.step(value)
        series.note(sample.ts, value, score)
        if score >= series.spec.threshold:
            self._flag(sample)
        if series.trained_at is None and not series.training and series.detector.ready():
            series.training = True  # the first fit is due: a job, never inline
            self._ready.append(series)
        return score

    def _flag(self, sample: Sample) -> None:
        host = sample.labels.get("host")
        if host:
            seen = self._anomalous.setdefault(host, {})
            seen[sample.metric] = max(sample.ts, seen.get(sample.metric, sample.ts))

    def anomalous(self, host: str) -> dict[str, float]:
        """Metric -> when a series of it on ``host`` last scored anomalous (at or above
        its model's threshold; the sample's ``ts``): the fleet's agent rows carry it."""
        return dict(self._anomalous.get(host, {}))

    def take_synthetic(self) -> list[Sample]:
        """The ``host_anomaly`` samples made since the last call (their value is the score)."""
        out = list(self.synthetic)
        self.synthetic.clear()
        return out

    def _reserve_host(self, key: SeriesKey, where: str, spec: ModelSpec) -> bool:
        full = self._full(spec)
        if full:
            self._refuse(key, where, full)
            return False
        self._bytes += series_bytes(spec)
        return True

    def _schedule(self, series: _Series, when: float) -> None:
        heapq.heappush(self._due, (when, next(self._order), series))

    def _series_for(self, sample: Sample, specs: list[ModelSpec]) -> _Series | None:
        labels = sample.labels
        for spec in specs:
            key = spec.series_key(sample.metric, labels)
            if key is None:
                continue
            series = self._series.get(key)
            if series is None:
                named = dict(zip(spec.series_by, key[2], strict=True))
                full = self._full(spec)
                if full:
                    self._refuse(key, f"{sample.metric} {named}", full)
                    return None
                series = _Series(key, spec, sample.metric, named, _new_detector(spec))
                self._add(key, series)
            return series
        return None

    def _full(self, spec: ModelSpec) -> str:
        """Why a new series of ``spec`` does not fit ("" if it does)."""
        if self.series_count() >= self.max_series:
            return f"the series cap ({self.max_series} series) is reached"
        need = series_bytes(spec)
        if self._bytes + need > self.max_bytes_total:
            return (
                f"it would need {need} more bytes than the"
                f" {self.max_bytes_total - self._bytes} left of max_bytes_total"
                f" ({self.max_bytes_total})"
            )
        return ""

    def _add(self, key: SeriesKey, series: _Series) -> None:
        self._series[key] = series
        self._bytes += series_bytes(series.spec)

    def _refuse(self, key: SeriesKey, where: str, why: str) -> None:
        """Count a refused sample; a series' first refusal is logged (once per series)."""
        self._refused += 1
        noted = self._refused_series
        mark = hash(key)
        if mark in noted:
            return
        if len(noted) >= NOTED_REFUSALS:
            self._refused_unnoted += 1
            if self._refused_unnoted == 1 and self.notify is not None:
                self.notify(
                    f"{NOTED_REFUSALS} series refused: further refused series are"
                    " counted (batond_anomaly_refused_series), not logged"
                )
            return
        noted.add(mark)
        if self.notify is not None:
            self.notify(
                f"{where}: not scored: {why}; {len(noted)} series and"
                f" {self._refused} sample(s) refused so far (each series is logged once)"
            )

    def series_count(self) -> int:
        """Series scored: per-series ones and the hosts of host models."""
        return len(self._series) + self._hosts.count()

    def bytes_reserved(self) -> int:
        """Bytes the series reserve, against ``max_bytes_total``."""
        return self._bytes

    def refused_count(self) -> int:
        """Samples not scored because their new series would break a memory bound."""
        return self._refused

    def refused_series_count(self) -> int:
        """Distinct series refused since start (each logged once)."""
        return len(self._refused_series) + self._refused_unnoted

    def series(
        self, metric: str | None = None, host: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Recent points with their scores, for ``GET /api/v1/series``."""
        out: list[dict[str, Any]] = []
        if metric is None or metric == HOST_METRIC:
            out.extend(self._hosts.series(host, limit))
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
                    "model_sensitivity": s.spec.sensitivity,
                    "fitted": s.detector.warm is None,
                    "points": points,
                }
            )
        out.sort(key=lambda d: (d["metric"], sorted(d["labels"].items())))
        return out

    # -- feedback --------------------------------------------------------
    def feedback_false_positive(self, metric: str, labels: Mapping[str, str]) -> bool:
        """Lower the sensitivity of the series of ``metric``/``labels``; False if unknown."""
        if metric == HOST_METRIC:
            return self._hosts.feedback_false_positive(labels, FEEDBACK_FACTOR, MIN_SENSITIVITY)
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
    def training_jobs(self, now: float, limit: int = TRAIN_BATCH) -> list[Job]:
        """Training due at ``now`` (event time); run each job off the loop.

        First fits (series whose warm-up ended) come first, then retraining in
        due order.  At most ``limit`` series are examined per call, so a crowd
        of series due together (a restart) is spread over several calls.
        """
        jobs: list[Job] = []
        examined = 0
        ready = self._ready
        while ready and examined < limit:
            series = ready.pop()
            examined += 1
            if self._series.get(series.key) is series:
                series.trained_at = now
                self._schedule(series, now + series.spec.retrain)
                jobs.append(_job(series))
        due = self._due
        while due and due[0][0] <= now and examined < limit:
            series = heapq.heappop(due)[2]
            examined += 1
            if self._series.get(series.key) is not series:
                continue  # dropped by a reload or an import: a stale entry
            self._schedule(series, now + series.spec.retrain)
            if series.training:
                continue  # a job is in flight: check again at the next due time
            series.trained_at = now
            detector = series.detector
            # a range that did not move would re-learn the same memory; ready(): a first
            # fit still owed (its job was in flight when the state was saved)
            if detector.range_moved() or detector.ready():
                series.training = True
                jobs.append(_job(series))
        jobs.extend(self._hosts.jobs(now, limit - examined))
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
            ],
            "hosts": self._hosts.export(),
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
        for item in body.get("hosts", []):
            try:
                self._import_host(item, by_name)
            except (KeyError, TypeError, ValueError) as exc:
                raise StateError(f"anomaly state: malformed host entry: {exc!r}") from exc

    def _spec_of(
        self, item: dict[str, Any], by_name: dict[str, ModelSpec], where: str, host: bool
    ) -> ModelSpec | None:
        """The model a saved entry was learned by, if it still exists unchanged (else a
        note says why the entry is set aside)."""
        name = item["model"]
        spec = by_name.get(name)
        if spec is None or (host and spec.detector != "host"):
            what = "host model" if host else "model"
            self.state_notes.append(f"{where}: {what} {name!r} no longer exists; state dropped")
            return None
        if item["fingerprint"] != spec.fingerprint():
            self.state_notes.append(
                f"{where}: model {name!r} changed detector, params, warmup or threshold"
                f" since this state was learned; the {'host' if host else 'series'} learns afresh"
            )
            return None
        return spec

    def _import_host(self, item: dict[str, Any], by_name: dict[str, ModelSpec]) -> None:
        spec = self._spec_of(item, by_name, f"{HOST_METRIC} {item['labels']}", host=True)
        if spec is None:
            return

        def release() -> None:
            self._bytes -= series_bytes(spec)

        note = self._hosts.import_host(item, spec, release)
        if note:
            self.state_notes.append(note)

    def _import_series(self, item: dict[str, Any], by_name: dict[str, ModelSpec]) -> None:
        where = f"{item['metric']} {item['labels']}"
        spec = self._spec_of(item, by_name, where, host=False)
        if spec is None:
            return
        name = spec.name
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
            key,
            spec,
            metric,
            labels,
            detector,
            trained_at=None if trained is None else float(trained),
        )
        old = self._series.pop(key, None)
        if old is not None:
            self._bytes -= series_bytes(old.spec)
        full = self._full(spec)
        if full:
            self.state_notes.append(f"{where}: state dropped: {full}")
            return
        self._add(key, series)
        if series.trained_at is not None:
            self._schedule(series, series.trained_at + spec.retrain)
        elif detector.ready():  # saved between its warm-up and its first fit
            series.training = True
            self._ready.append(series)


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


def series_bytes(spec: ModelSpec) -> int:
    """Bytes one series of ``spec`` reserves: its whole state, objects included.

    History (2 bytes a point; during warm-up up to twice ``warmup`` raw values,
    8 bytes each, in its place), novelty windows, transition memories, recent points (16 bytes
    each) and the per-series object overhead.  ``bench/bench_anomaly_fleet.py``
    checks the estimate against tracemalloc and RSS.
    """
    if spec.detector == "host":
        return host_series_bytes(spec)
    params = spec.params
    probe = _new_detector(spec)
    history = max(2 * history_capacity(spec), 8 * 2 * probe.warmup)
    windows = params.short + probe.long.capacity * (1 if probe.long.typecode == "B" else 4)
    if probe.bitmap:
        memories = len(probe.memories) * (len(probe.memories[0]) + 57)
    else:  # a set of at most _MAX_TRANSITIONS ints: ~36 bytes an entry, table included
        memories = len(probe.memories) * 36 * 2048
    return history + windows + memories + 16 * _recent_size(spec) + _OVERHEAD_BYTES


def _new_detector(spec: ModelSpec) -> ContextDetector:
    return ContextDetector(spec.params, spec.warmup, spec.threshold, spec.sensitivity)


def _job(series: _Series) -> Job:
    detector = series.detector
    given = detector.training_input()

    def work() -> Callable[[], None]:
        try:
            fit = detector.fit(given)
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

"""The series of ``detector: host`` models: one per host, a vector of its metrics.

A host's samples arrive one metric at a time.  Its vector is complete, and
scored, when every metric of the model has a new value since the last
vector; when a metric comes again before that (a metric that stopped, or a
slower one) the vector is scored with the other metrics' last values carried
forward.  Each scored vector becomes a synthetic sample of metric
``host_anomaly`` (value and ``anomaly`` = the score) whose labels are the
model's ``series_by`` labels plus ``top_metric`` (the metric contributing most)
and ``top_metrics`` (the ``top`` largest, comma-separated, largest first); the
pipeline hands it to the rules right after the sample that completed it.

Training is a job like a per-series model's (:meth:`HostModels.jobs`): the
fit (scikit-learn) runs in a worker thread on a copy of the history taken
when the job was made; its *apply* swaps the fit in on the loop.

The history is a uniform sample of every vector the host learned (reservoir
sampling, its slots drawn from a hash of the host and the vector's number, so
a replay and a restart draw the same), not the last ``history`` vectors: an
hour-long incident then is a sliver of what the next fit sees, and each fit
moves the scale a fixed threshold is judged against only a little.  A vector
whose ratio is ``learn_below`` or more is not learned (after the first fit);
should that last for ``history`` vectors in a row (a lasting change, not an
incident), the history starts afresh and learns every vector until it
holds ``warmup`` of them, as at the start.  On SMD (docs/anomaly.md) the
ring of the last 4000 vectors scored 0.386 point-wise F1; the reservoir with
``learn_below`` 1.5 (chosen leave-one-machine-out) 0.584, 0.572 held out.
"""

from __future__ import annotations

import heapq
import itertools
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batond.anomaly.host import (
    HostFit,
    decode_floats,
    encode_floats,
    fit_from_state,
    fit_host,
    fit_to_state,
    sensitive_score,
    vector_ratio,
)
from batond.anomaly.spec import ModelSpec, SeriesKey
from batond.events import Sample

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["HOST_METRIC", "HostModels", "host_series_bytes"]

HOST_METRIC = "host_anomaly"
_RECENT = 240  # points kept for GET /api/v1/series
_MASK64 = (1 << 64) - 1
_OVERHEAD_BYTES = 6000  # objects, label dicts and the recent deque, beyond the history array

Job = Callable[[], Callable[[], None]]
# (key, "metric {labels}" for the log line, spec) -> "" if it fits, else why it does not
Reserve = Callable[[SeriesKey, str, ModelSpec], bool]


def host_series_bytes(spec: ModelSpec) -> int:
    """Bytes one host of ``spec`` reserves: its float32 history and the objects."""
    metrics = len(spec.match_metrics)
    capacity = max(spec.host.history, spec.warmup)
    return 4 * capacity * metrics + 40 * metrics + _OVERHEAD_BYTES


@dataclass(slots=True)
class _Host:
    key: SeriesKey
    spec: ModelSpec
    labels: dict[str, str]
    sensitivity: float
    values: list[float]
    fresh: list[bool]
    ever: list[bool]  # reported at least once
    nfresh: int = 0
    unseen: int = 0  # metrics never seen yet: no vector before all are
    history: Any = None  # numpy float32 (capacity x metrics), made at the first vector
    count: int = 0  # vectors learned
    unlearned: int = 0  # vectors in a row not learned (ratio >= learn_below)
    fit: HostFit | None = None
    trained_at: float | None = None
    training: bool = False
    recent: deque[list[float]] = field(default_factory=lambda: deque(maxlen=_RECENT))
    seed: int = 0  # the host's reservoir draws (host_seed of its key)


class HostModels:
    """Every host of every ``detector: host`` model; synthetic samples in ``pending``."""

    def __init__(self, reserve: Reserve) -> None:
        self._reserve = reserve
        self._hosts: dict[SeriesKey, _Host] = {}
        self._columns: dict[str, dict[str, int]] = {}  # model name -> metric -> column
        self.by_metric: dict[str, list[ModelSpec]] = {}
        self.pending: list[Sample] = []  # host_anomaly samples for the rules, in order
        self._ready: list[_Host] = []
        self._due: list[tuple[float, int, _Host]] = []
        self._order = itertools.count()

    def index(self, specs: Sequence[ModelSpec]) -> list[str]:
        """Adopt ``specs`` (reload); hosts whose model changed start afresh (notes say so)."""
        self.by_metric = {}
        self._columns = {}
        for spec in specs:
            self._columns[spec.name] = {m: i for i, m in enumerate(spec.match_metrics)}
            for metric in spec.match_metrics:
                self.by_metric.setdefault(metric, []).append(spec)
        by_name = {spec.name: spec for spec in specs}
        notes = []
        for key, host in list(self._hosts.items()):
            new = by_name.get(host.spec.name)
            if new is None or not _same_model(host.spec, new):
                del self._hosts[key]
                notes.append(
                    f"{HOST_METRIC} {host.labels}: model {host.spec.name!r} is gone or"
                    " changed; the host learns afresh"
                )
            else:
                host.sensitivity *= new.sensitivity / host.spec.sensitivity
                host.spec = new
        return notes

    def kept(self) -> list[ModelSpec]:
        """The spec of every host kept (their bytes stay reserved)."""
        return [host.spec for host in self._hosts.values()]

    def observe(self, sample: Sample, specs: list[ModelSpec]) -> None:
        labels = sample.labels
        for spec in specs:
            key = spec.series_key(HOST_METRIC, labels)
            if key is None:
                continue
            host = self._hosts.get(key) or self._new_host(key, spec)
            if host is not None:
                self._take(host, self._columns[spec.name][sample.metric], sample)
            return

    def _new_host(self, key: SeriesKey, spec: ModelSpec) -> _Host | None:
        labels = dict(zip(spec.series_by, key[2], strict=True))
        if not self._reserve(key, f"{HOST_METRIC} {labels}", spec):
            return None
        n = len(spec.match_metrics)
        host = _Host(
            key, spec, labels, spec.sensitivity, [0.0] * n, [False] * n, [False] * n, unseen=n,
            seed=host_seed(key),
        )  # fmt: skip
        self._hosts[key] = host
        return host

    def _take(self, host: _Host, column: int, sample: Sample) -> None:
        if host.fresh[column]:  # a new round began before the vector was complete
            self._vector(host, sample.ts)
        if host.unseen and not host.ever[column]:
            host.ever[column] = True
            host.unseen -= 1
        host.values[column] = sample.value
        host.fresh[column] = True
        host.nfresh += 1
        if host.nfresh == len(host.values):
            self._vector(host, sample.ts)

    def _vector(self, host: _Host, ts: float) -> None:
        """Score the host's vector (before learning it), learn it, queue its sample."""
        n = len(host.values)
        host.fresh = [False] * n
        host.nfresh = 0
        if host.unseen:
            return  # a metric has never reported: no honest vector yet
        import numpy as np

        vector = np.array(host.values, dtype=np.float64)
        score, ratio, top = 0.0, 0.0, ""
        names = host.spec.match_metrics
        ranked: list[str] = []
        if host.fit is not None:
            ratio, parts = vector_ratio(host.fit, vector)
            score = sensitive_score(ratio, host.sensitivity)
            order = np.argsort(-parts)[: host.spec.host.top]
            ranked = [names[int(i)] for i in order]
            top = ranked[0]
        self._learn(host, vector, ratio)
        labels = {**host.labels, "top_metric": top, "top_metrics": ",".join(ranked)}
        self.pending.append(Sample(HOST_METRIC, score, ts, labels, source="host model"))
        host.recent.append([ts, score, score])

    def _learn(self, host: _Host, vector: npt.NDArray[np.float64], ratio: float) -> None:
        import numpy as np

        if host.history is None:
            capacity = max(host.spec.host.history, host.spec.warmup)
            host.history = np.zeros((capacity, len(host.values)), dtype=np.float32)
        history = host.history
        capacity = history.shape[0]
        if ratio < host.spec.host.learn_below or host.count < host.spec.warmup:
            # (all is learned until a warm-up's worth is: at the start and after a change)
            host.unlearned = 0
        elif host.unlearned < capacity:
            host.unlearned += 1
            return  # an incident is not learned as normal
        else:  # a lasting change, not an incident: learn afresh from here
            host.unlearned = 0
            host.count = 0
        slot = host.count if host.count < capacity else reservoir_slot(host.seed, host.count)
        if slot < capacity:
            history[slot] = vector
        host.count += 1
        if host.count == host.spec.warmup and host.trained_at is None and not host.training:
            host.training = True
            self._ready.append(host)

    def jobs(self, now: float, limit: int) -> list[Job]:
        """First fits, then retraining that is due; at most ``limit`` hosts examined."""
        out: list[Job] = []
        examined = 0
        while self._ready and examined < limit:
            host = self._ready.pop()
            examined += 1
            if self._hosts.get(host.key) is host:
                out.append(self._job(host, now))
        due = self._due
        while due and due[0][0] <= now and examined < limit:
            host = heapq.heappop(due)[2]
            examined += 1
            if self._hosts.get(host.key) is not host:
                continue  # dropped by a reload
            if host.training or host.count < host.spec.warmup:  # in flight, or starting afresh
                heapq.heappush(due, (now + host.spec.retrain, next(self._order), host))
                continue
            out.append(self._job(host, now))
        return out

    def _job(self, host: _Host, now: float) -> Job:
        host.training = True
        host.trained_at = now
        heapq.heappush(self._due, (now + host.spec.retrain, next(self._order), host))
        given = host.history[: min(host.count, host.history.shape[0])].copy()
        params = host.spec.host

        def work() -> Callable[[], None]:
            try:
                fit = fit_host(given, params)
            except BaseException:
                host.training = False
                raise

            def apply() -> None:
                host.training = False
                host.fit = fit

            return apply

        return work

    def feedback_false_positive(
        self, labels: Mapping[str, str], factor: float, floor: float
    ) -> bool:
        for host in self._hosts.values():
            if all(labels.get(k) == v for k, v in host.labels.items()):
                host.sensitivity = max(floor, host.sensitivity * factor)
                return True
        return False

    def series(self, host_name: str | None, limit: int) -> list[dict[str, Any]]:
        out = []
        for host in self._hosts.values():
            if host_name is not None and host.labels.get("host") != host_name:
                continue
            points = list(host.recent)[-limit:] if limit > 0 else []
            out.append(
                {
                    "metric": HOST_METRIC,
                    "labels": dict(host.labels),
                    "model": host.spec.name,
                    "threshold": host.spec.threshold,
                    "sensitivity": host.sensitivity,
                    "model_sensitivity": host.spec.sensitivity,
                    "points": points,
                }
            )
        return out

    def count(self) -> int:
        return len(self._hosts)

    # -- persistence -----------------------------------------------------
    def export(self) -> list[dict[str, Any]]:
        """Every host's learned state for ``anomaly.state`` (on the loop)."""
        return [_host_state(host) for host in self._hosts.values()]

    def import_host(
        self, item: dict[str, Any], spec: ModelSpec, release: Callable[[], None]
    ) -> str:
        """Adopt one :meth:`export` entry of ``spec``'s; "" or why it was set aside.

        KeyError/TypeError/ValueError if malformed.  ``release`` gives back the
        bytes of a live host the entry replaces.
        """
        where = f"{HOST_METRIC} {item['labels']}"
        if list(item["metrics"]) != list(spec.match_metrics):
            return f"{where}: model {spec.name!r} now covers other metrics; the host learns afresh"
        labels = {str(k): str(v) for k, v in item["labels"].items()}
        if tuple(labels) != spec.series_by:
            return (
                f"{where}: model {spec.name!r} now tells hosts apart by {list(spec.series_by)};"
                " the host learns afresh"
            )
        key: SeriesKey = (spec.name, HOST_METRIC, tuple(labels.values()))
        host = _host_from_state(item, key, spec, labels)
        if self._hosts.pop(key, None) is not None:
            release()
        if not self._reserve(key, where, spec):
            return f"{where}: state dropped: the anomaly budget is full"
        self._hosts[key] = host
        if host.trained_at is not None:
            when = host.trained_at + spec.retrain
            heapq.heappush(self._due, (when, next(self._order), host))
        elif host.count >= spec.warmup:  # saved between its warm-up and its first fit
            host.training = True
            self._ready.append(host)
        return ""


def _host_state(host: _Host) -> dict[str, Any]:
    kept = 0 if host.history is None else min(host.count, host.history.shape[0])
    return {
        "model": host.spec.name,
        "fingerprint": host.spec.fingerprint(),
        "metrics": list(host.spec.match_metrics),
        "labels": host.labels,
        "sensitivity": host.sensitivity,
        "values": host.values if not host.unseen else None,
        "count": host.count,
        "unlearned": host.unlearned,
        "trained_at": host.trained_at,
        "history": None if kept == 0 else encode_floats(host.history[:kept], "<f4"),
        "fit": None if host.fit is None else fit_to_state(host.fit),
    }


def _host_from_state(
    item: dict[str, Any], key: SeriesKey, spec: ModelSpec, labels: dict[str, str]
) -> _Host:
    import numpy as np

    n = len(spec.match_metrics)
    values = item["values"]
    host = _Host(key, spec, labels, float(item["sensitivity"]), [0.0] * n, [False] * n,
                 [False] * n, unseen=n, seed=host_seed(key))  # fmt: skip
    if values is not None:  # every metric had reported: vectors carry on from these values
        host.values = [float(v) for v in values]
        if len(host.values) != n:
            raise ValueError(f"{len(host.values)} last values for {n} metrics")
        host.ever, host.unseen = [True] * n, 0
    host.count, host.unlearned = int(item["count"]), int(item["unlearned"])
    trained = item["trained_at"]
    host.trained_at = None if trained is None else float(trained)
    capacity = max(spec.host.history, spec.warmup)
    host.history = np.zeros((capacity, n), dtype=np.float32)
    kept = min(host.count, capacity)
    if kept:
        host.history[:kept] = decode_floats(item["history"], "<f4", kept * n).reshape(kept, n)
    host.fit = None if item["fit"] is None else fit_from_state(item["fit"], n)
    return host


def host_seed(key: SeriesKey) -> int:
    """A host's reservoir seed: the same on every run (``hash`` of a str is salted)."""
    return zlib.crc32(repr(key).encode())


def reservoir_slot(seed: int, count: int) -> int:
    """Where the vector learned after ``count`` others goes: uniform in [0, count].

    Algorithm R with the draw hashed from the host's seed and ``count`` (a
    SplitMix64 finaliser) instead of a generator's state: nothing to persist,
    and the same vectors always land in the same slots.
    """
    x = (seed << 32 ^ count) & _MASK64
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (x ^ (x >> 31)) % (count + 1)


def _same_model(old: ModelSpec, new: ModelSpec) -> bool:
    return (
        old.match_metrics == new.match_metrics
        and old.series_by == new.series_by
        and old.fingerprint() == new.fingerprint()
    )

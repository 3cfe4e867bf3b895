"""What an operator tunes in ``models/*.yaml``: the frozen model definition.

Parsing lives in :mod:`batond.load.modelfile` (an edge: it reads files);
this module only holds the values, their defaults and the fingerprint that
ties learned state to the parameters it was learned with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from batond.anomaly.host import HostParams

__all__ = [
    "DEFAULT_SPEC",
    "DETECTORS",
    "ContextParams",
    "HostParams",
    "ModelSpec",
    "SeriesKey",
]

DETECTORS = ("context", "host")
SeriesKey = tuple[str, str, tuple[str, ...]]  # model name, metric, series_by values


@dataclass(frozen=True, slots=True)
class ContextParams:
    """Parameters of the ``context`` detector (see :mod:`batond.anomaly.detector`).

    ``bins``: quantisation levels across the learned value range; ``offsets``:
    one quantiser per offset (fractions of a bin), whose novelties are
    averaged so a value near a bin edge does not flip the score; ``context``:
    how many previous levels form the context of a transition; ``short`` and
    ``long``: points in the short average of raw novelty and in the long
    window its likelihood is judged against; ``rest``: points of silence after
    an alert; ``history``: points kept for retraining (2 bytes each);
    ``beyond``: how many times a novel level beyond the learned range counts
    (a novel level inside it counts once, one more than a range width beyond
    it three times).
    """

    bins: int = 7
    offsets: tuple[float, ...] = (0.0, 0.5)
    context: int = 1
    short: int = 10
    long: int = 400
    rest: int = 30
    history: int = 2000
    beyond: int = 2

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["offsets"] = list(self.offsets)
        return data


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model: which series it covers and how it scores them.

    ``match_metrics``: metric names covered; ``match_labels``: label values a
    sample must carry; ``series_by``: labels that tell series apart (others,
    such as a sequence number, never multiply series); ``warmup``: points a
    series learns before it is scored; ``retrain``: seconds between
    retrainings of a series; ``host``: the parameters of a ``detector: host``
    model (whose series is the host's vector of ``match_metrics``);
    ``threshold``: the score at or above which the model calls a point
    anomalous (and starts its rest period).
    """

    name: str = "default"
    match_metrics: tuple[str, ...] = ()
    match_labels: Mapping[str, str] = field(default_factory=dict)
    series_by: tuple[str, ...] = ("host",)
    detector: str = "context"
    params: ContextParams = ContextParams()
    host: HostParams = field(default_factory=HostParams)  # a ``detector: host`` model's params
    sensitivity: float = 0.5
    warmup: int = 200
    retrain: float = 3600.0
    threshold: float = 0.99

    def covers(self, labels: Mapping[str, str]) -> bool:
        """Whether a sample of one of ``match_metrics`` with ``labels`` belongs here."""
        return all(labels.get(key) == value for key, value in self.match_labels.items())

    def series_key(self, metric: str, labels: Mapping[str, str]) -> SeriesKey | None:
        """The series of this model that ``metric`` with ``labels`` is (None: not covered)."""
        if self.match_labels and not self.covers(labels):
            return None
        by = self.series_by
        if len(by) == 1:  # the usual case (host): no list built
            return (self.name, metric, (labels.get(by[0], ""),))
        return (self.name, metric, tuple([labels.get(k, "") for k in by]))

    def fingerprint(self) -> str:
        """Identity of what learned state depends on (not sensitivity or match)."""
        data = {
            "detector": self.detector,
            "params": (self.host if self.detector == "host" else self.params).as_dict(),
            "warmup": self.warmup,
            "threshold": self.threshold,
        }
        text = json.dumps(data, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# The built-in default: what `batond backtest` uses without --model, and what
# models/*.yaml inherit for every key they leave out.
DEFAULT_SPEC = ModelSpec()

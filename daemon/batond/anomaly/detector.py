"""The ``context`` detector: novelty of value transitions, judged by likelihood.

Per point, in O(1) and pure Python (a few microseconds):

1. *Raw novelty.*  The value is quantised on the range learned from history
   (``bins`` levels; several quantisers shifted by ``offsets`` of a bin, so a
   value near a bin edge is not all-or-nothing).  The transition "previous
   ``context`` levels -> this level" is looked up in a count memory; a
   transition never seen before is novel.  Raw novelty is the fraction of
   quantisers that found it novel.  A value beyond the learned range lands
   in a level of its own, so new extremes are novel too.  A novel point
   beyond the range by more than the range's own width counts
   ``_FAR_WEIGHT`` times: such a spike is evidence on its own, so it is
   scored high on its own sample, not one point later when the (equally
   novel) transition back out of it would have added the rest.
2. *Likelihood.*  The average raw novelty of the last ``short`` points is
   compared with the mean and spread of that average over the last ``long``
   points (as HTM's anomaly likelihood does): a burst of novelty in a series
   that is usually predictable scores high, the same novelty in a noisy
   series does not.  The tail probability is log-scaled into [0, 1].
3. *Sensitivity and calibration.*  ``sensitivity`` scales the deviation
   (0.5 leaves it alone; 0.25 needs twice the deviation for the same score);
   the result is mapped so the model's default threshold 0.99 means a tail
   probability of about 5e-4.
4. *Rest.*  After a score at or above the threshold, the next ``rest``
   points score 0: one alert per onset, not one per point.

Everything is causal: a point is scored before it is learned.  Retraining
(:meth:`ContextDetector.fit`, run off the event loop) re-learns the range and
the memory from the last ``history`` points, in numpy; it is only worth doing
when that range moved (:meth:`ContextDetector.range_moved`).

Memory: the history and the long window are :class:`~batond.anomaly.ring.Ring`
buffers (8 bytes a value, no object per point); the memories hold one entry
per distinct transition, a few dozen for a usual series and at most
``_MAX_TRANSITIONS`` per quantiser.
"""

from __future__ import annotations

import base64
import math
import sys
from array import array
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batond.anomaly.ring import Ring
from batond.anomaly.spec import ContextParams

__all__ = ["ContextDetector", "Fit"]

_LOG_TAIL = math.log(1e-10)  # log-likelihood 1e-10 maps to score 1
_SQRT2 = math.sqrt(2.0)
_U_CLAMP = 1e6  # range units; far beyond the level clamp
_LEVEL_CLAMP = 50  # levels beyond the range: at most this many bins out
_KEY_BASE = 256  # one context level per byte of an int key
_KEY_SHIFT = 64  # levels are >= -_LEVEL_CLAMP, so level + shift >= 0
# transitions remembered per quantiser: bounds a series' memory (a usual one has a
# few dozen; beyond the cap a new transition is still novel, just not remembered)
_MAX_TRANSITIONS = 2048
_MIN_LONG = 30  # points of raw-novelty history before likelihood is trusted
_SD_FLOOR = 0.03  # a perfectly predictable series still needs a real burst
_RANGE_SLACK = 0.25  # retrain once an end of the range moved by a quarter bin
_FAR = 1.0  # range widths beyond the learned range that make a point "far"
_FAR_HIGH = 1.0 + _FAR
_FAR_WEIGHT = 3.0  # raw novelty of a novel far point (NAB 70.3; at 1, 70.2 and spikes lag a point)
_CALIBRATION = 6.0  # score s -> 1 - 10**(-6 s): 0.99 is s = 1/3, a tail of 10**(-10/3)


@dataclass(frozen=True, slots=True)
class Fit:
    """A learned range and transition memory, built off the event loop."""

    lo: float
    span: float
    memories: tuple[dict[int, int], ...]
    contexts: tuple[tuple[int, ...], ...]
    upto: int  # points seen when the history was taken


class ContextDetector:
    """Scores one series, point by point; state is plain data (persistable)."""

    def __init__(
        self, params: ContextParams, warmup: int, threshold: float, sensitivity: float
    ) -> None:
        self.params = params
        self.warmup = max(warmup, params.context + 2)
        self.threshold = threshold
        self.sensitivity = sensitivity
        self.seen = 0
        self.lo = 0.0
        self.span = 0.0  # 0 until the first fit: still warming up
        self.memories: list[dict[int, int]] = [{} for _ in params.offsets]
        self.contexts: list[deque[int]] = [deque(maxlen=params.context) for _ in params.offsets]
        self.history = Ring(max(params.history, self.warmup))
        # extremes of the history and the point (by `seen`) where each last occurred,
        # kept up to date per point so checking for a moved range costs O(1)
        self.low, self.low_at, self.high, self.high_at = math.inf, 0, -math.inf, 0
        self.short: deque[float] = deque(maxlen=params.short)  # tiny: a deque is faster
        self.short_sum = 0.0
        self.long = Ring(params.long)
        self.long_sum = 0.0
        self.long_sq = 0.0
        self.resting = 0

    # -- scoring ---------------------------------------------------------
    def step(self, value: float) -> float:
        """Score ``value`` from the past only, then learn it."""
        self.seen += 1
        self.history.append(value)
        self._track_extremes(value)
        if self.span == 0.0:
            if self.seen >= self.warmup:
                self.apply(self.fit(self.history.to_array(), self.seen))
            return 0.0
        raw = self._learn(value)
        return self._judge(raw)

    def _learn(self, value: float) -> float:
        bins = self.params.bins
        u = (value - self.lo) / self.span
        if -_FAR <= u <= _FAR_HIGH:
            weight = 1.0
        else:
            weight = _FAR_WEIGHT
            if not -_U_CLAMP < u < _U_CLAMP:  # keeps floor() finite for absurd values
                u = _U_CLAMP if u > 0.0 else -_U_CLAMP
        scaled = u * bins
        novel = 0.0
        for offset, memory, context in zip(
            self.params.offsets, self.memories, self.contexts, strict=True
        ):
            level = math.floor(scaled + offset)
            if not -_LEVEL_CLAMP <= level <= bins + _LEVEL_CLAMP:
                level = _level(u, bins, offset)
            key = _key(context, level)
            count = memory.get(key, 0)
            if count or len(memory) < _MAX_TRANSITIONS:
                memory[key] = count + 1
            context.append(level)
            if count == 0:
                novel += weight
        return novel / len(self.memories)

    def _judge(self, raw: float) -> float:
        short = self.short
        if len(short) == short.maxlen:
            self.short_sum -= short[0]
        short.append(raw)
        self.short_sum += raw
        average = self.short_sum / len(short)
        score = self._tail_score(average)
        old = self.long.append(average)
        if old is not None:
            self.long_sum -= old
            self.long_sq -= old * old
        self.long_sum += average
        self.long_sq += average * average
        if self.resting > 0:
            self.resting -= 1
            return 0.0
        if score >= self.threshold:
            self.resting = self.params.rest
        return score

    def _tail_score(self, average: float) -> float:
        n = len(self.long)
        if n < _MIN_LONG:
            return 0.0
        mean = self.long_sum / n
        var = self.long_sq / n - mean * mean
        sd = math.sqrt(var) if var > _SD_FLOOR * _SD_FLOOR else _SD_FLOOR
        # sensitivity scales the evidence: at 0.5 a z of 6.4 saturates, at
        # 0.25 it takes twice the deviation to reach the same score
        z = (average - mean) / sd * (self.sensitivity / 0.5)
        if z <= 0.0:  # no more novelty than usual: nothing to report
            return 0.0
        likelihood = 0.5 * math.erfc(-z / _SQRT2)
        tail = math.log(1.0000000001 - likelihood) / _LOG_TAIL
        if tail <= 0.0:
            return 0.0
        return 1.0 - math.pow(10.0, -_CALIBRATION * min(tail, 1.0))

    # -- training --------------------------------------------------------
    def training_input(self) -> tuple[Sequence[float], int]:
        """A copy of what :meth:`fit` needs; taken on the event loop (a memcpy)."""
        return self.history.to_array(), self.seen

    def _track_extremes(self, value: float) -> None:
        if value <= self.low:
            self.low, self.low_at = value, self.seen
        if value >= self.high:
            self.high, self.high_at = value, self.seen
        oldest = self.seen - len(self.history)  # points up to here have left the history
        if self.low_at <= oldest or self.high_at <= oldest:
            self._rescan_extremes()

    def _rescan_extremes(self) -> None:
        """Extremes of the history, each at its latest occurrence."""
        self.low, self.low_at, self.high, self.high_at = math.inf, 0, -math.inf, 0
        first = self.seen - len(self.history) + 1
        for at, value in enumerate(self.history, first):
            if value <= self.low:
                self.low, self.low_at = value, at
            if value >= self.high:
                self.high, self.high_at = value, at

    def range_moved(self) -> bool:
        """Whether the history's range differs from the learned one by a quarter bin."""
        if not self.history or self.span == 0.0:
            return False
        lo, span = _range(self.low, self.high)
        slack = self.span / self.params.bins * _RANGE_SLACK
        return abs(lo - self.lo) > slack or abs(lo + span - self.lo - self.span) > slack

    def fit(self, history: Sequence[float], upto: int) -> Fit:
        """Learn range and memory from ``history`` (pure; safe in a thread)."""
        import numpy as np  # lazily: only a model that trains pays for numpy

        values = np.asarray(history, dtype=np.float64)
        lo, span = _range(float(values.min()), float(values.max()))
        with np.errstate(over="ignore", invalid="ignore"):  # absurd values: clamped below
            u = (values - lo) / span
        # the same clamp as _learn: out-of-range (and NaN from inf/inf) to an end
        u = np.where(np.abs(u) < _U_CLAMP, u, np.where(u > 0.0, _U_CLAMP, -_U_CLAMP))
        memories = []
        contexts = []
        width = self.params.context
        for offset in self.params.offsets:
            levels = np.clip(
                np.floor(u * self.params.bins + offset),
                -_LEVEL_CLAMP,
                self.params.bins + _LEVEL_CLAMP,
            ).astype(np.int64)
            keys = np.zeros(len(levels), dtype=np.int64)
            for back in range(width, 0, -1):
                shifted = np.zeros(len(levels), dtype=np.int64)
                shifted[back:] = levels[:-back] + _KEY_SHIFT
                keys = keys * _KEY_BASE + shifted
            keys = keys * _KEY_BASE + levels + _KEY_SHIFT
            found, counts = np.unique(keys[width:], return_counts=True)
            if len(found) > _MAX_TRANSITIONS:  # keep the most frequent (a pathological series)
                top = np.sort(np.argsort(-counts, kind="stable")[:_MAX_TRANSITIONS])
                found, counts = found[top], counts[top]
            memories.append(dict(zip(found.tolist(), counts.tolist(), strict=True)))
            contexts.append(tuple(levels[-width:].tolist()))
        return Fit(lo, span, tuple(memories), tuple(contexts), upto)

    def apply(self, fit: Fit) -> None:
        """Adopt ``fit``, then learn the points that arrived while it was built."""
        self.lo = fit.lo
        self.span = fit.span
        self.memories = [dict(m) for m in fit.memories]
        width = self.params.context
        self.contexts = [deque(c, maxlen=width) for c in fit.contexts]
        missed = self.seen - fit.upto
        if missed > 0:
            for value in self.history.last(missed):
                self._learn(value)

    # -- persistence -----------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "lo": self.lo,
            "span": self.span,
            "sensitivity": self.sensitivity,
            "memories": [sorted(m.items()) for m in self.memories],
            "contexts": [list(c) for c in self.contexts],
            "history": _encode(self.history.to_array()),
            "short": _encode(array("d", self.short)),
            "short_sum": self.short_sum,
            "long": _encode(self.long.to_array()),
            "long_sum": self.long_sum,
            "long_sq": self.long_sq,
            "resting": self.resting,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Adopt :meth:`to_state` output; KeyError/TypeError/ValueError if malformed."""
        width = self.params.context
        if len(state["memories"]) != len(self.params.offsets):
            raise ValueError("memory count differs from the model's offsets")
        self.seen = int(state["seen"])
        self.lo = float(state["lo"])
        self.span = float(state["span"])
        self.sensitivity = float(state["sensitivity"])
        self.memories = [{int(k): int(c) for k, c in m} for m in state["memories"]]
        self.contexts = [deque((int(x) for x in c), maxlen=width) for c in state["contexts"]]
        self.history = Ring(self.history.capacity, _decode(state["history"]))
        self._rescan_extremes()
        self.short = deque(_decode(state["short"]), maxlen=self.params.short)
        self.short_sum = float(state["short_sum"])
        self.long = Ring(self.params.long, _decode(state["long"]))
        self.long_sum = float(state["long_sum"])
        self.long_sq = float(state["long_sq"])
        self.resting = int(state["resting"])


def _range(lo: float, hi: float) -> tuple[float, float]:
    """Origin and span of the quantiser; a flat history still gets a usable span."""
    span = hi - lo
    return lo, span if span > 0.0 else abs(lo) * 0.01 or 1.0


def _level(u: float, bins: int, offset: float) -> int:
    level = math.floor(u * bins + offset)
    if level < -_LEVEL_CLAMP:
        return -_LEVEL_CLAMP
    if level > bins + _LEVEL_CLAMP:
        return bins + _LEVEL_CLAMP
    return level


def _key(context: deque[int], level: int) -> int:
    key = 0
    for previous in context:
        key = key * _KEY_BASE + previous + _KEY_SHIFT
    return key * _KEY_BASE + level + _KEY_SHIFT


def _encode(values: array[float]) -> str:
    """Base64 of little-endian float64: exact, and far smaller and faster than a JSON list."""
    if sys.byteorder == "big":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def _decode(text: object) -> array[float]:
    if not isinstance(text, str):
        raise TypeError("expected base64 float64 data")
    data = base64.b64decode(text, validate=True)
    if len(data) % 8:
        raise ValueError("float64 data whose length is not a multiple of 8")
    values = array("d")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values

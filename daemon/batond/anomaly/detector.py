"""The ``context`` detector: novelty of value transitions, judged by likelihood.

Per point, in O(1) and pure Python (a few microseconds):

1. *Raw novelty.*  The value is quantised on the range learned from history
   (``bins`` levels; several quantisers shifted by ``offsets`` of a bin, so a
   value near a bin edge is not all-or-nothing).  The transition "previous
   ``context`` levels -> this level" is looked up in a memory of the
   transitions seen; one never seen before is novel.  A value beyond the
   learned range lands in a level of its own (up to two range widths out),
   so new extremes are novel too.  A novel transition counts 1 *unit*; one
   into a level beyond the range counts ``beyond`` units (2: NAB 70.3 -> 71.8
   at the same threshold, see docs/anomaly.md); one more than a range width
   beyond counts ``_FAR_WEIGHT`` (3): such a spike is evidence on its own,
   scored on its own sample.
2. *Likelihood.*  The units of the last ``short`` points are summed and
   compared with the mean and spread of that sum over ``long`` earlier
   points (as HTM's anomaly likelihood does): a burst of novelty in a series
   that is usually predictable scores high, the same novelty in a noisy
   series does not.  The baseline leaves out the ``short // 2`` newest sums,
   which share half or more of their points with the current one, so a burst
   building up over a few points does not raise its own baseline (NAB
   in-sample unchanged, 72.57; cross-validated 70.39 -> 71.66, a selection
   effect: docs/anomaly.md).
   The tail probability is log-scaled into [0, 1].
3. *Sensitivity and calibration.*  ``sensitivity`` scales the deviation
   (0.5 leaves it alone; 0.25 needs twice the deviation for the same score);
   the result is mapped so the default threshold 0.99 means a tail
   probability of about 5e-4.
4. *Rest.*  After a score at or above the threshold, the next ``rest``
   points score 0; a point that would score at or above it meanwhile
   restarts the rest: one alert per episode, not one per point.

Everything is causal: a point is scored before it is learned.  Retraining
(:meth:`ContextDetector.fit`, run off the event loop) re-learns the range and
the memory from the last ``history`` points, in numpy; it is only worth doing
when that range moved (:meth:`ContextDetector.range_moved`).

Compact state (about 6 KB a series at the defaults, see
:func:`batond.anomaly.modelset.series_bytes`): the history is kept as 2-byte
codes on the learned range (4096 codes a range width, from 4 widths below
to 12 above it; a value farther out is kept at the end code, and the next
retraining widens the range towards it); the novelty windows hold small
integers (1 or 2 bytes); a transition memory is a bitmap of all possible
transitions (162 bytes at 7 bins and context 1) or, when that would exceed
8 KB (larger ``context``), a set capped at ``_MAX_TRANSITIONS``.
"""

from __future__ import annotations

import base64
import math
import sys
from array import array
from dataclasses import dataclass
from typing import Any

from batond.anomaly.ring import Ring
from batond.anomaly.spec import ContextParams

__all__ = ["ContextDetector", "Fit", "TrainingInput"]

_LOG_TAIL = math.log(1e-10)  # log-likelihood 1e-10 maps to score 1
_SQRT2 = math.sqrt(2.0)
_U_CLAMP = 1e6  # range units; far beyond the level clamp
_CLAMP_WIDTHS = 2  # levels beyond the range: at most two range widths out
_MAX_TRANSITIONS = 2048  # a set memory's cap (a bitmap needs none)
_BITMAP_BITS = 65536  # a memory of more possible transitions is a set instead
_MIN_LONG = 30  # points of novelty history before likelihood is trusted
_SD_FLOOR = 0.03  # per quantiser and point: a perfectly predictable series needs a real burst
_RANGE_SLACK = 0.25  # retrain once an end of the range moved by a quarter bin
_FAR = 1.0  # range widths beyond the learned range that make a point "far"
_FAR_HIGH = 1.0 + _FAR
_FAR_WEIGHT = 3  # units of a novel far point (at 1, NAB 70.2 and spikes lag a point)
_CALIBRATION = 6.0  # score s -> 1 - 10**(-6 s): 0.99 is s = 1/3, a tail of 10**(-10/3)
# history codes: u = (value - lo) / span kept as round((u + _BELOW) * _PER_SPAN)
_PER_SPAN = 4096
_BELOW = 4.0
_TOP_CODE = 65535  # u up to 65535 / 4096 - 4 = 12 range widths above
_TOP_U = (_TOP_CODE - 1) / _PER_SPAN - _BELOW  # below it, a code needs no clamp


@dataclass(frozen=True, slots=True)
class TrainingInput:
    """What :meth:`ContextDetector.fit` needs, copied on the event loop (a memcpy)."""

    codes: array[int]
    lo: float
    span: float
    upto: int  # points seen when the history was taken
    warm: array[float] | None = None  # the raw warm-up values, for the first fit


@dataclass(frozen=True, slots=True)
class Fit:
    """A learned range and transition memory, built off the event loop."""

    lo: float
    span: float
    memories: tuple[bytearray | frozenset[int], ...]
    contexts: tuple[int, ...]
    codes: array[int]  # the history re-coded on the new range
    upto: int


class ContextDetector:
    """Scores one series, point by point; state is plain data (persistable)."""

    __slots__ = (
        "_clamp", "_levels", "_span_l", "beyond", "bitmap", "contexts", "gap", "high",
        "high_at", "history", "lo", "long", "long_sq", "long_sum", "low", "low_at", "memories",
        "params", "resting", "seen", "sensitivity", "short", "short_sum", "span",
        "threshold", "warm", "warmup",
    )  # fmt: skip

    def __init__(
        self, params: ContextParams, warmup: int, threshold: float, sensitivity: float
    ) -> None:
        self.params = params
        self.warmup = max(warmup, params.context + 2)
        self.threshold = threshold
        self.sensitivity = sensitivity
        self.beyond = params.beyond
        self._clamp = _CLAMP_WIDTHS * params.bins
        self._levels = params.bins + 2 * self._clamp + 1  # distinct levels, clamped
        self._span_l = self._levels**params.context  # distinct contexts
        self.bitmap = self._span_l * self._levels <= _BITMAP_BITS
        self.seen = 0
        self.lo = 0.0
        self.span = 0.0  # 0 until the first fit: still warming up
        self.warm: array[float] | None = array("d")  # raw values until the first fit
        self.memories: list[Any] = [self._empty_memory() for _ in params.offsets]
        self.contexts = [0] * len(params.offsets)
        self.history = Ring(max(params.history, self.warmup), typecode="H")
        # extremes (codes) of the history and the point (by `seen`) where each last
        # occurred, kept up to date per point so checking for a moved range costs O(1)
        self.low, self.low_at, self.high, self.high_at = _TOP_CODE + 1, 0, -1, 0
        most = _FAR_WEIGHT * len(params.offsets)  # units of one point at most
        self.short = Ring(params.short, typecode="B")
        self.short_sum = 0
        # the newest `gap` sums wait in the ring before they count in the baseline
        self.gap = params.short // 2
        typecode = "B" if most * params.short < 256 else "I"
        self.long = Ring(params.long + self.gap, typecode=typecode)
        self.long_sum = 0
        self.long_sq = 0
        self.resting = 0

    def _empty_memory(self) -> Any:
        return bytearray((self._span_l * self._levels + 7) // 8) if self.bitmap else set()

    # -- scoring ---------------------------------------------------------
    def step(self, value: float) -> float:
        """Score ``value`` from the past only, then learn it."""
        self.seen += 1
        warm = self.warm
        if warm is not None:  # until the first fit (a training job) is applied
            warm.append(value)
            if len(warm) >= 2 * self.warmup:  # a first fit overdue: keep its memory bounded
                del warm[: self.warmup]
            return 0.0
        u = (value - self.lo) / self.span
        if -_BELOW < u < _TOP_U:  # the usual case: a code without clamping
            code = int((u + _BELOW) * _PER_SPAN + 0.5)
        else:
            u = _unit(value, self.lo, self.span)
            code = _code(u)
        self._remember(code)
        return self._judge(self._learn(u))

    def _remember(self, code: int) -> None:
        history = self.history
        history.append(code)
        seen = self.seen
        if code <= self.low:
            self.low, self.low_at = code, seen
        if code >= self.high:
            self.high, self.high_at = code, seen
        oldest = seen - len(history)  # points up to here have left the history
        if self.low_at <= oldest or self.high_at <= oldest:
            self._rescan_extremes()

    def _learn(self, u: float) -> int:
        """Units of novelty of the point at ``u`` (range units); learns its transitions."""
        bins = self.params.bins
        clamp = self._clamp
        levels = self._levels
        span_l = self._span_l
        weight = 1 if -_FAR <= u <= _FAR_HIGH else _FAR_WEIGHT
        scaled = u * bins
        units = 0
        contexts = self.contexts
        memories = self.memories
        bitmap = self.bitmap
        i = 0
        for offset in self.params.offsets:
            level = math.floor(scaled + offset)
            if level < -clamp:
                level = -clamp
            elif level > bins + clamp:
                level = bins + clamp
            key = contexts[i] * levels + level + clamp
            contexts[i] = key % span_l
            memory = memories[i]
            i += 1
            if bitmap:
                byte = key >> 3
                bit = 1 << (key & 7)
                if memory[byte] & bit:
                    continue
                memory[byte] |= bit
            else:
                if key in memory:
                    continue
                if len(memory) < _MAX_TRANSITIONS:
                    memory.add(key)
            if weight > 1:
                units += weight
            elif level < 0 or level >= bins:
                units += self.beyond
            else:
                units += 1
        return units

    def _judge(self, units: int) -> float:
        short = self.short
        old = short.append(units)
        if old is None:  # a young window: its sum as if it were full
            self.short_sum += units
            total = round(self.short_sum * short.capacity / len(short))
        else:
            self.short_sum += units - old
            total = self.short_sum
        long = self.long
        gap = self.gap
        n = len(long) - gap  # sums in the baseline: all but the newest `gap`
        # no more novelty than usual (most points): nothing to report
        score = self._tail_score(total, n) if total and total * n > self.long_sum else 0.0
        # the oldest sum leaves the baseline, the one `gap` places back joins it
        old, joined = long.slide(total, gap)
        if old != joined:
            self.long_sum += joined - old
            self.long_sq += joined * joined - old * old
        if self.resting > 0:
            # a point that would alert while resting is the same episode: the rest
            # restarts, so one episode alerts once (NAB: fewer false positives, 72.14
            # -> 72.58 in-sample, 69.95 -> 70.39 cross-validated; docs/anomaly.md)
            self.resting = self.params.rest if score >= self.threshold else self.resting - 1
            return 0.0
        if score >= self.threshold:
            self.resting = self.params.rest
        return score

    def _tail_score(self, total: int, n: int) -> float:
        if n < _MIN_LONG:
            return 0.0
        mean = self.long_sum / n
        var = self.long_sq / n - mean * mean
        floor = _SD_FLOOR * self.short.capacity * len(self.params.offsets)
        sd = math.sqrt(var) if var > floor * floor else floor
        # sensitivity scales the evidence: at 0.5 a z of 6.4 saturates, at
        # 0.25 it takes twice the deviation to reach the same score
        z = (total - mean) / sd * (self.sensitivity / 0.5)
        likelihood = 0.5 * math.erfc(-z / _SQRT2)
        tail = math.log(1.0000000001 - likelihood) / _LOG_TAIL
        if tail <= 0.0:
            return 0.0
        return 1.0 - math.pow(10.0, -_CALIBRATION * min(tail, 1.0))

    # -- training --------------------------------------------------------
    def ready(self) -> bool:
        """Whether the warm-up is complete and the first fit can be made."""
        return self.warm is not None and self.seen >= self.warmup

    def training_input(self) -> TrainingInput:
        """A copy of what :meth:`fit` needs; taken on the event loop (a memcpy)."""
        warm = self.warm
        if warm is not None:
            warm = warm[-self.history.capacity :]
        return TrainingInput(self.history.to_array(), self.lo, self.span, self.seen, warm)

    def _rescan_extremes(self) -> None:
        """Extremes of the history, each at its latest occurrence."""
        self.low, self.low_at, self.high, self.high_at = _TOP_CODE + 1, 0, -1, 0
        first = self.seen - len(self.history) + 1
        for at, code in enumerate(self.history, first):
            if code <= self.low:
                self.low, self.low_at = code, at
            if code >= self.high:
                self.high, self.high_at = code, at

    def range_moved(self) -> bool:
        """Whether the history's range differs from the learned one by a quarter bin."""
        if not self.history or self.warm is not None:
            return False
        low = self.low / _PER_SPAN - _BELOW  # range units
        high = self.high / _PER_SPAN - _BELOW
        slack = _RANGE_SLACK / self.params.bins
        return abs(low) > slack or abs(high - 1.0) > slack

    def fit(self, given: TrainingInput) -> Fit:
        """Learn range and memory from a history copy (pure; safe in a thread)."""
        import numpy as np  # lazily: only a model that trains pays for numpy

        if given.warm is not None:
            return self.fit_values(given.warm, given.upto)
        codes = np.frombuffer(given.codes, dtype=np.uint16).astype(np.float64)
        values = given.lo + given.span * (codes / _PER_SPAN - _BELOW)
        return self.fit_values(values, given.upto)

    def fit_values(self, history: Any, upto: int) -> Fit:
        """Learn range and memory from ``history`` (values; pure, safe in a thread)."""
        import numpy as np

        values = np.asarray(history, dtype=np.float64)
        lo, span = _range(float(values.min()), float(values.max()))
        with np.errstate(over="ignore", invalid="ignore"):  # absurd values: clamped below
            u = (values - lo) / span
        # the same clamp as step: out-of-range (and NaN from inf/inf) to an end
        u = np.where(np.abs(u) < _U_CLAMP, u, np.where(u > 0.0, _U_CLAMP, -_U_CLAMP))
        codes = np.clip(np.floor((u + _BELOW) * _PER_SPAN + 0.5), 0, _TOP_CODE)
        memories = []
        contexts = []
        bins, clamp = self.params.bins, self._clamp
        width = self.params.context
        for offset in self.params.offsets:
            shifted = np.clip(np.floor(u * bins + offset), -clamp, bins + clamp) + clamp
            levels = shifted.astype(np.int64)
            keys = np.zeros(len(levels), dtype=np.int64)
            for back in range(width, 0, -1):  # the context starts at 0 (level -clamp)
                before = np.zeros(len(levels), dtype=np.int64)
                before[back:] = levels[:-back]
                keys = keys * self._levels + before
            keys = keys * self._levels + levels
            memories.append(self._memory_of(keys[width:]))
            contexts.append(int(keys[-1] % self._span_l) if len(keys) else 0)
        packed = array("H", codes.astype(np.uint16).tobytes())
        if sys.byteorder == "big":
            packed.byteswap()
        return Fit(lo, span, tuple(memories), tuple(contexts), packed, upto)

    def _memory_of(self, keys: Any) -> bytearray | frozenset[int]:
        import numpy as np

        if self.bitmap:
            bits = np.zeros(self._span_l * self._levels, dtype=np.uint8)
            bits[keys] = 1
            return bytearray(np.packbits(bits, bitorder="little").tobytes())
        found, counts = np.unique(keys, return_counts=True)
        if len(found) > _MAX_TRANSITIONS:  # keep the most frequent (a pathological series)
            found = found[np.argsort(-counts, kind="stable")[:_MAX_TRANSITIONS]]
        return frozenset(found.tolist())

    def apply(self, fit: Fit) -> None:
        """Adopt ``fit``, then learn the points that arrived while it was built."""
        missed = self.seen - fit.upto
        old_lo, old_span = self.lo, self.span
        recent = self.history.last(missed) if missed > 0 else array("H")
        warm = self.warm
        self.warm = None
        self.lo, self.span = fit.lo, fit.span
        self.memories = [bytearray(m) if self.bitmap else set(m) for m in fit.memories]
        self.contexts = list(fit.contexts)
        capacity = self.history.capacity
        self.history = Ring(capacity, fit.codes[-capacity:], typecode="H")
        if warm is not None:  # the first fit: the points since are still raw values
            for value in warm[len(warm) - missed :] if missed > 0 else ():
                u = _unit(value, fit.lo, fit.span)
                self.history.append(_code(u))
                self._learn(u)
        else:
            for code in recent:  # re-coded on the new range, then learned
                u = _unit(old_lo + old_span * (code / _PER_SPAN - _BELOW), fit.lo, fit.span)
                self.history.append(_code(u))
                self._learn(u)
        self._rescan_extremes()

    # -- persistence -----------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "lo": self.lo,
            "span": self.span,
            "sensitivity": self.sensitivity,
            "warm": None if self.warm is None else _encode(self.warm),
            "memories": [_encode_bytes(m) if self.bitmap else sorted(m) for m in self.memories],
            "contexts": list(self.contexts),
            "history": _encode(self.history.to_array()),
            "short": _encode(self.short.to_array()),
            "long": _encode(self.long.to_array()),
            "resting": self.resting,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Adopt :meth:`to_state` output; KeyError/TypeError/ValueError if malformed."""
        if len(state["memories"]) != len(self.params.offsets):
            raise ValueError("memory count differs from the model's offsets")
        self.seen = int(state["seen"])
        self.lo = float(state["lo"])
        self.span = float(state["span"])
        self.sensitivity = float(state["sensitivity"])
        warm = state["warm"]
        self.warm = None if warm is None else _decode(warm, "d")
        size = len(self._empty_memory()) if self.bitmap else 0
        memories: list[Any] = []
        for m in state["memories"]:
            if self.bitmap:
                memory = bytearray(base64.b64decode(m, validate=True))
                if len(memory) != size:
                    raise ValueError("a transition bitmap of the wrong size")
                memories.append(memory)
            else:
                memories.append({int(k) for k in m})
        self.memories = memories
        self.contexts = [int(c) % self._span_l for c in state["contexts"]]
        if len(self.contexts) != len(self.params.offsets):
            raise ValueError("context count differs from the model's offsets")
        self.history = Ring(self.history.capacity, _decode(state["history"], "H"), "H")
        self._rescan_extremes()
        self.short = Ring(self.short.capacity, _decode(state["short"], "B"), "B")
        self.short_sum = sum(self.short)
        typecode = self.long.typecode
        self.long = Ring(self.long.capacity, _decode(state["long"], typecode), typecode)
        baseline = self.long.to_array()[: max(len(self.long) - self.gap, 0)]
        self.long_sum = sum(baseline)
        self.long_sq = sum(x * x for x in baseline)
        self.resting = int(state["resting"])


def _unit(value: float, lo: float, span: float) -> float:
    """``value`` in range units, clamped so floor() stays finite for absurd values."""
    u = (value - lo) / span
    if -_U_CLAMP < u < _U_CLAMP:
        return u
    return _U_CLAMP if u > 0.0 else -_U_CLAMP  # NaN (inf/inf) too: to the low end


def _code(u: float) -> int:
    """The history code of a value at ``u`` range units (clamped to the codes' ends)."""
    if u <= -_BELOW:
        return 0
    code = int((u + _BELOW) * _PER_SPAN + 0.5)
    return code if code < _TOP_CODE else _TOP_CODE


def _range(lo: float, hi: float) -> tuple[float, float]:
    """Origin and span of the quantiser; a flat history still gets a usable span."""
    span = hi - lo
    return lo, span if span > 0.0 else abs(lo) * 0.01 or 1.0


def _encode(values: array[Any]) -> str:
    if sys.byteorder == "big":
        values = array(values.typecode, values)
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode("ascii")


def _encode_bytes(data: bytearray) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


def _decode(text: object, typecode: str) -> array[Any]:
    if not isinstance(text, str):
        raise TypeError(f"expected base64 {typecode!r} array data")
    data = base64.b64decode(text, validate=True)
    values = array(typecode)
    if len(data) % values.itemsize:
        raise ValueError(f"{typecode!r} array data whose length is not a multiple of its size")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values

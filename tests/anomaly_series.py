"""Generated series for the anomaly tests (deterministic)."""

from __future__ import annotations

import math
import random


def wave(n: int, seed: int = 1, spike_at: int | None = None) -> list[float]:
    """A daily-like sine with noise; a large spike at ``spike_at`` if given."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        value = 50.0 + 20.0 * math.sin(2 * math.pi * i / 144) + rng.gauss(0.0, 1.5)
        if spike_at is not None and spike_at <= i < spike_at + 3:
            value += 80.0
        out.append(value)
    return out


def points(values: list[float], step: float = 300.0) -> list[tuple[float, float]]:
    """(epoch seconds, value) pairs, ``step`` seconds apart."""
    return [(1_700_000_000.0 + i * step, v) for i, v in enumerate(values)]

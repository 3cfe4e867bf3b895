"""Keeping the cyclic garbage collector off what lives as long as the daemon.

Each anomaly series holds about 14 objects the collector tracks (rings, arrays,
its detector); at 100k series a full collection walks about 1.4 million of them
and held the event loop for 0.8 s. Series live until the daemon stops, so once
made they are moved out of the collector's generations with :func:`gc.freeze`
(O(1): it relinks the lists). Freezing on growth, not on a timer, keeps
short-lived cycles (tasks, tracebacks) collectable: only a burst of new series
triggers it, and a burst is almost all series state.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

__all__ = ["CHECK_EVERY_INPUTS", "FREEZE_EVERY_SERIES", "LongLivedHeap"]

#: New series that make a freeze worth it (~14k tracked objects).
FREEZE_EVERY_SERIES = 1000
#: The engine loop looks at the series count once per this many inputs (a power of 2).
CHECK_EVERY_INPUTS = 1024


class LongLivedHeap:
    """Freezes the heap when ``count()`` (series held) grew by ``every`` since last time."""

    def __init__(self, count: Callable[[], int], every: int = FREEZE_EVERY_SERIES) -> None:
        self._count = count
        self._every = every
        self._frozen_at = count()
        self.freezes = 0

    def settle(self) -> bool:
        """Freeze if the series grew enough; whether it did."""
        held = self._count()
        if held - self._frozen_at < self._every:
            if held < self._frozen_at:  # series were refused or forgotten: count from here
                self._frozen_at = held
            return False
        gc.freeze()
        self._frozen_at = held
        self.freezes += 1
        return True

"""How late the event loop runs: ``batond_loop_lag_seconds``.

A task sleeps :data:`INTERVAL` seconds again and again; how much later than
asked it wakes is the time some callback held the loop (a parse, a slow
query, a blocking call). The gauge shows the worst lag of the last
:data:`WINDOW` seconds, so a scrape every 15 s still sees a one-off stall.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from prometheus_client import Gauge

__all__ = ["INTERVAL", "WINDOW", "LoopLag"]

INTERVAL = 0.25
WINDOW = 30.0


class LoopLag:
    """Measures the loop's lag and keeps the recent samples (for the gauge and for tests)."""

    def __init__(
        self,
        gauge: Gauge | None = None,
        *,
        interval: float = INTERVAL,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gauge = gauge
        self._interval = interval
        self._clock = clock
        self.samples: deque[float] = deque(maxlen=max(1, round(window / interval)))
        #: when the loop last ran this task (clock seconds): the watchdog thread's heartbeat
        self.last_beat = clock()

    @property
    def worst(self) -> float:
        """The largest lag of the window (0 before the first sample)."""
        return max(self.samples, default=0.0)

    def sample(self, lag: float) -> None:
        self.samples.append(max(0.0, lag))
        if self._gauge is not None:
            self._gauge.set(self.worst)

    async def run(self, started: asyncio.Event) -> None:
        """Until cancelled."""
        self.last_beat = self._clock()
        started.set()
        while True:
            asked = self._clock() + self._interval
            await asyncio.sleep(self._interval)
            self.last_beat = self._clock()
            self.sample(self.last_beat - asked)

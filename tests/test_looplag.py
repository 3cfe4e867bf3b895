"""batond_loop_lag_seconds: a stall of the loop shows in the gauge, a quiet loop does not."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from batond.metrics import Metrics
from batond.runtime.looplag import LoopLag


async def until(predicate: Callable[[], bool], within: float = 10.0) -> None:
    """Poll with a deadline: the samples come from the task under test."""
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def test_a_stall_shows_in_the_gauge_for_the_window() -> None:
    metrics = Metrics(CollectorRegistry())
    lag = LoopLag(metrics.loop_lag, interval=0.02, window=5.0)
    started = asyncio.Event()
    task = asyncio.create_task(lag.run(started))
    try:
        await started.wait()
        await until(lambda: len(lag.samples) >= 3)
        time.sleep(0.3)  # noqa: ASYNC251 - the stall under test: the loop is held
        await until(lambda: lag.worst >= 0.2)
        value = metrics.registry.get_sample_value("batond_loop_lag_seconds")
        assert value is not None and 0.2 <= value < 5.0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_samples_beyond_the_window_are_forgotten() -> None:
    lag = LoopLag(interval=1.0, window=3.0)
    lag.sample(2.0)
    for _ in range(3):
        lag.sample(0.001)
    assert lag.worst == 0.001
    lag.sample(-0.5)  # a clock that woke early is no lag
    assert min(lag.samples) == 0.0

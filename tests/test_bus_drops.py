"""A full input queue drops what does not fit: every item counted at once, and logged."""

from __future__ import annotations

import asyncio
import logging

import pytest
from prometheus_client import CollectorRegistry

from batond.events import Sample
from batond.intake import bus as bus_module
from batond.intake.bus import Bus
from batond.metrics import Metrics


def _samples(n: int) -> list[Sample]:
    return [Sample("load", float(i), 1.0, {"host": f"h{i}"}, source="mqtt") for i in range(n)]


def _dropped(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value("batond_events_dropped_total", {"source": "mqtt"})
    return value or 0.0


def test_a_full_queue_counts_every_drop_and_logs_one_line_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()

    async def scenario() -> tuple[int, int, int]:
        bus = Bus(Metrics(registry), maxsize=10)
        first = bus.offer_many(_samples(15), "mqtt")
        second = bus.offer_many(_samples(3), "mqtt")  # within the interval: counted only
        monkeypatch.setattr(bus_module, "DROP_LOG_S", 0.0)
        third = bus.offer_many(_samples(2), "mqtt")
        return first, second, third

    with caplog.at_level(logging.WARNING, logger="batond.bus"):
        queued = asyncio.run(scenario())
    assert queued == (10, 0, 0)
    assert _dropped(registry) == 10
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "input queue full (10 items): dropped mqtt 5 (batond_events_dropped_total)",
        "input queue full (10 items): dropped mqtt 5 (batond_events_dropped_total)",
    ]

"""``Bus.offer_upto`` and ``Bus.when_room``: the bus side of MQTT backpressure."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from batond.events import Sample
from batond.intake.bus import Bus
from batond.metrics import Metrics


def _samples(n: int) -> list[Sample]:
    return [Sample("load", float(i), 1.0, {}, source="mqtt") for i in range(n)]


def _count(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name, {"source": "mqtt"}) or 0.0


async def test_offer_upto_queues_what_fits_and_drops_nothing() -> None:
    registry = CollectorRegistry()
    bus = Bus(Metrics(registry), maxsize=10)
    assert bus.offer_upto(_samples(7), "mqtt") == 7
    assert bus.offer_upto(_samples(7), "mqtt") == 3  # the other 4 stay with the caller
    assert bus.offer_upto(_samples(1), "mqtt") == 0
    assert _count(registry, "batond_events_received_total") == 10
    assert _count(registry, "batond_events_dropped_total") == 0
    bus.close()  # shutdown: nothing may be held any more, so all are taken and counted
    assert bus.offer_upto(_samples(5), "mqtt") == 5
    assert _count(registry, "batond_events_dropped_total") == 5


async def test_when_room_calls_back_once_the_queue_has_drained_to_half() -> None:
    bus = Bus(Metrics(CollectorRegistry()), maxsize=10)
    bus.offer_upto(_samples(10), "mqtt")
    called = asyncio.Event()
    depth_then: list[int] = []

    def room() -> None:
        depth_then.append(bus.depth())
        called.set()

    bus.when_room(room)
    for _ in range(4):  # 6 left: not yet
        await bus.get()
    await asyncio.sleep(0)
    assert not called.is_set()
    assert bus.get_nowait() is not None  # 5 left: half
    await asyncio.wait_for(called.wait(), 5)
    assert depth_then == [5]
    for _ in range(5):
        bus.get_nowait()
    await asyncio.sleep(0)
    assert depth_then == [5]  # once per when_room


async def test_when_room_with_room_already_or_a_closed_bus_calls_back_soon() -> None:
    bus = Bus(Metrics(CollectorRegistry()), maxsize=10)
    calls: list[str] = []
    bus.when_room(lambda: calls.append("empty"))
    bus.offer_upto(_samples(10), "mqtt")
    bus.when_room(lambda: calls.append("closed"))
    await asyncio.sleep(0)
    assert calls == ["empty"]
    bus.close()  # whoever holds items learns it and hands them in (dropped, counted)
    await asyncio.sleep(0)
    assert calls == ["empty", "closed"]

"""A central instance's partition sessions under backpressure: nothing dropped.

``Central`` built in the test process, with a bus far smaller than the burst, the
machine's PostgreSQL (a private database) and a real Mosquitto with no in-flight
bound (``max_inflight_messages 0``): each partition's persistent session is made
first, the agents' batches wait in it, and the instance that claims the partitions
gets the whole backlog at once. Every item must reach the engine's side of the bus,
none dropped under ``source="fleet"``, reading paused meanwhile (the daemon's own
metrics show it), and each batch acknowledged once all its items are decided.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiomqtt
import orjson
import pytest
from prometheus_client import CollectorRegistry

from batond.events import Sample
from batond.fleet.central import Central, partition_client_id
from batond.fleet.partition import batch_topic, partition_filter, partition_of
from batond.intake import mqtt as mqtt_module
from batond.intake.bus import Bus
from batond.intake.mqtt import _Acks
from batond.load.config import Ack, FleetConfig, FleetRole, MqttConfig
from batond.metrics import Metrics
from mqtt_broker import Mosquitto
from support import until

PREFIX = "acme/bp"
PARTITIONS = 2
BUS = 50
BATCHES, PER_BATCH = 30, 20  # per partition: 1,200 items in all, 24 times the bus
FLEET = {"source": "fleet"}


def host_of(partition: int) -> str:
    return next(h for n in range(10_000) if partition_of(h := f"web-{n}", PARTITIONS) == partition)


def batch(host: str, seq: int, first: int) -> bytes:
    samples = [{"metric": "m", "value": first + i} for i in range(PER_BATCH)]
    return orjson.dumps({"v": 1, "host": host, "seq": seq, "sent": 0.0, "samples": samples})


async def sessions_made(broker: Mosquitto) -> None:
    """Each partition's persistent session, as its owner would make it, with nobody on it:
    the broker queues the partition's batches there for whoever claims it."""
    for p in range(PARTITIONS):
        client_id = partition_client_id(PREFIX, p)
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier=client_id,
                                  clean_session=False) as sub:  # fmt: skip
            await sub.subscribe(partition_filter(PREFIX, p), qos=1)


async def publish_burst(broker: Mosquitto) -> None:
    """``BATCHES`` batches per partition; sample values number every item once."""
    async with aiomqtt.Client("127.0.0.1", broker.port, max_inflight_messages=1000) as pub:
        sends = []
        for b in range(BATCHES):
            for p in range(PARTITIONS):
                host, first = host_of(p), (b * PARTITIONS + p) * PER_BATCH
                topic = batch_topic(PREFIX, PARTITIONS, host)
                sends.append(pub.publish(topic, batch(host, b + 1, first), qos=1))
        await asyncio.gather(*sends)


class Acked:
    """For each acknowledgement sent: whether every item of its batch was evaluated."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.evaluated: set[int] = set()
        self.complete: list[bool] = []
        real_add, real_send_ack = _Acks.add, mqtt_module.send_ack
        firsts: dict[tuple[int, int], int] = {}  # (connection's send, mid) -> first item

        def add(acks: _Acks, mid: int, topic: str, payload: bytes) -> Any:
            firsts[id(acks._send), mid] = int(orjson.loads(payload)["samples"][0]["value"])
            return real_add(acks, mid, topic, payload)

        def send_ack(client: aiomqtt.Client) -> Callable[[int, int], object]:
            send = real_send_ack(client)

            def recorded(mid: int, qos: int) -> object:
                first = firsts[id(recorded), mid]
                self.complete.append(all(first + i in self.evaluated for i in range(PER_BATCH)))
                return send(mid, qos)

            return recorded

        monkeypatch.setattr(_Acks, "add", add)
        monkeypatch.setattr(mqtt_module, "send_ack", send_ack)

    async def drain(self, bus: Bus, n: int) -> list[int]:
        """The engine loop's part: take each item and say it is evaluated."""
        taken = []
        for _ in range(n):
            item, _ = await asyncio.wait_for(bus.get(), 30)
            assert isinstance(item, Sample) and item.source == "fleet"
            taken.append(int(item.value))
            self.evaluated.add(taken[-1])
            bus.evaluated()
        return taken


async def test_a_backlog_larger_than_the_queue_pauses_the_partitions_and_drops_nothing(
    broker: Mosquitto, database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    acked = Acked(monkeypatch)
    await sessions_made(broker)
    await publish_burst(broker)
    metrics = Metrics(CollectorRegistry())
    bus = Bus(metrics, BUS)
    fleet = FleetConfig(
        role=FleetRole.CENTRAL, host="c0", prefix=PREFIX, partitions=PARTITIONS,
        database=database, instance="c0", heartbeat=0.5,
    )  # fmt: skip
    mqtt = MqttConfig(url=broker.url, client_id="batond-c0", ack=Ack.DECIDED)
    central = Central(fleet, mqtt, bus, metrics, database)
    task = asyncio.create_task(central.run(asyncio.Event()))
    total = PARTITIONS * BATCHES * PER_BATCH

    def value(name: str, labels: dict[str, str] | None = None) -> float:
        return metrics.registry.get_sample_value(name, labels or {}) or 0.0

    try:
        await until(lambda: value("batond_mqtt_reading_paused") >= 1, what="a pause")
        assert bus.depth() == BUS  # full, and nothing more taken meanwhile
        numbers = await acked.drain(bus, total)
        assert sorted(numbers) == list(range(total))  # each once
        for p in range(PARTITIONS):  # a partition's items in its batches' order
            mine = [n for n in numbers if (n // PER_BATCH) % PARTITIONS == p]
            assert mine == sorted(mine)
        await until(lambda: len(acked.complete) == PARTITIONS * BATCHES, what="every PUBACK")
        assert value("batond_mqtt_reading_paused") == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert acked.complete == [True] * PARTITIONS * BATCHES  # none before its items' decision
    assert value("batond_events_dropped_total", FLEET) == 0
    assert value("batond_events_received_total", FLEET) == total
    assert value("batond_mqtt_paused_seconds_total") > 0
    assert bus.depth() == 0

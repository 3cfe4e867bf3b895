"""Backpressure: a full input queue pauses MQTT reading instead of dropping (buffered path).

Against a real Mosquitto with no in-flight bound (``max_inflight_messages 0``), so
the broker would let far more QoS 1 items wait unacknowledged than the (small) bus
holds: every item must still reach the bus, in order, nothing dropped, the pause
visible in its metrics and one log line; acknowledgements go out in arrival order.
The plain path (aiomqtt's public API only) cannot stop reading: it drops and counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiomqtt
import orjson
import pytest

from batond.events import Input
from batond.intake import mqtt as mqtt_module
from batond.intake.bus import Bus
from batond.intake.mqtt import _Acks
from batond.intake.mqtt_compat import ClientPath
from batond.load.config import Ack, MqttConfig, Subscription
from mqtt_broker import Mosquitto
from support import until
from test_mqtt_ack import numbers
from test_mqtt_source import make_source, running, take, value

BUS = 50
DROPPED = ("batond_events_dropped_total", {"source": "mqtt"})


async def publish_batches(port: int, messages: int, per_message: int, qos: int) -> None:
    """``messages`` messages of ``per_message`` samples numbered 0, 1, 2... in order."""
    async with aiomqtt.Client("127.0.0.1", port, max_inflight_messages=1000) as pub:
        sends = []
        for m in range(messages):
            batch = [{"metric": "m", "value": m * per_message + i} for i in range(per_message)]
            sends.append(pub.publish("metrics/a", orjson.dumps(batch), qos=qos))
        await asyncio.gather(*sends)


async def drain(bus: Bus, n: int, evaluated: list[int] | None = None) -> list[Input]:
    """The engine loop's part: take each item and say it is evaluated (counted in
    ``evaluated[0]``)."""
    taken = []
    for _ in range(n):
        taken += await take(bus, 1)
        bus.evaluated()
        if evaluated is not None:
            evaluated[0] += 1
    return taken


def record_acks(
    monkeypatch: pytest.MonkeyPatch, evaluated: list[int]
) -> tuple[list[int], list[int], list[int]]:
    """The packet ids in the order they arrived and in the order they were acknowledged,
    and how many items had been evaluated at each acknowledgement."""
    arrived: list[int] = []
    acked: list[int] = []
    progress: list[int] = []
    real_add, real_send_ack = _Acks.add, mqtt_module.send_ack

    def add(self: _Acks, mid: int, topic: str, payload: bytes) -> Any:
        arrived.append(mid)
        return real_add(self, mid, topic, payload)

    def send_ack(client: aiomqtt.Client) -> Callable[[int, int], object]:
        send = real_send_ack(client)

        def recorded(mid: int, qos: int) -> object:
            acked.append(mid)
            progress.append(evaluated[0])
            return send(mid, qos)

        return recorded

    monkeypatch.setattr(_Acks, "add", add)
    monkeypatch.setattr(mqtt_module, "send_ack", send_ack)
    return arrived, acked, progress


def config(broker: Mosquitto, client_id: str, qos: int = 1) -> MqttConfig:
    subs = (Subscription("metrics/#", "json", qos),)
    return MqttConfig(url=broker.url, client_id=client_id, subscribe=subs, ack=Ack.DECIDED)


@pytest.mark.parametrize(("messages", "per_message"), [(1000, 1), (40, 120)])
async def test_a_qos1_burst_larger_than_the_queue_pauses_reading_and_loses_nothing(
    broker: Mosquitto,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    messages: int,
    per_message: int,
) -> None:
    """(40 messages of 120: no message ever fits in the queue whole.)"""
    evaluated = [0]
    arrived, acked, progress = record_acks(monkeypatch, evaluated)
    monkeypatch.setattr(mqtt_module, "PAUSE_LOG_S", 3600.0)  # (a loaded machine: > 10 s)
    cfg = config(broker, f"batond-bp-{per_message}")
    source, bus, metrics = make_source(cfg, ClientPath.BUFFERED, maxsize=BUS)
    total = messages * per_message
    with caplog.at_level(logging.WARNING, "batond.mqtt"):
        async with running(source):
            await publish_batches(broker.port, messages, per_message, qos=1)
            await until(lambda: value(metrics, "batond_mqtt_reading_paused") == 1)
            assert bus.depth() == BUS  # full, and nothing more taken meanwhile
            assert numbers(await drain(bus, total, evaluated)) == list(range(total))
            await until(lambda: value(metrics, "batond_mqtt_unacked") == 0)
            assert value(metrics, "batond_mqtt_reading_paused") == 0
    assert value(metrics, *DROPPED) == 0
    assert value(metrics, "batond_mqtt_paused_seconds_total") > 0
    assert len(arrived) == messages and acked == arrived  # each once, in arrival order
    # none before all its items were evaluated (held ones included: the rest came later)
    assert all(done >= (k + 1) * per_message for k, done in enumerate(progress))
    paused = [r for r in caplog.records if "reading paused" in r.getMessage()]
    assert len(paused) == 1  # many pauses, one line per PAUSE_LOG_S
    assert f"input queue full ({BUS} items)" in paused[0].getMessage()
    # every message was acknowledged for good: a new session start gets nothing again
    source, bus, _ = make_source(cfg, ClientPath.BUFFERED, maxsize=BUS)
    async with running(source):
        await publish_batches(broker.port, 1, 1, qos=1)
        assert numbers(await take(bus, 1)) == [0]
        assert bus.depth() == 0


async def test_qos0_input_is_paused_too(broker: Mosquitto) -> None:
    """Without acknowledgements the broker's socket buffer and queue hold the rest."""
    cfg = config(broker, "batond-bp-qos0", qos=0)
    source, bus, metrics = make_source(cfg, ClientPath.BUFFERED, maxsize=BUS)
    async with running(source):
        await publish_batches(broker.port, 600, 1, qos=0)
        await until(lambda: value(metrics, "batond_mqtt_reading_paused") == 1)
        assert numbers(await drain(bus, 600)) == list(range(600))
        await until(lambda: value(metrics, "batond_mqtt_reading_paused") == 0)
    assert value(metrics, *DROPPED) == 0
    assert value(metrics, "batond_mqtt_paused_seconds_total") > 0


async def test_the_plain_path_cannot_pause_and_drops_what_does_not_fit(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(broker, "batond-bp-plain")
    source, bus, metrics = make_source(cfg, ClientPath.PLAIN, maxsize=BUS)
    with caplog.at_level(logging.WARNING, "batond.bus"):
        async with running(source):
            await publish_batches(broker.port, 200, 1, qos=1)
            await until(lambda: value(metrics, *DROPPED) + bus.depth() == 200)
    assert bus.depth() == BUS and value(metrics, *DROPPED) == 200 - BUS
    assert value(metrics, "batond_mqtt_reading_paused") == 0
    assert "input queue full (50 items): dropped mqtt" in caplog.text


async def test_closing_the_bus_while_paused_drops_and_counts_what_is_held(
    broker: Mosquitto,
) -> None:
    cfg = config(broker, "batond-bp-close")
    source, bus, metrics = make_source(cfg, ClientPath.BUFFERED, maxsize=BUS)
    async with running(source):
        await publish_batches(broker.port, 1, BUS + 30, qos=1)
        await until(lambda: value(metrics, "batond_mqtt_reading_paused") == 1)
        bus.close()  # shutdown: what is held cannot be queued any more
        await until(lambda: value(metrics, *DROPPED) == 30)
        assert value(metrics, "batond_mqtt_reading_paused") == 0

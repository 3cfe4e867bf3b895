"""Backpressure: a full input queue pauses MQTT reading instead of dropping (buffered path).

Against a real Mosquitto with no in-flight bound (``max_inflight_messages 0``), so
the broker would let far more QoS 1 items wait unacknowledged than the (small) bus
holds: every item must still reach the bus, in order, nothing dropped, the pause
visible in its metrics and one log line; acknowledgements go out in arrival order.
The plain path (aiomqtt's public API only) cannot stop reading: it drops and counts.
A routed topic's items (a fleet partition session's batches) are held the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiomqtt
import orjson
import pytest

from batond.events import Input, parse_json_payload
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


class AckLog:
    """What the source acknowledged, when: packet ids in the order they arrived (every
    connection) and were acknowledged, and for each acknowledgement the first sample
    number of its message and how many items the engine had evaluated by then."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.evaluated = 0
        self.arrived: list[int] = []
        self.acked: list[int] = []
        self.at_ack: list[tuple[int, int]] = []  # (first sample of the message, evaluated)
        real_add, real_send_ack = _Acks.add, mqtt_module.send_ack
        firsts: dict[tuple[int, int], int] = {}  # (connection's _Acks, mid) -> first sample

        def add(acks: _Acks, mid: int, topic: str, payload: bytes) -> Any:
            self.arrived.append(mid)
            firsts[id(acks._send), mid] = int(orjson.loads(payload)[0]["value"])
            return real_add(acks, mid, topic, payload)

        def send_ack(client: aiomqtt.Client) -> Callable[[int, int], object]:
            send = real_send_ack(client)

            def recorded(mid: int, qos: int) -> object:
                self.acked.append(mid)
                self.at_ack.append((firsts[id(recorded), mid], self.evaluated))
                return send(mid, qos)

            return recorded

        monkeypatch.setattr(_Acks, "add", add)
        monkeypatch.setattr(mqtt_module, "send_ack", send_ack)

    def early(self, per_message: int) -> list[tuple[int, int]]:
        """Acknowledgements sent before all the items of their message were evaluated."""
        return [(first, done) for first, done in self.at_ack if done < first + per_message]

    async def drain(self, bus: Bus, n: int) -> list[Input]:
        return await drain(bus, n, self._evaluated_one)

    def _evaluated_one(self) -> None:
        self.evaluated += 1


async def drain(bus: Bus, n: int, evaluated: Callable[[], None] = lambda: None) -> list[Input]:
    """The engine loop's part: take each item and say it is evaluated."""
    taken = []
    for _ in range(n):
        taken += await take(bus, 1)
        bus.evaluated()
        evaluated()
    return taken


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
    log = AckLog(monkeypatch)
    monkeypatch.setattr(mqtt_module, "PAUSE_LOG_S", 3600.0)  # (a loaded machine: > 10 s)
    cfg = config(broker, f"batond-bp-{per_message}")
    source, bus, metrics = make_source(cfg, ClientPath.BUFFERED, maxsize=BUS)
    total = messages * per_message
    with caplog.at_level(logging.WARNING, "batond.mqtt"):
        async with running(source):
            await publish_batches(broker.port, messages, per_message, qos=1)
            await until(lambda: value(metrics, "batond_mqtt_reading_paused") == 1)
            assert bus.depth() == BUS  # full, and nothing more taken meanwhile
            assert numbers(await log.drain(bus, total)) == list(range(total))
            await until(lambda: value(metrics, "batond_mqtt_unacked") == 0)
            assert value(metrics, "batond_mqtt_reading_paused") == 0
    assert value(metrics, *DROPPED) == 0
    assert value(metrics, "batond_mqtt_paused_seconds_total") > 0
    assert len(log.arrived) == messages and log.acked == log.arrived  # once each, in order
    assert log.early(per_message) == []  # held ones too: their items were queued later
    paused = [r for r in caplog.records if "reading paused" in r.getMessage()]
    assert len(paused) == 1  # many pauses, one line per PAUSE_LOG_S
    assert f"input queue full ({BUS} items)" in paused[0].getMessage()
    # every message was acknowledged for good: a new session start gets nothing again
    source, bus, _ = make_source(cfg, ClientPath.BUFFERED, maxsize=BUS)
    async with running(source):
        await publish_batches(broker.port, 1, 1, qos=1)
        assert numbers(await take(bus, 1)) == [0]
        assert bus.depth() == 0


async def test_the_items_a_route_hands_back_are_held_and_acknowledged_the_same_way(
    broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route's handler (a fleet partition session's) returns the items it wants queued:
    counted under the route's source, held while the bus is full (reading paused), each
    message acknowledged once its items are decided; nothing dropped."""
    log = AckLog(monkeypatch)
    cfg = MqttConfig(url=broker.url, client_id="batond-bp-route", ack=Ack.DECIDED)
    source, bus, metrics = make_source(cfg, ClientPath.BUFFERED, maxsize=BUS)
    source.route("metrics/#", 1, lambda _t, p: parse_json_payload(p, time.time(), "fleet")[0],
                 source="fleet")  # fmt: skip
    async with running(source):
        await publish_batches(broker.port, 40, 30, qos=1)
        await until(lambda: value(metrics, "batond_mqtt_reading_paused") == 1)
        assert bus.depth() == BUS
        assert numbers(await log.drain(bus, 1200)) == list(range(1200))
        await until(lambda: value(metrics, "batond_mqtt_unacked") == 0)
        assert value(metrics, "batond_mqtt_reading_paused") == 0
    fleet = {"source": "fleet"}
    assert value(metrics, "batond_events_dropped_total", fleet) == 0
    assert value(metrics, "batond_events_received_total", fleet) == 1200
    assert value(metrics, "batond_events_received_total", {"source": "mqtt"}) == 0
    assert value(metrics, "batond_mqtt_paused_seconds_total") > 0
    assert len(log.arrived) == 40 and log.acked == log.arrived
    assert log.early(30) == []


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


async def test_a_pause_beyond_the_keepalive_reconnects_and_loses_or_repeats_nothing(
    broker: Mosquitto, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paused, paho reads no PINGRESP and ends the connection after one or two keepalive
    periods (1 s here, 30 s in batond). What is held is queued once there is room, on
    whichever connection; the broker's redelivery of what the lost connection had taken
    is recognised, and the new connection waits behind what is held."""
    real_new_client = mqtt_module.new_client

    def new_client(*args: Any, **options: Any) -> aiomqtt.Client:
        return real_new_client(*args, **{**options, "keepalive": 1})

    monkeypatch.setattr(mqtt_module, "new_client", new_client)
    log = AckLog(monkeypatch)
    cfg = config(broker, "batond-bp-keepalive")
    source, bus, metrics = make_source(cfg, ClientPath.BUFFERED, maxsize=BUS)
    async with running(source):
        await publish_batches(broker.port, 200, 1, qos=1)
        await until(lambda: value(metrics, "batond_mqtt_reading_paused") == 1)
        # a new connection, whose first message (the broker's redelivery) waits too
        await until(lambda: value(metrics, "batond_mqtt_redelivered_total") >= 1)
        assert value(metrics, "batond_mqtt_reconnects_total") >= 1
        assert bus.depth() == BUS and value(metrics, "batond_mqtt_reading_paused") == 1
        assert numbers(await log.drain(bus, 200)) == list(range(200))
        await until(lambda: value(metrics, "batond_mqtt_unacked") == 0)
        assert bus.depth() == 0  # nothing twice
    assert value(metrics, *DROPPED) == 0
    # none acknowledged before its item was evaluated, whatever the connection
    assert log.early(1) == []
    assert len(log.acked) == len(set(log.acked)) == 200  # (the connection that took it
    # last acknowledges it; the mids of one session are unique while unacknowledged)

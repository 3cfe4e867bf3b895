"""QoS 1 acknowledgement after the decision (``mqtt.ack: decided``), against a real Mosquitto.

On the buffered path a message is acknowledged only once the engine loop has
evaluated its items (``Bus.evaluated``) and the journal has committed (here
the bus has no journal: settling is immediate); a connection that ends before
that leaves it with the broker, which delivers it again. On the plain path
(aiomqtt's public API only) paho acknowledges on receipt: at-most-once after
receipt, tested here too so the fallback is known for what it is.

Whether the broker still holds a message is seen through order: a marker
published afterwards arrives after every message the session still owes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiomqtt
import orjson
import pytest

from batond.events import Input, Sample
from batond.intake.bus import Bus
from batond.intake.mqtt import MqttSource, _Acks
from batond.intake.mqtt_compat import ClientPath
from batond.load.config import Ack, MqttConfig, Subscription
from mqtt_broker import Mosquitto
from support import until
from test_mqtt_source import make_source, running, take, value

SUBS = (Subscription("metrics/#", "json", 1),)


async def publish(port: int, values: range | list[int], topic: str = "metrics/a") -> None:
    async with aiomqtt.Client("127.0.0.1", port) as pub:
        for v in values:
            await pub.publish(topic, orjson.dumps({"metric": "m", "value": v}), qos=1)


def numbers(items: list[Input]) -> list[int]:
    return [int(i.value) for i in items if isinstance(i, Sample)]


async def flushed(source: MqttSource) -> None:
    """Once the broker has what batond's connection sent so far: a QoS 1 publish on it
    completes after the PUBACKs queued before it (one socket, in order)."""
    await until(lambda: source.connected)  # (redeliveries come before the subscriptions)
    await source.publish("sync/acks", b"", qos=1)


async def evaluate(bus: Bus, n: int) -> None:
    """What the engine loop does after each item; the acknowledgements follow a loop turn."""
    for _ in range(n):
        bus.evaluated()
    await asyncio.sleep(0)  # (Bus flushes its waiters with call_soon)


def config(broker: Mosquitto, client_id: str, ack: Ack = Ack.DECIDED) -> MqttConfig:
    return MqttConfig(url=broker.url, client_id=client_id, subscribe=SUBS, ack=ack)


async def test_buffered_path_acknowledges_only_decided_messages(broker: Mosquitto) -> None:
    cfg = config(broker, "batond-ack1")
    source, bus, metrics = make_source(cfg, ClientPath.BUFFERED)
    assert source.manual_ack
    async with running(source):
        await publish(broker.port, range(3))
        assert numbers(await take(bus, 3)) == list(range(3))
        assert value(metrics, "batond_mqtt_unacked") == 3
        await evaluate(bus, 2)
        assert value(metrics, "batond_mqtt_unacked") >= 1  # the third is not decided
        await evaluate(bus, 1)
        await until(lambda: value(metrics, "batond_mqtt_unacked") == 0)
        await publish(broker.port, range(3, 5))
        assert numbers(await take(bus, 2)) == [3, 4]  # never decided
        assert value(metrics, "batond_mqtt_unacked") == 2
        await flushed(source)
    # the connection ended owing two: a new process (no memory of them) gets them again
    source, bus, metrics = make_source(cfg, ClientPath.BUFFERED)
    async with running(source):
        await publish(broker.port, [99])
        assert numbers(await take(bus, 3)) == [3, 4, 99]
        await evaluate(bus, 3)
        await until(lambda: value(metrics, "batond_mqtt_unacked") == 0)
        await flushed(source)
    source, bus, _ = make_source(cfg, ClientPath.BUFFERED)
    async with running(source):
        await publish(broker.port, [100])
        assert numbers(await take(bus, 1)) == [100]  # nothing owed any more


async def test_acknowledgements_go_out_in_arrival_order() -> None:
    sent: list[int] = []
    waiting: list[Callable[[], None]] = []
    acks = _Acks(lambda mid, qos: sent.append(mid), waiting.append)
    acks.add(7, "t", b"")  # one burst (one socket read): one wait for both
    acks.add(8, "t", b"")
    await asyncio.sleep(0)  # the burst ends
    acks.add(9, "t", b"")  # the next one
    await asyncio.sleep(0)
    assert len(waiting) == 2 and sent == []
    waiting[1]()  # the later burst is decided first (out of order)
    assert sent == []  # 7 and 8 are not decided yet: nothing may overtake them
    waiting[0]()
    assert sent == [7, 8, 9]
    assert len(acks) == 0


async def test_a_message_delivered_again_after_a_broker_restart_is_taken_once(
    broker: Mosquitto,
) -> None:
    cfg = config(broker, "batond-ack2")
    source, bus, metrics = make_source(cfg, ClientPath.BUFFERED)
    async with running(source):
        await publish(broker.port, range(50))
        assert numbers(await take(bus, 50)) == list(range(50))
        await asyncio.to_thread(broker.restart)  # it still awaits all 50 PUBACKs
        await until(lambda: value(metrics, "batond_mqtt_redelivered_total") == 50)
        assert bus.depth() == 0  # recognised: not queued a second time
        assert value(metrics, "batond_mqtt_unacked") == 50  # owed on the new connection
        await evaluate(bus, 50)
        await until(lambda: value(metrics, "batond_mqtt_unacked") == 0)
        await flushed(source)
        await publish(broker.port, [1000])
        assert numbers(await take(bus, 1)) == [1000]
        await evaluate(bus, 1)
        await until(lambda: value(metrics, "batond_mqtt_unacked") == 0)
        await flushed(source)
        await asyncio.to_thread(broker.restart)
        await until(lambda: source.connected and value(metrics, "batond_mqtt_connected") == 1)
        await publish(broker.port, [1001])
        assert numbers(await take(bus, 1)) == [1001]  # the 50 were acknowledged for good
    assert value(metrics, "batond_mqtt_redelivered_total") == 50


@pytest.mark.parametrize("path", list(ClientPath))
async def test_mqtt_ack_received_acknowledges_on_receipt(
    broker: Mosquitto, path: ClientPath
) -> None:
    """``mqtt.ack: received``, and the plain path whatever ``ack`` says: at-most-once
    after receipt (a message read and not yet decided is gone with the process)."""
    ack = Ack.RECEIVED if path is ClientPath.BUFFERED else Ack.DECIDED
    cfg = config(broker, f"batond-ack3-{path}", ack)
    source, bus, metrics = make_source(cfg, path)
    assert not source.manual_ack
    async with running(source):
        await publish(broker.port, range(3))
        assert numbers(await take(bus, 3)) == [0, 1, 2]  # never evaluated
        assert value(metrics, "batond_mqtt_unacked") == 0
    source, bus, _ = make_source(cfg, path)
    async with running(source):
        await publish(broker.port, [7])
        assert numbers(await take(bus, 1)) == [7]

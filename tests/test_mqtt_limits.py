"""MQTT payload size limit (issue 14: one 3 MB message held the loop 7 s), real Mosquitto."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import orjson
from prometheus_client import CollectorRegistry

from batond.intake.bus import Bus
from batond.intake.mqtt import MqttSource
from batond.load.config import MqttConfig, Subscription, load_config
from batond.metrics import Metrics
from mqtt_broker import Mosquitto


async def test_an_oversized_message_is_rejected_unparsed_and_counted(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        cfg = MqttConfig(
            url=broker.url,
            client_id="batond-limits",
            subscribe=(Subscription("metrics/#", "json", 1),),
            max_payload=64 << 10,
        )
        metrics = Metrics(CollectorRegistry())
        bus = Bus(metrics, 100_000)
        source = MqttSource(cfg, bus, metrics, backoff_min=0.05, backoff_max=0.5)
        started = asyncio.Event()
        task = asyncio.create_task(source.run(started))
        try:
            await asyncio.wait_for(started.wait(), 30)
            big = orjson.dumps([{"metric": "m", "value": i} for i in range(5000)])  # ~120 KB
            assert len(big) > cfg.max_payload
            async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
                await pub.publish("metrics/big", big, 1)
                await pub.publish("metrics/small", b'{"metric": "m", "value": 7}', 1)
            item, _ = await asyncio.wait_for(bus.get(), 30)  # order kept: big came first
            assert getattr(item, "value", None) == 7.0
            assert bus.depth() == 0  # nothing of the big message was parsed
            rejected = metrics.registry.get_sample_value(
                "batond_events_rejected_total", {"source": "mqtt", "reason": "too_large"}
            )
            assert rejected == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def test_max_payload_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "batond.yaml"
    path.write_text("mqtt:\n  url: mqtt://127.0.0.1:1883\n  max_payload: 1MiB\n")
    cfg = load_config(path)
    assert cfg.mqtt is not None and cfg.mqtt.max_payload == 1 << 20
    path.write_text("mqtt:\n  url: mqtt://127.0.0.1:1883\n")
    cfg = load_config(path)
    assert cfg.mqtt is not None and cfg.mqtt.max_payload == 256 << 10

"""MqttSource against a real private Mosquitto (plain, password, TLS), restarts included.

Every test that connects runs on both client paths of ``mqtt_compat``: the
buffered one (aiomqtt's private internals) and the plain fallback (its public
API only), so the fallback is known to work the day the guard picks it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import orjson
import pytest
from prometheus_client import CollectorRegistry

from batond.errors import ActionError
from batond.events import Event, Input, Sample
from batond.intake.bus import Bus
from batond.intake.mqtt import MqttSource, topic_matches
from batond.intake.mqtt_compat import ClientPath
from batond.load.config import MqttConfig, Subscription
from batond.metrics import Metrics
from mqtt_broker import Certs, Mosquitto, make_certs
from support import until

SUBS = (
    Subscription("metrics/#", "json", 1),
    Subscription("telegraf/#", "influx", 0),
)


@pytest.fixture(params=list(ClientPath))
def path(request: pytest.FixtureRequest) -> ClientPath:
    return ClientPath(request.param)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def make_source(
    cfg: MqttConfig, path: ClientPath | None = None, maxsize: int = 100_000
) -> tuple[MqttSource, Bus, Metrics]:
    metrics = Metrics(CollectorRegistry())
    bus = Bus(metrics, maxsize)
    source = MqttSource(cfg, bus, metrics, backoff_min=0.05, backoff_max=0.5, client_path=path)
    return source, bus, metrics


@asynccontextmanager
async def running(source: MqttSource) -> AsyncIterator[asyncio.Task[None]]:
    started = asyncio.Event()
    task = asyncio.create_task(source.run(started))
    await asyncio.wait_for(started.wait(), 30)
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def take(bus: Bus, n: int, within: float = 30.0) -> list[Input]:
    async def go() -> list[Input]:
        return [(await bus.get())[0] for _ in range(n)]

    return await asyncio.wait_for(go(), within)


def value(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_topic_matches() -> None:
    assert topic_matches("metrics/web-1/cpu", "metrics/#")
    assert topic_matches("metrics", "metrics/#")
    assert topic_matches("a/b/c", "a/+/c")
    assert not topic_matches("a/b/c/d", "a/+/c")
    assert not topic_matches("b/x", "a/#")
    assert topic_matches("a/b", "$share/g/a/+")
    assert not topic_matches("$SYS/x", "#")


async def test_json_and_influx_messages_become_samples(broker: Mosquitto, path: ClientPath) -> None:
    cfg = MqttConfig(url=broker.url, client_id="batond-t1", subscribe=SUBS)
    source, bus, metrics = make_source(cfg, path)
    async with running(source):
        assert source.connected
        assert source.client_path is path
        assert source.reads_buffered is (path is ClientPath.BUFFERED)
        assert value(metrics, "batond_mqtt_connected") == 1
        async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
            await pub.publish(
                "metrics/a", b'{"metric": "cpu_percent", "value": 93.2, "host": "w"}', 1
            )
            await pub.publish(
                "metrics/b",
                b'[{"metric": "m", "value": 1, "seq": 17}, {"event": "deploy", "ver": "1.2"}]',
                1,
            )
            await pub.publish(
                "metrics/c", b'{"metric": "n", "value": 1}\n{"metric": "n", "value": 2}\n', 1
            )
            await pub.publish(
                "telegraf/x", b"cpu,host=web-1 usage_idle=12.5 1700000000000000000", 1
            )
            items = await take(bus, 6)
    first = items[0]
    assert isinstance(first, Sample)
    assert (first.metric, first.value, first.labels, first.source) == (
        "cpu_percent",
        93.2,
        {"host": "w"},
        "mqtt",
    )
    assert isinstance(items[1], Sample) and items[1].labels == {"seq": "17"}
    assert isinstance(items[2], Event) and items[2].name == "deploy"
    assert [i.value for i in items[3:5] if isinstance(i, Sample)] == [1.0, 2.0]
    influx = items[5]
    assert isinstance(influx, Sample)
    assert (influx.metric, influx.labels, influx.ts) == (
        "cpu_usage_idle",
        {"host": "web-1"},
        1700000000.0,
    )
    assert value(metrics, "batond_events_received_total", {"source": "mqtt"}) == 6


async def test_malformed_messages_are_counted_and_never_stop_intake(
    broker: Mosquitto, path: ClientPath
) -> None:
    cfg = MqttConfig(url=broker.url, client_id="batond-t2", subscribe=SUBS)
    source, bus, metrics = make_source(cfg, path)
    async with running(source) as task:
        async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
            for bad in (b"\xff\xfe", b"{", b'{"metric": "x", "value": "NaN"}', b"[1, 2]", b""):
                await pub.publish("metrics/bad", bad, 1)
            await pub.publish("telegraf/bad", b"cpu usage=", 1)
            await pub.publish("metrics/ok", b'{"metric": "ok", "value": 1}', 1)
            (item,) = await take(bus, 1)
        assert not task.done()
    assert isinstance(item, Sample) and item.metric == "ok"
    rejected = {
        reason: value(metrics, "batond_events_rejected_total", {"source": "mqtt", "reason": reason})
        for reason in ("bad_json", "bad_value", "not_object")
    }
    # "value": "NaN" (JSON) and "usage=" (line protocol) are both bad values
    assert rejected == {"bad_json": 3, "bad_value": 2, "not_object": 2}


async def test_full_bus_pauses_the_buffered_path_and_drops_on_the_plain_one(
    broker: Mosquitto, path: ClientPath
) -> None:
    """(More in test_mqtt_backpressure.py.)"""
    cfg = MqttConfig(url=broker.url, client_id="batond-t3", subscribe=SUBS)
    source, bus, metrics = make_source(cfg, path, maxsize=2)
    dropped = ("batond_events_dropped_total", {"source": "mqtt"})
    async with running(source), aiomqtt.Client("127.0.0.1", broker.port) as pub:
        payload = orjson.dumps([{"metric": "m", "value": i} for i in range(5)])
        await pub.publish("metrics/x", payload, 1)
        if path is ClientPath.PLAIN:
            await until(lambda: value(metrics, *dropped) == 3)
            assert bus.depth() == 2
            return
        await until(lambda: value(metrics, "batond_mqtt_reading_paused") == 1)
        assert bus.depth() == 2  # three held
        assert [getattr(i, "value", None) for i in await take(bus, 5)] == [0, 1, 2, 3, 4]
    assert value(metrics, *dropped) == 0


async def test_password_authentication(tmp_path: Path, path: ClientPath) -> None:
    with Mosquitto(tmp_path / "broker", users={"batond": "s3cret"}) as broker:
        secret = tmp_path / "mqtt.pass"
        secret.write_text("s3cret\n")
        cfg = MqttConfig(
            url=broker.url,
            client_id="batond-pw",
            username="batond",
            password_file=secret,
            subscribe=SUBS,
        )
        source, bus, _ = make_source(cfg, path)
        async with running(source):
            assert source.connected
            async with aiomqtt.Client(
                "127.0.0.1", broker.port, username="batond", password="s3cret"
            ) as pub:
                await pub.publish("metrics/x", b'{"metric": "m", "value": 1}', 1)
                (item,) = await take(bus, 1)
        assert isinstance(item, Sample)

        wrong = tmp_path / "wrong.pass"
        wrong.write_text("nope\n")
        bad = MqttConfig(
            url=broker.url,
            client_id="batond-pw2",
            username="batond",
            password_file=wrong,
            subscribe=SUBS,
        )
        source, _, metrics = make_source(bad, path)
        async with running(source):  # a refused login still reports started
            assert not source.connected
            assert value(metrics, "batond_mqtt_connected") == 0


@pytest.mark.parametrize("client_cert", [False, True])
async def test_tls_with_private_ca(
    tmp_path: Path, certs: Certs, client_cert: bool, path: ClientPath
) -> None:
    with Mosquitto(tmp_path / "broker", certs=certs, require_client_cert=client_cert) as broker:
        cfg = MqttConfig(
            url=broker.url,
            client_id="batond-tls",
            ca_file=certs.ca,
            cert_file=certs.client_cert if client_cert else None,
            key_file=certs.client_key if client_cert else None,
            subscribe=SUBS,
        )
        source, bus, _ = make_source(cfg, path)
        async with running(source):
            assert source.connected
            context = ssl.create_default_context(cafile=str(certs.ca))
            context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
            async with aiomqtt.Client("127.0.0.1", broker.port, tls_context=context) as pub:
                await pub.publish("metrics/x", b'{"metric": "tls", "value": 1}', 1)
                (item,) = await take(bus, 1)
        assert isinstance(item, Sample) and item.metric == "tls"


async def test_tls_rejects_an_unknown_ca(tmp_path: Path, certs: Certs, path: ClientPath) -> None:
    other = make_certs(tmp_path / "other")
    with Mosquitto(tmp_path / "broker", certs=certs) as broker:
        cfg = MqttConfig(url=broker.url, client_id="batond-tls2", ca_file=other.ca, subscribe=SUBS)
        source, _, _ = make_source(cfg, path)
        async with running(source):
            assert not source.connected


async def publish_with_retry(port: int, topic: str, count: int, progress: list[int]) -> None:
    """A QoS 1 publisher that survives broker restarts: resend until PUBACK."""
    seq = 0
    while seq < count:
        try:
            async with aiomqtt.Client(
                "127.0.0.1", port, identifier="test-pub", clean_session=False, timeout=5
            ) as pub:
                while seq < count:
                    body = orjson.dumps({"metric": "seq", "value": seq, "seq": seq})
                    await pub.publish(topic, body, qos=1)
                    seq += 1
                    progress[0] = seq
                    await asyncio.sleep(0.002)  # a steady stream across the restart
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_broker_restart_mid_stream_loses_no_qos1_sample(
    broker: Mosquitto, path: ClientPath
) -> None:
    count = 1500
    cfg = MqttConfig(url=broker.url, client_id="batond-restart", subscribe=SUBS)
    source, bus, metrics = make_source(cfg, path)
    seen: set[int] = set()

    async def consume() -> None:
        while len(seen) < count:
            item, _ = await bus.get()
            assert isinstance(item, Sample)
            seen.add(int(item.value))

    async with running(source):
        consumer = asyncio.create_task(consume())
        progress = [0]
        publisher = asyncio.create_task(
            publish_with_retry(broker.port, "metrics/seq", count, progress)
        )
        await until(lambda: progress[0] >= 300)
        await asyncio.to_thread(broker.stop)
        assert not publisher.done()
        await until(lambda: not source.connected)
        await asyncio.to_thread(broker.start)
        await until(lambda: progress[0] >= 900)
        await asyncio.to_thread(broker.restart)  # twice, to be sure the session survives
        await asyncio.wait_for(publisher, 60)
        await asyncio.wait_for(consumer, 60)
    assert seen == set(range(count))
    assert value(metrics, "batond_mqtt_reconnects_total") >= 2


async def test_reconnects_after_a_broker_stop_and_start(
    broker: Mosquitto, path: ClientPath
) -> None:
    cfg = MqttConfig(url=broker.url, client_id="batond-reconnect", subscribe=SUBS)
    source, bus, metrics = make_source(cfg, path)
    async with running(source):
        await asyncio.to_thread(broker.stop)
        await until(lambda: not source.connected)
        assert value(metrics, "batond_mqtt_connected") == 0
        with pytest.raises(ActionError, match="not connected"):
            await source.publish("out/x", b"{}")
        await asyncio.to_thread(broker.start)
        await until(lambda: source.connected)
        assert value(metrics, "batond_mqtt_reconnects_total") == 1
        assert source.reads_buffered is (path is ClientPath.BUFFERED)
        async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
            await pub.subscribe("out/#", qos=1)
            await pub.publish("metrics/again", b'{"metric": "again", "value": 1}', 1)
            (item,) = await take(bus, 1)  # the subscriptions were made again
            await source.publish("out/x", b'{"back": 1}')  # and actions publish again
            message = await asyncio.wait_for(anext(aiter(pub.messages)), 30)
    assert isinstance(item, Sample) and item.metric == "again"
    assert message.payload == b'{"back": 1}'


async def test_messages_published_while_batond_is_away_arrive_later(
    broker: Mosquitto, path: ClientPath
) -> None:
    cfg = MqttConfig(url=broker.url, client_id="batond-away", subscribe=SUBS)
    source, bus, _ = make_source(cfg, path)
    async with running(source):
        pass  # the first connection creates the persistent session and its subscriptions
    async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
        for i in range(20):
            await pub.publish("metrics/away", orjson.dumps({"metric": "m", "value": i}), 1)
    source, bus, _ = make_source(cfg, path)
    async with running(source):
        items = await take(bus, 20)
    assert sorted(i.value for i in items if isinstance(i, Sample)) == list(range(20))


async def test_down_broker_does_not_block_start_and_is_joined_later(
    tmp_path: Path, path: ClientPath
) -> None:
    broker = Mosquitto(tmp_path / "broker")
    cfg = MqttConfig(url=broker.url, client_id="batond-late", subscribe=SUBS)
    source, _bus, metrics = make_source(cfg, path)
    async with running(source):
        assert not source.connected
        with pytest.raises(ActionError):
            await source.publish("out/x", b"{}")
        with broker:
            await until(lambda: source.connected)
            assert value(metrics, "batond_mqtt_connected") == 1
            assert value(metrics, "batond_mqtt_reconnects_total") == 0  # the first connection
            async with aiomqtt.Client("127.0.0.1", broker.port) as sub:
                await sub.subscribe("out/#", qos=1)
                await source.publish("out/x", b'{"hello": 1}')
                message = await asyncio.wait_for(anext(aiter(sub.messages)), 30)
            assert message.payload == b'{"hello": 1}'


def test_backoff_is_capped_exponential_with_jitter() -> None:
    source, _, _ = make_source(MqttConfig(client_id="x"))  # backoff 0.05 .. 0.5 s
    first = [source._delay(0) for _ in range(50)]
    late = [source._delay(12) for _ in range(50)]
    assert all(0.025 <= d <= 0.05 for d in first)
    assert all(0.25 <= d <= 0.5 for d in late)  # capped
    assert len(set(late)) > 1  # jittered: reconnecting clients do not move in step

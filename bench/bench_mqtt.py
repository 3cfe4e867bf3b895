"""MQTT ingest rate of batond's MqttSource over a real private Mosquitto, QoS 1.

Two measurements per message shape (1 sample per message, 100 per message):

- backlog: N messages are published (``mosquitto_pub -l -q 1``, C) while batond
  is away; its persistent session keeps them in the broker; then MqttSource
  connects and the time from connection to the last item on the bus is the
  ingest rate, free of publisher speed.
- live: MqttSource is connected while ``mosquitto_pub`` publishes.

Each sample carries a sequence number as its value; a consumer drains the bus
(in-process, like the engine) and checks that every number arrived exactly once.
batond runs in this process on one thread (one core); broker and publisher are
other processes.

Mosquitto 2.0.11 refuses a backlog of more than about 69k messages for one
offline session ("disconnected due to out of memory" in its log, while
mosquitto_pub still exits 0), hence the default of 50k one-sample messages.
A sequence number that never arrives within 10 s counts as lost.

``--client-path plain`` measures the plain aiomqtt client that
``batond.intake.mqtt_compat`` falls back to (default: the buffered one).

``--ack decided`` (the daemon's default, ``mqtt.ack``) acknowledges each QoS 1
message only once the consumer has taken all its items (the consumer calls
``Bus.evaluated`` for each, as the engine loop does; there is no journal here,
so settling is immediate); ``--ack received`` lets paho acknowledge on receipt.
``--broker-inflight N`` sets Mosquitto's ``max_inflight_messages`` (default 0,
no bound; Mosquitto's own default is 20): with acknowledgement after the
decision it bounds how many messages are on their way at once.

``--bus N`` bounds the input queue at N items (default 10,000, the daemon's):
a small one makes the buffered path pause reading again and again
(backpressure; ``paused_s`` is ``batond_mqtt_paused_seconds_total``), and the
plain path drop (shown as lost).

Run: .venv/bin/python bench/bench_mqtt.py [--messages N] [--batch-messages M]
     [--client-path buffered|plain] [--ack decided|received] [--broker-inflight N]
     [--bus N]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from batond.events import Sample
from batond.intake.bus import Bus
from batond.intake.mqtt import MqttSource
from batond.intake.mqtt_compat import ClientPath
from batond.load.config import Ack, MqttConfig, Subscription
from batond.metrics import Metrics
from headline import emit
from mqtt_broker import Mosquitto

IDLE_S = 10.0


def payload_lines(messages: int, batch: int) -> bytes:
    lines = []
    seq = 0
    for _ in range(messages):
        if batch == 1:
            lines.append(orjson.dumps({"metric": "bench", "value": seq, "host": "h1"}))
            seq += 1
        else:
            lines.append(
                orjson.dumps(
                    [{"metric": "bench", "value": seq + i, "host": "h1"} for i in range(batch)]
                )
            )
            seq += batch
    return b"\n".join(lines) + b"\n"


def publish(broker: Mosquitto, data: bytes) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-t",
            "bench/x",
            "-q",
            "1",
            "-l",
            "-M",
            "1000",
        ],
        stdin=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.close()
    return proc


async def consume(
    bus: Bus, total: int, first: list[float], evaluate: bool
) -> tuple[float, bytearray, int]:
    """Until every sequence number arrived, or nothing more came for IDLE_S (loss);
    ``evaluate``: say each item is done, as the engine loop does (acknowledgements)."""
    seen = bytearray(total)
    dupes = 0
    end = time.perf_counter()
    for n in range(total):
        got = bus.get_nowait()  # no task per item: the consumer must not be the bottleneck
        if got is None:
            try:
                got = await asyncio.wait_for(bus.get(), IDLE_S)
            except TimeoutError:
                break
        item = got[0]
        if evaluate:
            bus.evaluated()
        end = time.perf_counter()
        if n == 0:
            first.append(end)
        assert isinstance(item, Sample)
        i = int(item.value)
        if seen[i]:
            dupes += 1
        seen[i] = 1
    return end, seen, dupes


async def run_case(
    folder: Path, messages: int, batch: int, mode: str, path: ClientPath, opts: argparse.Namespace
) -> dict[str, float]:
    total = messages * batch
    data = payload_lines(messages, batch)
    metrics = Metrics(CollectorRegistry())
    bus = Bus(metrics, opts.bus)  # by default the daemon's bound; a drop shows as lost
    cfg = MqttConfig(
        url="",
        client_id=f"batond-bench-{mode}-{batch}",
        subscribe=(Subscription("bench/#", "json", 1),),
    )
    ack = Ack(opts.ack)
    with Mosquitto(folder / f"{mode}-{batch}", max_inflight=opts.broker_inflight) as broker:
        cfg = MqttConfig(url=broker.url, client_id=cfg.client_id, subscribe=cfg.subscribe, ack=ack)
        if mode == "backlog":  # create the session, leave, let the broker queue
            await session_once(cfg, bus, metrics, path)
            proc = publish(broker, data)
            await asyncio.to_thread(proc.wait)
        source = MqttSource(cfg, bus, metrics, client_path=path)
        started = asyncio.Event()
        first: list[float] = []
        consumer = asyncio.create_task(consume(bus, total, first, ack is Ack.DECIDED))
        t0 = time.perf_counter()
        c0 = time.process_time()
        task = asyncio.create_task(source.run(started))
        await started.wait()
        if mode == "live":
            t0 = time.perf_counter()
            c0 = time.process_time()
            proc = publish(broker, data)
        try:
            end, seen, dupes = await consumer
            cpu = time.process_time() - c0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.to_thread(proc.wait)
    elapsed = end - t0
    return {
        "messages": messages,
        "samples": total,
        "elapsed_s": elapsed,
        "messages_per_s": messages / elapsed,
        "samples_per_s": total / elapsed,
        "cpu_s": cpu,
        "samples_per_cpu_s": total / cpu,
        "lost": total - sum(seen),
        "duplicates": dupes,
        # the bus full: reading paused (backpressure), never dropped on the buffered path
        "paused_s": metrics.registry.get_sample_value("batond_mqtt_paused_seconds_total") or 0.0,
    }


async def session_once(cfg: MqttConfig, bus: Bus, metrics: Metrics, path: ClientPath) -> None:
    source = MqttSource(cfg, bus, metrics, client_path=path)
    started = asyncio.Event()
    task = asyncio.create_task(source.run(started))
    await started.wait()
    assert source.connected
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--batch-messages", type=int, default=2_000)
    parser.add_argument("--client-path", choices=list(ClientPath), default=ClientPath.BUFFERED)
    parser.add_argument("--ack", choices=[Ack.DECIDED, Ack.RECEIVED], default=Ack.DECIDED)
    parser.add_argument("--broker-inflight", type=int, default=0)
    parser.add_argument("--bus", type=int, default=10_000)
    args = parser.parse_args()
    path = ClientPath(args.client_path)
    print(
        f"python {sys.version.split()[0]}, one asyncio thread; mosquitto + mosquitto_pub "
        f"in other processes; QoS 1, payload JSON; {path} client; ack {args.ack}; "
        f"broker max_inflight_messages {args.broker_inflight}; input queue {args.bus} items"
    )
    figures: dict[str, object] = {"client": str(path), "ack": str(args.ack)}
    lost = duplicates = 0
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("backlog", "live"):
            for messages, batch in ((args.messages, 1), (args.batch_messages, 100)):
                r = await run_case(Path(tmp), messages, batch, mode, path, args)
                if batch == 1:
                    figures[f"{mode}, 1 sample/message: messages/s"] = round(r["messages_per_s"])
                    figures[f"{mode}, 1 sample/message: messages/CPU-s"] = round(
                        r["samples_per_cpu_s"]
                    )
                else:
                    figures[f"{mode}, {batch} samples/message: samples/s"] = round(
                        r["samples_per_s"]
                    )
                lost, duplicates = lost + int(r["lost"]), duplicates + int(r["duplicates"])
                print(
                    f"{mode:8s} batch={batch:<4d} messages={r['messages']:<7.0f} "
                    f"samples={r['samples']:<8.0f} elapsed_s={r['elapsed_s']:.2f} "
                    f"messages_per_s={r['messages_per_s']:,.0f} "
                    f"samples_per_s={r['samples_per_s']:,.0f} cpu_s={r['cpu_s']:.2f} "
                    f"samples_per_cpu_s={r['samples_per_cpu_s']:,.0f} lost={r['lost']:.0f} "
                    f"duplicates={r['duplicates']:.0f} paused_s={r['paused_s']:.2f}",
                    flush=True,
                )
    emit("mqtt", {**figures, "lost": lost, "duplicated": duplicates})


if __name__ == "__main__":
    asyncio.run(main())

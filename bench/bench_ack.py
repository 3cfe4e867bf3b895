"""The cost of acknowledging input only once it is decided and journaled.

Two measurements:

- MQTT, in process, no sockets: N QoS 1 messages (one sample each) go through
  ``MqttSource._take`` in bursts of 100 (what one socket read holds), and a
  consumer drains the bus and calls ``Bus.evaluated`` for each item, as the
  engine loop does; the PUBACK is a counter (what paho's own PUBACK costs is
  the same either way). CPU microseconds per message with ``mqtt.ack:
  decided`` against ``received`` (paho's acknowledgement on receipt). The
  broker round trip is in ``bench/bench_mqtt.py --ack decided|received``.
- HTTP, through a real ``batond run`` (SQLite journal, shadow mode: every
  event is a decision that is journaled, nothing executes): sequential
  ``POST /api/v1/events`` of one event each over one keep-alive connection;
  latency p50/p99 with ``http.ack: decided`` against ``accepted``.

Run: .venv/bin/python bench/bench_ack.py [--messages N] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import orjson
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from batond.intake.bus import Bus
from batond.intake.mqtt import MqttSource, _Acks
from batond.intake.mqtt_compat import ClientPath
from batond.load.config import Ack, MqttConfig, Subscription
from batond.metrics import Metrics
from daemon_proc import DaemonProcess, write_config
from headline import emit
from support import free_port

BURST = 100
RULES = """
rules:
  - name: bench-ack
    match: {event: bench.ack}
    group_by: [seq]
    run: noop
playbooks:
  - name: noop
    steps:
      - {name: nothing, action: exec, with: {argv: ["true"]}}
"""


async def mqtt_cpu_per_message(messages: int, ack: Ack) -> float:
    metrics = Metrics(CollectorRegistry())
    bus = Bus(metrics)
    cfg = MqttConfig(url="mqtt://127.0.0.1:1", subscribe=(Subscription("b/#", "json", 1),), ack=ack)
    source = MqttSource(cfg, bus, metrics, client_path=ClientPath.BUFFERED)
    pubacks = [0]

    def send(mid: int, qos: int) -> None:
        pubacks[0] += 1

    if source.manual_ack:  # what a connection sets up (mqtt_compat's paho ack stubbed)
        source._acks = _Acks(send, bus.when_decided)
    topic = aiomqtt.Topic("b/x")
    payloads = [orjson.dumps({"metric": "m", "value": i, "host": "h"}) for i in range(messages)]
    c0 = time.process_time()
    for start in range(0, messages, BURST):
        for i in range(start, min(start + BURST, messages)):
            message = aiomqtt.Message(topic, payloads[i], 1, False, i % 65535 + 1, None)
            source._take(message)
            if not source.manual_ack:
                send(message.mid, 1)  # paho's own, on receipt
        await asyncio.sleep(0)  # the end of the socket read
        while bus.get_nowait() is not None:
            bus.evaluated()
        await asyncio.sleep(0)  # (Bus flushes its waiters on the next iteration)
    await asyncio.sleep(0)
    cpu = time.process_time() - c0
    assert pubacks[0] == messages, (pubacks[0], messages)
    return cpu / messages * 1e6


def http_latencies(folder: Path, requests: int, ack: str) -> list[float]:
    port = free_port()
    config = write_config(
        folder, port, rules=RULES, http_extra=f"ack: {ack}", extra="mode: shadow\n"
    )
    daemon = DaemonProcess(config, port)
    try:
        daemon.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        out = []
        for seq in range(requests):
            body = orjson.dumps({"event": "bench.ack", "seq": str(seq)})
            t0 = time.perf_counter()
            conn.request("POST", "/api/v1/events", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            out.append(time.perf_counter() - t0)
            assert resp.status == 202, resp.status
        conn.close()
        got = daemon.get(f"/api/v1/decisions?rule=bench-ack&limit={requests + 10}").json()
        assert len(got["decisions"]) == requests
        return out[len(out) // 10 :]  # the first tenth warms up
    finally:
        daemon.stop()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, object] = {}
    for ack in (Ack.RECEIVED, Ack.DECIDED):
        best = min(
            asyncio.run(mqtt_cpu_per_message(args.messages, ack)) for _ in range(args.repeat)
        )
        figures[f"mqtt intake, ack {ack}: CPU us/message"] = round(best, 2)
        print(f"mqtt ack={ack:8s} {best:.2f} CPU us/message (best of {args.repeat})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for ack in ("accepted", "decided"):
            lat = http_latencies(Path(tmp) / ack, args.requests, ack)
            p50, p99 = pct(lat, 0.5) * 1e3, pct(lat, 0.99) * 1e3
            figures[f"http ack {ack}: p50 ms"] = round(p50, 3)
            figures[f"http ack {ack}: p99 ms"] = round(p99, 3)
            print(
                f"http ack={ack:8s} requests={len(lat)} p50={p50:.3f} ms p99={p99:.3f} ms "
                f"mean={statistics.fmean(lat) * 1e3:.3f} ms",
                flush=True,
            )
    emit("ack", figures)


if __name__ == "__main__":
    main()

"""What one central instance costs for a simulated fleet: CPU per sample taken in.

A real ``batond run`` with ``fleet: {role: central}`` (alone: it owns every partition),
a private Mosquitto, a private database on the machine's PostgreSQL. This script plays
``--hosts`` agents: each publishes one batch of ``--metrics`` samples per ``--interval``
at QoS 1 to its partition's topic, spread evenly over the interval. Measured over
``--seconds``: the central process's CPU (user + system, from /proc), the samples it
took in (``batond_events_received_total{source="fleet"}``) against those published,
and its rules' evaluation on each (one level rule over every sample that never fires).
Once a second, among the load, a batch of a probe host carries a ``probe`` sample that a
rule decides: decision latency is the decision's time in the journal minus the sample's
``ts`` (its publish time; one machine, one clock).

Run: .venv/bin/python bench/bench_fleet_central.py [--hosts 10000] [--metrics 20]
         [--interval 10] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg
from paho.mqtt import client as paho

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from batond.fleet.partition import batch_topic
from daemon_proc import DaemonProcess, write_config
from headline import emit
from mqtt_broker import Mosquitto
from support import free_port, pg_database

PARTITIONS = 64
PREFIX = "bench/fleet"
RULES = """
rules:
  - name: never
    match: {metric: m0}
    when: value > 1e12
    run: noop
  - name: probe
    match: {metric: probe}
    when: value > 0
    run: noop
playbooks:
  - name: noop
    steps:
      - {name: pause, action: wait, with: {duration: 0s}}
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def received(central: DaemonProcess) -> float:
    return central.metric("batond_events_received_total", {"source": "fleet"}) or 0.0


def batch(host: str, seq: int, metrics: int) -> bytes:
    now = time.time()
    samples = [{"metric": f"m{i}", "value": float(i + seq % 7), "ts": now} for i in range(metrics)]
    return orjson.dumps({"v": 1, "host": host, "seq": seq, "sent": now, "samples": samples})


def publish_for(client: paho.Client, args: argparse.Namespace, seconds: float) -> int:
    """Every host one batch per interval, evenly spread; how many samples went out."""
    hosts = [f"host-{n:05d}" for n in range(args.hosts)]
    topics = [batch_topic(PREFIX, PARTITIONS, h) for h in hosts]
    per_second = args.hosts / args.interval
    start = time.monotonic()
    sent = probes = 0
    while (elapsed := time.monotonic() - start) < seconds:
        if elapsed >= probes:  # one probe a second, each host its own incident
            probe = f"probe-{probes:04d}"
            sample = {"metric": "probe", "value": 1.0, "ts": time.time()}
            doc = {"v": 1, "host": probe, "seq": 0, "sent": time.time(), "samples": [sample]}
            client.publish(batch_topic(PREFIX, PARTITIONS, probe), orjson.dumps(doc), qos=1)
            probes += 1
        due = min(int(elapsed * per_second) + 1, int(seconds * per_second))
        while sent < due:
            i = sent % args.hosts
            client.publish(topics[i], batch(hosts[i], sent // args.hosts, args.metrics), qos=1)
            sent += 1
        time.sleep(0.005)
    return sent * args.metrics


def latencies(database: str) -> list[float]:
    """Per probe decision: the journal's decision time minus the sample's publish time."""
    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute("SELECT ts, item FROM decisions WHERE rule = 'probe'").fetchall()
    return sorted(float(ts) - float(orjson.loads(item)["ts"]) for ts, item in rows)


def run(args: argparse.Namespace, folder: Path, database: str) -> dict[str, Any]:
    with Mosquitto(folder / "broker") as broker:
        port = free_port()
        extra = (
            f"mqtt:\n  url: {broker.url}\n"
            f"fleet:\n  role: central\n  database: {database}\n  prefix: {PREFIX}\n"
            f"  partitions: {PARTITIONS}\n  instance: bench-central\n"
        )
        central = DaemonProcess(write_config(folder / "c", port, rules=RULES, extra=extra), port)
        try:
            central.wait_ready()
            view = central.wait_for(
                lambda: (v := central.get("/api/v1/fleet").json()) and not v["unowned"] and v,
                60, "every partition owned",
            )  # fmt: skip
            assert len(view["held"]) == PARTITIONS
            client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-agents")
            client.max_inflight_messages_set(1000)
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            before_cpu, before_in, t0 = cpu_seconds(central.pid), received(central), time.time()
            published = publish_for(client, args, args.seconds)
            central.wait_for(
                lambda: received(central) - before_in >= published, 120, "every sample taken in"
            )
            took = time.time() - t0
            cpu = cpu_seconds(central.pid) - before_cpu
            client.loop_stop()
            client.disconnect()
        finally:
            central.stop()
    return {"samples": published, "wall_s": took, "cpu_s": cpu, "latency": latencies(database)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--metrics", type=int, default=20)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    rate = args.hosts * args.metrics / args.interval
    with tempfile.TemporaryDirectory() as tmp, pg_database() as database:
        figures = run(args, Path(tmp), database)
    cores = figures["cpu_s"] / figures["wall_s"]
    lat = figures["latency"]
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(
        f"{args.hosts} hosts x {args.metrics} metrics every {args.interval:g} s"
        f" ({rate:,.0f} samples/s offered) for {args.seconds:g} s: {figures['samples']:,.0f}"
        f" samples taken in within {figures['wall_s']:.1f} s; central CPU"
        f" {figures['cpu_s']:.1f} s = {cores:.2f} core;"
        f" {figures['cpu_s'] / figures['samples'] * 1e6:.1f} us CPU per sample;"
        f" decision latency from publish over {len(lat)} probes: p50 {p50 * 1e3:.1f} ms,"
        f" p99 {p99 * 1e3:.1f} ms"
    )
    emit("fleet central", {
        "offered_samples_per_s": round(rate),
        "central_cores": round(cores, 2),
        "cpu_us_per_sample": round(figures["cpu_s"] / figures["samples"] * 1e6, 1),
        "decision_p99_ms": round(p99 * 1e3, 1),
    })  # fmt: skip


if __name__ == "__main__":
    main()

"""What 1, 2 and 4 central instances cost for one simulated fleet, and how fast they fail over.

For each count in ``--instances``: a private Mosquitto, a private database on the
machine's PostgreSQL and that many real ``batond run`` central instances sharing its 64
partitions (measured once ownership is balanced, from ``pg_locks``). This script plays
``--hosts`` agents as ``bench_fleet_central.py`` does (one QoS 1 batch of ``--metrics``
samples per host per ``--interval``, spread evenly), and ``--probe-rate`` times a second a
probe sample on a host of its own (one per partition in turn) that a rule decides.
Measured over ``--seconds`` of load:

- CPU per instance: the process's CPU time (user + system, /proc) over the wall time
  until every sample published was taken in (``batond_events_received_total``);
- decision latency from publish to journaled decision (the decision's ``ts`` in the
  journal minus the probe's ``ts``, one machine, one clock);
- the PostgreSQL write load of the private database: ``pg_stat_database`` deltas per
  second (``xact_commit``, ``tup_inserted``, ``tup_updated``), and the busiest statements
  from ``pg_stat_statements`` when the server has it loaded (reported as absent if not);
- failover (every count of 2 or more): with the load still on, one instance is
  SIGKILLed; the time until every partition it held is locked again by a survivor, and
  until a probe in each of them (one every 0.25 s per partition) is decided.

Run: .venv/bin/python bench/bench_fleet.py [--instances 1,2,4] [--hosts 10000]
         [--metrics 20] [--interval 10] [--seconds 30] [--probe-rate 5]
         [--heartbeat 2] (fleet.lease is 3 heartbeats)
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg
from paho.mqtt import client as paho

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from batond.fleet.partition import batch_topic, partition_of
from bench_fleet_central import PARTITIONS, PREFIX, RULES, batch, cpu_seconds, received
from daemon_proc import DaemonProcess, write_config
from headline import emit
from mqtt_broker import Mosquitto
from support import free_port, pg_database

LOCK_CLASS = 0x62746E64  # batond.fleet.ownership's advisory lock class ("btnd")
OWNED_SQL = (
    "SELECT l.objid::int, a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objsubid = 2"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
SETTLE_S = 3.0  # after the claims: the first checkpoints and member rows are written
PG_COUNTERS = ("xact_commit", "tup_inserted", "tup_updated", "tup_deleted")


def probe_hosts(count: int) -> list[list[str]]:
    """``count`` probe host names per partition (each probe its own incident)."""
    hosts: list[list[str]] = [[] for _ in range(PARTITIONS)]
    n = 0
    while min(len(h) for h in hosts) < count:
        name = f"probe-{n:06d}"
        if len(hosts[part := partition_of(name, PARTITIONS)]) < count:
            hosts[part].append(name)
        n += 1
    return hosts


@dataclass
class Publisher:
    """The simulated agents, in a thread: the load, and probes where ``targets()`` says."""

    client: paho.Client
    args: argparse.Namespace
    probes: list[list[str]]
    targets: Callable[[], list[int]]  # partitions to probe this round
    every: float  # seconds between probe rounds
    sent: int = 0
    stopped: threading.Event = field(default_factory=threading.Event)
    used: list[int] = field(default_factory=lambda: [0] * PARTITIONS)

    def probe(self, part: int) -> None:
        host = self.probes[part][self.used[part]]
        self.used[part] += 1
        sample = {"metric": "probe", "value": 1.0, "ts": time.time()}
        doc = {"v": 1, "host": host, "seq": 0, "sent": time.time(), "samples": [sample]}
        self.client.publish(batch_topic(PREFIX, PARTITIONS, host), orjson.dumps(doc), qos=1)

    def run(self) -> None:
        hosts = [f"host-{n:05d}" for n in range(self.args.hosts)]
        topics = [batch_topic(PREFIX, PARTITIONS, h) for h in hosts]
        per_second = self.args.hosts / self.args.interval
        start, rounds = time.monotonic(), 0
        while not self.stopped.is_set():
            elapsed = time.monotonic() - start
            if elapsed >= rounds * self.every:
                for part in self.targets():
                    self.probe(part)
                rounds += 1
            while self.sent < int(elapsed * per_second) + 1:
                i = self.sent % self.args.hosts
                self.client.publish(topics[i], batch(hosts[i], self.sent // self.args.hosts,
                                                     self.args.metrics), qos=1)  # fmt: skip
                self.sent += 1
            time.sleep(0.005)


@contextmanager
def publishing(pub: Publisher) -> Iterator[Publisher]:
    thread = threading.Thread(target=pub.run, daemon=True)
    thread.start()
    try:
        yield pub
    finally:
        pub.stopped.set()
        thread.join()


def owned(database: str) -> dict[int, int]:
    """Partition -> backend pid holding its advisory lock, as PostgreSQL says now."""
    with psycopg.connect(database, autocommit=True) as conn:
        return dict(conn.execute(OWNED_SQL, (LOCK_CLASS,)).fetchall())


def pg_counters(database: str) -> dict[str, float]:
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        cols = ", ".join(PG_COUNTERS)
        row = conn.execute(
            f"SELECT {cols} FROM pg_stat_database WHERE datname = current_database()".encode()
        ).fetchone()
    assert row is not None
    return dict(zip(PG_COUNTERS, map(float, row), strict=True))


def table_writes(database: str) -> dict[str, float]:
    """Rows written (inserted + updated + deleted) per table so far: who makes the load."""
    sql = (
        "SELECT COALESCE((SELECT c.relname || ' (TOAST)' FROM pg_class c"
        " WHERE c.reltoastrelid = s.relid), s.relname), n_tup_ins + n_tup_upd + n_tup_del"
        " FROM pg_stat_all_tables s WHERE s.schemaname IN ('public', 'pg_toast')"
    )
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return {name: float(n) for name, n in conn.execute(sql).fetchall()}


def state_sizes(database: str) -> dict[str, int]:
    """Bytes of each saved state blob (``kv``): what one rewrite of it costs; for rule
    state, also the part that is the governor's ``hosts_seen`` (every host in the last
    hour, for blast radius), which grows with the hosts an instance takes in."""
    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute("SELECT name, value FROM kv").fetchall()
    sizes = {}
    for name, value in rows:
        sizes[str(name)] = len(value)
        seen = orjson.loads(value).get("governor", {}).get("hosts_seen")
        if seen is not None:
            sizes[f"{name} hosts_seen"] = len(orjson.dumps(seen))
    return sizes


def statements_reset(database: str) -> str | None:
    """Ready ``pg_stat_statements`` in the private database; why not, when it cannot be."""
    with psycopg.connect(database, autocommit=True) as conn:
        loaded = conn.execute("SHOW shared_preload_libraries").fetchone()
        if loaded is None or "pg_stat_statements" not in str(loaded[0]):
            return "pg_stat_statements not in shared_preload_libraries"
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")
    return None


def statements_top(database: str, wall: float) -> list[str]:
    sql = (
        "SELECT calls, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 70)"
        " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
        " WHERE datname = current_database()) ORDER BY calls DESC LIMIT 6"
    )
    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute(sql).fetchall()
    return [f"{c / wall:8.1f} calls/s {r / wall:9.1f} rows/s  {q}" for c, r, q in rows]


def decisions(database: str) -> list[tuple[float, str, float]]:
    """Every probe decision: (journaled ts, host, the probe's publish ts)."""
    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute("SELECT ts, item FROM decisions WHERE rule = 'probe'").fetchall()
    out = []
    for ts, item in rows:
        doc = orjson.loads(item)
        out.append((float(ts), str(doc.get("host") or doc["labels"]["host"]), float(doc["ts"])))
    return out


def start_centrals(
    folder: Path, count: int, broker: Mosquitto, database: str, heartbeat: float
) -> list[Any]:
    centrals = []
    for i in range(count):
        extra = (
            f"mqtt:\n  url: {broker.url}\n"
            f"fleet:\n  role: central\n  database: {database}\n  prefix: {PREFIX}\n"
            f"  partitions: {PARTITIONS}\n  instance: bench-c{i}\n"
            f"  heartbeat: {heartbeat:g}s\n  lease: {3 * heartbeat:g}s\n"
        )
        port = free_port()
        centrals.append(DaemonProcess(write_config(folder / f"c{i}", port, rules=RULES,
                                                   extra=extra), port))  # fmt: skip
    for central in centrals:
        central.wait_ready()
    return centrals


def balanced(centrals: list[DaemonProcess], database: str) -> bool:
    """Every partition locked, each instance at its fair share, every view agreeing."""
    held = owned(database)
    share = math.ceil(PARTITIONS / len(centrals))
    per_pid = [list(held.values()).count(pid) for pid in set(held.values())]
    if len(held) < PARTITIONS or len(per_pid) < len(centrals) or max(per_pid) > share:
        return False
    views = [c.get("/api/v1/fleet").json() for c in centrals]
    return sum(len(v["held"]) for v in views) == PARTITIONS and not views[0]["unowned"]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else math.nan


def measure_load(
    args: argparse.Namespace,
    centrals: list[DaemonProcess],
    client: paho.Client,
    database: str,
    broker_pid: int,
) -> dict[str, Any]:
    """``--seconds`` of load: CPU per instance, PostgreSQL counters, probe latency."""
    probes = probe_hosts(int(args.seconds * args.probe_rate / PARTITIONS) + 40)
    turn = iter(range(10**9))
    pub = Publisher(client, args, probes, lambda: [next(turn) % PARTITIONS], 1 / args.probe_rate)
    no_statements = statements_reset(database)
    cpu0 = [cpu_seconds(c.pid) for c in centrals]
    broker0, agents0 = cpu_seconds(broker_pid), time.process_time()
    in0, pg0, t0 = sum(received(c) for c in centrals), pg_counters(database), time.time()
    tables0 = table_writes(database)
    with publishing(pub):
        time.sleep(args.seconds)
    published = pub.sent * args.metrics
    centrals[0].wait_for(
        lambda: sum(received(c) for c in centrals) - in0 >= published, 120,
        "every sample taken in",
    )  # fmt: skip
    wall = time.time() - t0
    cpu = [cpu_seconds(c.pid) - c0 for c, c0 in zip(centrals, cpu0, strict=True)]
    broker_cores = (cpu_seconds(broker_pid) - broker0) / wall
    agents_cores = (time.process_time() - agents0) / wall
    pg1, tables1 = pg_counters(database), table_writes(database)
    tables = {t: (n - tables0.get(t, 0.0)) / wall for t, n in tables1.items()}
    lat = [ts - sent for ts, _, sent in decisions(database)]
    return {
        "instances": len(centrals), "samples": published, "wall_s": wall,
        "cores": [c / wall for c in cpu], "probes": sum(pub.used), "latency": lat,
        "pg": {k: (pg1[k] - pg0[k]) / wall for k in PG_COUNTERS},
        "statements": statements_top(database, wall) if no_statements is None else [],
        "statements_absent": no_statements, "load": os.getloadavg()[0],
        "probes_used": pub.used, "tables": tables, "kv": state_sizes(database),
        "broker_cores": broker_cores, "agents_cores": agents_cores,
    }  # fmt: skip


def fail_over(
    args: argparse.Namespace,
    centrals: list[DaemonProcess],
    client: paho.Client,
    database: str,
    used: list[int],
) -> dict[str, Any]:
    """SIGKILL the last instance under load: its partitions locked again, decided again."""
    victim = centrals[-1]
    held = victim.get("/api/v1/fleet").json()["held"]
    victim_parts = sorted(v["partition"] for v in held)
    probes = probe_hosts(max(used) + 100)
    state: dict[str, Any] = {"killed": None}
    pub = Publisher(client, args, probes,
                    lambda: victim_parts if state["killed"] else [], 0.25)  # fmt: skip
    pub.used = list(used)
    with publishing(pub):
        time.sleep(2.0)  # the load on before the kill
        victim.kill()
        state["killed"] = killed = time.time()
        survivors = centrals[:-1]
        owned_at = survivors[0].wait_for(
            lambda: (set(victim_parts) <= owned(database).keys() and time.time()), 60,
            "the killed instance's partitions locked again", every=0.05,
        )  # fmt: skip
        decided = survivors[0].wait_for(
            lambda: _every_decided(database, probes, victim_parts, killed), 60,
            "a decision in each of its partitions", every=0.1,
        )  # fmt: skip
    return {"partitions": len(victim_parts), "owned_s": owned_at - killed,
            "decided_s": decided - killed}  # fmt: skip


def _every_decided(
    database: str, probes: list[list[str]], parts: list[int], killed: float
) -> float | None:
    """The time by which each partition had a decision of a probe sent after ``killed``."""
    first: dict[int, float] = {}
    for ts, host, sent in decisions(database):
        part = partition_of(host, PARTITIONS)
        if part in parts and sent >= killed:
            first[part] = min(first.get(part, ts), ts)
    return max(first.values()) if len(first) == len(parts) else None


def run_count(args: argparse.Namespace, count: int, failover: bool) -> dict[str, Any]:
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        database = stack.enter_context(pg_database())
        broker = stack.enter_context(Mosquitto(folder / "broker"))
        centrals = start_centrals(folder, count, broker, database, args.heartbeat)
        try:
            centrals[0].wait_for(lambda: balanced(centrals, database), 90, "balanced ownership")
            time.sleep(SETTLE_S)
            client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-agents")
            client.max_inflight_messages_set(1000)
            client.connect("127.0.0.1", broker.port)
            client.loop_start()
            assert broker.process is not None
            figures = measure_load(args, centrals, client, database, broker.process.pid)
            if failover:
                figures["failover"] = fail_over(
                    args, centrals, client, database, figures["probes_used"]
                )
            client.loop_stop()
            client.disconnect()
        finally:
            for central in centrals:
                if central.proc.poll() is None:  # (the failover's victim is gone)
                    central.stop()
    return figures


def report(f: dict[str, Any]) -> None:
    lat, pg = f["latency"], f["pg"]
    cores = ", ".join(f"{c:.2f}" for c in f["cores"])
    print(
        f"{f['instances']} instance(s): {f['samples']:,} samples taken in within"
        f" {f['wall_s']:.1f} s; CPU per instance {cores} core (sum {sum(f['cores']):.2f});"
        f" decision latency over {len(lat)} probes: p50 {quantile(lat, 0.5) * 1e3:.1f} ms,"
        f" p99 {quantile(lat, 0.99) * 1e3:.1f} ms, max {max(lat, default=math.nan) * 1e3:.1f} ms;"
        f" PostgreSQL per s: {pg['xact_commit']:.0f} commits, {pg['tup_inserted']:.0f} rows"
        f" inserted, {pg['tup_updated']:.0f} updated, {pg['tup_deleted']:.0f} deleted"
        f"; load average {f['load']:.2f}",
        flush=True,
    )
    print(
        f"  Mosquitto {f['broker_cores']:.2f} core;"
        f" the simulated agents (this script) {f['agents_cores']:.2f} core"
    )
    busiest = sorted(f["tables"].items(), key=lambda kv: -kv[1])[:5]
    print("  rows written per s by table: " + ", ".join(f"{t} {n:.0f}" for t, n in busiest))
    kv = sorted(f["kv"].items())
    print("  saved state blobs: " + ", ".join(f"{k} {n / 1024:.0f} KiB" for k, n in kv))
    if f["statements_absent"]:
        print(f"  statements: {f['statements_absent']}")
    for line in f["statements"]:
        print("  " + line)
    if fo := f.get("failover"):
        print(
            f"  failover: SIGKILL of 1 of {f['instances']} (it held {fo['partitions']}"
            f" partitions) under load: locked again by survivors after {fo['owned_s']:.2f} s,"
            f" a decision in each after {fo['decided_s']:.2f} s",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--instances", default="1,2,4")
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--metrics", type=int, default=20)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--probe-rate", type=float, default=5.0)
    ap.add_argument("--heartbeat", type=float, default=2.0, help="fleet.heartbeat, seconds")
    args = ap.parse_args()
    counts = [int(n) for n in args.instances.split(",")]
    rate = args.hosts * args.metrics / args.interval
    print(
        f"{args.hosts} hosts x {args.metrics} metrics every {args.interval:g} s"
        f" ({rate:,.0f} samples/s offered; a batch is {len(batch('host-00000', 0, args.metrics))}"
        f" bytes), {args.seconds:g} s per count",
        flush=True,
    )
    headline: dict[str, Any] = {"offered_samples_per_s": round(rate)}
    for count in counts:
        f = run_count(args, count, failover=count >= 2)
        report(f)
        headline[f"x{count}_max_instance_cores"] = round(max(f["cores"]), 2)
        headline[f"x{count}_decision_p99_ms"] = round(quantile(f["latency"], 0.99) * 1e3, 1)
        headline[f"x{count}_broker_cores"] = round(f["broker_cores"], 2)
        headline[f"x{count}_pg_commits_per_s"] = round(f["pg"]["xact_commit"])
        headline[f"x{count}_pg_rows_written_per_s"] = round(
            sum(f["pg"][k] for k in ("tup_inserted", "tup_updated", "tup_deleted"))
        )
        if fo := f.get("failover"):
            headline[f"x{count}_failover_s"] = round(fo["decided_s"], 2)
    headline["load_average"] = round(os.getloadavg()[0], 2)
    emit("fleet", headline)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()

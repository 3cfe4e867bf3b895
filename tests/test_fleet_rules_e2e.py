"""A fleet rule end to end: two central instances (real ``batond run`` processes), a
real Mosquitto, the machine's PostgreSQL (a private database), and agents played at the
transport boundary (batches in the wire format, published at QoS 1 with mosquitto_pub).

Four web hosts and one database host report; the agents appear in every instance's
``GET /api/v1/fleet`` with their partition, last batch and labels. Two of the four web
hosts (one in each instance's partitions) get an incident: the fleet rule (at least 50%
of the web hosts) fires once across both instances, then resolves when they resolve.
With ``anomalous: {metric: cpu}`` and a cpu model on the instances, two of four web
hosts' cpu spikes: each owner's models note it in the host's row, the fleet rule fires
once.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from batond.fleet.partition import batch_topic, partition_of
from mqtt_broker import Mosquitto
from support import wait_until
from test_fleet_central import PARTITIONS, PREFIX, Fleet, balanced
from test_openapi import Checker as ApiChecker

RULES = """
rules:
  - name: web-5xx
    match: {metric: http_5xx}
    when: value > 10
    run: noop
  - name: web-tier
    fleet:
      at_least: 50%
      of: {labels: {role: web}}
      incidents: {rule: web-5xx}
      within: 10m
    run: noop
    severity: critical
playbooks:
  - name: noop
    steps:
      - {name: pause, action: wait, with: {duration: 0s}}
"""
TIMING = "  heartbeat: 500ms\n  lease: 2s\n  batch_interval: 1s\n"


class Agents:
    """Agents at the transport boundary: each batch one mosquitto_pub at QoS 1."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.seq: dict[str, int] = {}

    def batch(self, host: str, role: str, value: float) -> None:
        self.seq[host] = self.seq.get(host, 0) + 1
        now = time.time()
        samples = [
            {"metric": "http_5xx", "value": value, "ts": now, "role": role, "path": "/"},
            {"metric": "cpu", "value": 5.0, "ts": now, "role": role},
        ]
        batch = {"v": 1, "host": host, "seq": self.seq[host], "sent": now, "samples": samples}
        subprocess.run(
            ["mosquitto_pub", "-p", str(self.broker.port), "-q", "1", "-i", f"agent-{host}",
             "-t", batch_topic(PREFIX, PARTITIONS, host), "-m", orjson.dumps(batch).decode()],
            check=True, timeout=30,
        )  # fmt: skip


def hosts_in(partitions: set[int], n: int, stem: str) -> list[str]:
    names = (f"{stem}-{i}" for i in range(100_000))
    found: list[str] = []
    for name in names:
        if partition_of(name, PARTITIONS) in partitions:
            found.append(name)
            if len(found) == n:
                return found
    raise AssertionError("no such hosts")


def rows(database: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def agents_listed(fleet: Fleet, name: str, want: dict[str, int]) -> dict[str, Any] | None:
    """The agents in ``name``'s GET /api/v1/fleet (checked against its OpenAPI description)
    once every host of ``want`` is there at least at that seq."""
    view: dict[str, Any] = ApiChecker(fleet.procs[name]).call("GET", "/api/v1/fleet").json()
    listed = {a["host"]: a for a in view["agents"]}
    if all(h in listed and listed[h]["seq"] >= s for h, s in want.items()):
        return {"count": view["agent_count"], "agents": listed}
    return None


def test_half_the_web_tier_with_incidents_fires_the_fleet_rule_once_then_resolves(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    fleet = Fleet(tmp_path, broker, database, timing=TIMING, rules=RULES)
    agents = Agents(broker)
    try:
        for name in ("c0", "c1"):
            fleet.start(name)
        for proc in fleet.procs.values():
            proc.wait_ready()
        split = wait_until(lambda: balanced(fleet, {"c0", "c1"}), 60, "a fair split")
        # two web hosts in each instance's partitions, one database host
        web0, web1 = hosts_in(split["c0"], 2, "web"), hosts_in(split["c1"], 2, "web")
        (db,) = hosts_in(set(range(PARTITIONS)), 1, "db")
        webs = [*web0, *web1]
        for host in webs:
            agents.batch(host, "web", 0.0)
        agents.batch(db, "db", 0.0)

        # every agent listed by both instances, with its partition, seq and labels
        want = {h: 1 for h in [*webs, db]}
        for name in ("c0", "c1"):
            seen = wait_until(lambda n=name: agents_listed(fleet, n, want), 30, "agents listed")
            assert seen["count"] == 5
            first = seen["agents"][webs[0]]
            assert first["partition"] == partition_of(webs[0], PARTITIONS)
            assert first["labels"] == {"role": "web"}  # what every sample carries
            assert seen["agents"][db]["labels"] == {"role": "db"}
            assert first["last_seen"] > time.time() - 60
        shown = subprocess.run(
            [str(Path(".venv/bin/batond").resolve()), "fleet", "status", "--url",
             fleet.procs["c1"].url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "agents     5" in shown.stdout and "role=web" in shown.stdout

        # one web host of each instance gets an incident: 2 of 4 web hosts, 50%
        hit = [web0[0], web1[0]]
        for host in hit:
            agents.batch(host, "web", 50.0)
        wait_until(lambda: fleet_decisions(database), 60, "the fleet rule's decision")
        # resolved by the hosts' incidents resolving
        for host in hit:
            agents.batch(host, "web", 0.0)
        resolved = wait_until(
            lambda: rows(database, "SELECT state, key, resolved_by FROM incidents"
                         " WHERE rule = 'web-tier' AND state = 'resolved'"),
            60, "the fleet incident resolved",
        )  # fmt: skip
        assert resolved == [("resolved", "fleet", "input")]
        # exactly one decision for the fleet, across both instances, a run of its playbook
        ((playbook, suppressed, key, labels, instance),) = fleet_decisions(database)
        assert (playbook, suppressed, key) == ("noop", None, "fleet")
        named = ",".join(sorted(hit))
        assert orjson.loads(labels) == {
            "fleet_rule": "web-5xx", "affected": "2", "matching": "4", "hosts": named
        }  # fmt: skip
        owner0 = next(n for n, s in split.items() if 0 in s)
        assert instance == owner0  # the instance that holds partition 0 decided it
        assert rows(database, "SELECT count(*) FROM incidents WHERE rule = 'web-tier'") == [(1,)]
    finally:
        fleet.stop_all()


def fleet_decisions(database: str, rule: str = "web-tier") -> list[tuple[Any, ...]]:
    """The fleet rule's decisions, with the instance that ran each one's run."""
    return rows(
        database,
        "SELECT d.playbook, d.suppressed, d.key, d.labels, r.instance FROM decisions d"
        " LEFT JOIN runs r ON r.decision_id = d.id WHERE d.rule = %s ORDER BY d.id",
        rule,
    )


ANOMALOUS_RULES = """
rules:
  - name: web-cpu
    fleet:
      at_least: 50%
      of: {labels: {role: web}}
      anomalous: {metric: cpu}
      within: 20s
    run: noop
playbooks:
  - name: noop
    steps:
      - {name: pause, action: wait, with: {duration: 0s}}
"""
CPU_MODEL = "models:\n  - {name: cpu, match: {metric: cpu}, warmup: 30}\n"


def cpu_batch(agents: Agents, host: str, start: int, spike: bool = False) -> None:
    """40 cpu points of a regular pattern (1 s apart, the last 40 s), then a spike now."""
    agents.seq[host] = agents.seq.get(host, 0) + 1
    now = time.time()
    values = [(now - 40 + k, 5.0 + ((start + k) % 3) * 0.5) for k in range(40)]
    if spike:
        values.append((now, 95.0))
    samples = [{"metric": "cpu", "value": v, "ts": ts, "role": "web"} for ts, v in values]
    batch = {"v": 1, "host": host, "seq": agents.seq[host], "sent": now, "samples": samples}
    subprocess.run(
        ["mosquitto_pub", "-p", str(agents.broker.port), "-q", "1", "-i", f"agent-{host}",
         "-t", batch_topic(PREFIX, PARTITIONS, host), "-m", orjson.dumps(batch).decode()],
        check=True, timeout=30,
    )  # fmt: skip


def fitted(fleet: Fleet, owner: str, host: str) -> bool:
    """Whether ``owner``'s model of ``host``'s cpu made its first fit."""
    path = f"/api/v1/series?metric=cpu&host={host}"
    found = ApiChecker(fleet.procs[owner]).call("GET", "/api/v1/series", path)
    series = found.json()["series"]
    return bool(series) and all(s["fitted"] for s in series)


def test_half_the_web_tier_with_anomalous_cpu_fires_the_fleet_rule_once(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    fleet = Fleet(tmp_path, broker, database, timing=TIMING, rules=ANOMALOUS_RULES)
    agents = Agents(broker)
    try:
        for name in ("c0", "c1"):
            (tmp_path / name / "models").mkdir(parents=True)
            (tmp_path / name / "models" / "cpu.yaml").write_text(CPU_MODEL)
            fleet.start(name)
        for proc in fleet.procs.values():
            proc.wait_ready()
        split = wait_until(lambda: balanced(fleet, {"c0", "c1"}), 60, "a fair split")
        web0, web1 = hosts_in(split["c0"], 2, "web"), hosts_in(split["c1"], 2, "web")
        owner = {h: "c0" for h in web0} | {h: "c1" for h in web1}
        for host in owner:  # the warm-up: each owner's model fits each host's series
            cpu_batch(agents, host, 0)
        for host, name in owner.items():
            wait_until(lambda h=host, n=name: fitted(fleet, n, h), 60, f"{host}'s series fitted")
        hit = sorted([web0[0], web1[0]])
        for host in owner:  # one web host of each instance spikes: 2 of 4
            cpu_batch(agents, host, 40, spike=host in hit)
        wait_until(lambda: fleet_decisions(database, "web-cpu"), 60, "the fleet rule's decision")
        # the rows say which hosts' cpu was anomalous, as either instance lists them
        listed = wait_until(
            lambda: agents_listed(fleet, "c1", {h: 2 for h in owner}), 30, "rows written"
        )
        marked = sorted(h for h, a in listed["agents"].items() if "cpu" in a["anomalous"])
        assert marked == hit
        # quiet batches keep all four hosts seen; the spikes leave the 20 s window: the
        # fleet incident resolves by its count, having decided once
        rounds = iter(range(81, 10_000, 40))

        def resolved() -> list[tuple[Any, ...]]:
            start = next(rounds)
            for host in owner:
                cpu_batch(agents, host, start)
            return rows(database, "SELECT resolved_by FROM incidents WHERE rule = 'web-cpu'"
                        " AND state = 'resolved'")  # fmt: skip

        assert wait_until(resolved, 90, "the fleet incident resolved", every=1.0) == [("input",)]
        owner0 = next(n for n, s in split.items() if 0 in s)
        ((playbook, suppressed, key, labels, instance),) = fleet_decisions(database, "web-cpu")
        assert (playbook, suppressed, key, instance) == ("noop", None, "fleet", owner0)
        assert orjson.loads(labels) == {
            "fleet_metric": "cpu", "affected": "2", "matching": "4", "hosts": ",".join(hit)
        }  # fmt: skip
        assert rows(database, "SELECT count(*) FROM incidents WHERE rule = 'web-cpu'") == [(1,)]
    finally:
        fleet.stop_all()

"""A fleet of real processes: two central instances and three agents, each a
``batond run`` of its own, one private Mosquitto, a private PostgreSQL database.

Each agent's host name is chosen so that the agents fall in partitions owned by
both instances. An input posted to an agent's HTTP API travels in its batch to the
owner of its partition, which decides it, exactly once (read from the journal in
PostgreSQL). Both instances list all three agents. Then the owner of one agent's
partition is SIGKILLed; an input posted to that agent is decided by the survivor
within 10 s.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from batond.fleet.partition import partition_of
from daemon_proc import DaemonProcess, stop_each, write_config
from mqtt_broker import Mosquitto
from support import free_port
from test_fleet_central import PARTITIONS, PREFIX, Fleet, agent_seen

RULES = """
rules:
  - name: hot
    match: {metric: cpu}
    when: value > 90
    run: noop
  - name: after
    match: {metric: load}
    when: value > 90
    run: noop
playbooks:
  - name: noop
    steps:
      - {name: pause, action: wait, with: {duration: 0s}}
"""
TIMING = "  heartbeat: 500ms\n  lease: 2s\n"


def pick_hosts(split: dict[str, set[int]]) -> dict[str, str]:
    """Three host names, in three distinct partitions, owned by c0, c1, c0: host -> owner."""
    wanted = ["c0", "c1", "c0"]
    taken: set[int] = set()
    hosts: dict[str, str] = {}
    for n in range(100_000):
        host = f"node-{n}"
        part = partition_of(host, PARTITIONS)
        if part not in taken and part in split[wanted[len(hosts)]]:
            taken.add(part)
            hosts[host] = wanted[len(hosts)]
            if len(hosts) == len(wanted):
                return hosts
    raise AssertionError(f"no hosts for the split {split}")


def start_agent(root: Path, broker: Mosquitto, host: str) -> DaemonProcess:
    folder = root / f"agent-{host}"
    folder.mkdir()
    (folder / "agent.key").write_bytes(f"0123456789abcdef-key-of-{host}\n".encode())
    extra = (
        f"mqtt:\n  url: {broker.url}\n"
        f"fleet:\n  role: agent\n  host: {host}\n  prefix: {PREFIX}\n"
        f"  partitions: {PARTITIONS}\n  batch_interval: 300ms\n  key_file: agent.key\n"
    )
    port = free_port()
    return DaemonProcess(write_config(folder, port, extra=extra), port)


def decided(database: str, rule: str, host: str) -> list[tuple[Any, ...]]:
    """``(key, suppressed, instance of its run)`` of each decision of ``rule`` for ``host``."""
    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT d.key, d.labels, d.suppressed, r.instance FROM decisions d"
            " LEFT JOIN runs r ON r.decision_id = d.id WHERE d.rule = %s ORDER BY d.id",
            (rule,),
        ).fetchall()
    return [
        (key, suppressed, instance)
        for key, labels, suppressed, instance in rows
        if orjson.loads(labels).get("host") == host
    ]


def ran(database: str, rule: str, host: str) -> list[tuple[Any, ...]]:
    """The decisions of ``rule`` for ``host`` once one has a run with its instance."""
    rows = decided(database, rule, host)
    return rows if any(instance is not None for *_, instance in rows) else []


def feed(agent: DaemonProcess, host: str, metric: str) -> None:
    posted = agent.post("/api/v1/events", {"metric": metric, "value": 99, "host": host})
    assert posted.status == 202, posted.text


def test_agents_are_decided_by_their_partitions_owner_and_the_survivor_takes_over(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    fleet = Fleet(tmp_path, broker, database, timing=TIMING, rules=RULES)
    agents: dict[str, DaemonProcess] = {}
    began = time.monotonic()
    try:
        split = fleet.split("c0", "c1")
        hosts = pick_hosts(split)
        agents.update({h: start_agent(tmp_path, broker, h) for h in hosts})
        for agent in agents.values():
            agent.wait_ready()
        started = time.monotonic() - began
        for host, agent in agents.items():
            feed(agent, host, "cpu")
        for host, owner in hosts.items():
            rows = fleet.procs[owner].wait_for(
                lambda h=host: ran(database, "hot", h), 30, f"{host}'s decision"
            )
            assert [(s, i) for _, s, i in rows] == [(None, owner)], (host, rows)
        decided_at = time.monotonic() - began
        # nothing else decided: one decision per agent, by its owner, across the fleet
        per_owner = {name: sum(1 for o in hosts.values() if o == name) for name in split}
        for name, proc in fleet.procs.items():
            assert (
                proc.metric("batond_decisions_total", {"rule": "hot", "result": "run"})
                == (per_owner[name])
            )
        for name, proc in fleet.procs.items():
            for host in hosts:
                seen = proc.wait_for(lambda h=host, p=proc: agent_seen(p, h), 30, f"{host} listed")
                assert seen["partition"] == partition_of(host, PARTITIONS), (name, seen)

        # the owner of agent X's partition dies; X's next input goes to the survivor
        x = next(iter(hosts))
        killed_at = time.monotonic()
        fleet.procs["c0"].kill()
        feed(agents[x], x, "load")
        survivor = fleet.procs["c1"]
        rows = survivor.wait_for(lambda: ran(database, "after", x), 30, "the survivor's decision")
        took = time.monotonic() - killed_at
        print(
            f"\nstarted 2 centrals + 3 agents in {started:.2f} s; first decisions at"
            f" {decided_at:.2f} s; decided by the survivor {took:.2f} s after the SIGKILL"
        )
        assert [(s, i) for _, s, i in rows] == [(None, "c1")]
        assert took < 10.0
        # the new owner resumed the partition without deciding its old inputs again
        for host, owner in hosts.items():
            assert [(s, i) for _, s, i in decided(database, "hot", host)] == [(None, owner)]
    finally:
        try:
            stop_each(agents.values())
        finally:
            fleet.stop_all()

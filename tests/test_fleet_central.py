"""Central instances of a fleet, end to end: real ``batond run`` processes, a real
Mosquitto, the machine's PostgreSQL (a private database per run).

Partitions split fairly among the live instances; a batch published to a partition
is decided by its owner; a SIGKILLed instance's partitions are owned by the
survivors within 10 s, and a batch published while nobody owned its partition
waits in the partition's MQTT session for the new owner; through rounds of kills
and restarts a checker reading PostgreSQL every ~100 ms never sees a partition
held by two instances.
"""

from __future__ import annotations

import math
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psycopg

from batond.fleet.ownership import LOCK_CLASS
from batond.fleet.partition import batch_topic, partition_of
from daemon_proc import BATOND, DaemonProcess, stop_each, write_config
from mqtt_broker import Mosquitto
from support import free_port, wait_until
from test_openapi import Checker as ApiChecker

PARTITIONS = 12
PREFIX = "acme/fleet"
RULES = """
rules:
  - name: hot
    match: {metric: cpu}
    when: value > 90
    run: noop
  - name: warm
    match: {metric: temp}
    when: value > 90
    for: 6s
    run: noop
  - name: heavy
    match: {metric: load}
    when: value > 90
    run: slow
playbooks:
  - name: slow
    escalate: noop
    steps:
      - {name: hold, action: wait, with: {duration: 120s}}
  - name: noop
    steps:
      - {name: pause, action: wait, with: {duration: 0s}}
"""


@dataclass
class Fleet:
    """Central instances c0, c1, ... of one fleet, each a ``batond run`` of its own."""

    root: Path
    broker: Mosquitto
    database: str
    timing: str
    procs: dict[str, DaemonProcess] = field(default_factory=dict)
    rules: str = RULES

    def start(self, name: str) -> DaemonProcess:
        folder = self.root / name
        port = free_port()
        extra = (
            f"mqtt:\n  url: {self.broker.url}\n"
            f"fleet:\n  role: central\n  database: {self.database}\n  prefix: {PREFIX}\n"
            f"  partitions: {PARTITIONS}\n  instance: {name}\n{self.timing}"
        )
        config = write_config(folder, port, rules=self.rules, extra=extra)
        self.procs[name] = DaemonProcess(config, port)
        return self.procs[name]

    def split(self, *names: str) -> dict[str, set[int]]:
        """Start ``names``, wait until each is ready and they share the partitions fairly."""
        for name in names:
            self.start(name)
        for proc in self.procs.values():
            proc.wait_ready()
        return wait_until(lambda: balanced(self, set(names)), 60, "a fair split")

    def stop_all(self) -> None:
        """Stop every instance, even when one of them fails to stop (it is reported)."""
        stop_each(self.procs.values())

    def held(self) -> dict[str, set[int]]:
        """What each live instance's member row says it holds."""
        with psycopg.connect(self.database, autocommit=True) as conn:
            rows = conn.execute(LIVE_HELD).fetchall()
        return {str(i): set(h) for i, h in rows}


LIVE_HELD = (
    "SELECT m.instance, m.held FROM fleet_members m"
    " WHERE EXISTS (SELECT 1 FROM pg_stat_activity a"
    " WHERE a.pid = m.pid AND a.datname = current_database())"
)


def balanced(fleet: Fleet, names: set[str]) -> dict[str, set[int]] | None:
    """The split when exactly ``names`` hold every partition, each its fair share at most."""
    held = fleet.held()
    if set(held) != names:
        return None
    owned = sorted(p for s in held.values() for p in s)
    share = math.ceil(PARTITIONS / len(names))
    if owned != list(range(PARTITIONS)) or any(len(s) > share for s in held.values()):
        return None
    return held


def host_in(partition: int) -> str:
    return next(h for n in range(10_000) if partition_of(h := f"web-{n}", PARTITIONS) == partition)


def publish_batch(broker: Mosquitto, host: str, value: float, metric: str = "cpu") -> None:
    sample = {"metric": metric, "value": value, "ts": time.time()}
    batch = {"v": 1, "host": host, "seq": 1, "sent": time.time(), "samples": [sample]}
    subprocess.run(
        ["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-i", f"agent-{host}",
         "-t", batch_topic(PREFIX, PARTITIONS, host), "-m", orjson.dumps(batch).decode()],
        check=True, timeout=30,
    )  # fmt: skip


def fleet_view(proc: DaemonProcess, members: int) -> dict[str, Any] | None:
    """``GET /api/v1/fleet``, checked against the daemon's own OpenAPI description."""
    checker = ApiChecker(proc)
    view: dict[str, Any] = checker.call("GET", "/api/v1/fleet").json()
    live = [m for m in view["members"] if m["live"]]
    return view if len(live) == members and not view["unowned"] else None


def agent_seen(proc: DaemonProcess, host: str) -> dict[str, Any] | None:
    view: dict[str, Any] = ApiChecker(proc).call("GET", "/api/v1/fleet").json()
    return next((a for a in view["agents"] if a["host"] == host), None)


def batond_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BATOND, *args], capture_output=True, text=True, timeout=60)


def decisions_of(proc: DaemonProcess, rule: str = "hot") -> float:
    return proc.metric("batond_decisions_total", {"rule": rule, "result": "run"}) or 0.0


def test_split_decide_and_fail_over_within_10s(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    fleet = Fleet(tmp_path, broker, database, timing="")  # the defaults: heartbeat 2s, lease 6s
    try:
        split = fleet.split("c0", "c1", "c2")
        assert sorted(len(s) for s in split.values()) == [4, 4, 4]
        c0 = fleet.procs["c0"]
        view = c0.wait_for(lambda: fleet_view(c0, 3), 30, "c0 to see the three members")
        assert {m["instance"] for m in view["members"]} == {"c0", "c1", "c2"}
        assert {int(p): o for p, o in view["owners"].items()} == {
            p: n for n, s in split.items() for p in s
        }
        assert {h["partition"] for h in view["held"]} == split["c0"]
        assert c0.metric("batond_fleet_partitions_owned") == len(split["c0"])
        c0.wait_for(lambda: c0.metric("batond_fleet_members_live") == 3.0, 30, "3 live members")
        shown = batond_cli("fleet", "status", "--url", c0.url)
        assert shown.returncode == 0, shown.stderr
        assert "instance   c0 (connected)" in shown.stdout and "unowned: none" in shown.stdout
        members = shown.stdout.split("\n\n")[1]  # (then the agents: none here)
        rows = {line.split()[0]: line.split() for line in members.splitlines()[1:]}
        assert {name: int(rows[name][5]) for name in ("c0", "c1", "c2")} == {
            name: len(held) for name, held in split.items()
        }  # MEMBER HOST STATE DATE TIME HOLDS PARTITIONS

        # a batch is decided by the owner of its partition, and by no one else
        partition = min(split["c1"])
        publish_batch(broker, host_in(partition), 97.0)
        owner = fleet.procs["c1"]
        owner.wait_for(lambda: decisions_of(owner) == 1.0, 30, "the owner's decision")
        assert decisions_of(fleet.procs["c0"]) == decisions_of(fleet.procs["c2"]) == 0.0

        # SIGKILL c1; a batch published for one of its partitions while nobody owns it
        orphan = max(split["c1"])
        killed_at = time.monotonic()
        owner.kill()
        publish_batch(broker, host_in(orphan), 98.0)
        wait_until(lambda: balanced(fleet, {"c0", "c2"}), 30, "the survivors to own everything")
        failover = time.monotonic() - killed_at
        print(f"failover after SIGKILL: {failover:.2f} s")
        assert failover < 10.0
        new_owner = next(n for n, s in fleet.held().items() if orphan in s)
        proc = fleet.procs[new_owner]
        claims = proc.metric("batond_fleet_ownership_changes_total", {"change": "claimed"})
        assert claims is not None and claims > len(split[new_owner])  # its own, then c1's
        # the batch waited in the partition's session and reached the new owner
        proc.wait_for(lambda: decisions_of(proc) >= 1.0, 30, "the new owner's decision")
    finally:
        fleet.stop_all()


@dataclass
class Checker:
    """Reads PostgreSQL every ~100 ms; records every moment two instances held one
    partition (by lock, or by what their member rows claim)."""

    database: str
    violations: list[str] = field(default_factory=list)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _epochs: dict[int, int] = field(default_factory=dict)

    def run(self) -> None:
        with psycopg.connect(self.database, autocommit=True) as conn:
            while not self._stop.wait(0.1):
                self.look(conn)
                self.samples += 1

    def look(self, conn: psycopg.Connection[Any]) -> None:
        locks_before = self.locks(conn)
        rows = conn.execute(LIVE_HELD.replace("m.held", "m.held, m.pid")).fetchall()
        locks_after = self.locks(conn)
        for objid, holders in locks_before.items():
            if len(holders) > 1:
                self.violations.append(f"partition {objid} locked by pids {holders}")
        claimed: dict[int, str] = {}
        for instance, held, pid in rows:
            for p in held:
                if p in claimed:
                    self.violations.append(f"partition {p} held by {claimed[p]} and {instance}")
                claimed[p] = instance
                if pid not in locks_before.get(p, ()) and pid not in locks_after.get(p, ()):
                    self.violations.append(f"{instance} claims {p} without its lock")
        for p, epoch in conn.execute("SELECT partition, epoch FROM fleet_partitions"):
            if epoch < self._epochs.get(p, 0):
                self.violations.append(f"partition {p}: epoch went back to {epoch}")
            self._epochs[p] = epoch

    @staticmethod
    def locks(conn: psycopg.Connection[Any]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for objid, pid in conn.execute(
            # advisory locks are per database: other runs on this server hold theirs
            "SELECT objid::int, pid FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = %s AND objsubid = 2 AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (LOCK_CLASS,),
        ):
            out.setdefault(objid, []).append(pid)
        return out

    def stop(self) -> None:
        self._stop.set()


def test_kill_and_restart_in_a_loop_never_two_owners(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    fleet = Fleet(tmp_path, broker, database, timing="  heartbeat: 500ms\n  lease: 2s\n")
    names = {"c0", "c1", "c2"}
    checker = Checker(database)
    thread = threading.Thread(target=checker.run, daemon=True)
    try:
        for name in sorted(names):
            fleet.start(name)
        for proc in fleet.procs.values():
            proc.wait_ready()
        wait_until(lambda: balanced(fleet, names), 60, "a fair split")
        thread.start()
        failovers = []
        for round_ in range(5):
            victim = sorted(names)[round_ % 3]
            killed_at = time.monotonic()
            fleet.procs[victim].kill()
            survivors = names - {victim}
            wait_until(lambda: balanced(fleet, survivors), 30, "the survivors' takeover")  # noqa: B023
            failovers.append(time.monotonic() - killed_at)
            fleet.start(victim).wait_ready()
            wait_until(lambda: balanced(fleet, names), 60, "the rebalance after the restart")
        times = ", ".join(f"{f:.2f}" for f in failovers)
        print(f"checker: {checker.samples} looks; failovers after SIGKILL: {times} s")
        assert max(failovers) < 10.0
    finally:
        checker.stop()
        thread.join(10)
        fleet.stop_all()
    assert checker.samples > 20
    assert checker.violations == []


def checkpointed(database: str, partition: int, host: str) -> bool:
    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT state FROM fleet_checkpoints WHERE partition = %s", (partition,)
        ).fetchone()
    if row is None:
        return False
    pending = orjson.loads(bytes(row[0]))["rules"].get("warm", {}).get("pending", {})
    return f"host={host}" in pending


def test_a_pending_for_timer_fires_on_the_new_owner_at_its_time(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    fleet = Fleet(tmp_path, broker, database, timing="  heartbeat: 500ms\n  lease: 2s\n")
    try:
        split = fleet.split("c0", "c1")
        partition = min(split["c0"])
        host = host_in(partition)
        published = time.time()
        publish_batch(broker, host, 95.0, metric="temp")  # for: 6s starts now, on c0
        wait_until(lambda: checkpointed(database, partition, host), 5, "the pending timer saved")
        fleet.procs["c0"].kill()
        survivor = fleet.procs["c1"]
        survivor.wait_for(lambda: decisions_of(survivor, "warm") == 1.0, 30, "the decision",
                          every=0.05)  # fmt: skip
        fired = time.time() - published
        print(f"for: 6s timer fired on the new owner {fired:.2f} s after the sample")
        assert 6.0 - 0.5 <= fired <= 6.0 + 3.0  # at its time, not restarted from zero
        assert f"partition {partition} resumed from its checkpoint" in survivor.log()
    finally:
        fleet.stop_all()


def test_an_agents_batches_are_decided_by_the_owner_of_its_partition(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    """The two roles together: a real agent publishes its inputs in batches; the central
    instance that owns its partition decides them."""
    fleet = Fleet(tmp_path, broker, database, timing="  heartbeat: 500ms\n  lease: 2s\n")
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    (agent_dir / "agent.key").write_bytes(b"0123456789abcdef-agent-key\n")
    host = host_in(5)
    extra = (
        f"mqtt:\n  url: {broker.url}\n"
        f"fleet:\n  role: agent\n  host: {host}\n  prefix: {PREFIX}\n"
        f"  partitions: {PARTITIONS}\n  batch_interval: 300ms\n  key_file: agent.key\n"
    )
    agent_port = free_port()
    agent = DaemonProcess(write_config(agent_dir, agent_port, extra=extra), agent_port)
    try:
        split = fleet.split("c0", "c1")
        owner = next(n for n, s in split.items() if 5 in s)
        other = next(n for n in split if n != owner)
        agent.wait_ready()
        posted = agent.post("/api/v1/events", {"metric": "cpu", "value": 99, "host": host})
        assert posted.status == 202, posted.text
        proc = fleet.procs[owner]
        proc.wait_for(lambda: decisions_of(proc) == 1.0, 30, "the owner's decision")
        received = proc.metric("batond_events_received_total", {"source": "fleet"})
        assert received is not None and received >= 1.0  # the agent's host metrics too
        assert decisions_of(fleet.procs[other]) == 0.0
        # and either instance lists it among the agents last seen, from the journal
        seen = wait_until(lambda: agent_seen(fleet.procs[other], host), 30, "the agent listed")
        assert seen["partition"] == 5 and seen["seq"] >= 1 and seen["last_seen"] > 0
    finally:
        agent.stop()
        fleet.stop_all()


def runs_of(database: str, rule: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database, autocommit=True) as conn:
        return conn.execute(
            "SELECT id, state, outcome, instance, escalation, escalates FROM runs"
            " WHERE rule = %s ORDER BY id",
            (rule,),
        ).fetchall()


def test_a_killed_instances_unfinished_run_is_interrupted_by_the_new_owner(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    fleet = Fleet(tmp_path, broker, database, timing="  heartbeat: 500ms\n  lease: 2s\n")
    try:
        split = fleet.split("c0", "c1")
        publish_batch(broker, host_in(min(split["c0"])), 99.0, metric="load")
        running = wait_until(lambda: runs_of(database, "heavy"), 30, "c0's run")
        assert running[0][1:4] == ("running", None, "c0")
        fleet.procs["c0"].kill()  # in the middle of its 120 s step
        survivor = fleet.procs["c1"]

        def escalated() -> list[tuple[Any, ...]] | None:
            rows = runs_of(database, "heavy")
            ended = [r for r in rows if r[4] and r[2] is not None]
            return rows if ended and rows[0][2] is not None else None

        rows = survivor.wait_for(escalated, 30, "the run interrupted and escalated by c1")
        first, later = rows[0], rows[1:]
        assert first[1:4] == ("done", "interrupted", "c0")
        # the escalation (on_interrupt: escalate) ran on the new owner, naming the run
        assert [r[3:] for r in later if r[4]] == [("c1", 1, first[0])]
        assert f"run {first[0]} of heavy on partition" in survivor.log()
        # c0 killed between its decision's commit and the batch's PUBACK leaves the batch
        # with the broker, and the new owner decides it again (at-least-once, fleet.md):
        # at most that one run more, c1's own
        again = [r for r in later if not r[4]]
        assert len(again) <= 1 and all(r[3] == "c1" for r in again), rows
    finally:
        fleet.stop_all()


def test_an_instance_whose_database_session_dies_drops_everything_and_rejoins(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    fleet = Fleet(tmp_path, broker, database, timing="  heartbeat: 500ms\n  lease: 2s\n")
    try:
        split = fleet.split("c0", "c1")
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM fleet_members WHERE instance = 'c0'"
            )  # its locks go with its session: c0 must stop taking its partitions' input
        c0 = fleet.procs["c0"]
        c0.wait_for(
            lambda: c0.metric("batond_fleet_ownership_changes_total", {"change": "dropped"})
            == len(split["c0"]),
            30, "c0 to drop its partitions",
        )  # fmt: skip
        assert "database session lost" in c0.log()
        wait_until(lambda: balanced(fleet, {"c0", "c1"}), 60, "c0 back with its share")
        assert c0.get("/api/v1/fleet").json()["state"] == "connected"
    finally:
        fleet.stop_all()


def test_a_batch_in_flight_to_a_killed_owner_is_decided_by_the_next(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    """The broker delivered the batch to the owner, which never acknowledged it (stopped,
    then SIGKILLed): the partition's session gives it to the next owner."""
    fleet = Fleet(tmp_path, broker, database, timing="  heartbeat: 500ms\n  lease: 2s\n")
    try:
        split = fleet.split("c0", "c1")
        c0 = fleet.procs["c0"]
        c0.signal(signal.SIGSTOP)  # it holds its locks (its session is up) but reads nothing
        publish_batch(broker, host_in(min(split["c0"])), 97.0)
        c0.kill()  # the batch went to its socket; no PUBACK ever came
        survivor = fleet.procs["c1"]
        survivor.wait_for(lambda: decisions_of(survivor) == 1.0, 30, "the next owner's decision")
    finally:
        fleet.stop_all()


FLAKY_RULES = """
rules:
  - name: flaky
    match: {metric: err}
    when: value > 90
    run: noop
    limits: {per_target: {count: 1, per: 10m}}
playbooks:
  - name: noop
    steps:
      - {name: pause, action: wait, with: {duration: 0s}}
"""


def circuit_checkpointed(database: str, partition: int, host: str) -> bool:
    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT state FROM fleet_checkpoints WHERE partition = %s", (partition,)
        ).fetchone()
    circuits = orjson.loads(bytes(row[0])).get("scopes", {}).get("circuits", []) if row else []
    return ["flaky", f"host={host}"] in [c[:2] for c in circuits]


def open_circuits(proc: DaemonProcess) -> list[tuple[str, str]]:
    status = proc.get("/api/v1/status").json()
    return [(c["rule"], c["key"]) for c in status["open_circuits"]]


def test_an_open_circuit_of_a_host_moves_with_its_partition(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    fleet = Fleet(tmp_path, broker, database, timing="  heartbeat: 500ms\n  lease: 2s\n")
    fleet.rules = FLAKY_RULES
    try:
        split = fleet.split("c0", "c1")
        partition = min(split["c0"])
        host = host_in(partition)
        owner = fleet.procs["c0"]
        publish_batch(broker, host, 95.0, metric="err")  # the one run per_target allows
        owner.wait_for(lambda: decisions_of(owner, "flaky") == 1.0, 30, "the run")
        publish_batch(broker, host, 10.0, metric="err")  # resolved
        publish_batch(broker, host, 96.0, metric="err")  # again: the budget is spent
        owner.wait_for(lambda: ("flaky", f"host={host}") in open_circuits(owner), 30,
                       "the circuit to open on the owner")  # fmt: skip
        wait_until(lambda: circuit_checkpointed(database, partition, host), 5, "it saved")
        owner.kill()
        survivor = fleet.procs["c1"]
        assert ("flaky", f"host={host}") not in open_circuits(survivor)
        survivor.wait_for(lambda: ("flaky", f"host={host}") in open_circuits(survivor), 30,
                          "the circuit on the new owner")  # fmt: skip
        assert "1 open circuits" in survivor.log()
        # and it holds there: the host's next firing is suppressed, not run
        publish_batch(broker, host, 10.0, metric="err")
        publish_batch(broker, host, 97.0, metric="err")
        suppressed = {"rule": "flaky", "result": "circuit_open"}
        survivor.wait_for(lambda: survivor.metric("batond_decisions_total", suppressed), 30,
                          "the new owner's suppression")  # fmt: skip
        assert decisions_of(survivor, "flaky") == 0.0
    finally:
        fleet.stop_all()

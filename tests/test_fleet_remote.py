"""``remote`` steps end to end: a central ``batond run`` (PostgreSQL journal, a private
database per run) and an agent ``batond run`` on a real Mosquitto. A central rule fires
on a sample in the agent's batch; its playbook's ``remote`` step has the agent run its
own local playbook and ends with the agent's signed outcome (docs/fleet.md#remote-steps).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from batond.fleet.signing import new_nonce, open_message, seal
from daemon_proc import DaemonProcess, write_config
from mqtt_broker import Mosquitto, Subscriber
from support import free_port, pg_database, wait_until
from test_fleet_central import PARTITIONS, PREFIX, host_in, publish_batch

AGENT_KEY = b"0123456789abcdef-remote-agent-key"
GHOST_KEY = b"0123456789abcdef-ghost-host-key"
HOST = host_in(3)
GHOST = "ghost-01"  # a host central has a key for, where the test plays the agent

CENTRAL_RULES = """
rules:
  - name: web-hot
    match: {metric: cpu}
    when: value > 90
    run: fix-web
  - name: web-broken
    match: {metric: disk}
    when: value > 90
    run: break-web
playbooks:
  - name: fix-web
    steps:
      - name: far
        action: remote
        timeout: 60s
        with: {host: "{{ labels.host }}", playbook: fix, params: {what: "cpu {{ value }}"}}
      - name: after
        action: assert
        with: {that: 'steps.far.outcome == "succeeded" and steps.far.run > 0'}
  - name: break-web
    steps:
      - name: far
        action: remote
        timeout: TIMEOUT
        with: {host: "{{ labels.host }}", playbook: broken}
"""
AGENT_PLAYBOOKS = """
playbooks:
  - name: fix
    params: {what: nothing}
    steps:
      - name: note
        action: exec
        with: {argv: [sh, -c, 'echo "$1" >> "$2"', sh, "{{ params.what }}", OUT]}
  - name: broken
    steps:
      - {name: fail, action: exec, with: {argv: ["false"]}}
"""


@pytest.fixture
def database() -> Iterator[str]:
    """One per test: each reads the runs of its own central instance."""
    with pg_database() as url:
        yield url


def start_central(root: Path, broker: Mosquitto, database: str, timeout: str) -> DaemonProcess:
    folder = root / "central"
    (folder / "keys").mkdir(parents=True)
    (folder / "keys" / f"{HOST}.key").write_bytes(AGENT_KEY + b"\n")
    (folder / "keys" / f"{GHOST}.key").write_bytes(GHOST_KEY + b"\n")
    port = free_port()
    extra = (
        f"mqtt:\n  url: {broker.url}\n"
        f"fleet:\n  role: central\n  database: {database}\n  prefix: {PREFIX}\n"
        f"  partitions: {PARTITIONS}\n  instance: c0\n  keys_dir: keys\n"
        "  heartbeat: 500ms\n  lease: 2s\n"
    )
    rules = CENTRAL_RULES.replace("TIMEOUT", timeout)
    proc = DaemonProcess(write_config(folder, port, rules=rules, extra=extra), port)
    return proc


def start_agent(root: Path, broker: Mosquitto) -> DaemonProcess:
    folder = root / "agent"
    folder.mkdir()
    (folder / "agent.key").write_bytes(AGENT_KEY + b"\n")
    extra = (
        f"mqtt:\n  url: {broker.url}\n"
        f"fleet:\n  role: agent\n  host: {HOST}\n  prefix: {PREFIX}\n"
        f"  partitions: {PARTITIONS}\n  batch_interval: 300ms\n  key_file: agent.key\n"
    )
    rules = AGENT_PLAYBOOKS.replace("OUT", str(folder / "out.txt"))
    port = free_port()
    return DaemonProcess(write_config(folder, port, rules=rules, extra=extra), port)


def ended_run(database: str, rule: str) -> tuple[Any, ...] | None:
    with psycopg.connect(database, autocommit=True) as conn:
        return conn.execute(
            "SELECT id, outcome FROM runs WHERE rule = %s AND outcome IS NOT NULL"
            " AND instance = 'c0' ORDER BY id LIMIT 1",
            (rule,),
        ).fetchone()


def remote_step(database: str, run_id: int) -> tuple[str, dict[str, Any]]:
    with psycopg.connect(database, autocommit=True) as conn:
        row = conn.execute(
            "SELECT status, detail FROM steps WHERE run_id = %s AND action = 'remote'",
            (run_id,),
        ).fetchone()
    assert row is not None
    return row[0], orjson.loads(row[1]) if row[1] else {}


def owns_everything(central: DaemonProcess) -> bool:
    view = central.get("/api/v1/fleet").json()
    return len(view["held"]) == PARTITIONS


def test_a_central_remote_step_runs_the_agents_playbook_and_ends_with_its_outcome(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    central = start_central(tmp_path, broker, database, "60s")
    agent = start_agent(tmp_path, broker)
    try:
        central.wait_ready()
        agent.wait_ready()
        central.wait_for(lambda: owns_everything(central), 60, "c0 holding every partition")
        agent.wait_for(lambda: agent.metric("batond_mqtt_connected") == 1, what="agent MQTT")
        posted = agent.post("/api/v1/events", {"metric": "cpu", "value": 99, "host": HOST})
        assert posted.status == 202, posted.text
        run = wait_until(lambda: ended_run(database, "web-hot"), 90, "central's run to end")
        assert run[1] == "succeeded"
        status, detail = remote_step(database, run[0])
        result = detail["result"]
        assert (status, result["outcome"], result["host"]) == ("ok", "succeeded", HOST)
        assert (tmp_path / "agent" / "out.txt").read_text() == "cpu 99.0\n"
        # the agent's own journal has the run central was told about
        theirs = agent.get(f"/api/v1/runs/{result['run']}").json()
        assert (theirs["rule"], theirs["playbook"]) == ("remote-request", "fix")
        assert theirs["outcome"] == "succeeded"
        assert central.metric("batond_fleet_remote_steps_total", {"outcome": "succeeded"}) == 1

        # an agent playbook that fails makes the remote step fail
        agent.post("/api/v1/events", {"metric": "disk", "value": 99, "host": HOST})
        broken = wait_until(lambda: ended_run(database, "web-broken"), 90, "the failing run")
        assert broken[1] == "failed"
        status, detail = remote_step(database, broken[0])
        assert (status, detail["result"]["outcome"]) == ("failed", "failed")
        assert detail["result"]["run_outcome"] == "failed"
        assert f"the agent {HOST} reported failed" in detail["detail"]
        assert central.metric("batond_fleet_remote_steps_total", {"outcome": "failed"}) == 1
    finally:
        agent.stop()
        central.stop()


def test_a_forged_outcome_is_refused_and_logged_while_the_step_times_out(
    tmp_path: Path, broker: Mosquitto, database: str
) -> None:
    """The test plays the agent of ``ghost-01``, answering with the wrong key."""
    requests = f"{PREFIX}/requests/{GHOST}"
    fake = Subscriber(broker, (requests,), "test-ghost-agent")
    central = start_central(tmp_path, broker, database, "8s")
    try:
        central.wait_ready()
        central.wait_for(lambda: owns_everything(central), 60, "c0 holding every partition")
        central.wait_for(lambda: central.metric("batond_mqtt_connected") == 1, what="MQTT")
        publish_batch(broker, GHOST, 99.0, metric="disk")
        payload = wait_until(lambda: fake.on(requests), 60, "central's request")[0]
        signed = open_message(payload, GHOST_KEY)
        assert signed is not None and signed.authentic  # central signed it with ghost's key
        assert (signed.fields["playbook"], signed.fields["instance"]) == ("broken", "c0")
        assert abs(signed.fields["ts"] - time.time()) < 60 and len(signed.fields["nonce"]) == 32
        forged = {
            "v": 1, "id": signed.fields["id"], "host": GHOST, "run": 1, "outcome": "succeeded",
            "reason": "", "detail": "", "run_outcome": "succeeded", "ts": time.time(),
            "nonce": new_nonce(),
        }  # fmt: skip
        fake.publish(f"{PREFIX}/outcomes/{GHOST}", seal(b"not-the-key-of-ghost-01-at-all", forged))
        refused = {"reason": "bad_signature"}
        central.wait_for(
            lambda: central.metric("batond_fleet_outcomes_refused_total", refused) == 1,
            30, "the forged report refused",
        )  # fmt: skip
        run = wait_until(lambda: ended_run(database, "web-broken"), 60, "the run to end")
        assert run[1] == "failed"
        status, detail = remote_step(database, run[0])
        assert status == "timed_out", (status, detail)
        log = central.log()
        assert f"outcome report {signed.fields['id']} on host {GHOST} refused: bad_signature" in log
        assert f"remote request {signed.fields['id']} to {GHOST}: no outcome report" in log
        unanswered = central.metric("batond_fleet_remote_steps_total", {"outcome": "unanswered"})
        assert unanswered == 1
    finally:
        central.stop()
        fake.close()

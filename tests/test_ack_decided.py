"""At-least-once intake through a real ``batond run``: input is acknowledged only once
its decision is journaled, so a SIGKILL before that loses nothing.

The window between intake and journaling is held open deterministically: the
test takes the SQLite journal's write lock (``BEGIN IMMEDIATE`` from its own
connection), so the daemon's writer waits (``busy_timeout``, 5 s). It sends
the input, sees it taken but not acknowledged, SIGKILLs the daemon, releases
the lock and starts it again: the input must be decided exactly once.
The daemon runs in shadow mode: decisions are recorded, nothing executes
(the test is about intake, and no run's write-ahead then waits on the loop).
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiomqtt
import orjson

from daemon_proc import DaemonProcess, HttpResult, http, write_config
from mqtt_broker import Mosquitto
from support import free_port

RULES = """
rules:
  - name: ack-test
    match: {event: ack.test}
    group_by: [seq]
    run: noop
playbooks:
  - name: noop
    steps:
      - {name: nothing, action: exec, with: {argv: ["true"]}}
"""


def mqtt_config(tmp: Path, port: int, broker: Mosquitto) -> Path:
    extra = (
        "mode: shadow\n"
        f"mqtt:\n  url: {broker.url}\n  client_id: batond-ack-e2e\n"
        "  subscribe:\n    - {topic: 'metrics/#', format: json, qos: 1}\n"
    )
    return write_config(tmp, port, rules=RULES, extra=extra)


def start(config: Path, port: int) -> DaemonProcess:
    daemon = DaemonProcess(config, port)
    daemon.wait_ready()
    return daemon


def decided(daemon: DaemonProcess) -> list[str]:
    """The ``seq`` label of every decision of the rule, in the order they were made."""
    got = daemon.get("/api/v1/decisions?rule=ack-test&limit=1000").json()["decisions"]
    return [d["labels"]["seq"] for d in reversed(got)]


class JournalLock:
    """The journal's write lock, held from the test's own connection."""

    def __init__(self, state: Path) -> None:
        self._conn = sqlite3.connect(state / "journal.db", isolation_level=None, timeout=10)

    def __enter__(self) -> JournalLock:
        self._conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, *_: object) -> None:
        self._conn.execute("ROLLBACK")
        self._conn.close()


def publish(port: int, seq: int) -> None:
    async def go() -> None:
        async with aiomqtt.Client("127.0.0.1", port) as pub:
            body = orjson.dumps({"event": "ack.test", "seq": str(seq)})
            await pub.publish("metrics/ack", body, qos=1)

    asyncio.run(go())


def mqtt_received(daemon: DaemonProcess) -> float:
    return daemon.metric("batond_events_received_total", {"source": "mqtt"}) or 0.0


def test_a_qos1_message_not_yet_journaled_is_delivered_again_after_sigkill(
    tmp_path: Path, broker: Mosquitto
) -> None:
    port = free_port()
    config = mqtt_config(tmp_path, port, broker)
    daemon = start(config, port)
    try:
        daemon.wait_for(lambda: daemon.metric("batond_mqtt_connected") == 1, what="MQTT")
        publish(broker.port, 0)  # one decided in the ordinary way first
        daemon.wait_for(lambda: decided(daemon) == ["0"], what="the first decision")
        daemon.wait_for(lambda: daemon.metric("batond_mqtt_unacked") == 0, what="its ack")
        with JournalLock(tmp_path / "state"):
            publish(broker.port, 1)
            daemon.wait_for(lambda: mqtt_received(daemon) == 2, what="the message taken")
            assert daemon.metric("batond_mqtt_unacked") == 1  # taken, not acknowledged
            daemon.kill()
    finally:
        daemon.kill()
    daemon = start(config, port)
    try:
        daemon.wait_for(lambda: decided(daemon) == ["0", "1"], what="the redelivered decision")
        publish(broker.port, 2)  # after everything the session still owed
        daemon.wait_for(lambda: decided(daemon) == ["0", "1", "2"], what="the last decision")
        daemon.wait_for(lambda: daemon.metric("batond_mqtt_unacked") == 0, what="all acks")
    finally:
        assert daemon.stop() == 0


def post_event(daemon: DaemonProcess, seq: int) -> HttpResult:
    body = orjson.dumps({"event": "ack.test", "seq": str(seq)})
    return http("POST", daemon.url + "/api/v1/events", body=body, timeout=60)


def test_http_ack_decided_answers_once_journaled_and_a_killed_request_is_retried(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = write_config(
        tmp_path, port, rules=RULES, http_extra="ack: decided", extra="mode: shadow\n"
    )
    daemon = start(config, port)
    try:
        assert post_event(daemon, 0).status == 202
        assert decided(daemon) == ["0"]  # journaled before the answer: no wait needed
        with JournalLock(tmp_path / "state"), ThreadPoolExecutor(1) as pool:
            request = pool.submit(post_event, daemon, 1)
            daemon.wait_for(
                lambda: daemon.metric("batond_events_received_total", {"source": "http"}) == 2,
                what="the event queued",
            )
            assert not request.done()  # queued, decided perhaps, not journaled: no answer
            daemon.kill()
            assert request.exception(30) is not None  # the client got no 2xx at all
    finally:
        daemon.kill()
    daemon = start(config, port)
    try:
        assert decided(daemon) == ["0"]  # what the kill took was never journaled
        assert post_event(daemon, 1).status == 202  # the client sends it again
        assert decided(daemon) == ["0", "1"]  # decided once
    finally:
        assert daemon.stop() == 0


def publish_many(port: int, seqs: range) -> None:
    async def go() -> None:
        async with aiomqtt.Client("127.0.0.1", port) as pub:
            for seq in seqs:
                body = orjson.dumps({"event": "ack.test", "seq": str(seq)})
                await pub.publish("metrics/ack", body, qos=1)

    asyncio.run(go())


def test_across_a_broker_restart_every_message_is_decided_once(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Messages taken, not yet acknowledged when the broker goes away, are delivered again
    by the restarted broker: batond knows them and decides each once."""
    port = free_port()
    config = mqtt_config(tmp_path, port, broker)
    daemon = start(config, port)
    try:
        daemon.wait_for(lambda: daemon.metric("batond_mqtt_connected") == 1, what="MQTT")
        with JournalLock(tmp_path / "state"):
            publish_many(broker.port, range(100))
            daemon.wait_for(lambda: mqtt_received(daemon) == 100, what="100 taken")
            assert daemon.metric("batond_mqtt_unacked") == 100
            broker.stop()
            daemon.wait_for(lambda: daemon.metric("batond_mqtt_connected") == 0, what="gone")
        daemon.wait_for(lambda: len(decided(daemon)) == 100, what="100 decided")
        broker.start()
        daemon.wait_for(
            lambda: daemon.metric("batond_mqtt_redelivered_total") == 100, what="redelivered"
        )
        daemon.wait_for(lambda: daemon.metric("batond_mqtt_unacked") == 0, what="acked")
        publish_many(broker.port, range(100, 200))
        daemon.wait_for(lambda: len(decided(daemon)) >= 200, what="200 decided")
        publish(broker.port, 200)  # after anything still owed
        daemon.wait_for(lambda: "200" in decided(daemon), what="the marker")
        assert decided(daemon) == [str(i) for i in range(201)]  # each once, in order
        assert mqtt_received(daemon) == 201
    finally:
        assert daemon.stop() == 0

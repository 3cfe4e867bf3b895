"""The real daemon's lifecycle: sd_notify, reload (good and broken), stop, bad config."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_proc import BATOND, DaemonProcess, write_config
from support import free_port

#: the shipped unit's TimeoutStopSec: a stop must end well before systemd gives up
UNIT_STOP_TIMEOUT_S = 45.0

RULES = """
rules:
  - name: first
    match: {event: one}
    run: noop
playbooks:
  - name: noop
    steps:
      - {name: nothing, action: exec, with: {argv: ["true"]}}
"""
TWO_RULES = RULES.replace(
    "playbooks:", "  - name: second\n    match: {event: two}\n    run: noop\nplaybooks:"
)
BROKEN_RULES = RULES.replace("match: {event: one}", "match: {event: one}\n    when: value >")
SLOW_RULES = """
rules:
  - name: slow
    match: {event: slow}
    run: sleeper
playbooks:
  - name: sleeper
    steps:
      - {name: nap, action: exec, with: {argv: [sleep, "600"]}, timeout: 15m}
"""


class NotifyListener:
    """A datagram socket standing in for systemd's; collects what the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.address = str(path)
        self.messages: list[tuple[float, list[str]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append((time.monotonic(), data.decode().split("\n")))
                self._cond.notify_all()

    def lines(self) -> list[str]:
        with self._cond:
            return [line for _, msg in self.messages for line in msg]

    def wait_for(self, line: str, after: int = 0, timeout: float = 60.0) -> int:
        """Index (in messages) of the first message at or after ``after`` holding ``line``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, (_, msg) in enumerate(self.messages[after:], start=after):
                    if line in msg:
                        return i
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {line!r} after #{after}: {self.messages}")
                self._cond.wait(left)

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    n = NotifyListener(tmp_path / "notify.sock")
    yield n
    n.close()


def start(tmp_path: Path, rules: str = RULES, **env: str) -> DaemonProcess:
    port = free_port()
    return DaemonProcess(write_config(tmp_path, port, rules=rules), port, env=env or None)


def rule_names(d: DaemonProcess) -> list[str]:
    return [r["name"] for r in d.get("/api/v1/rules").json()["rules"]]


def test_notify_protocol_of_a_real_daemon(tmp_path: Path, listener: NotifyListener) -> None:
    d = start(tmp_path, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="1000000")
    try:
        ready = listener.wait_for("READY=1")
        # READY=1 only once everything serves: the API answers ready at once
        assert d.get("/readyz").status == 200
        before = [line for _, msg in listener.messages[:ready] for line in msg]
        assert any(line.startswith("STATUS=") for line in before), before
        ready_msg = listener.messages[ready][1]
        assert any(line.startswith("STATUS=enforce") for line in ready_msg), ready_msg

        # WATCHDOG=1 every WATCHDOG_USEC/2 = 0.5 s, from the running daemon
        first = listener.wait_for("WATCHDOG=1", after=ready + 1)
        listener.wait_for("WATCHDOG=1", after=first + 1)

        # SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again
        mark = len(listener.messages)
        d.signal(signal.SIGHUP)
        reloading = listener.wait_for("RELOADING=1", after=mark)
        msg = listener.messages[reloading][1]
        usec = [line for line in msg if line.startswith("MONOTONIC_USEC=")]
        assert usec and abs(int(usec[0].split("=")[1]) / 1e6 - time.monotonic()) < 60
        listener.wait_for("READY=1", after=reloading + 1)

        # SIGTERM: STOPPING=1, then exit 0
        mark = len(listener.messages)
        assert d.stop() == 0, d.log()
        listener.wait_for("STOPPING=1", after=mark, timeout=5)
    finally:
        d.kill()


def test_sighup_with_a_broken_rule_file_keeps_the_old_rules(tmp_path: Path) -> None:
    d = start(tmp_path)
    try:
        d.wait_ready()
        assert rule_names(d) == ["first"]
        errors_before = d.metric("batond_reloads_total", {"result": "error"})
        assert errors_before == 0.0

        rule_file = tmp_path / "rules" / "rules.yaml"
        rule_file.write_text(BROKEN_RULES.lstrip())
        d.signal(signal.SIGHUP)
        d.wait_for(
            lambda: d.metric("batond_reloads_total", {"result": "error"}) == 1.0,
            what="the rejected reload to be counted",
        )
        assert rule_names(d) == ["first"]
        assert d.get("/readyz").status == 200
        assert d.metric("batond_rules_loaded") == 1.0
        assert f"{rule_file}:" in d.log()  # the problem is logged with its place

        rule_file.write_text(TWO_RULES.lstrip())
        d.signal(signal.SIGHUP)
        d.wait_for(
            lambda: d.metric("batond_reloads_total", {"result": "ok"}) == 1.0,
            what="the good reload",
        )
        assert rule_names(d) == ["first", "second"]
        assert d.metric("batond_rules_loaded") == 2.0
        assert d.metric("batond_reloads_total", {"result": "error"}) == 1.0
        assert d.stop() == 0, d.log()
    finally:
        d.kill()


@pytest.mark.slow
def test_sigterm_exits_0_within_the_grace_and_records_the_rest(tmp_path: Path) -> None:
    d = start(tmp_path, rules=SLOW_RULES)
    try:
        d.wait_ready()
        assert d.post("/api/v1/events", {"event": "slow", "host": "h"}).status == 202
        d.wait_for(
            lambda: any(r["state"] == "running" for r in d.get("/api/v1/runs").json()["runs"]),
            what="the slow run to start",
        )
        began = time.monotonic()
        assert d.stop(timeout=UNIT_STOP_TIMEOUT_S + 15) == 0, d.log()
        took = time.monotonic() - began
        assert took < UNIT_STOP_TIMEOUT_S, f"stop took {took:.1f}s"
    finally:
        d.kill()
    # the step that did not finish in the grace period was recorded, not lost
    d2 = DaemonProcess(d.config, d.port)
    try:
        d2.wait_ready()
        runs = d2.get("/api/v1/runs").json()["runs"]
        assert [r["outcome"] for r in runs if r["playbook"] == "sleeper"][-1] == "interrupted"
        assert d2.stop() == 0
    finally:
        d2.kill()


def run_to_exit(config: Path, timeout: float = 60.0) -> tuple[int, str]:
    import subprocess

    done = subprocess.run(
        [BATOND, "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"},
    )
    return done.returncode, done.stderr


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_a_broken_config_never_starts(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port, rules=RULES, extra="bogus: 1\n")
    text = config.read_text().replace("interval: 1s", "interval: 5")
    config.write_text(text)
    interval_line = text.splitlines().index("  interval: 5") + 1
    code, err = run_to_exit(config)
    assert code == 1
    # every problem, each at its place
    assert err.splitlines() == [
        f"{config}:{interval_line}:13: invalid duration '5': expected <integer><unit>..."
        " with units ms, s, m, h, d",
        f"{config}:{interval_line + 1}:1: unknown key 'bogus'",
    ]
    assert "Traceback" not in err
    assert port_is_free(port)
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


def test_a_broken_rule_file_never_starts(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port, rules=BROKEN_RULES)
    code, err = run_to_exit(config)
    assert code == 1
    rule_file = tmp_path / "rules" / "rules.yaml"
    assert err.startswith(f"{rule_file}:"), err
    assert "Traceback" not in err
    assert port_is_free(port)


def test_sigint_also_stops_cleanly(tmp_path: Path) -> None:
    d = start(tmp_path)
    try:
        d.wait_ready()
        d.signal(signal.SIGINT)
        assert d.proc.wait(UNIT_STOP_TIMEOUT_S) == 0, d.log()
    finally:
        d.kill()


def test_a_component_that_cannot_start_means_no_ready_and_exit_1(
    tmp_path: Path, listener: NotifyListener
) -> None:
    with socket.socket() as taken:  # someone else listens on the configured port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, port, rules=RULES)
        d = DaemonProcess(config, port, env={"NOTIFY_SOCKET": listener.address})
        try:
            assert d.proc.wait(60) == 1, d.log()
        finally:
            d.kill()
    assert "address already in use" in d.log()
    listener.wait_for("STOPPING=1", timeout=10)
    assert "READY=1" not in listener.lines()


def test_a_request_stuck_in_progress_does_not_hold_up_the_stop(tmp_path: Path) -> None:
    d = start(tmp_path)
    try:
        d.wait_ready()
        with socket.create_connection(("127.0.0.1", d.port)) as slow:
            # a client that sends half of its body and then nothing: its handler waits
            slow.sendall(
                b"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000\r\n\r\n[{"
            )
            time.sleep(0.5)  # (let the handler start reading the body)
            began = time.monotonic()
            assert d.stop(timeout=UNIT_STOP_TIMEOUT_S + 15) == 0, d.log()
            took = time.monotonic() - began
        # aiohttp would wait 60 s for it by default, more than systemd's stop timeout allows
        assert took < 30, f"stop took {took:.1f}s"
    finally:
        d.kill()


def test_sighup_rereads_the_config_and_keeps_it_when_broken(tmp_path: Path) -> None:
    d = start(tmp_path)
    try:
        d.wait_ready()
        assert d.get("/api/v1/status").json()["mode"] == "enforce"
        config = tmp_path / "batond.yaml"
        good = config.read_text()

        config.write_text(good + "mode: shadow\n")
        d.signal(signal.SIGHUP)
        d.wait_for(
            lambda: d.get("/api/v1/status").json()["mode"] == "shadow",
            what="the new mode from the re-read config",
        )

        config.write_text(good + "mode: enforce\nbogus_key: 1\n")
        d.signal(signal.SIGHUP)
        d.wait_for(
            lambda: d.metric("batond_reloads_total", {"result": "error"}) == 1.0,
            what="the broken config to be rejected",
        )
        assert d.get("/api/v1/status").json()["mode"] == "shadow"  # the running one kept
        assert f"{config}:" in d.log() and "unknown key 'bogus_key'" in d.log()
        assert d.stop() == 0, d.log()
    finally:
        d.kill()


def saved_rule_state(db: Path) -> bytes:
    """The engine state the daemon last committed (read-only, beside the running daemon)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT value FROM kv WHERE name = 'rule_state'").fetchone()
    return bytes(row[0]) if row else b""


FOR_RULE = """
rules:
  - name: hot
    match: {metric: temp}
    when: value > 90
    for: 3s
    run: noop
playbooks:
  - name: noop
    steps:
      - {name: pause, action: wait, with: {duration: 0s}}
"""


def test_a_pending_for_timer_survives_sigkill(tmp_path: Path) -> None:
    d = start(tmp_path, rules=FOR_RULE)
    try:
        d.wait_ready()
        first = time.time()
        assert d.post("/api/v1/events", {"metric": "temp", "value": 95, "host": "h1"}).status == 202
        # the timer is pending (no decision yet); wait until its state has been saved
        d.wait_for(
            lambda: d.metric("batond_events_received_total", {"source": "http"}) == 1.0,
            what="the sample to be taken in",
        )
        d.wait_for(
            lambda: b'"h1"' in saved_rule_state(tmp_path / "state" / "journal.db"),
            what="the pending timer to be saved (changed rule state is saved each second)",
        )
        assert d.metric("batond_decisions_total", {"rule": "hot", "result": "run"}) is None
        d.proc.kill()
        d.proc.wait()
    finally:
        d.kill()
    d2 = DaemonProcess(d.config, d.port)
    try:
        d2.wait_ready()
        # no new sample: the restored timer alone fires, 3 s after the first true sample
        incidents = d2.wait_for(
            lambda: d2.get("/api/v1/incidents").json()["incidents"],
            timeout=30,
            what="the restored for: timer to fire",
        )
        assert [(i["rule"], i["key"]) for i in incidents] == [("hot", "host=h1")]
        assert incidents[0]["opened_at"] >= first + 3.0
        assert d2.stop() == 0, d2.log()
    finally:
        d2.kill()


def test_a_stop_saves_the_hosts_seen_apart_from_the_rule_state(tmp_path: Path) -> None:
    d = start(tmp_path, rules=FOR_RULE)
    try:
        d.wait_ready()
        assert d.post("/api/v1/events", {"metric": "temp", "value": 50, "host": "h7"}).status == 202
        d.wait_for(
            lambda: d.metric("batond_events_received_total", {"source": "http"}) == 1.0,
            what="the sample to be taken in",
        )
        assert d.stop() == 0, d.log()
    finally:
        d.kill()
    db = tmp_path / "state" / "journal.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        hosts = conn.execute("SELECT value FROM kv WHERE name = 'hosts_seen'").fetchone()
    assert hosts is not None and b'"h7"' in bytes(hosts[0])
    assert b"hosts_seen" not in saved_rule_state(db)  # not rewritten after each decision


QUEUE_OF_ONE = """
rules:
  - {name: a, match: {event: a}, run: gated}
  - {name: b, match: {event: b}, run: gated}
  - {name: c, match: {event: c}, run: gated}
playbooks:
  - name: gated
    mode: queued
    max: 1
    steps:
      - {name: hold, action: approval, timeout: 60s}
"""


def test_a_run_the_runner_refuses_does_not_leave_its_incident_open(tmp_path: Path) -> None:
    d = start(tmp_path, rules=QUEUE_OF_ONE)
    try:
        d.wait_ready()
        for name in ("a", "b", "c"):  # a runs, b waits in the queue of one, c is refused
            assert d.post("/api/v1/events", {"event": name, "host": "h"}).status == 202
            d.wait_for(
                lambda n=name: any(
                    i["rule"] == n for i in d.get("/api/v1/incidents").json()["incidents"]
                ),
                what=f"the incident of rule {name}",
            )

        def states() -> dict[str, str]:
            return {i["rule"]: i["state"] for i in d.get("/api/v1/incidents").json()["incidents"]}

        # no run will ever end for c: its incident (resolved only by a run) must not stay open
        d.wait_for(lambda: states().get("c") == "resolved", what="c's incident to resolve")
        assert states()["a"] == "open" and states()["b"] == "open"
        assert d.stop() == 0, d.log()
    finally:
        d.kill()

"""Incidents never wedge (issue 11, observations 1 and 2), on a real ``batond run``.

1. The shipped demo worker, killed until its restart budget is spent: the suppressed
   restart is a WARNING, a metric and a notification; later exits are decided again
   (and recorded); ``batond circuit reset`` re-decides the held-back incident and the
   worker comes back. A reload that changes the rule, and a resume, re-decide too.
2. An event rule without ``resolve:`` whose run fails: every later event is decided
   again, each one recorded; an operator closes the incident (CLI and API);
   ``resolve_after:`` closes one after a quiet period.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon_proc import DaemonProcess, write_config
from incident_support import (
    cli,
    decisions,
    done_runs,
    incident,
    incidents,
    receiver,
    runs,
    send,
)
from support import free_port

TOKEN = "wedge-t0ken"
SHIPPED = Path(__file__).resolve().parents[1] / "rules"


def _workers(name: str) -> list[int]:
    """Pids of live processes whose argv[0] is ``name`` (zombies count as dead)."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmdline = p.info["cmdline"] or []
        if cmdline and cmdline[0] == name and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p.pid)
    return found


def _kill_all(name: str) -> None:
    for pid in _workers(name):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _shipped_rules(folder: Path, name: str) -> None:
    """The shipped default rules and playbooks, for a worker of this test's own name
    (so that no other test's worker is touched) and a cooldown of 1 s (not 10 s)."""
    rules = folder / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    host = (SHIPPED / "host.yaml").read_text().replace("batond-demo-worker", name)
    assert "cooldown: 10s" in host
    (rules / "host.yaml").write_text(host.replace("cooldown: 10s", "cooldown: 1s"))
    playbooks = (SHIPPED / "playbooks.yaml").read_text().replace("batond-demo-worker", name)
    (rules / "playbooks.yaml").write_text(playbooks)


@pytest.fixture
def worker_name() -> Iterator[str]:
    name = f"bd-wedge-{os.getpid()}"
    try:
        yield name
    finally:
        _kill_all(name)


def _resolved(d: DaemonProcess, rule: str) -> bool:
    found = incidents(d, rule)
    return bool(found) and all(i["state"] == "resolved" for i in found)


def _cooldown_passed(d: DaemonProcess, rule: str, cooldown: float) -> bool:
    started = [r["started_at"] or r["created_at"] for r in runs(d, rule)]
    return not started or time.time() - max(started) > cooldown + 0.3


def test_a_spent_restart_budget_is_loud_and_a_reset_brings_the_worker_back(
    tmp_path: Path, worker_name: str
) -> None:
    name, rule = worker_name, "demo-worker-down"
    with receiver() as hook:
        port = free_port()
        config = write_config(
            tmp_path, port, token=TOKEN, host_extra=f"processes: [{name}]",
            extra=f"notify:\n  url: {hook.url}\n",
        )  # fmt: skip
        _shipped_rules(tmp_path, name)
        d = DaemonProcess(config, port)
        try:
            d.wait_ready()
            # at start no worker runs: the first restart of the hour brings it up
            (pid,) = d.wait_for(lambda: _workers(name), what="the worker started by batond")
            d.wait_for(lambda: _resolved(d, rule), what="the first incident to resolve")
            for restart in (2, 3):
                d.wait_for(lambda: _cooldown_passed(d, rule, 1.0), what="the cooldown")
                os.kill(pid, signal.SIGKILL)
                (pid,) = d.wait_for(
                    lambda old=pid: [p for p in _workers(name) if p != old],
                    what=f"restart {restart}",
                )
                d.wait_for(lambda: _resolved(d, rule), what=f"incident {restart} to resolve")
            d.wait_for(lambda: _cooldown_passed(d, rule, 1.0), what="the cooldown")
            os.kill(pid, signal.SIGKILL)  # the 4th restart of the hour: over per_target 3/h
            (held,) = d.wait_for(
                lambda: decisions(d, rule=rule, result="circuit_open"), what="circuit_open"
            )
            assert _workers(name) == []
            _assert_loud(d, hook.texts(), rule)

            # a later exit of the same process (a crash loop batond did not start) is
            # decided again and recorded on the same open incident
            exited = {"event": "process.exited", "name": name, "host": "test-node"}
            send(d, TOKEN, exited)
            again = d.wait_for(
                lambda: len(found := decisions(d, rule=rule, result="circuit_open")) == 2 and found,
                what="a second circuit_open decision",
            )
            assert {x["incident_id"] for x in again} == {held["incident_id"]}
            open_incident = incident(d, held["incident_id"])
            assert open_incident["state"] == "open"
            assert [x["result"] for x in open_incident["decisions"]][-2:] == ["circuit_open"] * 2

            # the diagnostics of the flapping rule ran: its budget is not the restart rule's
            assert decisions(d, rule="demo-worker-flapping", result="run")

            reset = cli(d, "circuit", "reset", "host=test-node")
            assert reset.returncode == 0, reset
            d.wait_for(lambda: _workers(name), what="the worker after the circuit reset")
            d.wait_for(lambda: _resolved(d, rule), what="the held-back incident to resolve")
            last = incident(d, held["incident_id"])["decisions"][-1]
            assert last["result"] == "run" and "circuit reset" in last["cause"], last
        finally:
            assert d.stop() == 0, d.log()


def _assert_loud(d: DaemonProcess, notes: list[str], rule: str) -> None:
    """The suppression that left the incident without a run: log, metric, notification."""
    lines = [line for line in d.log().splitlines() if line.startswith("WARNING")]
    assert any("circuit" in line and rule in line and "opened" in line for line in lines), lines
    assert any("circuit_open" in line and rule in line for line in lines), lines
    assert d.metric("batond_circuits_opened_total", {"rule": rule}) == 1.0
    without = d.metric(
        "batond_incidents_without_run_total", {"rule": rule, "reason": "circuit_open"}
    )
    assert without == 1.0
    d.wait_for(
        lambda: any(rule in n and "circuit" in n for n in notes) or None, what="a notification"
    )


LEVER_RULES = """
rules:
  - name: svc-down
    match: {event: svc.down}
    resolve: {match: {event: svc.up}}
    group_by: [svc]
    limits: {per_target: {count: COUNT, per: 1h}}
    run: restart
playbooks:
  - name: restart
    steps: [{name: s, action: exec, with: {argv: ["true"]}, timeout: 10s}]
"""


def _levers_daemon(tmp_path: Path) -> DaemonProcess:
    port = free_port()
    config = write_config(tmp_path, port, rules=LEVER_RULES.replace("COUNT", "1"), token=TOKEN)
    d = DaemonProcess(config, port)
    d.wait_ready()
    return d


def test_a_reload_that_changes_the_rule_and_a_resume_decide_held_incidents_again(
    tmp_path: Path,
) -> None:
    d = _levers_daemon(tmp_path)
    try:
        down = {"event": "svc.down", "svc": "db"}
        send(d, TOKEN, down)
        d.wait_for(lambda: done_runs(d, "svc-down", 1), what="the first run")
        send(d, TOKEN, down)  # still down: decided again, over its budget of 1 per hour
        d.wait_for(lambda: decisions(d, result="circuit_open"), what="circuit_open")
        assert cli(d, "reload").returncode == 0  # nothing changed: nothing re-decided
        assert len(decisions(d, rule="svc-down")) == 2

        rules = tmp_path / "rules" / "rules.yaml"
        rules.write_text(LEVER_RULES.replace("COUNT", "5"))
        assert cli(d, "reload").returncode == 0
        d.wait_for(lambda: done_runs(d, "svc-down", 2), what="the run the reload re-decided")
        last = decisions(d, rule="svc-down")[0]  # newest first
        assert last["result"] == "run" and "reload" in last["cause"], last

        assert cli(d, "pause").returncode == 0
        send(d, TOKEN, down)
        d.wait_for(lambda: decisions(d, result="paused"), what="a paused decision")
        assert cli(d, "resume").returncode == 0
        d.wait_for(lambda: done_runs(d, "svc-down", 3), what="the run the resume re-decided")
        assert "resume" in decisions(d, rule="svc-down")[0]["cause"]
        (only,) = incidents(d, "svc-down")  # one incident all along, never wedged
        assert only["state"] == "open"
    finally:
        assert d.stop() == 0, d.log()


RELEASE_RULES = """
rules:
  - {name: release, match: {event: release}, group_by: [service], run: deploy}
  - name: release-quiet
    match: {event: release2}
    group_by: [service]
    resolve_after: 1s
    run: deploy
playbooks:
  - name: deploy
    steps:
      - {name: go, action: exec, with: {argv: [sh, -c, "sleep 0.3; exit 1"]}, timeout: 10s}
"""


def _release_daemon(tmp_path: Path) -> DaemonProcess:
    port = free_port()
    d = DaemonProcess(write_config(tmp_path, port, rules=RELEASE_RULES, token=TOKEN), port)
    d.wait_ready()
    return d


def _of_key(d: DaemonProcess, key: str) -> list[dict[str, Any]]:
    return decisions(d, rule="release", key=key)


def test_every_event_of_a_failed_release_is_decided_and_an_operator_closes_it(
    tmp_path: Path,
) -> None:
    d = _release_daemon(tmp_path)
    try:
        for n in (1, 2, 3):  # one after the other: each is decided again, each runs
            send(d, TOKEN, {"event": "release", "service": "api"})
            d.wait_for(lambda n=n: done_runs(d, "release", n), what=f"run {n}")
        assert [r["outcome"] for r in runs(d, "release")] == ["failed"] * 3
        assert [x["result"] for x in _of_key(d, "service=api")] == ["run"] * 3
        (api,) = incidents(d, "release")
        assert api["state"] == "open" and len(incident(d, api["id"])["decisions"]) == 3

        closed = cli(d, "incidents", "resolve", str(api["id"]))
        assert closed.returncode == 0, closed
        assert incident(d, api["id"])["state"] == "resolved"
        assert incident(d, api["id"])["resolved_by"] == "operator"
        again = cli(d, "incidents", "resolve", str(api["id"]))
        assert again.returncode == 1 and "409" in again.stderr, again

        burst = [{"event": "release", "service": "web"}] * 3  # at once: one run at a time
        send(d, TOKEN, *burst)
        found = d.wait_for(lambda: len(x := _of_key(d, "service=web")) == 3 and x, what="3")
        assert sorted(x["result"] for x in found) == ["already_running", "already_running", "run"]
        web = found[0]["incident_id"]
        assert d.post(f"/api/v1/incidents/{web}/resolve").status == 401  # token-protected
        assert d.post(f"/api/v1/incidents/{web}/resolve", token=TOKEN).status == 200
        assert d.post("/api/v1/incidents/999999/resolve", token=TOKEN).status == 404
    finally:
        assert d.stop() == 0, d.log()


def test_resolve_after_closes_a_quiet_event_incident(tmp_path: Path) -> None:
    d = _release_daemon(tmp_path)
    try:
        send(d, TOKEN, {"event": "release2", "service": "api"})
        d.wait_for(lambda: done_runs(d, "release-quiet", 1), what="the failed run")
        (quiet,) = d.wait_for(
            lambda: [i for i in incidents(d, "release-quiet") if i["state"] == "resolved"],
            what="the quiet incident to close",
        )
        assert quiet["resolved_by"] == "resolve_after"
        assert quiet["resolved_at"] - quiet["opened_at"] >= 1.0
    finally:
        assert d.stop() == 0, d.log()

"""Every decision explained (issue 11, observation 7), on a real ``batond run``: one log
line per decision, run start and end, step failure, circuit and escalation, and none per
input; ``--log-level`` and ``log.format``; the decisions and incident endpoints; the
``batond incidents ID``, ``batond decisions`` and ``batond runs ID`` commands."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from daemon_proc import DaemonProcess, write_config
from incident_support import cli, decisions, done_runs, incident, incidents, send
from support import free_port

TOKEN = "explain-t0ken"

RULES = """
rules:
  - name: flaky
    match: {event: flaky}
    limits: {per_target: {count: 1, per: 1h}}
    run: fail-loud
  - {name: never, match: {metric: load}, when: value > 1000, run: page}
playbooks:
  - name: fail-loud
    escalate: page
    steps:
      - name: boom
        action: exec
        timeout: 10s
        with: {argv: [sh, -c, "for i in 1 2 3 4 5 6; do echo line$i >&2; done; exit 3"]}
  - {name: page, steps: [{name: s, action: wait, with: {duration: 0s}}]}
"""


def _daemon(tmp_path: Path, *, extra: str = "", args: tuple[str, ...] = (), **env: str) -> Any:
    port = free_port()
    config = write_config(tmp_path, port, rules=RULES, token=TOKEN, extra=extra)
    d = DaemonProcess(config, port, env=env, args=args)
    d.wait_ready()
    return d


def _lines(d: DaemonProcess, *words: str) -> list[str]:
    return [line for line in d.log().splitlines() if all(w in line for w in words)]


def _escalated(d: DaemonProcess, n: int) -> list[dict[str, Any]] | None:
    found = [r for r in d.get("/api/v1/runs").json()["runs"] if r["playbook"] == "page"]
    return found if len(found) == n and all(r["state"] == "done" for r in found) else None


def test_the_daemon_logs_each_decision_run_step_circuit_and_escalation(tmp_path: Path) -> None:
    d = _daemon(tmp_path)
    try:
        send(d, TOKEN, *({"metric": "load", "value": 1.0, "host": "h1"} for _ in range(20)))
        send(d, TOKEN, {"event": "flaky", "host": "h1"})
        d.wait_for(lambda: _escalated(d, 1), what="the run and its escalation")
        (failed,) = [r for r in done_runs(d, "flaky", 2) or [] if r["playbook"] == "fail-loud"]
        send(d, TOKEN, {"event": "flaky", "host": "h1"})  # over its budget: the circuit opens
        d.wait_for(lambda: _escalated(d, 2), what="the circuit's escalation")
        assert cli(d, "circuit", "reset", "host=h1", "--rule", "flaky").returncode == 0
        assert cli(d, "reload").returncode == 0
        d.wait_for(lambda: _lines(d, "reloaded"), what="the reload line")

        assert _lines(d, "INFO", "decision", "flaky", "host=h1", "run fail-loud")
        assert _lines(d, "WARNING", "decision", "flaky", "host=h1", "circuit_open")
        assert _lines(d, "INFO", f"run {failed['id']} started", "fail-loud")
        assert _lines(d, f"run {failed['id']} ended failed", "after")
        assert _lines(d, "WARNING", "step boom", "exit 3", "line6")
        assert _lines(d, "WARNING", "circuit", "flaky", "host=h1", "opened")
        assert _lines(d, "INFO", "circuit", "flaky", "host=h1", "closed")
        assert len(_lines(d, "escalation", "page")) >= 2
        assert [line for line in _lines(d, "load") if "reloaded" not in line] == []  # per input
    finally:
        assert d.stop() == 0, d.log()


def test_log_level_and_json_lines(tmp_path: Path) -> None:
    quiet = _daemon(tmp_path / "a", args=("--log-level", "warning"))
    try:
        send(quiet, TOKEN, {"event": "flaky", "host": "h1"})
        quiet.wait_for(lambda: _escalated(quiet, 1), what="the run and its escalation")
        send(quiet, TOKEN, {"event": "flaky", "host": "h1"})  # over its budget
        quiet.wait_for(lambda: _lines(quiet, "circuit_open"), what="the warning line")
        assert _lines(quiet, "INFO") == []
    finally:
        assert quiet.stop() == 0, quiet.log()
    under_journald = _daemon(tmp_path / "b", JOURNAL_STREAM="8:12345")
    try:
        send(under_journald, TOKEN, {"event": "flaky", "host": "h1"})
        under_journald.wait_for(lambda: _lines(under_journald, "decision"), what="a decision")
        records = [json.loads(line) for line in under_journald.log().splitlines() if line]
        assert all({"ts", "level", "logger", "message"} <= set(r) for r in records)
        assert any(r["level"] == "INFO" and "decision" in r["message"] for r in records)
    finally:
        assert under_journald.stop() == 0, under_journald.log()


def test_decisions_and_incidents_are_explained(tmp_path: Path) -> None:
    d = _daemon(tmp_path, extra="log:\n  level: info\n  format: text\n")
    try:
        since = time.time()
        send(d, TOKEN, {"event": "flaky", "host": "h1"})
        d.wait_for(lambda: _escalated(d, 1), what="the first escalation")
        send(d, TOKEN, {"event": "flaky", "host": "h1"}, {"event": "flaky", "host": "h2"})
        d.wait_for(lambda: _escalated(d, 3), what="the second and third escalation")

        everything = decisions(d, rule="flaky")
        assert [x["result"] for x in everything].count("circuit_open") == 1
        assert [x["key"] for x in decisions(d, key="host=h2")] == ["host=h2"]
        (held,) = decisions(d, result="circuit_open")
        assert held["rule"] == "flaky" and held["key"] == "host=h1"
        assert len(decisions(d, rule="flaky", limit=1)) == 1
        assert decisions(d, since=time.time() + 60) == []
        assert len(decisions(d, since=since)) == 3
        assert d.get("/api/v1/decisions?result=bogus").status == 400

        shown = incident(d, held["incident_id"])
        assert [x["result"] for x in shown["decisions"]] == ["run", "circuit_open"]
        assert "circuit" in shown["decisions"][1]["reason"]
        assert [(r["playbook"], r["escalation"]) for r in shown["runs"]] == [
            ("fail-loud", False), ("page", True), ("page", True),
        ]  # fmt: skip
        steps = [t["what"] for t in shown["timeline"]]
        assert steps[:2] == ["opened", "decision"] and "run_started" in steps, steps
        assert d.get("/api/v1/incidents/999999").status == 404

        listed = {i["id"]: i for i in incidents(d)}
        assert listed[held["incident_id"]]["last_result"] == "circuit_open"

        table = cli(d, "incidents", str(held["incident_id"]))
        assert table.returncode == 0, table
        assert "circuit_open" in table.stdout and "page" in table.stdout
        as_json = cli(d, "incidents", str(held["incident_id"]), "--json")
        assert json.loads(as_json.stdout)["id"] == held["incident_id"]
        listing = cli(d, "decisions", "--rule", "flaky", "--result", "circuit_open")
        assert listing.returncode == 0 and "circuit_open" in listing.stdout, listing
        assert len(json.loads(cli(d, "decisions", "--json").stdout)["decisions"]) == 3

        failed = next(r for r in d.get("/api/v1/runs").json()["runs"] if r["outcome"] == "failed")
        shown_run = cli(d, "runs", str(failed["id"]))
        assert shown_run.returncode == 0
        assert all(f"line{i}" in shown_run.stdout for i in range(1, 7)), shown_run.stdout
    finally:
        assert d.stop() == 0, d.log()

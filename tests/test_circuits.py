"""Open circuits end to end on a real daemon: escalation instead of runs (once per
opening), the operator's reset over the API and with ``batond circuit``."""

from __future__ import annotations

import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_proc import BATOND, DaemonProcess, http, write_config
from support import free_port

TOKEN = "circuit-t0ken"
TARGET = "host=h1,svc=web"  # a key with "," and "=": the URL must carry it whole

RULES = """
rules:
  - {name: boom, match: {event: boom}, group_by: [host, svc], run: fix}
playbooks:
  - name: fix
    escalate: page
    steps: [{name: s, action: exec, with: {argv: ["true"]}, timeout: 10s}]
  - name: page
    steps: [{name: s, action: exec, with: {argv: ["true"]}, timeout: 10s}]
"""
GOVERNOR = """
governor:
  per_target: {count: 1, per: 1h}
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    port = free_port()
    config = write_config(tmp_path, port, rules=RULES, token=TOKEN, extra=GOVERNOR)
    d = DaemonProcess(config, port)
    try:
        d.wait_ready()
        yield d
    finally:
        assert d.stop() == 0, d.log()


def _boom(d: DaemonProcess) -> None:
    r = d.post("/api/v1/events", {"event": "boom", "host": "h1", "svc": "web"}, token=TOKEN)
    assert r.status == 202, r.text


def _runs(d: DaemonProcess, playbook: str) -> list[dict[str, Any]]:
    return [r for r in d.get("/api/v1/runs").json()["runs"] if r["playbook"] == playbook]


def _done(d: DaemonProcess, playbook: str, n: int) -> list[dict[str, Any]] | None:
    runs = _runs(d, playbook)
    return runs if len(runs) == n and all(r["state"] == "done" for r in runs) else None


def _incidents(d: DaemonProcess) -> int:
    return len(d.get("/api/v1/incidents").json()["incidents"])


def _cli(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    token_file = d.config.parent / "token"
    cmd = [BATOND, "circuit", *args, "--url", d.url, "--token-file", str(token_file)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_open_circuit_escalates_once_and_an_operator_resets_it(daemon: DaemonProcess) -> None:
    d = daemon
    _boom(d)  # the one run per_target allows
    d.wait_for(lambda: _done(d, "fix", 1), what="the first run")
    _boom(d)  # over per_target: the circuit opens; the escalation runs instead
    (page,) = d.wait_for(lambda: _done(d, "page", 1), what="the escalation run")
    assert page["key"] == TARGET and page["rule"] == "boom"
    _boom(d)  # still open: no second page for the same opening
    d.wait_for(lambda: _incidents(d) == 3, what="the third decision")
    d.wait_for(lambda: d.get("/api/v1/status").json()["runs_active"] == 0, what="idle")
    assert len(_runs(d, "page")) == 1 and len(_runs(d, "fix")) == 1
    assert d.metric("batond_decisions_total", {"rule": "boom", "result": "circuit_open"}) == 2.0
    circuits = d.get("/api/v1/status").json()["open_circuits"]
    assert [c["target"] for c in circuits] == [TARGET]

    listed = _cli(d, "list")
    assert listed.returncode == 0 and TARGET in listed.stdout, listed

    path = f"/api/v1/circuits/{urllib.parse.quote(TARGET, safe='')}/reset"
    assert http("POST", d.url + path, body=b"{}").status == 401  # token-protected
    reset = _cli(d, "reset", TARGET)
    assert reset.returncode == 0, reset
    assert d.get("/api/v1/status").json()["open_circuits"] == []
    again = _cli(d, "reset", TARGET)
    assert again.returncode == 1 and "404" in again.stderr, again
    none = d.post("/api/v1/circuits/host%3Dnobody/reset", token=TOKEN)
    assert none.status == 404

    _boom(d)  # closed again: automatic runs resume
    d.wait_for(lambda: _done(d, "fix", 2), what="a run after the reset")
    assert len(_runs(d, "page")) == 1


async def test_escalate_only_runs_the_first_escalate_playbook(tmp_path: Path) -> None:
    from runner_support import Harness, decision, load_playbooks

    pbs = load_playbooks("""\
playbooks:
  - {name: a, steps: [{name: s, action: wait, with: {duration: 0s}}]}
  - {name: b, escalate: page, steps: [{name: s, action: wait, with: {duration: 0s}}]}
  - {name: page, steps: [{name: s, action: wait, with: {duration: 0s}}]}
""")
    h = Harness(tmp_path, pbs)
    try:
        quiet = decision(None, candidates=("a",), suppressed="circuit_open")
        assert h.runner.escalate_only(quiet) is False  # nothing to escalate to
        d = decision(None, candidates=("a", "b"), suppressed="circuit_open")
        assert h.runner.escalate_only(d, decision_id=None, incident_id=None) is True
        (ended,) = await h.outcomes(1)
        assert (ended.playbook, ended.escalation, ended.final) == ("page", True, True)
        run = await h.run(ended.run_id)
        assert run["playbook"] == "page"
        assert run["escalation"] and run["escalates"] is None  # no run preceded it
    finally:
        await h.close()

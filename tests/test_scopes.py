"""Governor scopes and work items (issue 11, observations 3 and 4), on a real ``batond run``.

3. The per-target budget and circuit count per (rule, key): a busy restart rule does not
   block another rule on the same host; scale-out and scale-in on one service do not
   block each other. ``batond check --explain RULE`` states the limits that apply.
4. Work items (``each: true``): every request is its own run; a rule's own
   ``limits:`` (``max_runs``, no blast radius) let a batch of orders through.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from daemon_proc import BATOND, DaemonProcess, write_config
from incident_support import decisions, done_runs, runs, send
from support import free_port

TOKEN = "scope-t0ken"

SCOPE_RULES = """
rules:
  - {name: restart-web, match: {event: web.down}, run: act}
  - {name: diagnose-web, match: {event: web.slow}, run: act}
  - {name: scale-out, match: {event: surge}, group_by: [service], run: act}
  - {name: scale-in, match: {event: calm}, group_by: [service], run: act}
  - name: order
    match: {event: order.placed}
    group_by: [order_id]
    limits: {max_runs: {count: 500, per: 1m}, per_target: {count: 2, per: 10m}}
    run: act
playbooks:
  - name: act
    mode: parallel
    steps: [{name: s, action: wait, with: {duration: 0s}}]
"""


def _daemon(tmp_path: Path, rules: str) -> DaemonProcess:
    port = free_port()
    d = DaemonProcess(write_config(tmp_path, port, rules=rules, token=TOKEN), port)
    d.wait_ready()
    return d


def test_budgets_and_circuits_count_per_rule_and_key(tmp_path: Path) -> None:
    d = _daemon(tmp_path, SCOPE_RULES)
    try:
        for n in (1, 2, 3):  # the restart rule spends its own budget (per_target 3/h)
            send(d, TOKEN, {"event": "web.down", "host": "h1"})
            d.wait_for(lambda n=n: done_runs(d, "restart-web", n), what=f"restart {n}")
        send(d, TOKEN, {"event": "web.down", "host": "h1"})
        d.wait_for(lambda: decisions(d, rule="restart-web", result="circuit_open"), what="4th")
        send(d, TOKEN, {"event": "web.slow", "host": "h1"})  # same host, another rule: runs
        d.wait_for(lambda: done_runs(d, "diagnose-web", 1), what="the diagnostics run")

        for n in (1, 2):  # two surges and two calms on one service: all four run
            send(d, TOKEN, {"event": "surge", "service": "web"})
            d.wait_for(lambda n=n: done_runs(d, "scale-out", n), what=f"scale-out {n}")
            send(d, TOKEN, {"event": "calm", "service": "web"})
            d.wait_for(lambda n=n: done_runs(d, "scale-in", n), what=f"scale-in {n}")
        circuits = d.get("/api/v1/status").json()["open_circuits"]
        assert [(c["rule"], c["key"]) for c in circuits] == [("restart-web", "host=h1")]
    finally:
        assert d.stop() == 0, d.log()


def _explain(config: Path, rule: str) -> str:
    cmd = [BATOND, "check", "-c", str(config), "--explain", rule]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done
    return done.stdout


def test_check_explain_states_the_limits_of_a_rule(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), rules=SCOPE_RULES)
    shared = _explain(config, "restart-web")
    assert "per_target: 3 per 1h (governor.per_target), counted for this rule and key" in shared
    assert "max_runs: 30 per 1h (governor.max_runs), shared" in shared
    assert "max_concurrent_runs: 4 (governor.max_concurrent_runs), shared" in shared
    assert "blast_radius: applies" in shared
    own = _explain(config, "order")
    assert "per_target: 2 per 10m (limits.per_target), counted for this rule and key" in own
    assert "max_runs: 500 per 1m (limits.max_runs), this rule's own" in own
    missing = subprocess.run(
        [BATOND, "check", "-c", str(config), "--explain", "ordr"], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "did you mean 'order'" in missing.stderr, missing


WORK_RULES = """
rules:
  - name: password-reset
    description: Each request gets its own mail
    match: {event: password.reset}
    each: true
    run: mail
  - name: order
    match: {event: order.placed}
    each: true
    limits: {max_runs: {count: 1000, per: 1m}}
    run: fulfil
playbooks:
  - name: mail
    steps:
      - {name: send, action: exec, with: {argv: [echo, "{{ labels.user }}"]}, timeout: 10s}
  - name: fulfil
    steps: [{name: s, action: wait, with: {duration: 0s}}]
"""


def test_work_items_each_get_a_run_and_their_own_limits(tmp_path: Path) -> None:
    d = _daemon(tmp_path, WORK_RULES)
    try:
        users = ["ann", "bob", "cy"]  # three requests at once, none with a host label
        send(d, TOKEN, *({"event": "password.reset", "user": u} for u in users))
        mails = d.wait_for(lambda: done_runs(d, "password-reset", 3), what="three mails")
        sent = sorted(r["steps"][0]["stdout"].strip() for r in mails)
        assert sent == users
        assert {r["outcome"] for r in mails} == {"resolved"}
        keys = {r["key"] for r in mails}
        assert len(keys) == 3 and all(k.startswith("item=") for k in keys), keys

        orders = [{"event": "order.placed", "order_id": f"o{i}"} for i in range(40)]
        orders += [{"event": "order.placed", "host": f"shop-{i}"} for i in range(60)]
        send(d, TOKEN, *orders)  # 100 orders; 60 hosts seen: a fleet, but orders are no hosts
        d.wait_for(lambda: done_runs(d, "order", 100), what="100 runs", timeout=90)
        results = [x["result"] for x in decisions(d, rule="order")]
        assert results == ["run"] * 100
        assert all(i["state"] == "resolved" for i in _incidents(d, "order"))
        assert len(runs(d, "order")) == 100
    finally:
        assert d.stop() == 0, d.log()


def _incidents(d: DaemonProcess, rule: str) -> list[dict[str, str]]:
    found = d.get("/api/v1/incidents?limit=1000").json()["incidents"]
    return [i for i in found if i["rule"] == rule]

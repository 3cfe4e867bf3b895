"""Outcomes that do not overstate success (issue 11, observation 8), on a real ``batond
run``: ``skipped`` when every action step was skipped by ``when:``, ``succeeded`` when
nothing verified that a metric incident went away, escalations recorded as such; resolve
rates count only ``resolved`` against all other (non-escalation) runs."""

from __future__ import annotations

from pathlib import Path

from daemon_proc import DaemonProcess, write_config
from incident_support import done_runs, incidents, send
from support import free_port

TOKEN = "outcome-t0ken"

RULES = """
rules:
  - {name: maybe, match: {event: maybe}, run: only-when}
  - {name: hot, match: {metric: temp}, when: value > 90, run: cool}
  - {name: hot-verified, match: {metric: temp2}, when: value > 90, run: cool-verified}
  - {name: pager, match: {event: broken}, run: fail-then-page}
playbooks:
  - name: only-when
    steps:
      - name: act
        action: exec
        when: labels.really == "yes"
        with: {argv: ["true"]}
  - {name: cool, steps: [{name: s, action: exec, with: {argv: ["true"]}}]}
  - name: cool-verified
    verify: {within: 20s}
    steps: [{name: s, action: exec, with: {argv: ["true"]}}]
  - name: fail-then-page
    escalate: page
    steps: [{name: s, action: exec, with: {argv: ["false"]}}]
  - {name: page, steps: [{name: s, action: wait, with: {duration: 0s}}]}
"""


def _outcomes(runs: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return sorted((r["playbook"], r["outcome"], r["escalation"]) for r in runs)


def test_outcomes_say_what_was_done_and_verified(tmp_path: Path) -> None:
    port = free_port()
    d = DaemonProcess(write_config(tmp_path, port, rules=RULES, token=TOKEN), port)
    try:
        d.wait_ready()
        send(d, TOKEN, {"event": "maybe", "host": "h1", "really": "no"})
        send(d, TOKEN, {"event": "maybe", "host": "h2", "really": "yes"})
        send(d, TOKEN, {"metric": "temp", "value": 95, "host": "h1"})
        send(d, TOKEN, {"metric": "temp2", "value": 95, "host": "h1"})
        send(d, TOKEN, {"event": "broken", "host": "h1"})
        send(d, TOKEN, {"metric": "temp2", "value": 50, "host": "h1"})  # verified: resolved

        maybe = d.wait_for(lambda: done_runs(d, "maybe", 2), what="the maybe runs")
        assert _outcomes(maybe) == [
            ("only-when", "resolved", False),
            ("only-when", "skipped", False),
        ]
        assert {i["state"] for i in incidents(d, "maybe")} == {"resolved"}
        (hot,) = d.wait_for(lambda: done_runs(d, "hot", 1), what="the hot run")
        assert hot["outcome"] == "succeeded"
        (hot_incident,) = incidents(d, "hot")
        assert hot_incident["state"] == "open"  # nothing checked that it went away
        (verified,) = d.wait_for(lambda: done_runs(d, "hot-verified", 1), what="verified")
        assert verified["outcome"] == "resolved"
        pager = d.wait_for(lambda: done_runs(d, "pager", 2), what="the run and the page")
        assert _outcomes(pager) == [
            ("fail-then-page", "failed", False),
            ("page", "succeeded", True),
        ]

        rates = {r["name"]: r["resolve_rates"] for r in d.get("/api/v1/rules").json()["rules"]}
        assert rates["maybe"] == {"only-when": {"resolved": 1, "runs": 2, "rate": 0.5}}
        assert rates["hot"] == {"cool": {"resolved": 0, "runs": 1, "rate": 0.0}}
        assert rates["hot-verified"] == {"cool-verified": {"resolved": 1, "runs": 1, "rate": 1.0}}
        assert rates["pager"] == {"fail-then-page": {"resolved": 0, "runs": 1, "rate": 0.0}}
        runs_metric = "batond_runs_total"
        assert d.metric(runs_metric, {"playbook": "only-when", "outcome": "skipped"}) == 1.0
        assert d.metric(runs_metric, {"playbook": "cool", "outcome": "succeeded"}) == 1.0
        assert d.metric(runs_metric, {"playbook": "page", "outcome": "succeeded"}) is None
        escalations = "batond_escalations_total"
        assert d.metric(escalations, {"playbook": "page", "outcome": "succeeded"}) == 1.0
    finally:
        assert d.stop() == 0, d.log()

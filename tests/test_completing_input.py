"""Timed and correlated rules hand their playbook the input that completed the condition
(issue 11, observation 5), on a real ``batond run``: ``for:`` the latest true sample,
``count:`` the N-th input, ``absent:`` the last one seen, ``all:`` the last part."""

from __future__ import annotations

import time
from pathlib import Path

from daemon_proc import DaemonProcess, write_config
from incident_support import done_runs, send
from support import free_port

TOKEN = "input-t0ken"

RULES = """
rules:
  - {name: hot, match: {metric: temp}, when: value > 90, for: 1s, run: show}
  - {name: bursts, match: {event: err}, count: {at_least: 3, within: 1m}, run: show}
  - {name: gone, match: {metric: heartbeat}, absent: 2s, run: show}
  - name: both
    all:
      - {match: {event: deploy}}
      - {match: {metric: errors}, when: value > 5}
    within: 1m
    run: show
playbooks:
  - name: show
    mode: parallel
    steps:
      - name: s
        action: exec
        timeout: 10s
        with:
          argv:
            - echo
            - "value={{ value }} metric={{ metric }} host={{ labels.host }} n={{ event.n }}"
"""


def _shown(d: DaemonProcess, rule: str) -> str:
    (run,) = d.wait_for(lambda: done_runs(d, rule, 1), what=f"the run of {rule}")
    return str(run["steps"][0]["stdout"]).strip()


def test_the_playbook_sees_the_input_that_completed_the_condition(tmp_path: Path) -> None:
    port = free_port()
    d = DaemonProcess(write_config(tmp_path, port, rules=RULES, token=TOKEN), port)
    try:
        d.wait_ready()
        send(d, TOKEN, {"metric": "heartbeat", "value": 1.5, "host": "h1", "n": 7})
        send(d, TOKEN, {"metric": "temp", "value": 95.5, "host": "h1", "n": 1})
        time.sleep(0.3)  # a second true sample, later, within the for: period
        send(d, TOKEN, {"metric": "temp", "value": 97.5, "host": "h1", "n": 2})
        send(d, TOKEN, *({"event": "err", "host": "h1", "n": n} for n in (3, 4, 5)))
        send(d, TOKEN, {"event": "deploy", "host": "h1", "n": 10})
        send(d, TOKEN, {"metric": "errors", "value": 6.5, "host": "h1", "n": 11})

        assert _shown(d, "hot") == "value=97.5 metric=temp host=h1 n=2"
        assert _shown(d, "bursts") == "value= metric= host=h1 n=5"
        assert _shown(d, "both") == "value=6.5 metric=errors host=h1 n=11"
        assert _shown(d, "gone") == "value=1.5 metric=heartbeat host=h1 n=7"
    finally:
        assert d.stop() == 0, d.log()

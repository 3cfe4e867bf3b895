"""A resumed run never runs a step twice that had started (issue 14, critical 1).

The issue's repro with a real daemon and SIGKILL: step 1 appends a line to a
file and fails (``continue_on_error``), step 2 succeeds, and the run waits in
``verify:``. Killed there and restarted, the run is resumed; before the fix
resumption counted only ``ok`` steps as done and ran step 1 again.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from daemon_proc import DaemonProcess, write_config
from support import free_port

RULES = """
rules:
  - name: hot
    match: {{metric: load}}
    when: value > 1
    group_by: [host]
    run: fix
playbooks:
  - name: fix
    on_interrupt: resume
    verify: {{within: 1m}}
    steps:
      - name: append
        action: exec
        with: {{argv: [sh, -c, 'echo "$1" >> {file}; exit 1', sh, "{{{{ labels.host }}}}"]}}
        continue_on_error: true
      - {{name: two, action: exec, with: {{argv: ["true"]}}, idempotent: true}}
"""


def runs(daemon: DaemonProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = daemon.get("/api/v1/runs").json()["runs"]
    return found


def test_a_failed_step_is_not_run_again_by_a_resumption(tmp_path: Path) -> None:
    marker = tmp_path / "appended.txt"
    port = free_port()
    config = write_config(
        tmp_path,
        port,
        rules=RULES.format(file=marker),
        token="t",
        extra="governor:\n  min_fleet: 1000000\n",
    )
    daemon = DaemonProcess(config, port)
    daemon.wait_ready()
    daemon.post("/api/v1/events", {"metric": "load", "value": 5, "host": "h1"}, token="t")

    def in_verify() -> bool:
        found = runs(daemon)
        if not found:
            return False
        run = daemon.get(f"/api/v1/runs/{found[0]['id']}").json()
        return [s["status"] for s in run["steps"]] == ["failed", "ok"]

    daemon.wait_for(in_verify, what="the run waiting in verify")
    daemon.signal(signal.SIGKILL)
    daemon.proc.wait()
    assert marker.read_text() == "h1\n"

    again = DaemonProcess(config, port)
    try:
        again.wait_ready()
        resumed = again.wait_for(
            lambda: [r for r in runs(again) if r.get("resumes") is not None],
            what="the resumption",
        )
        assert len(resumed) == 1
        # the incident resolves: the resumption ends after its verify, having run nothing
        again.post("/api/v1/events", {"metric": "load", "value": 0, "host": "h1"}, token="t")
        again.wait_for(
            lambda: again.get(f"/api/v1/runs/{resumed[0]['id']}").json().get("outcome"),
            what="the resumption's end",
        )
        assert marker.read_text() == "h1\n"  # step 1 ran once for the run, whatever its status
    finally:
        assert again.stop() == 0, again.log()

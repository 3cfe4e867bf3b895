"""Orchestration through the real ``batond run``: data that must survive a SIGKILL."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from daemon_proc import DaemonProcess, write_config
from standin_proc import StandIn
from support import free_port


def carry_rules(url: str, folder: Path) -> str:
    hold = (
        'echo "$1" >> ids; if [ -e done ]; then exit 0; fi; touch done; echo $$ > pid; '
        "exec sleep 60"
    )
    return f"""
rules:
  - name: carry
    match: {{event: carry}}
    run: carry
playbooks:
  - name: carry
    on_interrupt: resume
    steps:
      - name: create
        action: http
        with: {{url: "{url}/create", method: POST, json: {{order: 7}}}}
      - name: hold
        action: exec
        idempotent: true
        with:
          cwd: {str(folder)!r}
          argv: [sh, -c, {hold!r}, sh, "{{{{ steps.create.json.id }}}}"]
      - name: use
        action: http
        with: {{url: "{url}/use", method: POST, json: {{id: "{{{{ steps.create.json.id }}}}"}}}}
"""


def test_a_resumed_run_after_sigkill_keeps_the_earlier_steps_outputs(tmp_path: Path) -> None:
    world = StandIn({"POST /create": {"json": {"id": "X-1"}}, "POST /use": {}}, tmp_path)
    port = free_port()
    work = tmp_path / "work"
    work.mkdir()
    config = write_config(tmp_path, port, rules=carry_rules(world.url, work))
    daemon = DaemonProcess(config, port)
    try:
        daemon.wait_ready()
        assert daemon.post("/api/v1/events", {"event": "carry", "order": "7"}).status == 202
        daemon.wait_for(lambda: (work / "pid").exists(), what="step hold running")
        daemon.kill()  # SIGKILL: step hold was in flight
        daemon = DaemonProcess(config, port)
        daemon.wait_ready()
        calls = world.wait_calls(2)
        assert [(c["path"], c["json"]) for c in calls] == [
            ("/create", {"order": 7}),
            ("/use", {"id": "X-1"}),
        ]
        assert (work / "ids").read_text().split() == ["X-1", "X-1"]

        def ended() -> list[dict[str, object]]:
            runs = [r for r in daemon.get("/api/v1/runs").json()["runs"] if r["outcome"]]
            return runs if len(runs) >= 2 else []

        runs = daemon.wait_for(ended, what="two ended runs")
        by_outcome = sorted((r["outcome"], r["resumes"] is not None) for r in runs)
        # the event's incident only its run resolves: the resumption resolves it
        assert by_outcome == [("interrupted", False), ("resolved", True)], runs
        incidents = daemon.get("/api/v1/incidents").json()["incidents"]
        assert [i["state"] for i in incidents] == ["resolved"], incidents
    finally:
        daemon.stop()
        world.close()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
            os.kill(int((work / "pid").read_text()), signal.SIGKILL)

"""Running playbooks and schedules by hand through the real ``batond run``: token,
governor, journal."""

from __future__ import annotations

import subprocess
from pathlib import Path

from daemon_proc import BATOND, DaemonProcess, write_config
from support import free_port, wait_until

BY_HAND = """
schedules:
  - name: nightly
    cron: "0 3 1 1 *"
    run: report
    params: {what: nightly}
playbooks:
  - name: report
    params: {what: by-hand, n: 1}
    steps:
      - name: tell
        action: exec
        with: {argv: [sh, -c, 'echo "$1 $2" >> "$3"', sh, "{{ params.what }}", "{{ params.n }}",
                      OUT]}
"""


def test_run_playbook_and_trigger_by_hand_need_the_token_and_are_recorded(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.txt"
    port = free_port()
    rules = BY_HAND.replace("OUT", str(out))
    config = write_config(tmp_path, port, rules=rules, token="s3cret")
    daemon = DaemonProcess(config, port)
    try:
        daemon.wait_ready()
        assert daemon.post("/api/v1/playbooks/report/run", {"params": {"n": 2}}).status == 401
        assert daemon.post("/api/v1/schedules/nightly/trigger", {}).status == 401
        assert daemon.post("/api/v1/playbooks/nope/run", {}, token="s3cret").status == 404
        refused = daemon.post("/api/v1/playbooks/report/run", {"params": {"m": 1}}, token="s3cret")
        assert refused.status == 400 and "takes no param 'm'" in refused.json()["error"]
        done = subprocess.run(
            [BATOND, "run-playbook", "report", "--param", "n=2", "--url", daemon.url,
             "--token-file", str(tmp_path / "token")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "run of report started (key playbook=report)" in done.stdout
        wait_until(lambda: out.exists() and out.read_text() == "by-hand 2\n", what="manual run")
        triggered = daemon.post("/api/v1/schedules/nightly/trigger", {}, token="s3cret")
        assert triggered.status == 202 and triggered.json()["started"] is True
        wait_until(lambda: out.read_text().splitlines()[-1:] == ["nightly 1"], what="trigger")

        def ended() -> list[tuple[str, str, str]]:
            runs = daemon.get("/api/v1/runs").json()["runs"]
            found = [(r["rule"], r["key"], r["outcome"]) for r in runs if r["outcome"]]
            return sorted(found) if len(found) >= 2 else []

        assert wait_until(ended, what="two ended runs") == [
            ("nightly", "schedule=nightly", "succeeded"),
            ("run-playbook", "playbook=report", "succeeded"),
        ]
        # the answer names its decision, which the run it started carries
        runs = daemon.get("/api/v1/runs").json()["runs"]
        nightly = [r["decision_id"] for r in runs if r["rule"] == "nightly"]
        assert nightly == [triggered.json()["decision"]]
    finally:
        daemon.stop()

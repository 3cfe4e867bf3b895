"""SIGKILL the real daemon at random moments of running playbooks; every run is accounted for.

Each iteration starts ``batond run`` on the same state_dir, waits for it to be
ready (which includes recovering what the previous kill interrupted and
resuming it, the playbook says ``on_interrupt: resume``), posts a few events
whose playbook runs three ``sleep`` steps, and SIGKILLs the daemon at a seeded
random moment. A last start lets everything finish and stops with SIGTERM.
Then the journal (read-only) and the API must agree that no record was lost:
every run ended with an outcome, no step is left running, every run belongs
to a decision or resumes an interrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from batond.engine.types import Outcome

ITERATIONS = 24
RULES = """
rules:
  - name: crash-test
    match: {event: crash.test}
    group_by: [seq]
    run: three-steps
playbooks:
  - name: three-steps
    on_interrupt: resume
    steps:
      - {name: one, action: exec, with: {argv: [sleep, "0.05"]}, idempotent: true}
      - {name: two, action: exec, with: {argv: [sleep, "0.05"]}, idempotent: true}
      - {name: three, action: exec, with: {argv: [sleep, "0.05"]}, idempotent: true}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = tmp / "state"
        rules = tmp / "rules"
        rules.mkdir()
        (rules / "crash.yaml").write_text(RULES)
        self.config = tmp / "batond.yaml"
        self.config.write_text(
            f"node: crash-test\nstate_dir: {self.state}\nrules: [{rules}]\nmodels: []\n"
            f'http: {{listen: "127.0.0.1:{self.port}"}}\nhost: {{interval: 60s}}\n'
            "governor:\n  max_concurrent_runs: 4\n  max_runs: {count: 100000, per: 1h}\n"
            "  per_target: {count: 100000, per: 1h}\n  min_fleet: 1000000\n"
        )
        self.log = tmp / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "batond", "run", "-c", str(self.config)],
                stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited: {self.log.read_text()[-2000:]}"
            try:
                if self.get("/readyz").get("ready"):
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.02)
        raise AssertionError("daemon not ready within 60 s")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=60)


def journal_rows(state: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{state / 'journal.db'}?mode=ro", uri=True)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_during_playbooks_loses_no_run(tmp_path: Path) -> None:
    rng = random.Random(6)
    daemon = Daemon(tmp_path)
    seq = 0
    for _ in range(ITERATIONS):
        daemon.start()
        for _ in range(rng.randint(1, 3)):
            seq += 1
            assert daemon.post("/api/v1/events", {"event": "crash.test", "seq": seq})["accepted"]
        time.sleep(rng.uniform(0.0, 0.35))  # within the ~0.15-0.3 s the runs take
        daemon.kill()

    daemon.start()  # recovers the last kill, resumes, then lets everything finish
    deadline = time.monotonic() + 60
    while any(r["state"] != "done" for r in daemon.get("/api/v1/runs?limit=100000")["runs"]):
        assert time.monotonic() < deadline, "runs did not finish"
        time.sleep(0.05)
    api_runs = daemon.get("/api/v1/runs?limit=100000")["runs"]
    daemon.kill(signal.SIGTERM)
    assert daemon.proc is not None and daemon.proc.returncode == 0

    runs = journal_rows(
        daemon.state, "SELECT id, state, outcome, decision_id, resumes FROM runs ORDER BY id"
    )
    running_steps = journal_rows(daemon.state, "SELECT id FROM steps WHERE status = 'running'")
    decisions = dict(
        journal_rows(daemon.state, "SELECT id, playbook FROM decisions WHERE playbook IS NOT NULL")
    )
    outcomes = {r[0]: r[2] for r in runs}

    assert len(runs) == len(api_runs) and {r["id"] for r in api_runs} == set(outcomes)
    assert all(state == "done" and outcome in set(Outcome) for _, state, outcome, _, _ in runs)
    assert running_steps == []
    assert "interrupted" in outcomes.values()  # the kills did land mid-run
    assert "resolved" in outcomes.values()
    originals = [r for r in runs if r[4] is None]
    resumptions = [r for r in runs if r[4] is not None]
    # every original run belongs to its own decision that chose a playbook
    assert all(r[3] in decisions for r in originals)
    assert len({r[3] for r in originals}) == len(originals)
    # a resumption names a run that was interrupted, and each is resumed at most once
    assert all(outcomes[r[4]] == "interrupted" for r in resumptions)
    assert len({r[4] for r in resumptions}) == len(resumptions)
    # a decision may lack its run only when a kill fell between the two writes
    orphans = set(decisions) - {r[3] for r in originals}
    assert len(orphans) <= ITERATIONS

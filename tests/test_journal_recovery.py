"""Recovery after a crash: unfinished runs become interrupted, nothing committed is lost.

Every test runs on SQLite and on PostgreSQL (``journal_factory``): the writer
and decider processes below open the journal the test's backend names.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batond.engine.types import Decision
from batond.remedy.records import InterruptedRun
from journal_backends import JournalFactory


async def test_recovery_marks_unfinished_runs_and_steps(journal_factory: JournalFactory) -> None:
    j = journal_factory.open()
    done = await j.run_created(rule="r", playbook="p", key="a", params={}, labels={}, created_at=1)
    await j.run_finished(done, "resolved", 2.0)
    queued = await j.run_created(
        rule="r", playbook="p", key="b", params={"u": 1}, labels={"host": "h"}, created_at=3
    )
    running = await j.run_created(
        rule="r", playbook="p", key="c", params={}, labels={}, created_at=4, state="running"
    )
    s1 = await j.step_started(running, "stop", "exec", 1, 5.0)
    await j.step_finished(s1, status="ok", ended_at=6.0)
    await j.step_started(running, "fan/b1/x", "exec", 1, 7.0)
    await j.step_started(running, "fan/b2/y", "exec", 2, 7.0)
    waiting = await j.run_created(
        rule="r", playbook="q", key="d", params={}, labels={}, created_at=8
    )
    await j.run_state(waiting, "waiting_approval", 9.0)
    await j.close()  # as if the process died here: nothing ended these runs

    j = journal_factory.open()
    try:
        found = await j.recover_interrupted(now=50.0)
        assert [r.run_id for r in found] == [queued, running, waiting]
        assert found[0] == InterruptedRun(
            run_id=queued, rule="r", playbook="p", key="b", params={"u": 1},
            labels={"host": "h"}, created_at=3.0, state="queued",
        )  # fmt: skip
        assert found[1].in_flight == ("fan/b1/x", "fan/b2/y")
        assert found[1].completed == ("stop",) and found[1].last_completed == "stop"
        assert found[2].state == "waiting_approval"
        for run_id in (queued, running, waiting):
            run = await j.get_run(run_id)
            assert run is not None
            assert (run["state"], run["outcome"], run["ended_at"]) == ("done", "interrupted", 50.0)
            assert all(s["status"] != "running" for s in run["steps"])
        run = await j.get_run(running)
        assert run is not None
        assert [s["status"] for s in run["steps"]] == ["ok", "interrupted", "interrupted"]
        done_run = await j.get_run(done)
        assert done_run is not None and done_run["outcome"] == "resolved"
        assert await j.recover_interrupted(now=60.0) == []  # durable: done once
        resumed = await j.run_created(
            rule="r", playbook="p", key="c", params={}, labels={}, created_at=61, resumes=running
        )
        resumed_run = await j.get_run(resumed)
        assert resumed_run is not None and resumed_run["resumes"] == running
    finally:
        await j.close()


async def test_cooldown_state_survives_restart(journal_factory: JournalFactory) -> None:
    """What the engine exports at a decision is what it gets back after a restart."""
    j = journal_factory.open()
    exported = {"rules": {"disk-full@3f2a": {"cooldowns": {"host=web-1": 1000.0}, "for": {}}}}
    await j.save_rule_state(exported)
    await j.save_rule_state({**exported, "saved_at": 1300.0})  # replaced whole, not merged
    j.close_sync()
    j = journal_factory.open()
    try:
        assert await j.load_rule_state() == {**exported, "saved_at": 1300.0}
    finally:
        await j.close()


# A writer process that reports each record on stdout only after its write returned,
# so everything it printed must be in the journal after a SIGKILL.
WRITER = r"""
import asyncio, sys, time
from pathlib import Path
from batond.engine.types import Decision
from batond.journal.facade import Journal

def say(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()

async def main():
    j = Journal.open(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
    await j.recover_interrupted(time.time())
    say("ready")
    while True:
        decision = Decision(ts=time.time(), rule="r", key="k", target="k", labels={},
                            candidates=("p",), playbook="p", suppressed=None)
        decision_id, incident_id = await j.record_decision(decision)  # posted, not awaited
        run = await j.run_created(rule="r", playbook="p", key="k", params={}, labels={},
                                  created_at=time.time(), state="running",
                                  decision_id=decision_id, incident_id=incident_id)
        say("decision", decision_id)  # committed before the run (FIFO)
        say("run", run)
        for name in ("a", "b", "c"):
            step = await j.step_started(run, name, "exec", 1, time.time())
            say("step", step)
            await asyncio.sleep(0.001)
            await j.step_finished(step, status="ok", ended_at=time.time(), stdout="x" * 300)
            say("stepdone", step)
        await j.run_finished(run, "resolved", time.time())
        say("done", run)

asyncio.run(main())
"""


def read_reports(proc: subprocess.Popen[str]) -> list[tuple[str, int]]:
    assert proc.stdout is not None
    out = []
    for line in proc.stdout.read().splitlines():
        word, _, num = line.partition(" ")
        if word != "ready":
            out.append((word, int(num)))
    return out


@pytest.mark.slow
def test_sigkill_at_random_points_loses_no_committed_record(
    journal_factory: JournalFactory, tmp_path: Path
) -> None:
    rng = random.Random(20261126)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    reported: list[tuple[str, int]] = []
    for _ in range(25):
        proc = subprocess.Popen(
            [sys.executable, str(script), *backend_args(journal_factory)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        reported += read_reports(proc)

    runs = dict(journal_factory.rows("SELECT id, outcome FROM runs"))
    decisions = {r[0] for r in journal_factory.rows("SELECT id FROM decisions")}
    steps = dict(journal_factory.rows("SELECT id, status FROM steps"))
    assert sum(1 for w, _ in reported if w == "done") > 10  # the writer did make progress
    for word, num in reported:
        if word == "decision":
            assert num in decisions
        elif word == "run":
            assert num in runs
        elif word == "step":
            assert num in steps
        elif word == "stepdone":
            assert steps[num] == "ok"
        elif word == "done":
            assert runs[num] == "resolved"

    # the last kill left its run unfinished; a restart accounts for it
    async def recover() -> list[InterruptedRun]:
        j = journal_factory.open()
        try:
            return await j.recover_interrupted(time.time())
        finally:
            await j.close()

    import asyncio

    asyncio.run(recover())
    outcomes = {r[0] for r in journal_factory.rows("SELECT DISTINCT outcome FROM runs")}
    unfinished = journal_factory.rows("SELECT count(*) FROM runs WHERE state != 'done'")
    running = journal_factory.rows("SELECT count(*) FROM steps WHERE status = 'running'")
    assert outcomes <= {"resolved", "interrupted"} and "interrupted" in outcomes
    assert unfinished == [(0,)] and running == [(0,)]


def backend_args(journal_factory: JournalFactory) -> list[str]:
    """The state directory, and the database URL for PostgreSQL (argv of the scripts)."""
    database = [] if journal_factory.database is None else [journal_factory.database]
    return [str(journal_factory.state_dir), *database]


RULES = """
rules:
  - name: nginx-down
    match: {event: process.exited, name: nginx}
    group_by: [host]
    cooldown: 1h
    run: restart
playbooks:
  - name: restart
    steps:
      - {name: go, action: exec, with: {argv: ["true"]}}
"""

# Decide as the daemon does (record the decision, save rule state), then hang until killed.
DECIDER = r"""
import asyncio, sys, time
from pathlib import Path
from batond.engine.engine import Engine
from batond.engine.governor import Governor
from batond.events import item_from_json
from batond.engine.types import Decision
from batond.journal.facade import Journal
from batond.load.rulefiles import load_rules

async def main():
    rules, state = Path(sys.argv[1]), Path(sys.argv[2])
    engine = Engine(load_rules([rules]), Governor())
    j = Journal.open(state, sys.argv[3] if len(sys.argv) > 3 else None)
    event = {"event": "process.exited", "name": "nginx", "host": "w1"}
    for out in engine.evaluate(item_from_json(event, 1000.0, "http"), 1000.0):
        await j.record_decision(out)
    await j.save_rule_state(engine.export_state())
    # the run ended resolved a second later; the daemon saves state after each outcome
    for out in engine.record_outcome("nginx-down", "restart", "host=w1", "resolved", 1001.0):
        await j.resolve_incident(out.rule, out.key, out.ts)
    await j.save_rule_state(engine.export_state())
    await j.flush()  # posted writes commit within milliseconds; the kill comes "minutes" later
    print("saved", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_cooldown_survives_sigkill_with_the_real_engine(
    journal_factory: JournalFactory, tmp_path: Path
) -> None:
    from batond.engine.engine import Engine
    from batond.engine.governor import Governor
    from batond.events import item_from_json
    from batond.load.rulefiles import load_rules

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    script = tmp_path / "decider.py"
    script.write_text(DECIDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(rules), *backend_args(journal_factory)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "saved"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    async def restart() -> tuple[list[object], list[object]]:
        j = journal_factory.open()
        try:
            saved = await j.load_rule_state()
        finally:
            await j.close()
        assert saved is not None
        ruleset = load_rules([rules])
        item = item_from_json(
            {"event": "process.exited", "name": "nginx", "host": "w1"}, 1300.0, "http"
        )
        restored = Engine(ruleset, Governor())
        restored.import_state(saved)
        fresh = Engine(ruleset, Governor())  # what would happen without the journal
        return restored.evaluate(item, 1300.0), fresh.evaluate(item, 1300.0)

    import asyncio

    restored, fresh = asyncio.run(restart())
    decisions = [d for d in restored if isinstance(d, Decision)]
    assert [(d.playbook, d.suppressed) for d in decisions] == [(None, "cooldown")]
    assert [getattr(d, "playbook", None) for d in fresh if isinstance(d, Decision)] == ["restart"]

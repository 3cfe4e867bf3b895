"""Orchestration on the real runner and journal: compensation, step results across a
resumption, and the steps that carry data (set, assert, foreach, wait_until)."""

from __future__ import annotations

from pathlib import Path

from batond.engine.types import Outcome
from batond.journal.facade import Journal
from batond.remedy.run import RunState, StepStatus
from runner_support import Harness, decision, load_playbooks


async def test_compensation_runs_every_step_when_one_fails(tmp_path: Path) -> None:
    def touch(name: str) -> str:
        return f"[touch, {str(tmp_path / name)!r}]"

    pbs = load_playbooks(f"""\
playbooks:
  - name: order
    steps:
      - {{name: reserve, action: exec, with: {{argv: {touch("reserved")}}}}}
      - {{name: pay, action: exec, with: {{argv: ["false"]}}}}
    on_failure:
      - {{name: undo1, action: exec, with: {{argv: {touch("undo1")}}}}}
      - {{name: undo2, action: exec, with: {{argv: ["false"]}}}}
      - {{name: undo3, action: exec, with: {{argv: {touch("undo3")}}}}}
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("order"))
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "failed"
        steps = (await h.run(ended.run_id))["steps"]
        assert [(s["path"], s["status"]) for s in steps] == [
            ("reserve", "ok"), ("pay", "failed"),
            ("on_failure/undo1", "ok"), ("on_failure/undo2", "failed"), ("on_failure/undo3", "ok"),
        ]  # fmt: skip
        assert (tmp_path / "undo1").exists() and (tmp_path / "undo3").exists()
    finally:
        await h.close()


async def test_recovery_restores_results_across_a_chain_of_resumptions(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "state")
    try:
        kw = {"rule": "r", "playbook": "p", "key": "k", "params": {}, "labels": {}}
        first = await journal.run_created(**kw, created_at=1.0, state=RunState.RUNNING)
        step = await journal.step_started(first, "create", "http", 1, 1.0)
        kept = {"ok": True, "status": 200, "json": {"id": "X-1"}}
        await journal.step_finished(
            step, status=StepStatus.OK, ended_at=1.5, detail={"result": kept}
        )
        await journal.run_finished(first, Outcome.INTERRUPTED, 2.0)
        second = await journal.run_created(
            **kw, created_at=3.0, resumes=first, state=RunState.RUNNING
        )
        step = await journal.step_started(second, "hold", "exec", 1, 3.0)
        await journal.step_finished(
            step, status=StepStatus.OK, ended_at=3.5, exit_code=0, stdout="held\n",
            detail={"result": {"ok": True, "status": None, "json": None}},
        )  # fmt: skip
        await journal.step_started(second, "use", "http", 1, 4.0)
        (found,) = await journal.recover_interrupted(5.0)
    finally:
        await journal.close()
    assert found.run_id == second
    assert found.completed == ("create", "hold") and found.in_flight == ("use",)
    assert found.results["create"]["json"] == {"id": "X-1"}
    assert found.results["hold"]["stdout"] == "held\n" and found.results["hold"]["ok"]
    assert "use" not in found.results

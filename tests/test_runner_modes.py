"""Run modes per incident key, the global concurrency limit, shutdown, resume, shadow."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from batond.engine.engine import Engine
from batond.engine.governor import Governor
from batond.engine.types import Decision
from batond.events import Event
from batond.load.config import GovernorConfig
from batond.load.rulefiles import load_rules
from batond.remedy.records import InterruptedRun
from runner_support import Harness, decision, load_playbooks

GATE = """\
playbooks:
  - name: p
    mode: MODE
    steps:
      - {name: hold, action: approval, timeout: 60s}
      - {name: act, action: exec, with: {argv: ["true"]}}
"""


def moded(tmp: Path, mode: str, max_concurrent: int = 4) -> Harness:
    return Harness(tmp, load_playbooks(GATE.replace("MODE", mode)), max_concurrent=max_concurrent)


async def holding(h: Harness, n: int) -> list[int]:
    """Wait until ``n`` runs wait at their approval step; their ids."""
    await h.store.until(lambda: len(h.ctx.approvals.waiting()) >= n)
    return h.ctx.approvals.waiting()


async def test_single_refuses_a_second_run_for_the_same_key(tmp_path: Path) -> None:
    h = moded(tmp_path, "single")
    try:
        assert h.runner.start(decision("p", key="host=a"))
        assert not h.runner.start(decision("p", key="host=a"))
        assert h.runner.start(decision("p", key="host=b"))  # another key runs
        first, second = await holding(h, 2)
        assert h.runner.approve(first) and h.runner.approve(second)
        ended = await h.outcomes(2)
        assert {e.key for e in ended} == {"host=a", "host=b"}
        assert h.runner.start(decision("p", key="host=a"))  # free again
        (third,) = await holding(h, 1)
        h.runner.approve(third)
        await h.outcomes(3)
    finally:
        await h.close()


async def test_queued_waits_for_the_active_run(tmp_path: Path) -> None:
    text = GATE.replace("MODE", "queued\n    max: 1")
    h = Harness(tmp_path, load_playbooks(text))
    try:
        assert h.runner.start(decision("p"))
        assert h.runner.start(decision("p"))
        assert not h.runner.start(decision("p"))  # max: 1 waiting
        (first,) = await holding(h, 1)
        await h.store.until(lambda: len(h.store.states) >= 2)
        second = max(r for r, _ in h.store.states)
        assert (await h.run(second))["state"] == "queued"
        assert h.runner.active_count() == 2
        h.runner.approve(first)
        await h.store.until(lambda: second in h.ctx.approvals.waiting())
        h.runner.approve(second)
        ended = await h.outcomes(2)
        assert [e.run_id for e in ended] == [first, second]
        assert all(e.outcome == "succeeded" for e in ended)
    finally:
        await h.close()


async def test_restart_cancels_the_active_run(tmp_path: Path) -> None:
    h = moded(tmp_path, "restart")
    try:
        assert h.runner.start(decision("p"))
        (first,) = await holding(h, 1)
        assert h.runner.start(decision("p"))
        (ended,) = await h.outcomes(1)
        assert (ended.run_id, ended.outcome) == (first, "cancelled")
        await h.store.until(lambda: any(r != first for r in h.ctx.approvals.waiting()))
        (second,) = h.ctx.approvals.waiting()
        h.runner.approve(second)
        ended2 = (await h.outcomes(2))[1]
        assert (ended2.run_id, ended2.outcome) == (second, "succeeded")
    finally:
        await h.close()


async def test_parallel_runs_at_once_up_to_max(tmp_path: Path) -> None:
    h = Harness(tmp_path, load_playbooks(GATE.replace("MODE", "parallel\n    max: 2")))
    try:
        assert h.runner.start(decision("p"))
        assert h.runner.start(decision("p"))
        assert not h.runner.start(decision("p"))
        ids = await holding(h, 2)
        for run_id in ids:
            h.runner.approve(run_id)
        assert {e.outcome for e in await h.outcomes(2)} == {"succeeded"}
    finally:
        await h.close()


async def test_runs_beyond_max_concurrent_wait_queued(tmp_path: Path) -> None:
    h = moded(tmp_path, "single", max_concurrent=1)
    try:
        assert h.runner.start(decision("p", key="host=a"))
        assert h.runner.start(decision("p", key="host=b"))
        (first,) = await holding(h, 1)
        await h.store.until(lambda: len(h.store.states) >= 2)
        other = next(r for r, s in h.store.states if r != first)
        assert (await h.run(other))["state"] == "queued"
        h.runner.approve(first)
        await h.store.until(lambda: other in h.ctx.approvals.waiting())
        assert (await h.run(other))["state"] == "waiting_approval"
        h.runner.approve(other)
        await h.outcomes(2)
    finally:
        await h.close()


async def test_shutdown_lets_the_running_step_finish_then_interrupts(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    script = tmp_path / "slow.py"
    script.write_text(
        "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.01)\n"
    )
    argv = [sys.executable, str(script), str(gate)]
    pbs = load_playbooks(f"""\
playbooks:
  - name: p
    steps:
      - {{name: slow, action: exec, with: {{argv: {argv!r}}}}}
      - {{name: next, action: exec, with: {{argv: [touch, {str(tmp_path / "next")!r}]}}}}
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("p"))
        await h.store.until(lambda: bool(h.store.started))
        stopping = asyncio.ensure_future(h.runner.shutdown(30.0))
        await asyncio.sleep(0)
        assert not h.runner.start(decision("p", key="host=other"))  # no new runs
        gate.write_text("go")
        await stopping
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "interrupted"
        steps = (await h.run(ended.run_id))["steps"]
        assert [(s["path"], s["status"]) for s in steps] == [("slow", "ok")]
        assert not (tmp_path / "next").exists()
    finally:
        await h.close()


async def test_shutdown_after_grace_interrupts_the_step(tmp_path: Path) -> None:
    pbs = load_playbooks("""\
playbooks:
  - name: p
    steps: [{name: slow, action: exec, with: {argv: [sleep, "60"]}}]
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("p"))
        await h.store.until(lambda: bool(h.store.started))
        await h.runner.shutdown(0.2)
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "interrupted"
        (step,) = (await h.run(ended.run_id))["steps"]
        assert step["status"] == "interrupted"
    finally:
        await h.close()


async def test_shutdown_does_not_wait_for_an_approval(tmp_path: Path) -> None:
    h = moded(tmp_path, "single")
    try:
        h.runner.start(decision("p"))
        await holding(h, 1)
        # a long grace, yet the stop is prompt: nobody approves during a stop
        await asyncio.wait_for(h.runner.shutdown(600.0), timeout=30.0)
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "interrupted"
    finally:
        await h.close()


RESUMABLE = """\
playbooks:
  - name: p
    on_interrupt: ON_INTERRUPT
    escalate: page
    steps:
      - {name: one, action: exec, with: {argv: [touch, "DIR/one"]}}
      - {name: two, action: exec, with: {argv: [touch, "DIR/two"]}, idempotent: IDEMPOTENT}
      - {name: three, action: exec, with: {argv: [touch, "DIR/three-{{ params.x }}"]}}
  - name: page
    steps: [{name: tell, action: exec, with: {argv: [touch, "DIR/paged"]}}]
"""


@pytest.mark.parametrize(
    ("on_interrupt", "idempotent", "expected"),
    [
        ("resume", "true", ["three-7", "two"]),
        ("resume", "false", ["paged"]),
        ("escalate", "true", ["paged"]),
    ],
)
async def test_resume_or_escalate_an_interrupted_run(
    tmp_path: Path, on_interrupt: str, idempotent: str, expected: list[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    text = (
        RESUMABLE.replace("ON_INTERRUPT", on_interrupt)
        .replace("IDEMPOTENT", idempotent)
        .replace("DIR", str(out))
    )
    h = Harness(tmp_path, load_playbooks(text))
    try:
        old_id = await h.journal.run_created(
            rule="r1", playbook="p", key="host=h1", params={"x": 7}, labels={}, created_at=1.0
        )
        await h.journal.run_finished(old_id, "interrupted", 2.0)
        old = InterruptedRun(
            run_id=old_id, rule="r1", playbook="p", key="host=h1", params={"x": 7},
            labels={"host": "h1"}, created_at=1.0, state="running",
            in_flight=("two",), completed=("one",),
        )  # fmt: skip
        assert await h.runner.resume(old)
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "succeeded"
        assert sorted(p.name for p in out.iterdir()) == expected
        new = await h.run(ended.run_id)
        assert new["resumes"] == old_id
        # an escalation of the interrupted run says so, both ways; a resumption does not
        escalated = expected == ["paged"]
        assert new["escalates"] == (old_id if escalated else None)
        assert (await h.run(old_id))["escalated_to"] == (new["id"] if escalated else None)
    finally:
        await h.close()


async def test_a_suppressed_decision_executes_nothing(tmp_path: Path) -> None:
    pbs = load_playbooks(f"""\
playbooks:
  - name: p
    steps: [{{name: a, action: exec, with: {{argv: [touch, {str(tmp_path / "ran")!r}]}}}}]
""")
    h = Harness(tmp_path, pbs)
    try:
        assert not h.runner.start(decision(None, candidates=("p",), suppressed="shadow"))
        assert not h.runner.start(decision("nope"))
        assert h.runner.active_count() == 0
        assert (await h.journal.list_runs())["runs"] == []
        assert not (tmp_path / "ran").exists()
    finally:
        await h.close()


async def test_replaced_playbooks_apply_to_new_runs_only(tmp_path: Path) -> None:
    h = moded(tmp_path, "parallel")
    try:
        h.runner.start(decision("p"))
        (first,) = await holding(h, 1)
        h.runner.replace_playbooks(
            load_playbooks("""\
playbooks:
  - name: p
    mode: parallel
    steps: [{name: other, action: exec, with: {argv: ["true"]}}]
""")
        )
        h.runner.start(decision("p"))
        (ended,) = await h.outcomes(1)
        assert [s["path"] for s in (await h.run(ended.run_id))["steps"]] == ["other"]
        h.runner.approve(first)
        ended2 = (await h.outcomes(2))[1]
        assert [s["path"] for s in (await h.run(ended2.run_id))["steps"]] == ["hold", "act"]
    finally:
        await h.close()


async def test_shadow_mode_decides_and_records_but_executes_nothing(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    marker = tmp_path / "ran"
    rules.write_text(f"""\
rules:
  - {{name: down, match: {{event: process.exited, name: demo}}, run: p}}
playbooks:
  - name: p
    steps: [{{name: a, action: exec, with: {{argv: [touch, {str(marker)!r}]}}}}]
""")
    ruleset = load_rules([rules])
    engine = Engine(ruleset, Governor(GovernorConfig(), shadow=True))
    h = Harness(tmp_path, ruleset.playbooks)
    try:
        item = Event("process.exited", time.time(), {"host": "h1", "name": "demo"}, {}, "http")
        (d,) = [o for o in engine.evaluate(item, time.time()) if isinstance(o, Decision)]
        assert (d.playbook, d.suppressed, d.result) == (None, "shadow", "shadow")
        assert not h.runner.start(d)
        assert (await h.journal.list_runs())["runs"] == [] and not marker.exists()
    finally:
        await h.close()

"""Human gates and stops: approval granted / denied / timed out; cancel kills the step."""

from __future__ import annotations

import sys
from pathlib import Path

from runner_support import Harness, decision, load_playbooks, read_pids, wait_for_file, wait_gone

GATED = """\
playbooks:
  - name: p
    steps:
      - {name: ask, action: approval, with: {text: "restart db?"}, timeout: ASK_TIMEOUT}
      - {name: act, action: exec, with: {argv: [touch, MARKER]}}
    on_failure:
      - {name: undo, action: exec, with: {argv: [touch, UNDO]}}
"""


def gated(tmp: Path, ask_timeout: str = "60s") -> Harness:
    text = (
        GATED.replace("ASK_TIMEOUT", ask_timeout)
        .replace("MARKER", str(tmp / "acted"))
        .replace("UNDO", str(tmp / "undone"))
    )
    return Harness(tmp, load_playbooks(text))


async def waiting_for_approval(h: Harness) -> int:
    await h.store.until(lambda: any(s == "waiting_approval" for _, s in h.store.states))
    (run_id,) = [r for r, s in h.store.states if s == "waiting_approval"]
    assert (await h.run(run_id))["state"] == "waiting_approval"
    return run_id


async def test_approval_granted_continues(tmp_path: Path) -> None:
    h = gated(tmp_path)
    try:
        h.runner.start(decision("p"))
        run_id = await waiting_for_approval(h)
        assert not (tmp_path / "acted").exists()
        assert not h.runner.approve(run_id + 1000)
        assert h.runner.approve(run_id)
        assert not h.runner.approve(run_id)  # settled once
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "succeeded"
        assert (tmp_path / "acted").exists()
        steps = (await h.run(run_id))["steps"]
        assert [(s["path"], s["status"]) for s in steps] == [("ask", "ok"), ("act", "ok")]
    finally:
        await h.close()


async def test_approval_denied_ends_denied_without_acting(tmp_path: Path) -> None:
    h = gated(tmp_path)
    try:
        h.runner.start(decision("p"))
        run_id = await waiting_for_approval(h)
        assert h.runner.deny(run_id)
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "denied"
        assert not (tmp_path / "acted").exists() and not (tmp_path / "undone").exists()
        steps = (await h.run(run_id))["steps"]
        assert [(s["path"], s["status"]) for s in steps] == [("ask", "denied")]
    finally:
        await h.close()


async def test_approval_timeout_fails_the_run_and_compensates(tmp_path: Path) -> None:
    h = gated(tmp_path, ask_timeout="300ms")
    try:
        h.runner.start(decision("p"))
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "failed"
        assert not (tmp_path / "acted").exists() and (tmp_path / "undone").exists()
        steps = (await h.run(ended.run_id))["steps"]
        assert [(s["path"], s["status"]) for s in steps] == [
            ("ask", "timed_out"), ("on_failure/undo", "ok"),
        ]  # fmt: skip
        assert not h.runner.approve(ended.run_id)
    finally:
        await h.close()


async def test_cancel_kills_the_running_step(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    pbs = load_playbooks(f"""\
playbooks:
  - name: p
    steps:
      - {{name: hang, action: exec, with: {{argv: [{sys.executable!r}, '-c', {code!r}]}}}}
    on_failure:
      - {{name: undo, action: exec, with: {{argv: [touch, {str(tmp_path / "undone")!r}]}}}}
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("p"))
        await h.store.until(lambda: bool(h.store.started))
        run_id = h.store.started[0][0]
        await wait_for_file(pidfile)
        assert h.runner.cancel(run_id)
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "cancelled"
        assert not (tmp_path / "undone").exists()  # cancelled is an operator's choice
        (step,) = (await h.run(run_id))["steps"]
        assert step["status"] == "cancelled"
        assert await wait_gone(read_pids(pidfile))
        assert not h.runner.cancel(run_id)
    finally:
        await h.close()

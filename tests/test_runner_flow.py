"""Runs end to end on real subprocesses and the real journal: steps, retries, when,
on_failure, timeouts, verify, candidates, escalation, nesting, parallel branches."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from runner_support import Harness, decision, load_playbooks, read_pids, wait_gone

PY = sys.executable


def flaky(counter: Path, fail_times: int) -> str:
    """argv (YAML) of a command failing its first ``fail_times`` runs."""
    code = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
        "n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1)); "
        f"sys.exit(1 if n < {fail_times} else 0)"
    )
    return f"[{PY!r}, '-c', {code!r}, {str(counter)!r}]"


async def test_retry_with_backoff_until_success(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    pbs = load_playbooks(f"""\
playbooks:
  - name: p
    steps:
      - name: flaky
        action: exec
        with: {{argv: {flaky(counter, 2)}}}
        retry: {{attempts: 4, backoff: 100ms}}
""")
    h = Harness(tmp_path, pbs)
    try:
        t0 = time.monotonic()
        h.runner.start(decision("p"))
        (ended,) = await h.outcomes(1)
        elapsed = time.monotonic() - t0
        assert ended.outcome == "succeeded"
        steps = (await h.run(ended.run_id))["steps"]
        assert [(s["attempt"], s["status"]) for s in steps] == [
            (1, "failed"), (2, "failed"), (3, "ok"),
        ]  # fmt: skip
        assert elapsed >= 0.1 + 0.2  # backoff doubles: 100 ms, then 200 ms
        assert counter.read_text() == "3"
    finally:
        await h.close()


async def test_retries_exhausted_fail_the_run_and_run_on_failure(tmp_path: Path) -> None:
    marker = tmp_path / "compensated"
    pbs = load_playbooks(f"""\
playbooks:
  - name: p
    steps:
      - name: flaky
        action: exec
        with: {{argv: {flaky(tmp_path / "n", 99)}}}
        retry: {{attempts: 2}}
      - name: never
        action: exec
        with: {{argv: [touch, {str(tmp_path / "never")!r}]}}
    on_failure:
      - name: undo
        action: exec
        with: {{argv: [touch, {str(marker)!r}]}}
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("p"))
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "failed"
        steps = (await h.run(ended.run_id))["steps"]
        assert [(s["path"], s["status"]) for s in steps] == [
            ("flaky", "failed"), ("flaky", "failed"), ("on_failure/undo", "ok"),
        ]  # fmt: skip
        assert marker.exists() and not (tmp_path / "never").exists()
        assert h.sample("batond_runs_total", {"playbook": "p", "outcome": "failed"}) == 1
    finally:
        await h.close()


async def test_when_branches_on_earlier_results(tmp_path: Path) -> None:
    pbs = load_playbooks("""\
playbooks:
  - name: p
    steps:
      - {name: probe, action: exec, with: {argv: ["false"]}, continue_on_error: true}
      - {name: fix, action: exec, with: {argv: [echo, fixing]}, when: not steps.probe.ok}
      - {name: skip, action: exec, with: {argv: [echo, fine]}, when: steps.probe.ok}
      - name: report
        action: exec
        with: {argv: [echo, "probe={{ steps.probe.exit_code }} fix={{ steps.fix.stdout }}"]}
        when: steps.fix.ok and steps.probe.exit_code == 1
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("p"))
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "succeeded"
        steps = {s["path"]: s for s in (await h.run(ended.run_id))["steps"]}
        assert {p: s["status"] for p, s in steps.items()} == {
            "probe": "failed", "fix": "ok", "skip": "skipped", "report": "ok",
        }  # fmt: skip
        assert steps["report"]["stdout"] == "probe=1 fix=fixing\n\n"
    finally:
        await h.close()


async def test_step_timeout_kills_then_on_failure_runs(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    marker = tmp_path / "told"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    pbs = load_playbooks(f"""\
playbooks:
  - name: p
    steps:
      - name: hang
        action: exec
        with: {{argv: [{PY!r}, '-c', {code!r}]}}
        timeout: 500ms
    on_failure:
      - name: tell
        action: exec
        with: {{argv: [touch, {str(marker)!r}]}}
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("p"))
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "failed"
        steps = (await h.run(ended.run_id))["steps"]
        assert [(s["path"], s["status"]) for s in steps] == [
            ("hang", "timed_out"), ("on_failure/tell", "ok"),
        ]  # fmt: skip
        assert "timed out after 500ms" in steps[0]["detail"]["detail"]
        assert marker.exists()
        assert await wait_gone(read_pids(pidfile))
    finally:
        await h.close()


async def test_run_timeout_ends_timed_out(tmp_path: Path) -> None:
    pbs = load_playbooks("""\
playbooks:
  - name: p
    timeout: 300ms
    steps:
      - {name: a, action: exec, with: {argv: [sleep, "30"]}}
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("p"))
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "timed_out"
        (step,) = (await h.run(ended.run_id))["steps"]
        assert step["status"] == "timed_out"
    finally:
        await h.close()


VERIFY = """\
playbooks:
  - name: p
    steps:
      - {name: a, action: exec, with: {argv: ["true"]}}
    verify: {within: VERIFY_WITHIN}
"""


async def test_verify_resolved_when_the_incident_resolves(tmp_path: Path) -> None:
    h = Harness(tmp_path, load_playbooks(VERIFY.replace("VERIFY_WITHIN", "60s")))
    try:
        h.runner.start(decision("p", rule="r1", key="host=h1"))
        await h.store.until(lambda: any(p == "a" for _, p, _ in h.store.started))
        h.runner.incident_resolved("r1", "host=other")  # another incident: no effect
        h.runner.incident_resolved("r1", "host=h1")
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "resolved"
    finally:
        await h.close()


async def test_verify_unresolved_when_it_does_not(tmp_path: Path) -> None:
    h = Harness(tmp_path, load_playbooks(VERIFY.replace("VERIFY_WITHIN", "200ms")))
    try:
        h.runner.start(decision("p"))
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "unresolved"
    finally:
        await h.close()


async def test_runs_that_alone_resolve_their_incident_skip_verify(tmp_path: Path) -> None:
    h = Harness(tmp_path, load_playbooks(VERIFY.replace("VERIFY_WITHIN", "60s")))
    try:
        h.runner.start(decision("p"), verify_by_run=True)
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "resolved"
    finally:
        await h.close()


async def test_candidates_in_order_then_escalate(tmp_path: Path) -> None:
    pbs = load_playbooks("""\
playbooks:
  - name: first
    escalate: page
    steps: [{name: a, action: exec, with: {argv: ["false"]}}]
  - name: second
    steps: [{name: a, action: exec, with: {argv: ["true"]}}]
    verify: {within: 100ms}
  - name: page
    steps: [{name: a, action: exec, with: {argv: [echo, "{{ rule }} {{ key }}"]}}]
  - name: good
    steps: [{name: a, action: exec, with: {argv: ["true"]}}]
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("first", candidates=("first", "second")))
        ended = await h.outcomes(3)
        assert [(e.playbook, e.outcome, e.final, e.escalation) for e in ended] == [
            ("first", "failed", False, False),
            ("second", "unresolved", False, False),
            ("page", "succeeded", True, True),  # paging resolves nothing
        ]
        page = await h.run(ended[2].run_id)
        assert page["steps"][0]["stdout"] == "r1 host=h1\n"
        h.runner.start(decision("first", candidates=("first", "good", "second")))
        ended = await h.outcomes(5)
        assert [(e.playbook, e.outcome) for e in ended[3:]] == [
            ("first", "failed"), ("good", "succeeded"),
        ]  # fmt: skip
    finally:
        await h.close()


async def test_nested_playbook_and_parallel_branches(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    pbs = load_playbooks(f"""\
playbooks:
  - name: child
    steps:
      - name: write
        action: exec
        with: {{argv: [touch, "{out}/{{{{ params.what }}}}"]}}
  - name: parent
    steps:
      - name: fan
        action: parallel
        with:
          branches:
            - [{{name: b1, action: exec, with: {{argv: [touch, "{out}/b1"]}}}}]
            - - {{name: b2, action: exec, with: {{argv: ["false"]}}, continue_on_error: true}}
              - name: b3
                action: exec
                with: {{argv: [touch, "{out}/b3"]}}
                when: not steps.b2.ok
      - name: nest
        action: playbook
        with: {{name: child, params: {{what: "nested-{{{{ steps.b1.ok }}}}"}}}}
        when: steps.fan.ok
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("parent"))
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "succeeded"
        assert sorted(p.name for p in out.iterdir()) == ["b1", "b3", "nested-true"]
        paths = {s["path"]: s["status"] for s in (await h.run(ended.run_id))["steps"]}
        assert paths == {
            "fan": "ok", "fan/1/b1": "ok", "fan/2/b2": "failed", "fan/2/b3": "ok",
            "nest": "ok", "nest/write": "ok",
        }  # fmt: skip
    finally:
        await h.close()


async def test_metrics_of_a_run(tmp_path: Path) -> None:
    pbs = load_playbooks("""\
playbooks:
  - name: p
    steps: [{name: a, action: exec, with: {argv: ["true"]}}]
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("p"), arrived=time.monotonic())
        await h.outcomes(1)
        assert h.sample("batond_runs_total", {"playbook": "p", "outcome": "succeeded"}) == 1
        assert h.sample("batond_event_to_action_seconds_count") == 1
        labels = {"playbook": "p", "action": "exec"}
        assert h.sample("batond_step_duration_seconds_count", labels) == 1
        assert h.sample("batond_runs_active") == 0
        assert h.runner.active_count() == 0
    finally:
        await h.close()

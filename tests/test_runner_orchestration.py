"""Orchestration on the real runner and journal: compensation, step results across a
resumption, and the steps that carry data (set, assert, foreach, wait_until)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from batond.engine.types import Outcome
from batond.journal.facade import Journal
from batond.remedy.render import render_args
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


async def run_one(tmp_path: Path, text: str, **kw: Any) -> tuple[Harness, Any, list[Any]]:
    """Load ``text``, run playbook ``p`` once; the harness, the ended run and its steps."""
    h = Harness(tmp_path, load_playbooks(text))
    h.runner.start(decision("p", **kw))
    (ended,) = await h.outcomes(1)
    return h, ended, (await h.run(ended.run_id))["steps"]


def echo(text: str) -> str:
    return f"[{sys.executable!r}, '-c', 'import sys; print(sys.argv[1])', {text!r}]"


async def test_set_and_assert_compute_once_and_fail_with_the_message(tmp_path: Path) -> None:
    h, ended, steps = await run_one(
        tmp_path,
        f"""\
playbooks:
  - name: p
    steps:
      - name: sizes
        action: set
        with:
          total: "{{{{ sum([i.qty for i in event.items]) }}}}"
          skus: "{{{{ join(sorted([i.sku for i in event.items]), ',') }}}}"
      - {{name: show, action: exec, with: {{argv: {echo("{{ vars.skus }}={{ vars.total }}")}}}}}
      - name: enough
        action: assert
        with: {{that: vars.total > 5, message: "only {{{{ vars.total }}}} items"}}
      - {{name: never, action: exec, with: {{argv: ["true"]}}}}
""",
        raw={"event": "order", "items": [{"sku": "b", "qty": 2}, {"sku": "a", "qty": 1}]},
    )
    try:
        assert ended.outcome == "failed"
        assert [(s["path"], s["status"]) for s in steps] == [
            ("sizes", "ok"), ("show", "ok"), ("enough", "failed"),
        ]  # fmt: skip
        assert steps[1]["stdout"] == "a,b=3\n"
        assert steps[2]["detail"]["detail"] == "only 3 items"
    finally:
        await h.close()


async def test_foreach_runs_the_block_per_item_in_order_and_collects_results(
    tmp_path: Path,
) -> None:
    h, ended, steps = await run_one(
        tmp_path,
        f"""\
playbooks:
  - name: p
    steps:
      - {{name: account, action: exec, with: {{argv: {echo("U-7")}}}}}
      - name: hardware
        action: foreach
        with:
          items: "{{{{ event.hardware }}}}"
          steps:
            - name: order
              action: exec
              with: {{argv: {echo("{{ steps.account.stdout | 0 }}")}}}
""".replace("{{ steps.account.stdout | 0 }}", "{{ item }} for {{ split(steps.account.stdout)[0] }}")
        + """\
      - name: summary
        action: exec
        with:
          argv: [echo, "{{ join([i.item + ':' + str(i.ok) for i in steps.hardware.items], ' ') }}"]
""",
        raw={"event": "hired", "hardware": ["laptop", "monitor", "headset"]},
    )
    try:
        assert ended.outcome == "succeeded"
        assert [s["path"] for s in steps] == [
            "account", "hardware", "hardware/0/order", "hardware/1/order", "hardware/2/order",
            "summary",
        ]  # fmt: skip
        assert [s["stdout"] for s in steps[2:5]] == [
            "laptop for U-7\n", "monitor for U-7\n", "headset for U-7\n",
        ]  # fmt: skip
        assert steps[-1]["stdout"] == "laptop:True monitor:True headset:True\n"
    finally:
        await h.close()


async def test_foreach_concurrency_bounds_the_items_at_once_and_a_failure_stops_new_ones(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"
    code = (
        "import sys, time; open(sys.argv[1], 'a').write('+' + sys.argv[2] + '\\n'); "
        "time.sleep(0.2); open(sys.argv[1], 'a').write('-' + sys.argv[2] + '\\n'); "
        "sys.exit(sys.argv[2] == '3')"
    )
    argv = f"[{sys.executable!r}, '-c', {code!r}, {str(log)!r}, '{{{{ item }}}}']"
    h, ended, steps = await run_one(
        tmp_path,
        f"""\
playbooks:
  - name: p
    steps:
      - name: each
        action: foreach
        with:
          items: [1, 2, 3, 4, 5, 6, 7]
          concurrency: 2
          steps:
            - {{name: work, action: exec, with: {{argv: {argv}}}}}
""",
    )
    try:
        assert ended.outcome == "failed"
        running, peak = 0, 0
        for line in log.read_text().split():
            running += 1 if line[0] == "+" else -1
            peak = max(peak, running)
        assert peak == 2
        started = [line[1:] for line in log.read_text().split() if line[0] == "+"]
        assert "3" in started and len(started) < 7  # no new item after item 3 failed
        each = next(s for s in steps if s["path"] == "each")
        assert each["status"] == "failed" and "failed items: [2]" in each["detail"]["detail"]
    finally:
        await h.close()


async def test_wait_until_polls_its_check_until_the_condition_holds(tmp_path: Path) -> None:
    counter = tmp_path / "n"
    code = (
        "import pathlib, sys, json; p = pathlib.Path(sys.argv[1]); "
        "n = int(p.read_text()) + 1 if p.exists() else 1; p.write_text(str(n)); print(n)"
    )
    argv = f"[{sys.executable!r}, '-c', {code!r}, {str(counter)!r}]"
    h, ended, steps = await run_one(
        tmp_path,
        f"""\
playbooks:
  - name: p
    steps:
      - name: settle
        action: wait_until
        timeout: 10s
        with:
          every: 50ms
          that: int(steps.probe.stdout) >= 3
          steps:
            - {{name: probe, action: exec, with: {{argv: {argv}}}}}
      - name: slow
        action: wait_until
        timeout: 300ms
        continue_on_error: true
        with: {{every: 100ms, that: "false"}}
""",
    )
    try:
        assert ended.outcome == "succeeded"
        paths = [(s["path"], s["status"]) for s in steps]
        assert paths == [
            ("settle", "ok"), ("settle/1/probe", "ok"), ("settle/2/probe", "ok"),
            ("settle/3/probe", "ok"), ("slow", "timed_out"),
        ]  # fmt: skip
        assert counter.read_text() == "3"
    finally:
        await h.close()


def test_retry_backoff_fixed_exponential_and_capped() -> None:
    pbs = load_playbooks("""\
playbooks:
  - name: p
    steps:
      - {name: a, action: wait, with: {duration: 1s}, retry: {attempts: 4, backoff: 2s}}
      - name: b
        action: wait
        with: {duration: 1s}
        retry: {attempts: 4, delay: 1s, backoff: fixed}
      - name: c
        action: wait
        with: {duration: 1s}
        retry: {attempts: 6, delay: 1s, backoff: exponential, max_backoff: 5s}
""")
    a, b, c = pbs["p"].steps
    assert [a.retry.delay(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert [b.retry.delay(n) for n in (1, 2, 3)] == [1.0, 1.0, 1.0]
    assert [c.retry.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_nested_outputs_templated_names_and_previous_of_fallbacks(tmp_path: Path) -> None:
    pbs = load_playbooks(f"""\
playbooks:
  - name: first
    escalate: page
    steps:
      - name: make
        action: playbook
        with: {{name: "make-{{{{ event.kind }}}}", params: {{who: ann}}}}
      - {{name: show, action: exec, with: {{argv: {echo("{{ steps.make.outputs.id }}")}}}}}
      - {{name: pay, action: exec, with: {{argv: ["false"]}}}}
  - name: make-user
    outputs: {{id: "U-{{{{ params.who }}}}-{{{{ steps.create.exit_code }}}}"}}
    steps:
      - {{name: create, action: exec, with: {{argv: ["true"]}}}}
  - name: second
    steps:
      - name: why
        action: exec
        with:
          argv: {echo("{{ previous.playbook }} {{ previous.outcome }} {{ previous.failed_step }}")}
      - {{name: fail, action: exec, with: {{argv: ["false"]}}}}
  - name: page
    steps:
      - name: tell
        action: exec
        with: {{argv: {echo("{{ previous.playbook }} {{ previous.failed_step }}")}}}
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("first", candidates=("first", "second"), raw={"kind": "user"}))
        ended = await h.outcomes(3)
        assert [(e.playbook, e.outcome) for e in ended] == [
            ("first", "failed"), ("second", "failed"), ("page", "succeeded"),
        ]  # fmt: skip
        first, second, page = [(await h.run(e.run_id))["steps"] for e in ended]
        assert [s["stdout"] for s in first if s["path"] == "show"] == ["U-ann-0\n"]
        assert second[0]["stdout"] == "first failed pay\n"
        assert page[0]["stdout"] == "second fail\n"
    finally:
        await h.close()


def test_unquoted_numbers_in_argv_keep_their_source_text() -> None:
    pbs = load_playbooks("""\
playbooks:
  - name: p
    steps:
      - name: s
        action: exec
        with:
          argv: [echo, +0, 010, 0x10, 1.50, 1_000, yes, ~, 7]
          env: {N: 010}
""")
    step = pbs["p"].steps[0]
    args = render_args(step, {})
    assert args["argv"] == ["echo", "+0", "010", "0x10", "1.50", "1_000", "yes", "~", "7"]
    assert args["env"] == {"N": "010"}


async def test_a_playbook_outside_its_window_waits_queued(tmp_path: Path) -> None:
    # a window that is never open now: the minute after the current one only, on no day
    pbs = load_playbooks("""\
playbooks:
  - name: p
    only_within: {cron: "0 0 29 2 *"}
    steps:
      - {name: s, action: exec, with: {argv: ["true"]}}
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("p"))
        await h.store.until(lambda: any(st == "queued" for _, st in h.store.states[1:]))
        assert h.store.started == []  # no step started outside the window
        (run_id, _), *_ = h.store.states
        assert h.runner.cancel(run_id)
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "cancelled"
    finally:
        await h.close()

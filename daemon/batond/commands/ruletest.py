"""``batond test FILE...``: rule test files, run on the daemon's own pipeline.

Each test gets a fresh engine, governor and anomaly model (the config's, when
the file names one) on :class:`~batond.runtime.pipeline.Pipeline` with
:class:`~batond.runtime.pipeline.NoRuns`, exactly as ``batond replay`` runs them:
the clock is the inputs' time (the test's ``start`` plus each offset), timers
fire at their exact time, and a decision that would start a run counts as one
that started and ended at once. Nothing is executed: a step's arguments are
rendered with the template context the runner builds
(:func:`batond.remedy.run.template_context`), without acting.

Output: ``PASS FILE: NAME`` or ``FAIL FILE: NAME`` per test, and for a failure
the expected and actual values side by side; the last line is
``tests=N passed=P failed=F errors=E``. Exit 1 on any failure or file problem.
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from batond.commands.replay import Setup
from batond.engine.engine import Engine
from batond.engine.model import RuleSet
from batond.engine.types import Decision, Resolved
from batond.errors import ConfigError, Problem
from batond.events import Input, item_from_json
from batond.load.playbooks import Playbook, Step
from batond.load.ruletests import (
    ExpectedIncidents,
    ExpectedStep,
    RuleTest,
    TestFile,
    TimedInput,
    read_test_file,
)
from batond.remedy.flow import PURE
from batond.remedy.render import RENDER_ERRORS, render_args
from batond.remedy.run import initial_scope, origin_of, template_context
from batond.runtime.pipeline import NoRuns, Pipeline, run_now
from batond.units import format_duration

__all__ = ["main", "run_file", "side_by_side"]


class _Kept:
    """The test's ledger: every decision, in order."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    async def record_decision(self, decision: Decision) -> tuple[None, None]:
        self.decisions.append(decision)
        return None, None

    async def resolve_incident(self, resolved: Resolved) -> None:
        return None


def _offset(seconds: float) -> str:
    return format_duration(round(seconds, 3))


def _ms(seconds: float) -> int:
    """Offsets compare to the millisecond (float sums of intervals need not be exact)."""
    return round(seconds * 1000)


def side_by_side(expected: Sequence[str], actual: Sequence[str], indent: str = "    ") -> list[str]:
    """Two lists as columns: `` `` equal, ``!`` differs, ``-`` expected only, ``+`` actual
    only; ``(none)`` for an empty side."""
    exp = list(expected) or ["(none)"]
    act = list(actual) or ["(none)"]
    width = max(len("expected"), *(len(x) for x in exp))
    rows = [f"{indent}  {'expected':<{width}} | actual"]
    if not expected or not actual:  # one side empty: every row is only on the other
        mark = "+" if expected == [] else "-"
        for k in range(max(len(exp), len(act))):
            a, b = exp[k] if k < len(exp) else "", act[k] if k < len(act) else ""
            rows.append(f"{indent}{mark} {a:<{width}} | {b}".rstrip())
        return rows
    matcher = difflib.SequenceMatcher(None, exp, act, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        left, right = exp[i1:i2], act[j1:j2]
        mark = {"equal": " ", "replace": "!", "delete": "-", "insert": "+"}[op]
        for k in range(max(len(left), len(right))):
            a = left[k] if k < len(left) else ""
            b = right[k] if k < len(right) else ""
            m = mark if a and b else ("-" if a else "+")
            rows.append(f"{indent}{m} {a:<{width}} | {b}".rstrip())
    return rows


# -- running one test --------------------------------------------------------------------


def _items(test: RuleTest) -> list[tuple[float, Input]]:
    """The test's inputs as the intake would hand them over, with their offsets."""
    out: list[tuple[float, Input]] = []
    for timed in test.inputs:
        ts = test.start + timed.at
        out.extend((timed.at, item) for item in _as_inputs(timed, ts))
    return out


def _as_inputs(timed: TimedInput, ts: float) -> list[Input]:
    if timed.kind == "alert":  # through the webhook's own parser
        from batond.intake.http import parse_alertmanager

        body = orjson.dumps({"version": "4", "alerts": [dict(timed.obj)]})
        items, _ = parse_alertmanager(body, ts, "test")
        return items
    return [item_from_json({**timed.obj, "ts": ts}, ts, "test")]


def _open(engine: Engine) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, key) for name, s in engine.states.items() for key in s.open))


async def _advance(pipeline: Pipeline, since: float, to: float) -> None:
    """The clock moves from ``since`` to ``to`` as the daemon's does: each timer, schedule
    and lever fires at its own due time (the daemon's loop wakes then), then ``to``."""
    at = since
    due = pipeline.next_deadline()
    repeats = 0
    while due is not None and due <= to and repeats < 3:  # -inf: due at once
        repeats = repeats + 1 if max(due, at) == at else 0  # nothing moved on: never spin
        at = max(due, at)
        await pipeline.tick(at)
        due = pipeline.next_deadline()
    await pipeline.tick(to)


async def _drive(
    pipeline: Pipeline, engine: Engine, test: RuleTest, items: list[tuple[float, Input]]
) -> dict[float, tuple[tuple[str, str], ...]]:
    """Feed the inputs in time order; the open incidents at each check time (taken after
    the inputs at that time and the timers due by then)."""
    checks = sorted({c.at for c in test.incidents})
    seen: dict[float, tuple[tuple[str, str], ...]] = {}
    await pipeline.tick(test.start)  # the clock starts: schedules find their next time
    clock = test.start
    i = 0
    for at, item in items:
        while i < len(checks) and checks[i] < at:
            await _advance(pipeline, clock, clock := test.start + checks[i])
            seen[checks[i]] = _open(engine)
            i += 1
        await _advance(pipeline, clock, clock := test.start + at)
        await pipeline.observe(item, clock)
    for at in checks[i:]:
        await _advance(pipeline, clock, clock := test.start + at)
        seen[at] = _open(engine)
    await _advance(pipeline, clock, test.start + test.until)
    return seen


def run_test(test: RuleTest, rules: RuleSet, setup: Setup) -> list[str]:
    """The failure lines of one test (none: it passed)."""
    engine = setup.engine(rules)
    kept = _Kept()
    pipeline = Pipeline(engine, kept, NoRuns(), models=setup.models())
    seen = run_now(_drive(pipeline, engine, test, _items(test)))
    failures: list[str] = []
    if test.decisions is not None:
        failures += _check_decisions(test, kept.decisions)
    for check in test.incidents:
        failures += _check_incidents(check, seen[check.at])
    for step in test.steps:
        failures += _check_step(test, step, kept.decisions, rules, engine)
    return failures


def _decision_line(at: float, rule: str, key: str, result: str) -> str:
    return f"{_offset(at)} {rule} {key} {result}"


def _check_decisions(test: RuleTest, decisions: list[Decision]) -> list[str]:
    assert test.decisions is not None
    expected = sorted((_ms(d.at), d.rule, d.key, d.result) for d in test.decisions)
    actual = sorted((_ms(d.ts - test.start), d.rule, d.key, d.verdict) for d in decisions)
    if expected == actual:
        return []
    return [
        "  decisions:",
        *side_by_side(
            [_decision_line(ms / 1000, *rest) for ms, *rest in expected],
            [_decision_line(ms / 1000, *rest) for ms, *rest in actual],
        ),
    ]


def _check_incidents(check: ExpectedIncidents, actual: tuple[tuple[str, str], ...]) -> list[str]:
    if tuple(check.open) == actual:
        return []
    return [
        f"  open incidents at {_offset(check.at)} ({check.mark}):",
        *side_by_side([f"{r} {k}" for r, k in check.open], [f"{r} {k}" for r, k in actual]),
    ]


def _check_step(
    test: RuleTest, step: ExpectedStep, decisions: list[Decision], rules: RuleSet, engine: Engine
) -> list[str]:
    """The step's ``with:`` rendered for the decision that started its run."""
    head = f"  step {step.step} of {step.rule} {step.key} at {_offset(step.at)} ({step.mark}):"
    found = [
        d
        for d in decisions
        if _ms(d.ts - test.start) == _ms(step.at) and (d.rule, d.key) == (step.rule, step.key)
    ]
    runs = [d for d in found if d.playbook is not None]
    if not runs:
        what = f"{found[0].verdict}, no run" if found else "no decision"
        return [head, f"    {what}: nothing to render"]
    decision = runs[0]
    assert decision.playbook is not None
    playbook = rules.playbooks[decision.playbook]
    target = next((s for s in playbook.steps if s.name == step.step), None)
    if target is None:
        names = ", ".join(s.name for s in playbook.steps)
        return [head, f"    playbook {playbook.name} has no step {step.step!r} (steps: {names})"]
    args = render_step(decision, playbook, target, engine.resolves_by_run(decision.rule))
    if isinstance(args, str):
        return [head, f"    {args}"]
    if all(k in args and args[k] == v for k, v in step.args.items()):
        return []
    shown = {k: args.get(k) for k in step.args} | {k: v for k, v in args.items()}
    return [head, f"    expected with: {_json(step.args)}", f"    actual   with: {_json(shown)}"]


def render_step(
    decision: Decision, playbook: Playbook, target: Step, verify_by_run: bool
) -> dict[str, Any] | str:
    """``target``'s ``with:`` as the run of ``decision`` would render it, or why not.

    The context is the runner's own (:func:`~batond.remedy.run.initial_scope`,
    :func:`~batond.remedy.run.template_context`), ``now`` the decision's time. Earlier
    steps that act on nothing (``set``, ``assert``) are evaluated as the runner would;
    earlier steps that act are not run, so their results are missing.
    """
    origin = origin_of(decision, verify_by_run=verify_by_run)

    def clock() -> float:
        return decision.ts

    scope = initial_scope(playbook, origin)
    ctx = template_context(origin, scope, now=decision.ts, clock=clock)
    for earlier in playbook.steps[: playbook.steps.index(target)]:
        pure = PURE.get(earlier.action)
        if pure is None:
            continue
        try:
            if earlier.when is None or earlier.when.evaluate(ctx):
                scope.results[earlier.name] = pure(earlier, ctx, scope).view()
        except RENDER_ERRORS:
            continue  # as in the runner: that step fails, its values stay unset
    try:
        return render_args(target, ctx)
    except RENDER_ERRORS as exc:
        return f"template: {exc} (earlier steps that act are not run: no results of theirs)"


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


# -- files -------------------------------------------------------------------------------


def _setup(test_file: TestFile) -> Setup:
    """The named config's governor, mode and models; else the defaults and no models
    (never what this machine has in /etc/batond: a test must run the same anywhere)."""
    from batond.load.config import Config, load_config

    if test_file.config is None:
        return Setup(Config(), ())
    config = load_config(test_file.config)
    return Setup(config, tuple(p for p in config.models if p.exists()))


def _load(path: Path) -> tuple[TestFile, RuleSet, Setup] | list[Problem]:
    from batond.load.rulefiles import load_rules

    test_file, reader = read_test_file(path)
    if reader.problems or test_file is None:
        return sorted(reader.problems)
    try:
        rules = load_rules(list(test_file.rule_files))
        setup = _setup(test_file)
    except ConfigError as exc:
        return list(exc.problems)
    return test_file, rules, setup


def run_file(path: Path, out: list[str]) -> tuple[int, int, int]:
    """Run one file's tests, appending the output lines; (passed, failed, problems)."""
    loaded = _load(path)
    if isinstance(loaded, list):
        out.extend(str(p) for p in loaded)
        return 0, 0, len(loaded)
    test_file, rules, setup = loaded
    passed = failed = 0
    for test in test_file.tests:
        failures = run_test(test, rules, setup)
        if failures:
            failed += 1
            out.append(f"FAIL {path}: {test.name}")
            out.extend(failures)
        else:
            passed += 1
            out.append(f"PASS {path}: {test.name}")
    return passed, failed, 0


def main(args: argparse.Namespace) -> int:
    passed = failed = problems = 0
    for name in args.files:
        lines: list[str] = []
        p, f, e = run_file(Path(name), lines)
        passed, failed, problems = passed + p, failed + f, problems + e
        for line in lines:
            print(line, flush=False)
    print(f"tests={passed + failed} passed={passed} failed={failed} errors={problems}")
    return 1 if failed or problems else 0

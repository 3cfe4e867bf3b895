"""Helpers for the rules-engine tests: rule files from text, scripted input streams.

A script is a list of steps, each one of

- ``{"metric": ..., "value": ..., "ts": ..., label: ...}`` or ``{"event": ..., ...}``:
  an input, preceded by ``tick(ts)`` as the daemon and replay do;
- ``("tick", ts)``: the clock reaches ``ts`` with no input;
- ``("outcome", rule, playbook, key, outcome, ts)``: a run ended.

Outputs are compacted to ``("D", ts, rule, key, playbook-or-reason)`` and
``("R", ts, rule, key)`` so a table row reads like the expected story.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from batond.engine.engine import Engine
from batond.engine.governor import Governor, GovernorSettings
from batond.engine.types import Decision, Output
from batond.events import item_from_json
from batond.load.rulefiles import load_rules

PLAYBOOKS = """
playbooks:
  - {name: fix, steps: [{name: s, action: wait, with: {duration: 0s}}]}
  - {name: alt, steps: [{name: s, action: wait, with: {duration: 0s}}]}
  - {name: page, steps: [{name: s, action: wait, with: {duration: 0s}}]}
"""

#: Limits high enough that only the rule semantics decide.
GENEROUS = GovernorSettings(
    max_runs_count=10_000, per_target_count=10_000, max_targets_fraction=1.0, min_fleet=10_000
)


def write_rules(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text) + PLAYBOOKS)
    return path


def make_engine(tmp_path: Path, text: str, governor: Governor | None = None) -> Engine:
    rules = load_rules([write_rules(tmp_path, text)])
    return Engine(rules, governor or Governor(GENEROUS))


def compact(out: Output) -> tuple[Any, ...]:
    if isinstance(out, Decision):
        return ("D", out.ts, out.rule, out.key, out.playbook or out.suppressed)
    return ("R", out.ts, out.rule, out.key)


def drive(engine: Engine, script: list[Any]) -> list[tuple[Any, ...]]:
    outputs: list[Output] = []
    for step in script:
        if isinstance(step, dict):
            ts = float(step["ts"])
            outputs += engine.tick(ts)
            outputs += engine.evaluate(item_from_json(step, ts, "test"), ts)
        elif step[0] == "tick":
            outputs += engine.tick(float(step[1]))
        elif step[0] == "outcome":
            _, rule, playbook, key, outcome, ts = step
            outputs += engine.record_outcome(rule, playbook, key, outcome, float(ts))
        else:  # pragma: no cover - a typo in a table
            raise ValueError(step)
    return [compact(o) for o in outputs]


def sample(metric_name: str, value: float, ts: float, **labels: str) -> dict[str, Any]:
    return {"metric": metric_name, "value": value, "ts": ts, "host": "h1", **labels}


def event(event_name: str, ts: float, **labels: Any) -> dict[str, Any]:
    return {"event": event_name, "ts": ts, "host": "h1", **labels}

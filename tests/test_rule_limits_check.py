"""``each:``, ``limits:`` and ``resolve_after:`` as ``batond check`` reads them: every
mistake at its FILE:LINE:COL, and the values a good rule file gives the engine."""

from __future__ import annotations

from pathlib import Path

from batond.commands.check import check_all
from batond.engine.model import Limits, Rate
from batond.load.rulefiles import load_rules

PLAYBOOK = """
playbooks:
  - {name: p, steps: [{name: s, action: wait, with: {duration: 0s}}]}
"""


def _problems(tmp_path: Path, rules: str) -> list[str]:
    path = tmp_path / "rules.yaml"
    path.write_text(rules + PLAYBOOK)
    problems, _, _ = check_all([path])
    return [str(p).removeprefix(f"{path}:") for p in problems]


def test_good_keys_reach_the_rule(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        """
rules:
  - name: orders
    match: {event: order.placed}
    each: true
    limits:
      max_runs: {count: 100, per: 1m}
      per_target: {count: 2, per: 10m}
      max_concurrent_runs: 8
      blast_radius: true
    run: p
  - {name: release, match: {event: release}, resolve_after: 30m, run: p}
"""
        + PLAYBOOK
    )
    rules = load_rules([path])
    orders, release = rules.rules
    assert orders.each and orders.group_by == ()  # work items: no default [host]
    assert orders.limits == Limits(Rate(100, 60.0), Rate(2, 600.0), 8, True)
    assert orders.in_blast_radius  # said so explicitly
    assert release.resolve_after == 1800.0 and release.group_by == ("host",)
    assert not release.each and release.decides_again


def test_each_and_resolve_after_only_where_they_mean_something(tmp_path: Path) -> None:
    found = _problems(
        tmp_path,
        """
rules:
  - {name: a, match: {metric: cpu}, when: value > 1, each: true, run: p}
  - {name: b, match: {event: e}, each: true, resolve: {match: {event: f}}, run: p}
  - {name: c, match: {metric: cpu}, when: value > 1, resolve_after: 5m, run: p}
  - {name: d, match: {event: e}, count: {at_least: 2, within: 1m}, resolve_after: 5m, run: p}
  - {name: f, match: {event: e}, each: maybe, run: p}
""",
    )
    assert found == [
        "3:54: each: true needs an event match (every event is a work item)",
        "4:46: resolve: cannot be combined with each: true (an item closes when its run ends)",
        "5:54: resolve_after: is for event rules (this rule's incidents resolve by themselves)",
        "6:68: resolve_after: is for event rules (this rule's incidents resolve by themselves)",
        "7:40: expected true or false, got the string 'maybe'",
    ], found


def test_limits_mistakes_are_reported_at_their_value(tmp_path: Path) -> None:
    found = _problems(
        tmp_path,
        """
rules:
  - name: a
    match: {event: e}
    limits:
      max_runs: {count: 0, per: 1m}
      per_target: {count: 2}
      max_concurrent_runs: many
      blast: false
    run: p
""",
    )
    assert found == [
        "6:25: must be at least 1, got 0",
        "7:19: missing required key 'per'",
        "8:28: expected an integer, got the string 'many'",
        "9:7: unknown key 'blast'",
    ], found

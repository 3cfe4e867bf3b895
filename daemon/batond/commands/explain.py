"""``batond check --explain RULE``: the limits that apply to one rule, and where each
comes from (the rule's ``limits:``, else the ``governor:`` settings, else the defaults),
with its key, how its incidents resolve and whether it is inside the blast radius."""

from __future__ import annotations

import difflib
from typing import Any

from batond.engine.governor import CIRCUIT_STREAK, GovernorSettings
from batond.engine.model import Rule, RuleSet
from batond.units import format_duration

__all__ = ["explain", "unknown_rule"]

_KINDS = {
    "level": "metric rule (true while samples pass when:)",
    "edge": "event rule",
    "count": "count rule",
    "absent": "absence rule",
    "all": "correlation rule (all:)",
    "alert": "alert rule (Alertmanager's alert events, by fingerprint)",
    "fleet": "fleet rule (counted across hosts by the central instance holding partition 0)",
}


def unknown_rule(name: str, rules: RuleSet) -> str:
    names = [r.name for r in rules.rules]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"no rule {name!r} in the loaded rules{hint}"


def _rate(count: int, per: float) -> str:
    return f"{count} per {format_duration(per)}"


def explain(rule: Rule, rules: RuleSet, governor: Any) -> str:
    s = GovernorSettings.of(governor)
    lim = rule.limits
    key = ", ".join(rule.group_by) or "(none)"
    if rule.fleet is not None:
        key = f"fleet (one incident for the fleet): {rule.fleet.describe()}"
    if rule.each:
        key += " + a number per event (item=N)"
    lines = [f"rule {rule.name}: {_KINDS[rule.kind]}{', work items' if rule.each else ''}"]
    lines.append(f"  key: {key}")
    lines.append(f"  cooldown: {format_duration(rule.cooldown)} after a run, per key")
    lines.append(_per_target(rule, s))
    if lim.max_runs is not None:
        lines.append(
            f"  max_runs: {_rate(lim.max_runs.count, lim.max_runs.per)} (limits.max_runs),"
            " this rule's own (its runs do not count in governor.max_runs)"
        )
    else:
        lines.append(
            f"  max_runs: {_rate(s.max_runs_count, s.max_runs_per)} (governor.max_runs),"
            " shared by every rule without limits.max_runs"
        )
    if lim.max_concurrent_runs is not None:
        lines.append(
            f"  max_concurrent_runs: {lim.max_concurrent_runs} (limits.max_concurrent_runs),"
            " this rule's own slots; more wait queued"
        )
    else:
        lines.append(
            f"  max_concurrent_runs: {s.max_concurrent_runs} (governor.max_concurrent_runs),"
            " shared; more wait queued"
        )
    lines.append(_blast_radius(rule, s))
    lines.append(f"  resolves: {_resolves(rule)}")
    for name in rule.run:
        mode = getattr(rules.playbooks.get(name), "mode", "single")
        lines.append(f"  run: {name} (mode {mode})")
    return "\n".join(lines)


def _per_target(rule: Rule, s: GovernorSettings) -> str:
    budget = s.per_target(rule.limits)
    source = "limits.per_target" if rule.limits.per_target else "governor.per_target"
    return (
        f"  per_target: {_rate(budget.count, budget.per)} ({source}), counted for this rule"
        f" and key; beyond it, or after {CIRCUIT_STREAK} runs in a row end failed, unresolved"
        f" or timed_out, its circuit opens for {format_duration(budget.per)}"
    )


def _blast_radius(rule: Rule, s: GovernorSettings) -> str:
    if not rule.in_blast_radius:
        why = (
            "limits.blast_radius: false"
            if rule.limits.blast_radius is False
            else "each: true: work items act on no host"
        )
        return f"  blast_radius: does not apply ({why})"
    return (
        f"  blast_radius: applies: runs on at most {s.max_targets_fraction:.0%} of the hosts"
        f" seen in the last hour within {format_duration(s.max_runs_per)}, once {s.min_fleet}"
        " are known (governor.max_targets_fraction, governor.min_fleet)"
    )


def _resolves(rule: Rule) -> str:
    if rule.each:
        return "when its runs end, whatever the outcome"
    how = {
        "alert": "at the alert's resolved notification",
        "level": "when a matching sample fails when:",
        "count": "when the count falls below at_least",
        "absent": "at the next matching input",
        "fleet": "when the count falls below at_least",
    }.get(rule.kind, "when its run resolves it (at once when no run starts)")
    if rule.resolve is not None:
        how = "at its resolve: input"
    if rule.resolve_after is not None:
        how += f", or after {format_duration(rule.resolve_after)} without a matching input"
    if rule.decides_again:
        how += "; while open and no run works on it, each matching input is decided again"
    return how

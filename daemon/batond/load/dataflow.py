"""Load-time checks of the data a playbook's templates read, across files.

Every ``steps.NAME`` a template or expression reads must name a step that has
run by then (an earlier step, a step of the same block, or a check step of
the same ``wait_until``); every ``vars.NAME`` an earlier ``set`` step; every
``params.NAME`` a parameter that something running the playbook gives: a
rule's or schedule's ``params:``, the playbook's own ``params:`` declaration,
a ``playbook`` step's ``params``, or the playbook it escalates from (whose
parameters it inherits). A nested playbook named by a template must match at
least one loaded playbook. What would be null at run time is an error at
``FILE:LINE:COL`` here, with a "did you mean" where one name is one edit away.

:func:`typo_warnings` finds bare names in rules' ``when:`` that are read as
labels but are one edit from a name the expression language knows
(``valeu > 90``): warnings, since a label of that name may well exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batond.engine.expr import RULE_NAMES, Expression, suggest
from batond.engine.model import Rule, Schedule
from batond.engine.templates import Template
from batond.errors import Mark, Problem

__all__ = ["dataflow_problems", "nested_targets", "typo_warnings"]

#: Keys of a step's ``with:`` that hold a nested playbook's name and its params.
_NESTED = "playbook"


def _expressions(value: Any) -> Iterator[Expression]:
    """Every compiled expression inside a compiled ``with:`` value."""
    if isinstance(value, Expression):
        yield value
    elif isinstance(value, Template):
        for part in value.parts:
            if isinstance(part, Expression):
                yield part
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _expressions(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _expressions(v)


def _problem(mark: Mark, message: str) -> Problem:
    return Problem(mark.file, mark.line, mark.col, message)


def _hint(name: str, known: Iterable[str]) -> str:
    close = suggest(name, sorted(known))
    return f"; did you mean {close!r}?" if close else ""


def nested_targets(step: Any, playbooks: Mapping[str, Any]) -> list[str]:
    """The playbooks a ``playbook`` step may run: its literal name, or every loaded
    playbook its templated name can produce (literal parts as written)."""
    if step.action != _NESTED:
        return []
    name = step.args.get("name")
    if isinstance(name, str):
        return [name]
    if not isinstance(name, Template):
        return []
    pattern = "".join(re.escape(p) if isinstance(p, str) else "[A-Za-z0-9_.-]+" for p in name.parts)
    return [pb for pb in playbooks if re.fullmatch(pattern, pb)]


# -- params: what reaches each playbook --------------------------------------------


@dataclass
class _Params:
    """Parameter names reaching a playbook; ``any`` when some caller's are not known."""

    names: set[str] = field(default_factory=set)
    any: bool = False

    def add(self, other: _Params) -> bool:
        before = (len(self.names), self.any)
        self.names |= other.names
        self.any = self.any or other.any
        return (len(self.names), self.any) != before


def _steps_of(steps: Sequence[Any]) -> Iterator[Any]:
    for step in steps:
        yield step
        for branch in step.branches:
            yield from _steps_of(branch)


def _params_reaching(
    playbooks: Mapping[str, Any], rules: Sequence[Rule], schedules: Sequence[Schedule]
) -> dict[str, _Params]:
    known = {name: _Params(set(pb.params)) for name, pb in playbooks.items()}
    callers: list[Rule | Schedule] = [*rules, *schedules]
    for caller in callers:
        names = _Params(set(caller.params))
        for target in (*caller.run, getattr(caller, "on_resolve", None)):
            if target in known:
                known[target].add(names)
    changed = True
    while changed:  # a fixpoint over escalations and nesting: sets only grow
        changed = False
        for name, pb in playbooks.items():
            if pb.escalate in known:
                changed |= known[pb.escalate].add(known[name])
            for step in _steps_of((*pb.steps, *pb.on_failure)):
                extra = step.args.get("params") if step.action == _NESTED else None
                given = _Params(set(known[name].names), known[name].any)
                if isinstance(extra, Mapping):
                    given.names |= set(extra)
                elif extra is not None:
                    given.any = True
                for target in nested_targets(step, playbooks):
                    if target in known:
                        changed |= known[target].add(given)
    return known


# -- walking one playbook ----------------------------------------------------------


@dataclass
class _Walk:
    playbook: Any
    params: _Params
    every_step: set[str]
    out: list[Problem]

    def check(
        self, exprs: Iterable[Expression], seen: set[str], variables: set[str], when: bool = False
    ) -> None:
        for expr in exprs:
            for root, key, mark in expr.refs:
                if when and root == "steps":
                    continue  # the playbook reader checks when:'s steps as it reads them
                message = self._ref(root, key, seen, variables)
                if message:
                    self.out.append(_problem(mark, message))

    def _ref(self, root: str, key: str, seen: set[str], variables: set[str]) -> str:
        pb = self.playbook.name
        if root == "steps" and key not in seen:
            if key in self.every_step:
                return f"steps.{key}: step {key!r} has not run yet here (it comes later)"
            return f"steps.{key}: no step named {key!r} in playbook {pb!r}" + _hint(
                key, self.every_step
            )
        if root == "vars" and key not in variables:
            return f"vars.{key}: no earlier set step sets {key!r}" + _hint(key, variables)
        if root == "params" and not self.params.any and key not in self.params.names:
            given = ", ".join(sorted(self.params.names)) or "none"
            return (
                f"params.{key}: nothing that runs playbook {pb!r} gives param {key!r} "
                f"(given: {given}; declare it under the playbook's params:)"
                + _hint(key, self.params.names)
            )
        return ""

    def steps(self, steps: Sequence[Any], seen: set[str], variables: set[str]) -> None:
        """Check ``steps`` in order; ``seen`` and ``variables`` grow as they would run."""
        for step in steps:
            own = [e for k, v in step.args.items() if k != "that" for e in _expressions(v)]
            self.check(own, seen, variables)
            if step.when is not None:
                self.check([step.when], seen, variables, when=True)
            self._blocks(step, seen, variables)
            seen.add(step.name)
            if step.action == "set":
                variables.update(step.args)

    def _blocks(self, step: Any, seen: set[str], variables: set[str]) -> None:
        that = [e for e in _expressions(step.args.get("that"))]
        if step.action == "parallel":
            for branch in step.branches:
                inner = set(seen)
                self.steps(branch, inner, set(variables))
                seen |= inner
        elif step.action == "foreach":  # the block's results stay in steps.NAME.items
            for branch in step.branches:
                self.steps(branch, set(seen), set(variables))
        elif step.action == "wait_until":  # its checks' results are the step's scope's
            for branch in step.branches:
                self.steps(branch, seen, variables)
        self.check(that, seen, variables)


def _all_names(steps: Sequence[Any]) -> set[str]:
    return {s.name for s in _steps_of(steps)}


def dataflow_problems(
    playbooks: Mapping[str, Any], rules: Sequence[Rule], schedules: Sequence[Schedule]
) -> list[Problem]:
    """What templates read that will not be there, and unmatched nested names."""
    problems: list[Problem] = []
    reaching = _params_reaching(playbooks, rules, schedules)
    for pb in playbooks.values():
        every = _all_names((*pb.steps, *pb.on_failure))
        walk = _Walk(pb, reaching[pb.name], every, problems)
        variables: set[str] = set()
        walk.steps(pb.steps, set(), variables)
        # on_failure and outputs: any step may have run (a missing one reads as null)
        walk.steps(pb.on_failure, _all_names(pb.steps), set(variables))
        walk.check(_expressions(dict(pb.outputs)), every, variables)
        for step in _steps_of((*pb.steps, *pb.on_failure)):
            name = step.args.get("name") if step.action == _NESTED else None
            if isinstance(name, Template) and not nested_targets(step, playbooks):
                problems.append(
                    _problem(step.mark, f"step {step.name!r}: no loaded playbook matches "
                             f"the name {name.text!r}")
                )  # fmt: skip
    return problems


def typo_warnings(rules: Sequence[Rule]) -> list[Problem]:
    """``when:`` names read as labels that look like a misspelt known name."""
    out: list[Problem] = []
    for rule in rules:
        labels = {k for part in rule.parts for k, _ in part.match.labels} | set(rule.group_by)
        parts = [*rule.parts, *([rule.resolve] if rule.resolve else [])]
        for part in parts:
            if part.when is None:
                continue
            for name, mark in part.when.bare_names:
                close = None if name in labels else suggest(name, RULE_NAMES)
                if close:
                    out.append(
                        _problem(mark, f"warning: {name!r} is read as a label "
                                 f"(labels.{name}); did you mean {close!r}?")
                    )  # fmt: skip
    return out

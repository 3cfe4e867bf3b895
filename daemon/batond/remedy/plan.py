"""The steps a run never reached: its playbook's step tree walked in the path format the
step executor journals (:mod:`batond.remedy.steps`), less the paths the run recorded.

Paths: a top-level step is ``NAME``; compensation ``on_failure/NAME``; a ``parallel``
branch ``STEP/1/NAME`` (from 1); a nested ``playbook`` step's steps ``STEP/NAME`` and
its compensation ``STEP/on_failure/NAME``; a ``foreach`` item ``STEP/0/NAME`` (from 0)
and a ``wait_until`` poll ``STEP/1/NAME`` (from 1). Pure: the run view
(:mod:`batond.runtime.operator`) calls it with the stored steps of an ended run.

What counts as "should have run": every step of the playbook in order; compensation
only when the run failed or timed out (the executor runs it then), a nested playbook's
only when its step failed; the body of a ``foreach`` or ``wait_until`` for each item or
poll that started (how many would have followed is not known). A step skipped by
``when:`` was reached, and so were the steps inside it; the steps inside a step that
was not reached were not reached either. A resumption (``resumes``) starts where the
run it resumes stopped: the top-level steps before its first recorded one ran there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batond.load.playbooks import Playbook, Step
from batond.remedy.flow import MAX_NESTING

__all__ = ["not_reached"]

_COMPENSATED = frozenset({"failed", "timed_out"})  # what runs on_failure (steps._COMPENSATE)
_PER_ITEM = frozenset({"foreach", "wait_until"})  # a block per item / poll, numbered


def not_reached(
    playbook: Playbook,
    playbooks: Mapping[str, Playbook],
    *,
    outcome: str | None,
    recorded: Iterable[tuple[str, str]],
    args: Mapping[str, Mapping[str, Any]] | None = None,
    resumption: bool = False,
) -> list[str]:
    """The paths of ``playbook``'s steps that an ended run with ``outcome`` did not record.

    ``recorded``: the run's step records as (path, status), in order (a step's last
    attempt wins); ``args``: their stored rendered ``with:`` by path, which name the
    playbook a templated ``playbook`` step ran.
    """
    status: dict[str, str] = {}
    for path, state in recorded:
        status[path] = state
    walk = _Walk(playbooks, status, args or {})
    top: Sequence[Step] = playbook.steps
    if resumption:
        first = next((i for i, s in enumerate(top) if s.name in status), len(top))
        top = top[first:]
    walk.steps(top, "", 0)
    if outcome in _COMPENSATED:
        walk.steps(playbook.on_failure, "on_failure/", 0)
    return walk.missing


@dataclass
class _Walk:
    playbooks: Mapping[str, Playbook]
    status: Mapping[str, str]
    args: Mapping[str, Mapping[str, Any]]
    missing: list[str] = field(default_factory=list)

    def steps(self, steps: Sequence[Step], prefix: str, depth: int) -> None:
        for step in steps:
            path = prefix + step.name
            state = self.status.get(path)
            if state is None:
                self.missing.append(path)
            if state != "skipped":  # a when: that was false: nothing inside it ran, rightly
                self.inside(step, path, state, depth)

    def inside(self, step: Step, path: str, state: str | None, depth: int) -> None:
        """The steps inside ``step`` (``state``: its recorded status, None: not reached)."""
        if step.action == "parallel":
            for i, branch in enumerate(step.branches, 1):
                self.steps(branch, f"{path}/{i}/", depth)
        elif step.action == "playbook":
            self.nested(step, path, state, depth)
        elif step.action in _PER_ITEM and step.branches:
            for index in self._numbers(path):
                self.steps(step.branches[0], f"{path}/{index}/", depth)

    def nested(self, step: Step, path: str, state: str | None, depth: int) -> None:
        name = step.args.get("name")
        if not isinstance(name, str):  # a template: the name it rendered, if it ran
            name = (self.args.get(path) or {}).get("name")
        target = self.playbooks.get(name) if isinstance(name, str) else None
        if target is None or depth >= MAX_NESTING:
            return
        self.steps(target.steps, path + "/", depth + 1)
        if state in _COMPENSATED:
            self.steps(target.on_failure, path + "/on_failure/", depth + 1)

    def _numbers(self, path: str) -> list[int]:
        """The items (polls) of a foreach (wait_until) step that recorded a step."""
        prefix = path + "/"
        found: set[int] = set()
        for recorded in self.status:
            if recorded.startswith(prefix):
                head = recorded[len(prefix) :].split("/", 1)[0]
                if head.isdigit():
                    found.add(int(head))
        return sorted(found)

"""Checks across playbooks: ``escalate:`` and nested ``playbook`` targets exist, and
no playbook runs itself through nested playbook steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from batond.errors import Mark, Problem
from batond.load.playbooks.model import Playbook, Step

__all__ = ["check_references", "nested_target"]


def check_references(playbooks: Mapping[str, Playbook]) -> list[Problem]:
    """``escalate:`` and nested ``playbook`` names must exist; nesting must not loop."""
    problems: list[Problem] = []

    def at(mark: Mark, message: str) -> None:
        problems.append(Problem(mark.file, mark.line, mark.col, message))

    for pb in playbooks.values():
        if pb.escalate is not None and pb.escalate not in playbooks:
            at(pb.mark, f"playbook {pb.name!r}: escalate names unknown playbook {pb.escalate!r}")
        for step in _all_steps(pb):
            target = nested_target(step)
            if target is not None and target not in playbooks:
                at(step.mark, f"step {step.name!r}: unknown playbook {target!r}")
    for pb in playbooks.values():
        if _nests(pb.name, playbooks, (pb.name,)):
            at(pb.mark, f"playbook {pb.name!r} runs itself through nested playbook steps")
    return problems


def nested_target(step: Step) -> str | None:
    """The playbook a ``playbook`` step runs."""
    if step.action != "playbook":
        return None
    name = step.args.get("name")
    return name if isinstance(name, str) else None


def _all_steps(pb: Playbook) -> list[Step]:
    out: list[Step] = []

    def walk(steps: Sequence[Step]) -> None:
        for step in steps:
            out.append(step)
            for branch in step.branches:
                walk(branch)

    walk(pb.steps)
    walk(pb.on_failure)
    return out


def _nests(name: str, playbooks: Mapping[str, Playbook], path: tuple[str, ...]) -> bool:
    pb = playbooks.get(path[-1])
    if pb is None:
        return False
    for step in _all_steps(pb):
        target = nested_target(step)
        if target is None:
            continue
        if target == name:
            return True
        if target not in path and _nests(name, playbooks, (*path, target)):
            return True
    return False

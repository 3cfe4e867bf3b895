"""Rules, playbooks and models as the config names them: read at start and on reload."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from batond.anomaly import ModelSpec
from batond.engine.model import RuleSet
from batond.errors import ConfigError, Problem
from batond.load.config import Config
from batond.load.fleetrules import not_central_problems
from batond.load.modelfile import load_models
from batond.load.playbooks.model import Playbook, Step
from batond.load.rulefiles import load_rules

__all__ = ["Definitions", "load_definitions", "remote_problems"]


@dataclass(frozen=True, slots=True)
class Definitions:
    rules: RuleSet  # rules, schedules and playbooks
    models: tuple[ModelSpec, ...]


def load_definitions(config: Config) -> Definitions:
    """Everything ``config`` names, validated whole; ConfigError with every problem.

    With built-in defaults (no config file) the /etc paths may not exist yet.
    """
    rules = load_rules(list(config.rules), missing_ok=config.path is None)
    central = config.fleet is not None and config.fleet.is_central
    problems = not_central_problems(rules.rules, central) + remote_problems(config, rules.playbooks)
    if problems:
        raise ConfigError(problems)
    models = load_models([p for p in config.models if p.exists()])
    return Definitions(rules, tuple(models))


def remote_problems(config: Config, playbooks: Mapping[str, Playbook]) -> list[Problem]:
    """``remote`` steps where this daemon cannot send them: only a central instance
    with ``fleet.keys_dir`` asks agents (docs/fleet.md#remote-steps)."""
    fleet = config.fleet
    if fleet is not None and fleet.is_central and fleet.keys_dir is not None:
        return []
    why = (
        "action remote needs fleet.keys_dir (one <host>.key per agent)"
        if fleet is not None and fleet.is_central
        else "action remote is for central instances only (fleet: {role: central} in batond.yaml)"
    )
    return [
        Problem(s.mark.file, s.mark.line, s.mark.col, f"step {s.name}: {why}")
        for pb in playbooks.values()
        for s in _steps((*pb.steps, *pb.on_failure))
        if s.action == "remote"
    ]


def _steps(steps: Iterable[Step]) -> Iterator[Step]:
    for step in steps:
        yield step
        for branch in step.branches:
            yield from _steps(branch)

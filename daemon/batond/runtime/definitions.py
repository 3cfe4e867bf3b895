"""Rules, playbooks and models as the config names them: read at start and on reload."""

from __future__ import annotations

from dataclasses import dataclass

from batond.anomaly import ModelSpec
from batond.engine.model import RuleSet
from batond.errors import ConfigError
from batond.load.config import Config
from batond.load.fleetrules import not_central_problems
from batond.load.modelfile import load_models
from batond.load.rulefiles import load_rules

__all__ = ["Definitions", "load_definitions"]


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
    problems = not_central_problems(rules.rules, central)
    if problems:
        raise ConfigError(problems)
    models = load_models([p for p in config.models if p.exists()])
    return Definitions(rules, tuple(models))

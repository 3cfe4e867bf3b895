"""``batond check [-c CONFIG] [PATH ...]``: validate everything, print every problem.

With PATHs, those files and folders are checked on their own (rules,
playbooks and schedules; files holding ``models:`` go to the model checker).
Without, the configuration and everything it names. Problems are printed
sorted, one ``FILE:LINE:COL: message`` per line on stdout; the exit code is 1
when there is any. Warnings (``FILE:LINE:COL: warning: ...``, such as a
``when:`` name that looks like a misspelt one) are printed too but do not
change the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from batond.errors import ConfigError, Problem
from batond.load.dataflow import typo_warnings
from batond.load.fleetrules import not_central_problems
from batond.load.rulefiles import FILE_FIELDS, load_rules, rule_files
from batond.load.sandbox import UNIT_PATHS, Sandbox, read_unit, sandbox_warnings
from batond.load.yamlfile import MappingNode, compose_file

__all__ = ["check_all", "check_paths", "main"]


def _holds_models(path: Path) -> bool:
    node, _ = compose_file(path)
    if not isinstance(node, MappingNode):
        return False
    keys = {getattr(k, "value", None) for k, _ in node.value}
    return "models" in keys and not keys & set(FILE_FIELDS)


def _check_models(paths: Sequence[Path]) -> list[Problem]:
    if not paths:
        return []
    try:
        from batond.load.modelfile import check_model_paths
    except ImportError:  # the anomaly package is optional for rule checks
        return []
    return list(check_model_paths(list(paths)))


def check_paths(
    rule_paths: Sequence[Path], model_paths: Sequence[Path] = (), missing_ok: bool = False
) -> tuple[list[Problem], str]:
    """Problems of the rule and model paths, and the summary line when there are none
    (warnings are in :func:`check_warnings`)."""
    problems, summary, _ = check_all(rule_paths, model_paths, missing_ok)
    return problems, summary


def check_all(
    rule_paths: Sequence[Path],
    model_paths: Sequence[Path] = (),
    missing_ok: bool = False,
    sandbox: Sandbox | None = None,
    central: bool | None = None,
) -> tuple[list[Problem], str, list[Problem]]:
    """Problems, the summary line when there are none, and warnings (with ``sandbox``,
    also of steps that write where the unit does not let batond write). ``central``:
    whether the configuration is a fleet's central instance (None: no configuration,
    fleet rules are not judged)."""
    files, problems = rule_files(rule_paths, missing_ok)
    models = [f for f in files if _holds_models(f)]
    rules = [f for f in files if f not in models]
    problems += _check_models([*models, *model_paths])
    summary = ""
    warnings: list[Problem] = []
    try:
        ruleset = load_rules(rules)
    except ConfigError as exc:
        problems += exc.problems
    else:
        warnings = typo_warnings(ruleset.rules)
        if central is not None:
            problems += not_central_problems(ruleset.rules, central)
        if sandbox is not None:
            warnings += sandbox_warnings(ruleset.playbooks, sandbox)
        summary = (
            f"ok: {ruleset.rule_count} rules, {len(ruleset.playbooks)} playbooks, "
            f"{len(ruleset.schedules)} schedules"
        )
    return sorted(set(problems)), summary, sorted(set(warnings))


def main(args: argparse.Namespace) -> int:
    from batond.load.config import GovernorConfig, load_config

    governor = GovernorConfig()
    unit = getattr(args, "unit", None)
    sandbox, unit_problems = _sandbox(None if unit is None else Path(unit))
    if args.paths:
        rule_paths = [Path(p) for p in args.paths]
        problems, summary, warnings = check_all(rule_paths, sandbox=sandbox)
    else:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            for problem in sorted(exc.problems):
                print(problem)
            return 1
        default = config.path is None
        governor = config.governor
        rule_paths = list(config.rules)
        models = [p for p in config.models if p.exists()]
        central = config.fleet is not None and config.fleet.is_central
        problems, summary, warnings = check_all(rule_paths, models, default, sandbox, central)
        if not problems:
            problems = _remote_problems(config, rule_paths, default)
        warnings += _state_dir_warning(config, sandbox)
    problems += unit_problems
    for problem in sorted([*problems, *warnings]):
        print(problem)
    if problems:
        return 1
    explain_rule = getattr(args, "explain", None)
    if explain_rule:
        return _explain(rule_paths, explain_rule, governor)
    print(summary, file=sys.stdout)
    return 0


def _remote_problems(config: Any, paths: Sequence[Path], missing_ok: bool) -> list[Problem]:
    """``remote`` steps of a daemon that is no central instance (docs/fleet.md)."""
    from batond.runtime.definitions import remote_problems

    files, _ = rule_files(paths, missing_ok)
    ruleset = load_rules([f for f in files if not _holds_models(f)])
    return remote_problems(config, ruleset.playbooks)


def _sandbox(unit: Path | None) -> tuple[Sandbox | None, list[Problem]]:
    """The unit's sandbox: the one named, else the installed batond.service (if any)."""
    if unit is None:
        unit = next((p for p in UNIT_PATHS if p.is_file()), None)
        if unit is None:
            return None, []  # not installed as a service here: nothing to tell
    try:
        return read_unit(unit), []
    except OSError as exc:
        return None, [Problem(str(unit), 1, 1, f"cannot read the unit: {exc.strerror}")]


def _state_dir_warning(config: Any, sandbox: Sandbox | None) -> list[Problem]:
    if sandbox is None or config.path is None:
        return []
    because = sandbox.why_read_only(PurePosixPath(config.state_dir))
    if because is None:
        return []
    message = (
        f"warning: state_dir {config.state_dir} is read-only under {sandbox.unit.name} "
        f"({because}): batond cannot keep its journal there; use StateDirectory= or "
        "ReadWritePaths="
    )
    return [Problem(str(config.path), 1, 1, message)]


def _explain(paths: Sequence[Path], name: str, governor: Any) -> int:
    from batond.commands.explain import explain, unknown_rule

    files, _ = rule_files(paths, missing_ok=True)
    ruleset = load_rules([f for f in files if not _holds_models(f)])
    rule = ruleset.rule(name)
    if rule is None:
        print(f"batond: {unknown_rule(name, ruleset)}", file=sys.stderr)
        return 1
    print(explain(rule, ruleset, governor))
    return 0

"""The import direction of the layers (docs/architecture.md, "Which may import which").

Every module under ``daemon/batond/`` is parsed (not imported) and each of its
imports, lazy and ``TYPE_CHECKING`` ones included, is checked against the
table below. The pure core decides from events and a clock it is given: it
never touches the network, the clock, processes, the database or the
daemon's plumbing, which is what lets ``batond replay`` run it on recorded
events and lets its tests run without I/O.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "batond"

# -- the rule table ---------------------------------------------------------------
#: Each layer (a top-level module or folder of batond, or a folder inside one that has
#: its own row) and the layers it may import. Leaves are plain value types; the pure
#: core decides from inputs and a clock; the edges do I/O; runtime composes them;
#: commands sit on top. A layer may always import itself and the folders inside it.
#:
#: ``remedy.actions`` is a row of its own: each action module declares its kind and
#: ``with:`` keys beside its code, and ``load`` validates playbooks against those
#: declarations, so the actions sit below ``load`` while the runner, which executes
#: loaded playbooks, sits above it.
LEAVES = {"errors", "units", "events"}
CORE = {"engine", "anomaly"}
MAY_IMPORT: dict[str, set[str]] = {
    "errors": set(),
    "units": set(),
    "events": {"errors"},
    "engine": LEAVES,
    "anomaly": LEAVES,
    "metrics": LEAVES,
    "remedy.actions": LEAVES,
    "load": LEAVES | CORE | {"remedy.actions"},
    "intake": LEAVES | {"load", "metrics"},
    "remedy": LEAVES | {"engine", "load", "metrics"},
    "journal": LEAVES | CORE | {"remedy"},
    "fleet": LEAVES | CORE | {"load", "intake", "remedy", "journal", "metrics"},
    "runtime": LEAVES | CORE | {"load", "intake", "remedy", "journal", "metrics", "fleet"},
    "commands": LEAVES
    | CORE
    | {"load", "intake", "remedy", "journal", "runtime", "metrics", "fleet"},
    "__main__": {"commands"},
    "web": set(),
}
#: Third-party libraries each layer may use beyond the standard library (None: any).
THIRD_PARTY: dict[str, set[str] | None] = {
    "errors": set(),
    "units": set(),
    "events": {"orjson"},
    "engine": {"orjson", "re2"},
    "anomaly": {"numpy", "sklearn", "scipy", "threadpoolctl"},  # threadpoolctl: sklearn's own
    "metrics": {"prometheus_client"},
}
#: Standard-library modules that do I/O or read the clock: never in the pure core.
CORE_FORBIDDEN_STDLIB = {
    "asyncio", "socket", "ssl", "selectors", "subprocess", "multiprocessing",
    "threading", "signal", "sqlite3", "http", "urllib", "os", "shutil", "io",
    "tempfile", "time", "logging",
}  # fmt: skip
#: Only the YAML module talks to PyYAML.
YAML_OWNER = "load.yamlfile"


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name, e.g. "batond.engine.expr" or "aiohttp.web"
    line: int


def module_name(path: Path) -> str:
    """``engine/expr.py`` -> ``engine.expr``; ``engine/__init__.py`` -> ``engine``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, name: str, is_package: bool) -> list[Import]:
    here = ["batond", *name.split(".")] if name else ["batond"]
    if not is_package:
        here = here[:-1]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "__future__":
                continue
            found.append(Import(target, node.lineno))
            # `from batond import config` imports the module batond.load.config
            if target == "batond" or target.startswith("batond."):
                found += [
                    Import(f"{target}.{a.name}", node.lineno)
                    for a in node.names
                    if is_module(f"{target}.{a.name}")
                ]
    return found


def is_module(dotted: str) -> bool:
    """Whether ``batond.x.y`` names a module (file or package) rather than an attribute."""
    path = PACKAGE.joinpath(*dotted.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(name: str) -> str:
    """``engine.expr`` -> ``engine``; ``remedy.actions.http`` -> ``remedy.actions`` (the
    longest enclosing folder with a row); ``__init__`` (the package itself) -> ``""``."""
    parts = name.split(".")
    for end in range(len(parts), 1, -1):
        folder = ".".join(parts[:end])
        if folder in MAY_IMPORT:
            return folder
    return parts[0]


def internal(module: str) -> str | None:
    """``batond.engine.expr`` -> ``engine.expr``; None for other packages."""
    if module == "batond":
        return ""
    return module[len("batond.") :] if module.startswith("batond.") else None


def violations(name: str, imports: list[Import]) -> list[str]:
    out = []
    for imp in imports:
        inner = internal(imp.module)
        if inner is not None:
            why = _internal_violation(name, inner)
        else:
            why = _external_violation(name, imp.module.split(".")[0])
        if why:
            out.append(f"batond/{name or '__init__'} line {imp.line}: imports {imp.module}: {why}")
    return out


def _internal_violation(name: str, inner: str) -> str | None:
    if inner == "":  # `import batond` (the version): harmless
        return None
    mine, theirs = layer_of(name), layer_of(inner)
    if mine == theirs or theirs.startswith(mine + ".") or mine == "":
        return None  # itself, or a folder inside it
    allowed = MAY_IMPORT.get(mine)
    if allowed is None:
        return f"{mine!r} is not in the layer table"
    # who may import a folder may import the folders inside it that have their own row
    enclosing = {".".join(theirs.split(".")[:end]) for end in range(1, theirs.count(".") + 2)}
    if not enclosing & allowed:
        return f"{mine} may import only {sorted(allowed) or 'the standard library'}"
    return None


def _external_violation(name: str, top: str) -> str | None:
    if top == "yaml" and name != YAML_OWNER:
        return f"only batond.{YAML_OWNER} reads YAML"
    mine = layer_of(name)
    if mine in CORE and top in CORE_FORBIDDEN_STDLIB:
        return "the pure core does no I/O and reads no clock"
    allowed = THIRD_PARTY.get(mine)
    if allowed is None or top in sys.stdlib_module_names or top in allowed:
        return None
    return f"third-party {top!r} is not allowed in {mine}"


def all_modules() -> list[tuple[str, Path]]:
    return sorted((module_name(p), p) for p in PACKAGE.rglob("*.py"))


# -- the tests ----------------------------------------------------------------------
def test_every_layer_is_in_the_table() -> None:
    layers = {layer_of(name) for name, _ in all_modules()} - {""}
    assert layers == set(MAY_IMPORT) - {"web"}, layers ^ (set(MAY_IMPORT) - {"web"})


@pytest.mark.parametrize(
    "name,path", all_modules(), ids=[n or "__init__" for n, _ in all_modules()]
)
def test_imports_follow_the_layer_rules(name: str, path: Path) -> None:
    imports = imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")
    assert violations(name, imports) == []


# The checker itself must catch what it is meant to catch.
@pytest.mark.parametrize(
    "name,source,fragment",
    [
        ("engine.rules", "import aiohttp\n", "not allowed in engine"),
        ("engine.rules", "def f():\n    import time\n", "no I/O"),
        ("engine.rules", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
         "    from batond.load.config import Config\n", "engine may import only"),
        ("engine.rules", "from ..metrics import Metrics\n", "engine may import only"),
        ("engine.rules", "from batond.runtime import daemon\n", "engine may import only"),
        ("anomaly.detector", "import sqlite3\n", "no I/O"),
        ("anomaly.detector", "from batond.journal.model_state import save\n", "anomaly may"),
        ("engine.templates", "import yaml\n", "only batond.load.yamlfile"),
        ("events", "from batond.load.config import Config\n", "events may import only"),
        ("events", "import psutil\n", "third-party 'psutil'"),
        ("runtime.api", "from batond.commands.cli import main\n", "runtime may import only"),
        ("remedy.runner", "from batond.journal.facade import Journal\n", "remedy may"),
        ("intake.mqtt", "from batond.engine.engine import Engine\n", "intake may import only"),
        ("load.config", "from batond.intake.bus import Bus\n", "load may import only"),
        ("novel.thing", "from batond.errors import Problem\n", "not in the layer table"),
        ("load.playbooks", "from batond.remedy.runner import Runner\n", "load may import only"),
        ("remedy.actions.http", "from batond.load.playbooks import Step\n", "remedy.actions may"),
        ("remedy.actions.core", "from batond.remedy.run import Run\n", "remedy.actions may"),
    ],
)  # fmt: skip
def test_the_checker_catches_violations(name: str, source: str, fragment: str) -> None:
    found = violations(name, imports_of(source, name, is_package=False))
    assert found and fragment in found[0], found


@pytest.mark.parametrize(
    "name,source",
    [
        ("anomaly.detector", "import numpy as np\nfrom sklearn.ensemble import IsolationForest\n"),
        ("journal.model_state", "import os, sqlite3\nfrom batond.anomaly import ModelSet\n"),
        ("load.rulefiles", "from batond.engine.expr import compile_expression\n"),
        ("engine.state", "from batond.events import Sample\nimport datetime, heapq\n"),
        ("remedy.runner", "import asyncio\nfrom batond.engine.types import Decision\n"),
        ("commands.replay", "from batond.runtime.pipeline import Pipeline\n"),
        ("load.playbooks", "from batond.remedy.actions import action_keys\n"),
        ("remedy.steps", "from batond.remedy.actions.flow import PARALLEL\n"),
        ("__main__", "from batond.commands.cli import main\n"),
    ],
)  # fmt: skip
def test_the_checker_allows_what_is_allowed(name: str, source: str) -> None:
    assert violations(name, imports_of(source, name, is_package=False)) == []


def test_relative_imports_are_resolved() -> None:
    imports = imports_of("from . import expr\nfrom ..events import Sample\n", "engine.model", False)
    # expr is a module of batond.engine, Sample only a name inside batond.events
    assert [i.module for i in imports] == ["batond.engine", "batond.engine.expr", "batond.events"]


def test_reading_files_imports_no_action_machinery() -> None:
    """load reads the actions' key tables (remedy.actions); what actions act with is
    imported when they act, so ``batond check`` and ``batond replay`` start without it."""
    heavy = ("asyncio", "subprocess", "psutil", "aiohttp")
    code = (
        "import sys\n"
        "import batond.load.config, batond.load.rulefiles, batond.load.playbooks\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout

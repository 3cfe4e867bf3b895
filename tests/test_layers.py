"""The import direction of the layers (ARCHITECTURE.md, "Which may import which").

Every module under ``daemon/batond/`` is parsed (not imported) and each of its
imports, lazy and ``TYPE_CHECKING`` ones included, is checked against the
table below. The pure core decides from events and a clock it is given: it
never touches the network, the clock, processes, the database or the
daemon's plumbing, which is what lets ``batond replay`` run it on recorded
events and lets its tests run without I/O.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "batond"

# -- the rule table ---------------------------------------------------------------
#: Leaves: plain value types and their parsers; they import only the stdlib, orjson
#: and each other.
LEAVES = {"errors", "events", "influx", "records"}
#: Anomaly modules that do file I/O: they are edges although they live in anomaly/.
ANOMALY_EDGES = {"anomaly.persist", "anomaly.backtest", "anomaly.modelfile"}
#: What the pure core may import from batond besides itself and the leaves:
#: ``yamlfile`` because playbooks and templates are compiled from its positioned nodes.
CORE_MAY_IMPORT = {"yamlfile"}
#: Third-party libraries the core may use (numerics for anomaly; a JSON codec).
CORE_THIRD_PARTY = {"orjson"}
ANOMALY_THIRD_PARTY = {"numpy", "sklearn", "scipy"}
#: Standard-library modules that do I/O or read the clock: never in the core.
CORE_FORBIDDEN_STDLIB = {
    "asyncio", "socket", "ssl", "selectors", "subprocess", "multiprocessing",
    "threading", "signal", "sqlite3", "http", "urllib", "os", "shutil", "io",
    "tempfile", "time", "logging",
}  # fmt: skip
#: Third-party I/O libraries named by ARCHITECTURE.md (also caught by the allow-list).
IO_LIBRARIES = {"aiohttp", "aiomqtt", "psutil", "prometheus_client", "sqlite3"}
#: The top of the stack: nothing imports these (``__main__`` runs the CLI).
TOP = {"service", "cli"}
TOP_IMPORTERS_ALLOWED = {"__main__"}
#: Only the YAML module talks to PyYAML.
YAML_OWNER = "yamlfile"


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
            # `from batond import config` imports the module batond.config
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


def is_core(name: str) -> bool:
    if name in ("playbooks", "templates") or name == "engine" or name.startswith("engine."):
        return True
    return (name == "anomaly" or name.startswith("anomaly.")) and name not in ANOMALY_EDGES


def internal(module: str) -> str | None:
    """``batond.engine.expr`` -> ``engine.expr``; None for other packages."""
    if module == "batond":
        return ""
    return module[len("batond.") :] if module.startswith("batond.") else None


def violations(name: str, imports: list[Import]) -> list[str]:
    out = []
    for imp in imports:
        top = imp.module.split(".")[0]
        inner = internal(imp.module)
        why = None
        if inner is not None:
            why = _internal_violation(name, inner)
        elif top == "yaml" and name != YAML_OWNER:
            why = "only batond.yamlfile reads YAML"
        elif name in LEAVES:
            if top not in sys.stdlib_module_names and top not in CORE_THIRD_PARTY:
                why = "a leaf imports only the stdlib and orjson"
        elif is_core(name):
            why = _core_external_violation(name, top)
        if why:
            out.append(f"batond/{name or '__init__'} line {imp.line}: imports {imp.module}: {why}")
    return out


def _internal_violation(name: str, inner: str) -> str | None:
    inner_top = inner.split(".")[0]
    if inner_top in TOP and name not in TOP_IMPORTERS_ALLOWED and name != inner_top:
        return f"nothing imports batond.{inner_top}"
    if inner == "":  # `import batond` (the version): harmless
        return None
    if name in LEAVES and inner not in LEAVES:
        return "a leaf imports only other leaves"
    if is_core(name) and not (is_core(inner) or inner in LEAVES or inner in CORE_MAY_IMPORT):
        return "the pure core imports only leaves, yamlfile and the core"
    return None


def _core_external_violation(name: str, top: str) -> str | None:
    if top in IO_LIBRARIES or top in CORE_FORBIDDEN_STDLIB:
        return "the pure core does no I/O and reads no clock"
    if top in sys.stdlib_module_names or top in CORE_THIRD_PARTY:
        return None
    if top in ANOMALY_THIRD_PARTY and name.startswith("anomaly"):
        return None
    return f"third-party {top!r} is not allowed in the pure core"


def all_modules() -> list[tuple[str, Path]]:
    return sorted((module_name(p), p) for p in PACKAGE.rglob("*.py"))


# -- the tests ----------------------------------------------------------------------
def test_the_package_is_where_the_table_expects_it() -> None:
    names = {name for name, _ in all_modules()}
    assert {"errors", "events", "service", "cli", "yamlfile", "engine"} <= names


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
        ("engine.rules", "import aiohttp\n", "no I/O"),
        ("engine.rules", "def f():\n    import time\n", "no I/O"),
        ("engine.rules", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
         "    from batond.config import Config\n", "imports only leaves"),
        ("engine.rules", "from ..metrics import Metrics\n", "imports only leaves"),
        ("engine.rules", "from batond import service\n", "nothing imports batond.service"),
        ("playbooks", "import numpy\n", "third-party 'numpy'"),
        ("anomaly.detectors", "import sqlite3\n", "no I/O"),
        ("anomaly.detectors", "from batond.anomaly.persist import save\n", "imports only"),
        ("templates", "import yaml\n", "only batond.yamlfile"),
        ("events", "from batond.config import Config\n", "a leaf imports only other leaves"),
        ("events", "import psutil\n", "a leaf imports only the stdlib"),
        ("api", "from batond.service import Daemon\n", "nothing imports batond.service"),
        ("runner", "from batond.cli import main\n", "nothing imports batond.cli"),
    ],
)  # fmt: skip
def test_the_checker_catches_violations(name: str, source: str, fragment: str) -> None:
    found = violations(name, imports_of(source, name, is_package=False))
    assert found and fragment in found[0], found


@pytest.mark.parametrize(
    "name,source",
    [
        ("anomaly.detectors", "import numpy as np\nfrom sklearn.ensemble import IsolationForest\n"),
        ("anomaly.persist", "import os, sqlite3\nfrom batond.config import Config\n"),
        ("engine.rules", "from .expr import compile_expr\nfrom batond.yamlfile import Reader\n"),
        ("engine.rules", "from batond.events import Sample\nimport datetime, heapq\n"),
        ("runner", "import asyncio\nfrom batond.engine.types import Decision\n"),
        ("__main__", "from batond.cli import main\n"),
    ],
)
def test_the_checker_allows_what_is_allowed(name: str, source: str) -> None:
    assert violations(name, imports_of(source, name, is_package=False)) == []


def test_relative_imports_are_resolved() -> None:
    imports = imports_of("from . import expr\nfrom ..events import Sample\n", "engine.model", False)
    # expr is a module of batond.engine, Sample only a name inside batond.events
    assert [i.module for i in imports] == ["batond.engine", "batond.engine.expr", "batond.events"]

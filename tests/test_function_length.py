"""A house rule, enforced: no function of the daemon is longer than a screen (60 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "batond"
LIMIT = 60


def test_no_function_is_over_60_lines() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50  # the package is where this test looks
    long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > LIMIT:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.name} {lines}")
    assert not long, "functions over 60 lines:\n" + "\n".join(long)

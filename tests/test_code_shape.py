"""House rules of the code that a reviewer should not have to count by hand."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "daemon" / "batond"
MAX_FUNCTION_LINES = 60


def long_functions(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, lines) of each function longer than MAX_FUNCTION_LINES."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append((node.name, node.lineno, lines))
    return found


def test_no_function_is_longer_than_60_lines() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{line}: {name} has {lines} lines"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, line, lines in long_functions(path.read_text(encoding="utf-8"))
    ]
    assert found == []


def test_the_count_includes_the_signature_and_nested_functions() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 1))
    assert long_functions(f"def f():\n{body}") == []
    assert long_functions(f"def f():\n{body}    y = 0\n") == [("f", 1, MAX_FUNCTION_LINES + 1)]
    nested = f"class C:\n    def g(self):\n        def h():\n{body.replace('    ', '            ')}"
    assert [name for name, _, _ in long_functions(nested + "            z = 1\n")] == ["g", "h"]

"""``{{ ... }}`` templates in playbook values, using the rules' expression language.

A string that is exactly one ``{{ expr }}`` renders to the expression's value
with its JSON type kept (a number stays a number, a list a list); any other
string containing ``{{ }}`` renders to a string with each value interpolated
(None as ``""``, booleans as ``true``/``false``, lists and mappings as JSON).
A rendered value is always ONE value: an ``argv`` element never splits, so
event data cannot inject words or shell syntax. Templates are compiled once
(:func:`compile_value` walks a whole ``with:`` mapping).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from batond.engine.expr import TEMPLATE_NAMES, EvalError, Expression, compile_expression
from batond.engine.functions import text_of
from batond.errors import ConfigError, Mark, Problem

__all__ = [
    "TEMPLATE_NAMES",
    "CompiledValue",
    "EvalError",
    "Template",
    "compile_template",
    "compile_value",
    "render_value",
    "text_of",
]

_PART = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class Template:
    """A compiled string: literal pieces and expressions in order."""

    __slots__ = ("parts", "single", "text")

    def __init__(self, text: str, parts: tuple[str | Expression, ...]) -> None:
        self.text = text
        self.parts = parts
        self.single = len(parts) == 1 and isinstance(parts[0], Expression)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    @property
    def is_static(self) -> bool:
        return not any(isinstance(p, Expression) for p in self.parts)

    def render(self, ctx: Mapping[str, Any]) -> Any:
        """The value (single expression) or the interpolated string; EvalError on failure."""
        if self.single:
            expr = self.parts[0]
            assert isinstance(expr, Expression)
            return expr.evaluate(ctx)
        return "".join(p if isinstance(p, str) else text_of(p.evaluate(ctx)) for p in self.parts)


def _offset_mark(mark: Mark, text: str, offset: int) -> Mark:
    """The file position of ``text[offset]`` when ``text`` starts at ``mark``."""
    before = text[:offset]
    newlines = before.count("\n")
    if newlines == 0:
        return Mark(mark.file, mark.line, mark.col + offset)
    return Mark(mark.file, mark.line + newlines, len(before.rsplit("\n", 1)[-1]) + 1)


def compile_template(text: str, mark: Mark, names: Sequence[str] = TEMPLATE_NAMES) -> Template:
    """Compile one string; ConfigError points inside it at the bad expression."""
    parts: list[str | Expression] = []
    problems: list[Problem] = []
    pos = 0
    for m in _PART.finditer(text):
        if m.start() > pos:
            parts.append(text[pos : m.start()])
        try:
            inner = m.group(1)
            if not inner.strip():
                raise _problem(_offset_mark(mark, text, m.start()), "empty {{ }} in template")
            parts.append(compile_expression(inner, _offset_mark(mark, text, m.start(1)), names))
        except ConfigError as exc:
            problems.extend(exc.problems)
        pos = m.end()
    if pos < len(text):
        rest = text[pos:]
        if "{{" in rest:
            at = _offset_mark(mark, text, pos + rest.index("{{"))
            problems.append(Problem(at.file, at.line, at.col, "unclosed {{ in template"))
        parts.append(rest)
    if problems:
        raise ConfigError(problems)
    return Template(text, tuple(parts))


def _problem(mark: Mark, message: str) -> ConfigError:
    return ConfigError([Problem(mark.file, mark.line, mark.col, message)])


#: A plain YAML value with every string compiled: dict / list / Template / scalar.
CompiledValue = Any


def compile_value(
    value: Any, mark: Mark, names: Sequence[str] = TEMPLATE_NAMES, marks: Any = None
) -> CompiledValue:
    """Compile every templated string inside a plain value (dicts and lists walked).

    ``marks`` may mirror ``value`` with the Mark of each string (as
    :func:`batond.load.yamlfile` nodes give them); otherwise errors point at ``mark``.
    Strings without ``{{`` stay plain strings. All problems are raised together.
    """
    problems: list[Problem] = []

    def walk(v: Any, m: Any) -> Any:
        here = m if isinstance(m, Mark) else mark
        if isinstance(v, str):
            if "{{" not in v:
                return v
            try:
                return compile_template(v, here, names)
            except ConfigError as exc:
                problems.extend(exc.problems)
                return v
        if isinstance(v, dict):
            sub = m if isinstance(m, dict) else {}
            return {k: walk(x, sub.get(k)) for k, x in v.items()}
        if isinstance(v, list | tuple):
            sub_l = m if isinstance(m, list | tuple) else ()
            return [walk(x, sub_l[i] if i < len(sub_l) else None) for i, x in enumerate(v)]
        return v

    out = walk(value, marks)
    if problems:
        raise ConfigError(problems)
    return out


def render_value(compiled: CompiledValue, ctx: Mapping[str, Any]) -> Any:
    """Render a compiled value: each Template becomes exactly one value."""
    if isinstance(compiled, Template):
        return compiled.render(ctx)
    if isinstance(compiled, dict):
        return {k: render_value(v, ctx) for k, v in compiled.items()}
    if isinstance(compiled, list):
        return [render_value(v, ctx) for v in compiled]
    return compiled

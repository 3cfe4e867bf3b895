"""The safe expression language of rules (``when:``) and templates (``{{ }}``).

Syntax is a subset of Python expressions::

    value > 90 and labels.mount == "/"
    event.name in ["nginx", "haproxy"]
    matches(event.msg, "OOM") or anomaly > 0.99
    host != "" and lower(labels.env) == "prod"

Allowed: literals (numbers, strings, ``true``/``false``/``null`` as well as
``True``/``False``/``None``), lists, tuples, dicts, ``and``/``or``/``not``,
comparisons (``== != < <= > >= in not in is is not``), ``+ - * / // %``,
unary ``-``/``+``, ``a if c else b``, attribute access ``x.y`` and
subscripts ``x["y"]``/``x[0]``/``x[1:3]``, and calls of these functions only:

==========================  ===================================================
``matches(text, regex)``    a search with RE2 (linear time); the text is made a
                            string (its first 64 KiB are searched), None never
                            matches; the regex must be a string literal (compiled
                            once at load: event data never becomes a pattern)
``abs min max len round``   as in Python
``int float str bool``      conversions
``lower(s) upper(s)``       case of a string (None gives ``""``)
==========================  ===================================================

Not allowed: imports, lambdas, comprehensions, f-strings, ``**``, method
calls, and any name or attribute starting with ``_``.

Names are given per use (:data:`RULE_NAMES` for rules; templates add
``steps`` and ``params``). A name that is not one of them is a label of the
input when ``labels`` is available (``host`` is ``labels.host``).

Missing data never crashes: ``labels.x`` (and a bare label name) is ``""``
when the input lacks the label, as for ``match:``; ``x.y`` and ``x["y"]`` are
``None`` when ``x`` has no such key, index or is not a container. An
operation that still fails (``None > 3``) raises :class:`EvalError`; the
engine counts that as false and reports it.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from batond.engine.regex_safety import MAX_MATCH_TEXT, compiled_regex, regex_problem
from batond.errors import ConfigError, Mark, Problem

__all__ = [
    "FUNCTIONS",
    "MAX_MATCH_TEXT",
    "RULE_NAMES",
    "TEMPLATE_NAMES",
    "EvalError",
    "Expression",
    "compile_expression",
    "regex_problem",
]

#: Names a rule's ``when:`` sees, in the order the compiled function takes them.
RULE_NAMES = ("value", "metric", "labels", "event", "anomaly", "now")
#: Names a playbook template sees.
TEMPLATE_NAMES = (*RULE_NAMES, "steps", "params", "rule", "key", "severity")

_MAX_REPEAT = 100_000  # "x" * n giving more items than this is refused (memory)


class EvalError(Exception):
    """An expression failed at run time (counted as false by the engine)."""


def _lower(s: object) -> str:
    return "" if s is None else str(s).lower()


def _upper(s: object) -> str:
    return "" if s is None else str(s).upper()


def _matches(text: object, pattern: object) -> bool:
    if text is None:
        return False
    return compiled_regex(str(pattern)).search(str(text)[:MAX_MATCH_TEXT]) is not None


#: The functions expressions may call.
FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "matches": _matches,
    "abs": abs,
    "min": min,
    "max": max,
    "len": len,
    "round": round,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "lower": _lower,
    "upper": _upper,
}

_CONSTANTS = {"true": True, "false": False, "null": None}


def _attr(obj: object, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return None


def _item(obj: Any, key: Any) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key) if isinstance(key, str | int | float | bool) else None
    if isinstance(obj, list | tuple | str) and (isinstance(key, int | slice)):
        try:
            return obj[key]
        except IndexError:
            return None
    return None


def _mul(a: Any, b: Any) -> Any:
    """``*``, refusing repetitions that would build huge strings or lists (event data)."""
    seq, n = (a, b) if isinstance(a, str | list | tuple) else (b, a)
    if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > _MAX_REPEAT:
        raise EvalError(f"repetition to {len(seq) * n} items is too large")
    return operator.mul(a, b)


_HELPERS: dict[str, Any] = {
    "__b_attr": _attr,
    "__b_item": _item,
    "__b_mul": _mul,
    **{f"__b_f_{name}": fn for name, fn in FUNCTIONS.items()},
}

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
    ast.Is, ast.IsNot, ast.IfExp, ast.Call, ast.Constant, ast.Name, ast.Load,
    ast.Attribute, ast.Subscript, ast.Slice, ast.List, ast.Tuple, ast.Dict,
)  # fmt: skip


class Expression:
    """A compiled expression; call :meth:`evaluate` or the raw :attr:`fn`.

    ``fn`` takes the names of the compile call positionally (for rules:
    ``value, metric, labels, event, anomaly, now``) and may raise any
    exception; :meth:`evaluate` wraps failures in :class:`EvalError`.
    """

    __slots__ = ("fn", "mark", "names", "text")

    def __init__(self, text: str, mark: Mark, names: tuple[str, ...], fn: Callable[..., Any]):
        self.text = text
        self.mark = mark
        self.names = names
        self.fn = fn

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expression) and (self.text, self.names) == (
            other.text,
            other.names,
        )

    def __hash__(self) -> int:
        return hash((self.text, self.names))

    def evaluate(self, ctx: Mapping[str, Any]) -> Any:
        """The value for the names in ``ctx`` (missing names are None; labels ``{}``)."""
        args = [ctx.get(n, {} if n == "labels" else None) for n in self.names]
        try:
            return self.fn(*args)
        except EvalError:
            raise
        except Exception as exc:
            raise EvalError(f"{self.text!r}: {type(exc).__name__}: {exc}") from None


def compile_expression(text: str, mark: Mark, names: Sequence[str] = RULE_NAMES) -> Expression:
    """Compile ``text`` (which starts at ``mark``) once into a fast callable.

    Raises ConfigError pointing inside the text at the offending token.
    """
    names = tuple(names)
    try:
        tree = _parse(text.strip())
        body = _Compiler(text, mark, names).visit(tree.body)
    except SyntaxError as exc:
        line, col = _position_of_syntax_error(text, exc)
        raise _error(mark, text, line, col, f"expression syntax: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise _error(mark, text, 1, 1, "expression is too deeply nested") from None
    lam = ast.Expression(
        ast.Lambda(
            ast.arguments(
                posonlyargs=[],
                args=[ast.arg(n) for n in names],
                kwonlyargs=[],
                kw_defaults=[],
                defaults=[],
            ),
            body,
        )
    )
    ast.fix_missing_locations(lam)
    namespace: dict[str, Any] = {"__builtins__": {}, **_HELPERS}
    namespace.update(_Compiler.regexes_of(body))
    fn = eval(compile(lam, f"<expression {mark}>", "eval"), namespace)
    return Expression(text, mark, names, fn)


def _parse(text: str) -> ast.Expression:
    """Parse; an expression over several lines (a YAML block scalar) may break anywhere."""
    try:
        return ast.parse(text, mode="eval")
    except SyntaxError:
        if "\n" not in text:
            raise
        try:
            return ast.parse(f"({text}\n)", mode="eval")  # positions shift; only used if valid
        except SyntaxError:
            pass
        raise


def _position_of_syntax_error(text: str, exc: SyntaxError) -> tuple[int, int]:
    """1-based (line, column) within ``text`` (ast parsed the stripped text)."""
    lead = text[: len(text) - len(text.lstrip())]
    lines = text.strip().split("\n")
    line = min(exc.lineno or 1, len(lines))
    col = exc.offset or len(lines[line - 1]) + 1  # characters, not bytes (unlike ast nodes)
    line += lead.count("\n")
    if (exc.lineno or 1) == 1:
        col += len(lead.rsplit("\n", 1)[-1])
    return line, col


def _error(mark: Mark, text: str, line: int, col: int, message: str) -> ConfigError:
    """A problem at (line, col) of ``text`` translated to file coordinates."""
    if line <= 1:
        where = Mark(mark.file, mark.line, mark.col + col - 1)
    else:
        where = Mark(mark.file, mark.line + line - 1, col)
    return ConfigError([Problem(where.file, where.line, where.col, message)])


class _Compiler(ast.NodeTransformer):
    """Checks every node against the whitelist and rewrites access to safe helpers."""

    def __init__(self, text: str, mark: Mark, names: tuple[str, ...]) -> None:
        self.text = text.strip()
        self.lead = text[: len(text) - len(text.lstrip())]
        self.mark = mark
        self.names = names
        self.regex_count = 0

    @staticmethod
    def regexes_of(tree: ast.AST) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node in ast.walk(tree):
            pattern = getattr(node, "_batond_regex", None)
            if pattern is not None:
                out[node.id] = pattern  # type: ignore[attr-defined]
        return out

    def fail(self, node: ast.AST, message: str) -> ConfigError:
        line = getattr(node, "lineno", 1)
        offset = getattr(node, "col_offset", 0)
        src_line = self.text.split("\n")[line - 1] if self.text else ""
        col = len(src_line.encode()[:offset].decode(errors="replace")) + 1
        if line == 1:
            col += len(self.lead.rsplit("\n", 1)[-1])
        return _error(self.mark, self.lead + self.text, line + self.lead.count("\n"), col, message)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if not isinstance(node, _ALLOWED_NODES):
            raise self.fail(node, f"not allowed in expressions: {_describe(node)}")
        return super().generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        name = node.id
        if name.startswith("_"):
            raise self.fail(node, f"names starting with '_' are not allowed: {name!r}")
        if name in self.names:
            return node
        if name in _CONSTANTS:
            return ast.copy_location(ast.Constant(_CONSTANTS[name]), node)
        if name in FUNCTIONS:
            raise self.fail(node, f"function {name!r} must be called: {name}(...)")
        if "labels" in self.names:  # a bare name is a label of the input
            return self._label(node, ast.Constant(name))
        allowed = ", ".join(self.names)
        raise self.fail(node, f"unknown name {name!r} (known: {allowed})")

    def _label(self, node: ast.AST, key: ast.expr) -> ast.AST:
        get = ast.Attribute(ast.Name("labels", ast.Load()), "get", ast.Load())
        return ast.copy_location(ast.Call(get, [key, ast.Constant("")], []), node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if node.attr.startswith("_"):
            raise self.fail(node, f"attributes starting with '_' are not allowed: {node.attr!r}")
        if (
            isinstance(node.value, ast.Name)
            and node.value.id == "labels"
            and "labels" in self.names
        ):
            return self._label(node, ast.Constant(node.attr))
        value = self.visit(node.value)
        call = ast.Call(ast.Name("__b_attr", ast.Load()), [value, ast.Constant(node.attr)], [])
        return ast.copy_location(call, node)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        key = self.visit(node.slice)
        if (
            isinstance(key, ast.Constant)
            and isinstance(key.value, str)
            and key.value.startswith("_")
        ):
            raise self.fail(node.slice, f"keys starting with '_' are not allowed: {key.value!r}")
        if isinstance(key, ast.Slice):
            key = ast.Call(
                ast.Name("__b_slice", ast.Load()),
                [key.lower or ast.Constant(None), key.upper or ast.Constant(None),
                 key.step or ast.Constant(None)],
                [],
            )  # fmt: skip
        value = self.visit(node.value)
        call = ast.Call(ast.Name("__b_item", ast.Load()), [value, key], [])
        return ast.copy_location(call, node)

    def visit_Slice(self, node: ast.Slice) -> ast.AST:
        return self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        if isinstance(node.op, ast.Pow):
            raise self.fail(node, "the power operator ** is not allowed")
        self.generic_visit(node)
        if isinstance(node.op, ast.Mult):
            call = ast.Call(ast.Name("__b_mul", ast.Load()), [node.left, node.right], [])
            return ast.copy_location(call, node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        func = node.func
        if not isinstance(func, ast.Name) or func.id not in FUNCTIONS:
            what = func.id if isinstance(func, ast.Name) else ast.unparse(func)
            known = ", ".join(sorted(FUNCTIONS))
            raise self.fail(node, f"calls are limited to {known}; not {what!r}")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.fail(node, f"{func.id}() takes plain positional arguments")
        args = [self.visit(a) for a in node.args]
        if func.id == "matches":
            return self._matches(node, args)
        target = ast.Name(f"__b_f_{func.id}", ast.Load())
        return ast.copy_location(ast.Call(target, args, []), node)

    def _matches(self, node: ast.Call, args: list[ast.expr]) -> ast.AST:
        if len(args) != 2:
            raise self.fail(node, "matches(text, regex) takes two arguments")
        pattern = args[1]
        if not (isinstance(pattern, ast.Constant) and isinstance(pattern.value, str)):
            # a pattern from event data could be a catastrophic one ("(a+)+$") and hang
            raise self.fail(node.args[1], "matches(): the regex must be a string literal")
        problem, compiled = regex_problem(pattern.value)
        if problem:
            raise self.fail(node.args[1], problem)
        self.regex_count += 1
        name = ast.Name(f"__b_re_{self.regex_count}", ast.Load())
        name._batond_regex = _literal_matcher(compiled)  # type: ignore[attr-defined]
        return ast.copy_location(ast.Call(name, [args[0]], []), node)


def _literal_matcher(pattern: Any) -> Callable[[object], bool]:
    search = pattern.search

    def match(text: object) -> bool:
        return text is not None and search(str(text)[:MAX_MATCH_TEXT]) is not None

    return match


def _describe(node: ast.AST) -> str:
    names = {
        "Pow": "the power operator **",
        "Lambda": "lambda",
        "ListComp": "comprehensions",
        "SetComp": "comprehensions",
        "DictComp": "comprehensions",
        "GeneratorExp": "comprehensions",
        "JoinedStr": "f-strings",
        "NamedExpr": "assignment (:=)",
        "Starred": "unpacking (*)",
        "Set": "set literals",
        "Await": "await",
        "Yield": "yield",
    }
    return names.get(type(node).__name__, type(node).__name__)


_HELPERS["__b_slice"] = slice

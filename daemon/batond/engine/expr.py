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
subscripts ``x["y"]``/``x[0]``/``x[1:3]``, list comprehensions
(``[i.sku for i in event.items if i.qty > 0]``), and calls of the functions of
:mod:`batond.engine.functions` only (``matches``, ``abs min max len round``,
``int float str bool``, ``lower upper``, ``join split sorted first last keys
values sum any all``, ``strftime parse_time``, and ``clock`` in playbooks).
``matches(text, regex)`` searches with RE2 (linear time; the text's first
64 KiB) for a string literal regex, compiled once at load (event data never
becomes a pattern); ``sorted``/``max``/``min`` take
``key="a.b"``, a literal field path. Whatever walks a collection is bounded
by a per-evaluation work budget (see :mod:`batond.engine.functions`).

Not allowed: imports, lambdas, set and dict comprehensions, f-strings, ``**``,
method calls, and any name or attribute starting with ``_``.

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

from batond.engine import functions
from batond.engine.functions import ARITY, BOUNDED, FUNCTIONS, KEYWORDS, PLAYBOOK_ONLY, EvalError
from batond.engine.regex_safety import MAX_MATCH_TEXT, regex_problem
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
    "suggest",
]

#: Names a rule's ``when:`` sees, in the order the compiled function takes them.
RULE_NAMES = ("value", "metric", "labels", "event", "anomaly", "now")
#: Names a playbook template sees (``clock`` only as ``clock()``: the live time).
TEMPLATE_NAMES = (
    *RULE_NAMES, "steps", "params", "rule", "key", "severity", "clock", "vars", "item",
    "previous",
)  # fmt: skip

_MAX_REPEAT = 100_000  # "x" * n giving more items than this is refused (memory)


_REF_ROOTS = frozenset({"steps", "params", "vars"})
_CONSTANTS = {"true": True, "false": False, "null": None}
_NUMBERS = frozenset({int, float})


def _attr(obj: object, name: str) -> Any:
    if type(obj) is dict:  # the common case, without the ABC check's cost
        return obj.get(name)
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
    if type(a) in _NUMBERS and type(b) in _NUMBERS:
        return a * b
    seq, n = (a, b) if isinstance(a, str | list | tuple) else (b, a)
    if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > _MAX_REPEAT:
        raise EvalError(f"repetition to {len(seq) * n} items is too large")
    return operator.mul(a, b)


_HELPERS: dict[str, Any] = {
    "__b_attr": _attr,
    "__b_item": _item,
    "__b_mul": _mul,
    "__b_start": functions.start,
    "__b_iter": functions.iterate,
    "__b_in": functions.contains,
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

    __slots__ = ("bare_names", "fn", "mark", "names", "refs", "text", "used")

    def __init__(
        self,
        text: str,
        mark: Mark,
        names: tuple[str, ...],
        fn: Callable[..., Any],
        bare_names: tuple[tuple[str, Mark], ...] = (),
        refs: tuple[tuple[str, str, Mark], ...] = (),
        used: tuple[str, ...] | None = None,
    ):
        self.text = text
        self.mark = mark
        self.names = names
        self.fn = fn
        #: names read as labels of the input (``host`` for ``labels.host``), where they are
        self.bare_names = bare_names
        #: ``(root, key, where)`` of each ``steps.NAME``, ``params.NAME``, ``vars.NAME`` read
        self.refs = refs
        #: the names the expression reads (``fn``'s other parameters default to None)
        self.used = names if used is None else used

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
        # only the names it reads (a template sees 17; one expression reads one or two)
        args = {n: ctx.get(n, {} if n == "labels" else None) for n in self.used}
        try:
            return self.fn(**args)
        except EvalError:
            raise
        except Exception as exc:
            raise EvalError(f"{self.text!r}: {type(exc).__name__}: {exc}") from None


def compile_expression(text: str, mark: Mark, names: Sequence[str] = RULE_NAMES) -> Expression:
    """Compile ``text`` (which starts at ``mark``) once into a fast callable.

    Raises ConfigError pointing inside the text at the offending token.
    """
    names = tuple(names)
    compiler = _Compiler(text, mark, names)
    try:
        tree = _parse(text.strip())
        body = compiler.visit(tree.body)
    except SyntaxError as exc:
        line, col = _position_of_syntax_error(text, exc)
        raise _error(mark, text, line, col, f"expression syntax: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise _error(mark, text, 1, 1, "expression is too deeply nested") from None
    if compiler.bounded:  # a fresh work budget for each evaluation
        start = ast.Call(ast.Name("__b_start", ast.Load()), [], [])
        body = ast.BoolOp(ast.Or(), [start, body])
    lam = ast.Expression(
        ast.Lambda(
            ast.arguments(
                posonlyargs=[],
                args=[ast.arg(n) for n in names],
                kwonlyargs=[],
                kw_defaults=[],
                defaults=[ast.Constant(None) for _ in names],
            ),
            body,
        )
    )
    ast.fix_missing_locations(lam)
    namespace: dict[str, Any] = {"__builtins__": {}, **_HELPERS}
    namespace.update(_Compiler.regexes_of(body))
    fn = eval(compile(lam, f"<expression {mark}>", "eval"), namespace)
    read = {n.id for n in ast.walk(body) if isinstance(n, ast.Name)}
    used = tuple(n for n in names if n in read)
    return Expression(text, mark, names, fn, tuple(compiler.bare_names), tuple(compiler.refs), used)


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


def _where(mark: Mark, line: int, col: int) -> Mark:
    """(line, col) of a text that starts at ``mark``, in file coordinates."""
    if line <= 1:
        return Mark(mark.file, mark.line, mark.col + col - 1)
    return Mark(mark.file, mark.line + line - 1, col)


def _error(mark: Mark, text: str, line: int, col: int, message: str) -> ConfigError:
    """A problem at (line, col) of ``text`` translated to file coordinates."""
    where = _where(mark, line, col)
    return ConfigError([Problem(where.file, where.line, where.col, message)])


class _Compiler(ast.NodeTransformer):
    """Checks every node against the whitelist and rewrites access to safe helpers."""

    def __init__(self, text: str, mark: Mark, names: tuple[str, ...]) -> None:
        self.text = text.strip()
        self.lead = text[: len(text) - len(text.lstrip())]
        self.mark = mark
        self.names = names
        self.regex_count = 0
        self.bounded = False  # uses a function or construct that charges the work budget
        self.locals: list[str] = []  # comprehension variables in scope
        self.bare_names: list[tuple[str, Mark]] = []
        self.refs: list[tuple[str, str, Mark]] = []

    @staticmethod
    def regexes_of(tree: ast.AST) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node in ast.walk(tree):
            pattern = getattr(node, "_batond_regex", None)
            if pattern is not None:
                out[node.id] = pattern  # type: ignore[attr-defined]
        return out

    def position(self, node: ast.AST) -> tuple[int, int]:
        """1-based (line, column) of ``node`` within the original text."""
        line = getattr(node, "lineno", 1)
        offset = getattr(node, "col_offset", 0)
        src_line = self.text.split("\n")[line - 1] if self.text else ""
        col = len(src_line.encode()[:offset].decode(errors="replace")) + 1
        if line == 1:
            col += len(self.lead.rsplit("\n", 1)[-1])
        return line + self.lead.count("\n"), col

    def mark_of(self, node: ast.AST) -> Mark:
        return _where(self.mark, *self.position(node))

    def fail(self, node: ast.AST, message: str) -> ConfigError:
        line, col = self.position(node)
        return _error(self.mark, self.lead + self.text, line, col, message)

    def generic_visit(self, node: ast.AST) -> ast.AST:
        if not isinstance(node, _ALLOWED_NODES):
            raise self.fail(node, f"not allowed in expressions: {_describe(node)}")
        return super().generic_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        name = node.id
        if name.startswith("_"):
            raise self.fail(node, f"names starting with '_' are not allowed: {name!r}")
        if name in FUNCTIONS:
            raise self.fail(node, f"function {name!r} must be called: {name}(...)")
        if name in self.names or name in self.locals:
            return node
        if name in _CONSTANTS:
            return ast.copy_location(ast.Constant(_CONSTANTS[name]), node)
        if "labels" in self.names:  # a bare name is a label of the input
            self.bare_names.append((name, self.mark_of(node)))
            return self._label(node, ast.Constant(name))
        allowed = ", ".join(self.names)
        raise self.fail(node, f"unknown name {name!r} (known: {allowed})")

    def _label(self, node: ast.AST, key: ast.expr) -> ast.AST:
        get = ast.Attribute(ast.Name("labels", ast.Load()), "get", ast.Load())
        return ast.copy_location(ast.Call(get, [key, ast.Constant("")], []), node)

    def _note_ref(self, base: ast.AST, key: str, node: ast.AST) -> None:
        """``steps.NAME`` and the like, for the load-time checks of what exists where."""
        root = base.id if isinstance(base, ast.Name) else ""
        if root in _REF_ROOTS and root in self.names and root not in self.locals:
            self.refs.append((root, key, self.mark_of(node)))

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if node.attr.startswith("_"):
            raise self.fail(node, f"attributes starting with '_' are not allowed: {node.attr!r}")
        if (
            isinstance(node.value, ast.Name)
            and node.value.id == "labels"
            and "labels" in self.names
        ):
            return self._label(node, ast.Constant(node.attr))
        self._note_ref(node.value, node.attr, node)
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
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            self._note_ref(node.value, key.value, node)
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
            known = ", ".join(
                sorted(f for f in FUNCTIONS if f not in PLAYBOOK_ONLY or f in self.names)
            )
            raise self.fail(node, f"calls are limited to {known}; not {what!r}")
        name = func.id
        if name in PLAYBOOK_ONLY and name not in self.names:
            raise self.fail(node, f"{name}() is for playbooks; a rule sees its input's time as now")
        if any(isinstance(a, ast.Starred) for a in node.args) or not _keywords_ok(node):
            allowed = KEYWORDS.get(name)
            also = " and " + ", ".join(f"{k}=" for k in sorted(allowed)) if allowed else ""
            raise self.fail(node, f"{name}() takes plain positional arguments{also}")
        if name != "matches":
            self._check_arity(node, name)
        self.bounded = self.bounded or name in BOUNDED
        args = [self.visit(a) for a in node.args]
        if name == "matches":
            return self._matches(node, args)
        keywords = [ast.keyword(k.arg, self._keyword(k)) for k in node.keywords]
        # the live clock is the caller's (a name it passes in), never the core's
        target = ast.Name(name if name in PLAYBOOK_ONLY else f"__b_f_{name}", ast.Load())
        return ast.copy_location(ast.Call(target, args, keywords), node)

    def _check_arity(self, node: ast.Call, name: str) -> None:
        fewest, most = ARITY[name]
        n = len(node.args)
        if n < fewest or (most is not None and n > most):
            if most is None:
                wanted = f"at least {fewest}"
            elif fewest == most:
                wanted = str(fewest)
            else:
                wanted = f"{fewest} to {most}"
            plural = "" if wanted == "1" else "s"
            raise self.fail(node, f"{name}() takes {wanted} argument{plural}, got {n}")

    def _keyword(self, kw: ast.keyword) -> ast.expr:
        if kw.arg == "key":  # a field path, fixed at load: never event data
            if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)):
                raise self.fail(kw.value, 'key= must be a string literal (a field path: "a.b")')
            if any(p.startswith("_") or not p for p in kw.value.value.split(".")):
                raise self.fail(kw.value, f"key= {kw.value.value!r}: not a field path")
            return kw.value
        value: ast.expr = self.visit(kw.value)
        return value

    def visit_ListComp(self, node: ast.ListComp) -> ast.AST:
        """``[elt for x in items if cond]``: each walked list charged to the budget."""
        self.bounded = True
        generators = []
        bound: list[str] = []
        for gen in node.generators:
            if gen.is_async or not isinstance(gen.target, ast.Name):
                raise self.fail(gen.target, "a comprehension takes one name: [x for x in ...]")
            var = gen.target.id
            if var.startswith("_") or var in self.names or var in FUNCTIONS or var in _CONSTANTS:
                raise self.fail(gen.target, f"{var!r} cannot name a comprehension variable")
            iterable = ast.Call(ast.Name("__b_iter", ast.Load()), [self.visit(gen.iter)], [])
            self.locals.append(var)
            bound.append(var)
            ifs = [self.visit(cond) for cond in gen.ifs]
            generators.append(ast.comprehension(ast.Name(var, ast.Store()), iterable, ifs, 0))
        elt = self.visit(node.elt)
        del self.locals[len(self.locals) - len(bound) :]
        return ast.copy_location(ast.ListComp(elt, generators), node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        """``in`` inside a comprehension walks its right side for every item: charged."""
        self.generic_visit(node)
        if not self.locals or not any(isinstance(op, ast.In | ast.NotIn) for op in node.ops):
            return node
        if len(node.ops) != 1:
            raise self.fail(node, "in a comprehension, write one comparison with 'in' at a time")
        test = ast.Call(ast.Name("__b_in", ast.Load()), [node.comparators[0], node.left], [])
        if isinstance(node.ops[0], ast.NotIn):
            return ast.copy_location(ast.UnaryOp(ast.Not(), test), node)
        return ast.copy_location(test, node)

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


def _keywords_ok(node: ast.Call) -> bool:
    assert isinstance(node.func, ast.Name)
    allowed = KEYWORDS.get(node.func.id, frozenset())
    names = [k.arg for k in node.keywords]
    return all(n in allowed for n in names) and len(set(names)) == len(names)


def _distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) from ``a`` to ``b``."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, prev2[j - 2] + 1)
            row.append(cost)
        prev2, prev = prev, row
    return prev[-1]


def suggest(name: str, known: Sequence[str]) -> str | None:
    """The known name one edit away from ``name`` (a typo), if exactly one is."""
    close = sorted({k for k in known if k != name and _distance(name, k) == 1})
    return close[0] if len(close) == 1 else None


def _literal_matcher(pattern: Any) -> Callable[[object], bool]:
    search = pattern.search

    def match(text: object) -> bool:
        return text is not None and search(str(text)[:MAX_MATCH_TEXT]) is not None

    return match


def _describe(node: ast.AST) -> str:
    names = {
        "Pow": "the power operator **",
        "Lambda": "lambda",
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

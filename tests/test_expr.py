"""The expression language: values, missing-data semantics, safety, error positions,
and a property test against a reference interpreter."""

from __future__ import annotations

import ast
import operator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batond.engine.expr import (
    FUNCTIONS,
    RULE_NAMES,
    EvalError,
    compile_expression,
)
from batond.errors import ConfigError, Mark

MARK = Mark("rules.yaml", 7, 11)
CTX: dict[str, Any] = {
    "value": 93.5,
    "metric": "cpu_percent",
    "labels": {"host": "web-1", "mount": "/"},
    "event": {"name": "nginx", "msg": "Out of memory", "codes": [1, 2, 3], "nested": {"a": 1}},
    "anomaly": 0.5,
    "now": 1000.0,
}


def ev(text: str, **ctx: Any) -> Any:
    return compile_expression(text, MARK).evaluate({**CTX, **ctx})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("value > 90", True),
        ('value > 90 and labels.mount == "/"', True),
        ('event.name in ["nginx", "haproxy"]', True),
        ('matches(event.msg, "OOM|Out of")', True),
        ('matches(event.msg, "^memory")', False),
        ('host == "web-1"', True),  # a bare name is a label
        ('absent_label == ""', True),  # a missing label is ""
        ("labels.nothing", ""),
        ("event.nothing", None),
        ("event.nested.a + 1", 2),
        ("event.nested.missing.deeper", None),
        ('event["codes"][1]', 2),
        ("event.codes[5]", None),
        ("event.codes[1:]", [2, 3]),
        ("len(event.codes) * 2", 6),
        ("abs(-3) + min(1, 2) + max(3, 4) + round(2.6)", 11),
        ('int("4") + float("0.5")', 4.5),
        ('lower("AbC") + upper(metric)', "abcCPU_PERCENT"),
        ("str(1) + str(true)", "1True"),
        ("1 if anomaly > 0.4 else 2", 1),
        ("not (value < 10) and now - 100 == 900", True),
        ("7 // 2 + 7 % 2", 4),
        ("null is None and true", True),
        ('{"a": 1}["a"]', 1),
        ('matches(None, "x")', False),
    ],
)
def test_values(text: str, expected: Any) -> None:
    assert ev(text) == expected


def test_compiled_function_takes_rule_names_positionally() -> None:
    expr = compile_expression("value > 90 and host == 'a'", MARK)
    assert expr.names == RULE_NAMES
    assert expr.fn(91.0, "m", {"host": "a"}, {}, 0.0, 0.0) is True


def test_runtime_failure_is_an_eval_error() -> None:
    with pytest.raises(EvalError, match="TypeError"):
        ev("event.nothing > 3")
    with pytest.raises(EvalError, match="too large"):
        ev('"x" * 10000000')
    with pytest.raises(EvalError, match="too large"):
        ev("[1] * 1000 * 1000")
    assert ev('"ab" * 3') == "ababab" and ev("2 * [0]") == [0, 0]


def test_absurd_nesting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"too deeply nested|syntax"):
        compile_expression("(" * 5000 + "1" + ")" * 5000, MARK)


def test_template_names_are_given_per_use() -> None:
    expr = compile_expression("steps.restart.ok and params.unit", MARK, ("steps", "params"))
    assert expr.evaluate({"steps": {"restart": {"ok": True}}, "params": {"unit": "u"}}) == "u"
    with pytest.raises(ConfigError, match=r"unknown name 'host' \(known: steps, params\)"):
        compile_expression("host", MARK, ("steps", "params"))


@pytest.mark.parametrize(
    ("text", "col", "message"),
    [
        ("value >", 18, "expression syntax: invalid syntax"),
        ("value > > 3", 19, "expression syntax: invalid syntax"),
        ("__import__('os')", 11, "calls are limited to"),
        ("event.__class__", 11, "attributes starting with '_' are not allowed: '__class__'"),
        ("value + _secret", 19, "names starting with '_' are not allowed: '_secret'"),
        ("event['_x']", 17, "keys starting with '_' are not allowed: '_x'"),
        ("open('/etc/passwd')", 11, "calls are limited to"),
        ("labels.get('x')", 11, "calls are limited to"),
        ("value ** 2", 11, "the power operator ** is not allowed"),
        ("{x for x in event}", 11, "not allowed in expressions: comprehensions"),
        ("{k: 1 for k in event}", 11, "not allowed in expressions: comprehensions"),
        ("[x for (x, y) in event]", 18, "a comprehension takes one name"),
        ("[value for value in event]", 22, "'value' cannot name a comprehension variable"),
        ("sorted(event, key=event.k)", 29, "key= must be a string literal"),
        ("sorted(event, key='_x')", 29, "not a field path"),
        ("sorted(event, by='x')", 11, "positional arguments and key=, reverse="),
        ("join()", 11, "join() takes 1 to 2 arguments, got 0"),
        ("len(1, 2)", 11, "len() takes 1 argument, got 2"),
        ("clock() > 0", 11, "clock() is for playbooks"),
        ("lambda: 1", 11, "not allowed in expressions: lambda"),
        ("f'{value}'", 11, "not allowed in expressions: f-strings"),
        ("(x := 1)", 12, "not allowed in expressions: assignment (:=)"),
        ("value > 1 and matches(metric, '(')", 41, "bad regular expression"),
        ("matches(metric)", 11, "matches(text, regex) takes two arguments"),
        ("matches(event.msg, event.pat)", 30, "the regex must be a string literal"),
        ("matches(event.msg, labels.host)", 30, "the regex must be a string literal"),
        ("matches(event.msg, '(a+)+$')", 30, "nested unbounded repeats"),
        ("matches(event.msg, '(x|(ab*)*)+')", 30, "nested unbounded repeats"),
        ("abs(x=1)", 11, "abs() takes plain positional arguments"),
        ("len", 11, "function 'len' must be called: len(...)"),
        ("value | 1", 11, "not allowed in expressions: BitOr"),
    ],
)
def test_errors_point_inside_the_expression(text: str, col: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_expression(text, MARK)
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.col) == ("rules.yaml", 7, col), problem
    assert message in problem.message


def test_error_on_a_later_line_of_a_block_expression() -> None:
    with pytest.raises(ConfigError) as info:
        compile_expression("value > 1 and\n  event._hidden", MARK)
    (problem,) = info.value.problems
    assert (problem.line, problem.col) == (8, 3)


def test_an_expression_may_span_lines() -> None:
    assert compile_expression("value > 1 and\n  value < 100", MARK).evaluate(CTX) is True


def test_documented_functions() -> None:
    assert set(FUNCTIONS) == {
        "matches", "abs", "min", "max", "len", "round", "int", "float", "str", "bool",
        "lower", "upper", "join", "split", "sorted", "first", "last", "keys", "values",
        "sum", "any", "all", "strftime", "parse_time", "clock",
    }  # fmt: skip


# -- property: the compiled callable agrees with a reference interpreter -----------------
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


def reference(node: ast.AST, env: dict[str, Any]) -> Any:
    """A deliberately naive tree-walking evaluator of the generated subset."""
    if isinstance(node, ast.Expression):
        return reference(node.body, env)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        return env["labels"].get(node.id, "")
    if isinstance(node, ast.Attribute):
        base = reference(node.value, env)
        if isinstance(node.value, ast.Name) and node.value.id == "labels":
            return base.get(node.attr, "")
        return base.get(node.attr) if isinstance(base, dict) else None
    if isinstance(node, ast.BinOp):
        return _OPS[type(node.op)](reference(node.left, env), reference(node.right, env))
    if isinstance(node, ast.UnaryOp):
        operand = reference(node.operand, env)
        return (not operand) if isinstance(node.op, ast.Not) else -operand
    if isinstance(node, ast.BoolOp):
        result = None
        for v in node.values:
            result = reference(v, env)
            if isinstance(node.op, ast.And) and not result:
                return result
            if isinstance(node.op, ast.Or) and result:
                return result
        return result
    if isinstance(node, ast.Compare):
        left = reference(node.left, env)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = reference(comp, env)
            if not _OPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return reference(node.body if reference(node.test, env) else node.orelse, env)
    if isinstance(node, ast.Call):
        func = node.func
        assert isinstance(func, ast.Name)
        return {"abs": abs, "min": min, "max": max}[func.id](
            *[reference(a, env) for a in node.args]
        )
    raise AssertionError(ast.dump(node))


_numbers = st.one_of(
    st.integers(-1000, 1000).map(str),
    st.sampled_from(["value", "anomaly", "now", "event.n", "-value", "abs(value)"]),
)


def _expr(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    binop = st.tuples(children, st.sampled_from(["+", "-", "*"]), children).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    )
    call = st.tuples(st.sampled_from(["min", "max"]), children, children).map(
        lambda t: f"{t[0]}({t[1]}, {t[2]})"
    )
    return st.one_of(binop, call)


_arith = st.recursive(_numbers, _expr, max_leaves=6)
_compare = st.tuples(_arith, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), _arith).map(
    lambda t: f"{t[0]} {t[1]} {t[2]}"
)
_label_test = st.tuples(
    st.sampled_from(["host", "labels.host", "labels.role", "role"]),
    st.sampled_from(["==", "!="]),
    st.sampled_from(['"web-1"', '""', '"db"']),
).map(lambda t: f"{t[0]} {t[1]} {t[2]}")


def _logic(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    both = st.tuples(children, st.sampled_from(["and", "or"]), children).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})"
    )
    neg = children.map(lambda c: f"not {c}")
    cond = st.tuples(children, children, children).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})")
    return st.one_of(both, neg, cond)


_boolean = st.recursive(st.one_of(_compare, _label_test), _logic, max_leaves=5)


@settings(max_examples=300, deadline=None)
@given(
    text=_boolean,
    value=st.integers(-100, 100),
    anomaly=st.integers(0, 1),
    n=st.integers(-50, 50),
    host=st.sampled_from(["web-1", "db", ""]),
)
def test_compiled_agrees_with_reference(
    text: str, value: int, anomaly: int, n: int, host: str
) -> None:
    env = {
        "value": value,
        "metric": "m",
        "labels": {"host": host} if host else {},
        "event": {"n": n},
        "anomaly": anomaly,
        "now": 5,
    }
    compiled = compile_expression(text, MARK).evaluate(env)
    assert compiled == reference(ast.parse(text, mode="eval"), env)


@pytest.mark.parametrize(
    "pattern",
    ["a+b*(c|d)*", "(ab){2,5}x*", "OOM", r"(\d{1,3}\.){3}\d{1,3}", "(?i)out of (memory|swap)+"],
)
def test_safe_literal_patterns_compile(pattern: str) -> None:
    expr = compile_expression(f"matches(event.msg, {pattern!r})", MARK)
    assert expr.evaluate({"event": {"msg": "x"}}) in (True, False)


def test_a_catastrophic_pattern_in_event_data_is_never_compiled() -> None:
    """The ReDoS of the audit: with the pattern from the event, one input hung the loop."""
    with pytest.raises(ConfigError, match="string literal"):
        compile_expression("matches(event.msg, event.pat)", MARK)


#: The issue's ReDoS patterns, each of which ``check`` accepted, and what it says now.
REDOS = [
    ("(.*a){12}x", "an unbounded repeat inside another repeat"),
    ("(?:a{1,100}){1,100}$", "repeats of repeats allow 10000 repetitions (limit 1000)"),
    ("(a|a?)+$", "an alternative that can match nothing ('(a|a?)+') under a repeat"),
    ("(a|ab)+$", "an alternative that can match nothing"),  # parsed as a(|b)
    ("(a|[ab]c)+$", "alternatives under a repeat that can start with the same character ('a')"),
    (r"(\wx|\dy)+", "alternatives under a repeat that can start with the same character ('0')"),
    ("a++b", "RE2 (the linear-time engine) cannot take this regex: bad repetition operator"),
    ("(?=a)b", "RE2 (the linear-time engine) cannot take this regex: invalid perl operator"),
    (r"(a)\1", "RE2 (the linear-time engine) cannot take this regex: invalid escape"),
]


@pytest.mark.parametrize(("pattern", "message"), REDOS)
def test_slow_or_unsupported_patterns_are_refused_at_the_pattern(
    pattern: str, message: str
) -> None:
    text = f"matches(event.msg, {pattern!r})"
    with pytest.raises(ConfigError) as info:
        compile_expression(text, MARK)
    (problem,) = info.value.problems
    assert (problem.line, problem.col) == (7, 11 + text.index("'"))
    assert message in problem.message, problem.message


@pytest.mark.parametrize(
    ("pattern", "text"),
    [("(\\d+ )?x$", "1 " * 100_000), ("y.*x", "y" + "a" * 200_000), ("^(ab|cd)*$", "ab" * 50_000)],
)
def test_matching_is_linear_in_the_text(pattern: str, text: str) -> None:
    """What a backtracking engine takes seconds on (``.*x`` on 200 KB: 24 s) takes ms."""
    import time

    expr = compile_expression(f"matches(event.msg, {pattern!r})", MARK)
    t0 = time.perf_counter()
    for _ in range(10):
        expr.evaluate({"event": {"msg": text}})
    assert time.perf_counter() - t0 < 2.0  # 10 searches; a backtracking engine: minutes


def test_a_regex_sees_at_most_the_first_64_kib_of_its_text() -> None:
    from batond.engine.expr import MAX_MATCH_TEXT

    expr = compile_expression("matches(event.msg, 'x$')", MARK)
    assert expr.evaluate({"event": {"msg": "a" * (MAX_MATCH_TEXT - 1) + "x"}}) is True
    assert expr.evaluate({"event": {"msg": "a" * MAX_MATCH_TEXT + "x"}}) is False

"""regex_shape: CPython's private regex parser still looks as used; the scanner agrees with it.

The first tests fail when a Python upgrade changes ``re._parser`` or
``re._constants`` under ``batond/engine/regex_shape.py``: then adapt it or
narrow ``TESTED_PYTHON`` (the scanner takes over outside the window).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batond.engine import regex_shape
from batond.engine.expr import compile_expression
from batond.errors import ConfigError, Mark

CASES = {
    "(a+)+$": True,
    "(x|(ab*)*)+": True,
    "((a+){2})+": True,
    "(a*)*": True,
    "(?:a+|b)+": True,
    "(a{2,})*": True,
    "(a{,})*": True,
    "(?x)(a+) +": True,
    "(?P<n>a+)+": True,
    "(?=a+)+": True,
    "(a+?)+": True,
    "(?i:a+)+": True,
    "(?>(a+)+b)": True,  # an atomic group backtracks inside itself until it first matches
    "((a*)*)*+": True,
    "a+b+": False,
    "(a+){3}": False,
    "(a++)+": False,
    "(a+)++": False,
    "((a+)++)+": False,
    "(?>a+)+": False,
    "(a|b)*": False,
    "(a{,3})*": False,
    "a(?#c)+": False,
    r"\(+a+\)+": False,
    "[]a]+(b)+": False,
    "[(]+a": False,
    "x{2,}y*": False,
    "a{}+": False,
    "(a+)*+": False,
    "((?>a+))+": False,
}
MARK = Mark("rules.yaml", 1, 1)
WAYS: dict[str, Callable[[str], bool]] = {
    "stdlib": regex_shape.nested_repeat_by_stdlib,
    "scan": regex_shape.nested_repeat_by_scan,
}


def test_the_stdlib_parser_is_used_on_this_python() -> None:
    assert regex_shape.stdlib_problems() == ()
    assert regex_shape.USES_STDLIB_PARSER


def test_the_private_parse_trees_have_the_shapes_read() -> None:
    parser = importlib.import_module("re._parser")
    c = importlib.import_module("re._constants")
    ((op, (low, high, body)),) = parser.parse("(?:b|cd)*?")
    assert (op, low, high) == (c.MIN_REPEAT, 0, c.MAXREPEAT)
    ((branch, (_, alternatives)),) = body
    assert branch is c.BRANCH and len(alternatives) == 2
    ((assert_op, (direction, inner)),) = parser.parse("(?!x+)")
    assert (assert_op, direction) == (c.ASSERT_NOT, 1)
    ((group, (number, _, _, content)),) = parser.parse("(y)")
    assert (group, number, list(content)) == (c.SUBPATTERN, 1, [(c.LITERAL, ord("y"))])
    ((repeat, _),) = inner
    assert repeat is c.MAX_REPEAT
    assert parser.parse("a++")[0][0] is not c.MAX_REPEAT  # possessive: a node of its own


def test_outside_the_tested_window_the_stdlib_parser_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(regex_shape, "TESTED_PYTHON", ((3, 0), (3, 1)))
    (problem,) = regex_shape.stdlib_problems()
    assert "not in the tested window" in problem


@pytest.mark.parametrize("way", sorted(WAYS))
@pytest.mark.parametrize(("pattern", "nested"), sorted(CASES.items()))
def test_nested_unbounded_repeats_are_found(way: str, pattern: str, nested: bool) -> None:
    re.compile(pattern)
    assert WAYS[way](pattern) is nested


ATOMS = st.sampled_from(["a", "b", ".", r"\d", "[ab]", "[]x]", r"\(", "^"])
QUANTIFIERS = st.sampled_from(["", "", "*", "+", "?", "{2}", "{1,3}", "{2,}", "{,3}", "{,}"])
SUFFIXES = st.sampled_from(["", "", "?", "+"])
OPENERS = st.sampled_from(["(", "(?:", "(?>", "(?=", "(?!", "(?P<g>", "(?i:"])


def _quantified(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    quantifier = st.tuples(QUANTIFIERS, SUFFIXES).map(lambda qs: qs[0] + qs[1] if qs[0] else "")
    return st.tuples(inner, quantifier).map("".join)


PATTERNS = st.recursive(
    _quantified(ATOMS),
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3).map("".join),
        st.lists(inner, min_size=2, max_size=3).map("|".join),
        _quantified(st.tuples(OPENERS, inner).map(lambda oi: oi[0] + oi[1] + ")")),
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(PATTERNS)
def test_the_scanner_agrees_with_the_stdlib_parser(pattern: str) -> None:
    try:
        re.compile(pattern.replace("(?P<g>", "(?:"))  # (one name may appear many times)
    except re.error:
        return  # both only ever see patterns re.compile accepted
    pattern = pattern.replace("(?P<g>", "(?:")
    assert regex_shape.nested_repeat_by_scan(pattern) == regex_shape.nested_repeat_by_stdlib(
        pattern
    ), pattern


@pytest.mark.parametrize("stdlib", [True, False])
def test_matches_refuses_nested_repeats_on_both_ways(
    monkeypatch: pytest.MonkeyPatch, stdlib: bool
) -> None:
    monkeypatch.setattr(regex_shape, "USES_STDLIB_PARSER", stdlib)
    for pattern in ("(a+)+$", "(?>(a+)+b)"):
        with pytest.raises(ConfigError, match="nested unbounded repeats"):
            compile_expression(f"matches(event.msg, '{pattern}')", MARK)
    # safe for a backtracking engine, but RE2 (batond's engine) has no possessive repeats
    with pytest.raises(ConfigError, match=r"RE2 .* cannot take this regex"):
        compile_expression("matches(event.msg, '(a++)+$')", MARK)

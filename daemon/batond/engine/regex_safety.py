"""Which regexes ``matches()`` takes, and the engine that runs them.

RE2 (google-re2, Google's maintained binding with manylinux wheels) matches in
time linear in the text, so no pattern and no input can hang the loop:
``.*x`` on a 200 KB value takes well under a millisecond where Python's
backtracking ``re`` took 24 s. The text searched is capped at
:data:`MAX_MATCH_TEXT`. RE2 has no lookarounds, backreferences, possessive
repeats or atomic groups: such a pattern is refused at load.

The static checks refuse, at load, what is slow in any backtracking engine
(and, for repeats of repeats, makes RE2's program huge), so rules stay
portable: an unbounded repeat inside another repeat (``(a+)+``,
``(.*a){12}``, also found by :mod:`batond.engine.regex_shape` without the
stdlib parser), repeats of repeats allowing more than 1000 repetitions, and
ambiguous alternatives under a repeat (``(a|a?)+``, ``(a|[ab]c)+``). The last
two read CPython's parse tree, only where :mod:`~batond.engine.regex_shape`'s
guard accepts the private parser; elsewhere RE2's linear time still holds.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import re2

from batond.engine import regex_shape

__all__ = ["MAX_MATCH_TEXT", "NESTED", "SHAPE_CHECKS", "compiled_regex", "regex_problem"]

#: The most of a text ``matches()`` searches: a 200 KB log line costs no more than 64 KiB.
MAX_MATCH_TEXT = 65536
NESTED = (
    "matches(): nested unbounded repeats ('(a+)+'; '(.*a){12}': an unbounded repeat inside "
    "another repeat) can take exponential time; rewrite it without the inner repeat, or "
    "bound it ('\\d{1,3}')"
)
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors become check problems, not stderr lines

_EXTRA = ("NOT_LITERAL", "ANY", "IN", "AT", "NEGATE", "RANGE", "CATEGORY", "CATEGORY_DIGIT")
_MODULES = regex_shape.stdlib_modules()
#: Whether the parse-tree checks run (CPython's parser accepted by regex_shape's guard).
SHAPE_CHECKS = _MODULES is not None and all(hasattr(_MODULES[1], n) for n in _EXTRA)
sre_parse: Any = _MODULES[0] if SHAPE_CHECKS and _MODULES is not None else None
sre_c: Any = _MODULES[1] if SHAPE_CHECKS and _MODULES is not None else None


@functools.lru_cache(maxsize=256)
def compiled_regex(pattern: str) -> Any:
    """The RE2 pattern (re2.error when RE2 cannot take it)."""
    return re2.compile(pattern, _RE2_OPTIONS)


def regex_problem(pattern: str) -> tuple[str, Any]:
    """("", compiled RE2 pattern), or (why the pattern is refused, None)."""
    try:
        re.compile(pattern)  # Python's words for a syntax error
    except re.error as exc:
        return f"bad regular expression: {exc}", None
    except RecursionError:
        return "bad regular expression: nested too deeply", None
    if regex_shape.nested_repeat(pattern):
        return NESTED, None
    if SHAPE_CHECKS:
        parsed = sre_parse.parse(pattern)
        problem = _repeat_problem(parsed, 1) or _overlap_problem(parsed, False)
        if problem:
            return problem, None
    try:
        return "", compiled_regex(pattern)
    except re2.error as exc:
        why = exc.args[0].decode(errors="replace") if exc.args else str(exc)
        return f"matches(): RE2 (the linear-time engine) cannot take this regex: {why}", None


# (possessive repeats and atomic groups: RE2 refuses them, with its own words)
_REPEATS = (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT) if SHAPE_CHECKS else ()
_LOOKAROUNDS = (sre_c.ASSERT, sre_c.ASSERT_NOT) if SHAPE_CHECKS else ()
_MAX_REPEAT_PRODUCT = 1000  # (\d{1,3}\.){3} is 9; (a{1,100}){1,100} is 10,000
#: Characters the first-character sets of alternatives are compared on.
_PROBES = frozenset(map(chr, range(128))) | frozenset("éßÅ中٣\u00a0\u2028")


def _max_of(av: Any) -> float:
    return float("inf") if av[1] == sre_c.MAXREPEAT else float(av[1])


def _children(op: Any, av: Any) -> list[Any]:
    if op in _REPEATS:
        return [av[2]]
    if op is sre_c.SUBPATTERN:
        return [av[3]]
    if op in _LOOKAROUNDS:
        return [av[1]]
    if op is sre_c.BRANCH:
        return list(av[1])
    if op is sre_c.ATOMIC_GROUP:
        return [av]
    return []


def _repeat_problem(parsed: Any, outer: float) -> str:
    """Why a repeat inside a repeat is refused ("" when none is)."""
    for op, av in parsed:
        inner = outer
        if op in _REPEATS and _max_of(av) > 1:
            most = _max_of(av)
            if outer > 1 and (most == float("inf") or outer == float("inf")):
                return NESTED
            if outer > 1 and outer * most > _MAX_REPEAT_PRODUCT:
                return (
                    f"matches(): repeats of repeats allow {int(outer * most)} repetitions "
                    f"(limit {_MAX_REPEAT_PRODUCT}); rewrite it with one repeat"
                )
            inner = outer * most
        for child in _children(op, av):
            problem = _repeat_problem(child, inner)
            if problem:
                return problem
    return ""


def _overlap_problem(parsed: Any, repeated: bool) -> str:
    """Why alternatives under a repeat are ambiguous ("" when they are not)."""
    for op, av in parsed:
        if op is sre_c.BRANCH and repeated:
            firsts = [_first(alt) for alt in av[1]]
            if any(nullable for _, nullable in firsts):
                return (
                    "matches(): an alternative that can match nothing ('(a|a?)+') under a "
                    "repeat can take exponential time; make every alternative match something"
                )
            seen: set[str] = set()
            for chars, _ in firsts:
                if seen & chars:
                    return (
                        "matches(): alternatives under a repeat that can start with the same "
                        f"character ({min(seen & chars)!r}) can take exponential time; make "
                        "them start differently ('(ab|ac)+' as '(a[bc])+')"
                    )
                seen |= chars
        deeper = repeated or (op in _REPEATS and _max_of(av) > 1)
        for child in _children(op, av):
            problem = _overlap_problem(child, deeper)
            if problem:
                return problem
    return ""


def _first(seq: Any) -> tuple[set[str], bool]:
    """The probe characters ``seq`` can start with (case-folded), and whether it can be empty."""
    out: set[str] = set()
    for op, av in seq:
        chars, nullable = _first_of(op, av)
        out |= chars
        if not nullable:
            return out, False
    return out, True


def _first_of(op: Any, av: Any) -> tuple[set[str], bool]:
    if op is sre_c.LITERAL:
        return {chr(av).lower()}, False
    if op is sre_c.NOT_LITERAL:
        return {c.lower() for c in _PROBES if c != chr(av)}, False
    if op is sre_c.ANY:
        return {c.lower() for c in _PROBES if c != "\n"}, False
    if op is sre_c.IN:
        return _set_chars(av), False
    if op is sre_c.AT or op in _LOOKAROUNDS:
        return set(), True
    if op in _REPEATS:
        chars, nullable = _first(av[2])
        return chars, nullable or av[0] == 0
    if op is sre_c.SUBPATTERN:
        return _first(av[3])
    if op is sre_c.ATOMIC_GROUP:
        return _first(av)
    if op is sre_c.BRANCH:
        alts = [_first(alt) for alt in av[1]]
        return set().union(*(c for c, _ in alts)), any(n for _, n in alts)
    return {c.lower() for c in _PROBES}, True  # anything else: assume the worst


_CATEGORY_TEXT = (
    {
        sre_c.CATEGORY_DIGIT: r"\d",
        sre_c.CATEGORY_NOT_DIGIT: r"\D",
        sre_c.CATEGORY_WORD: r"\w",
        sre_c.CATEGORY_NOT_WORD: r"\W",
        sre_c.CATEGORY_SPACE: r"\s",
        sre_c.CATEGORY_NOT_SPACE: r"\S",
    }
    if SHAPE_CHECKS
    else {}
)


def _set_chars(items: Any) -> set[str]:
    """The probes (and the set's own literals) a ``[...]`` item list matches, case-folded."""
    text, probes = [], set(_PROBES)
    for op, av in items:
        if op is sre_c.NEGATE:
            text.append("^")
        elif op is sre_c.LITERAL:
            text.append(re.escape(chr(av)))
            probes.add(chr(av))
        elif op is sre_c.RANGE:
            text.append(f"{re.escape(chr(av[0]))}-{re.escape(chr(av[1]))}")
            probes.update((chr(av[0]), chr(av[1])))
        elif op is sre_c.CATEGORY and av in _CATEGORY_TEXT:
            text.append(_CATEGORY_TEXT[av])
        else:
            return {c.lower() for c in probes}
    if text == ["^"]:
        return {c.lower() for c in probes}
    members = re.compile(f"[{''.join(text)}]")
    return {c.lower() for c in probes if members.fullmatch(c)}

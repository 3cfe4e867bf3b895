"""Does a regular expression nest unbounded repeats (``(a+)+``), which can backtrack exponentially?

:func:`nested_repeat` answers for ``matches()`` in rule expressions. Two ways:

- CPython's own regex parser (``re._parser``, ``re._constants``: private,
  without stubs), the primary way: the parse tree the regex engine itself
  will run, so what is nested is never guessed. Guarded: the Python version
  must be in :data:`TESTED_PYTHON` and the parser must still give the tree
  shapes used here (:func:`stdlib_problems` checks both once, at import).
- A scanner of the pattern text (:func:`nested_repeat_by_scan`), the
  fallback when the guard refuses. It follows the same rules (possessive
  repeats and atomic groups hide what they hold from the repeats around them,
  but what they hold is checked on its own; lookarounds, branches and bounded
  repeats are looked into) and the tests hold it to the parser's answers;
  what it may lose is exotic syntax the parser resolves and a scanner cannot
  without becoming one (a conditional group's branches, a verbose-mode
  pattern whose flags are set in the middle).

Both see patterns that ``re.compile`` already accepted.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = [
    "TESTED_PYTHON",
    "USES_STDLIB_PARSER",
    "nested_repeat",
    "nested_repeat_by_scan",
    "nested_repeat_by_stdlib",
    "stdlib_modules",
    "stdlib_problems",
]

#: (first, first not tested) Python version whose ``re._parser`` is used as is
TESTED_PYTHON = ((3, 11), (3, 14))
_CONSTANTS = (
    "MAX_REPEAT",
    "MIN_REPEAT",
    "MAXREPEAT",
    "SUBPATTERN",
    "BRANCH",
    "ASSERT",
    "ASSERT_NOT",
    "LITERAL",
    "POSSESSIVE_REPEAT",
    "ATOMIC_GROUP",
)


def _load() -> tuple[Any, Any] | str:
    low, high = TESTED_PYTHON
    if not low <= sys.version_info[:2] < high:
        return f"Python {sys.version_info[0]}.{sys.version_info[1]} is not in the tested window"
    try:
        parser = importlib.import_module("re._parser")
        constants = importlib.import_module("re._constants")
    except ImportError as exc:
        return f"no re._parser/re._constants: {exc}"
    missing = [name for name in _CONSTANTS if not hasattr(constants, name)]
    if missing or not callable(getattr(parser, "parse", None)):
        return f"re._parser/re._constants lack {', '.join(missing) or 'parse'}"
    return parser, constants


def _shape_problem(parser: Any, c: Any) -> str | None:
    """The tree of ``(a+)+`` must be what _walk reads; any difference refuses the parser."""
    try:
        ((op, (low, high, body)),) = list(parser.parse("(a+)+"))
        ((group_op, (_, _, _, inner)),) = list(body)
        ((inner_op, (_, inner_high, _)),) = list(inner)
    except (TypeError, ValueError) as exc:
        return f"re._parser gives another tree shape: {exc}"
    if (op, low, high, group_op, inner_op, inner_high) != (
        c.MAX_REPEAT,
        1,
        c.MAXREPEAT,
        c.SUBPATTERN,
        c.MAX_REPEAT,
        c.MAXREPEAT,
    ):
        return "re._parser gives another tree for (a+)+"
    return None


def stdlib_problems() -> tuple[str, ...]:
    """Why the stdlib parser is not used (empty: it is)."""
    loaded = _load()
    if isinstance(loaded, str):
        return (loaded,)
    problem = _shape_problem(*loaded)
    return () if problem is None else (problem,)


_LOADED = _load()
USES_STDLIB_PARSER = not stdlib_problems()


def stdlib_modules() -> tuple[Any, Any] | None:
    """CPython's ``re._parser`` and ``re._constants`` where the guard accepts them."""
    if isinstance(_LOADED, str) or not USES_STDLIB_PARSER:
        return None
    return _LOADED


def nested_repeat_by_stdlib(pattern: str) -> bool:
    """The answer from CPython's parse tree (only where :data:`USES_STDLIB_PARSER`)."""
    assert not isinstance(_LOADED, str), _LOADED
    parser, constants = _LOADED
    return _walk(constants, parser.parse(pattern), False)


def _walk(c: Any, parsed: Any, inside: bool) -> bool:
    for op, av in parsed:
        deeper = inside
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            unbounded = av[1] == c.MAXREPEAT
            if unbounded and inside:
                return True
            children, deeper = [av[2]], inside or unbounded
        elif op is c.SUBPATTERN:
            children = [av[3]]
        elif op in (c.ASSERT, c.ASSERT_NOT):
            children = [av[1]]
        elif op is c.BRANCH:
            children = av[1]
        elif op is c.POSSESSIVE_REPEAT:  # never backtracks into its body, but the body
            children, deeper = [av[2]], False  # backtracks in itself: look inside afresh
        elif op is c.ATOMIC_GROUP:
            children, deeper = [av], False
        else:
            continue
        if any(_walk(c, child, deeper) for child in children):
            return True
    return False


# -- the fallback: a scanner of the pattern text ------------------------------------


class _Group:
    """An open group: does it hold an unbounded repeat, is it atomic, is it verbose?"""

    __slots__ = ("atomic", "unbounded", "verbose")

    def __init__(self, atomic: bool, verbose: bool) -> None:
        self.atomic = atomic
        self.unbounded = False
        self.verbose = verbose


def nested_repeat_by_scan(pattern: str) -> bool:
    """The answer from scanning the text: an unbounded repeat of something holding one."""
    groups = [_Group(False, _global_verbose(pattern))]
    i, atom = 0, None  # atom: (holds an unbounded repeat, is opaque) of the last item
    while i < len(pattern):
        top, char = groups[-1], pattern[i]
        if top.verbose and (char.isspace() or char == "#"):
            i = _skip_verbose(pattern, i)
            continue
        if pattern.startswith("(?#", i):  # a comment: the next quantifier is the atom's
            i = pattern.index(")", i) + 1
            continue
        if char in "*+?" or (char == "{" and _brace_end(pattern, i) > 0):
            i, nested = _quantifier(pattern, i, atom, top)
            if nested:
                return True
            atom = None
            continue
        _commit(atom, top)
        atom = None
        if char == "(":
            i = _open_group(pattern, i, groups)
            continue
        if char == ")" and len(groups) > 1:
            done = groups.pop()
            atom = (done.unbounded, done.atomic)
        else:
            atom = (False, False)
        i = _atom_end(pattern, i)
    return False


def _commit(atom: tuple[bool, bool] | None, top: _Group) -> None:
    """An item without a quantifier: what it holds is its group's."""
    if atom is not None and atom[0] and not atom[1]:
        top.unbounded = True


def _quantifier(
    pattern: str, i: int, atom: tuple[bool, bool] | None, top: _Group
) -> tuple[int, bool]:
    """Read the quantifier at ``i``: (index after it, whether it nests unbounded repeats)."""
    if pattern[i] == "{":
        end = _brace_end(pattern, i)
        unbounded = pattern[end - 1] == ","
        i = end + 1
    else:
        unbounded = pattern[i] in "*+"
        i += 1
    possessive = i < len(pattern) and pattern[i] == "+"
    if i < len(pattern) and pattern[i] in "?+":
        i += 1
    if atom is None or possessive:  # a possessive repeat never backtracks into its body
        return i, False
    holds = atom[0] and not atom[1]
    if unbounded and holds:
        return i, True
    if unbounded or holds:
        top.unbounded = True
    return i, False


def _brace_end(pattern: str, i: int) -> int:
    """Index of the ``}`` closing a quantifier (``{m}``, ``{m,}``, ``{,n}``, ``{m,n}``); else 0."""
    end = pattern.find("}", i)
    low, comma, high = pattern[i + 1 : end].partition(",") if end > 0 else ("", "", "")
    if (low or comma) and all(part == "" or part.isdigit() for part in (low, high)):
        return end
    return 0


def _open_group(pattern: str, i: int, groups: list[_Group]) -> int:
    verbose = groups[-1].verbose
    if not pattern.startswith("(?", i):
        groups.append(_Group(False, verbose))
        return i + 1
    kind = pattern[i + 2 : i + 3]
    if kind == "#":  # a comment
        return pattern.index(")", i) + 1
    if pattern.startswith("(?P=", i):  # a backreference by name: an atom, no group
        groups.append(_Group(False, verbose))
        return pattern.index(")", i)
    if kind in ("<", "P") and not pattern.startswith(("(?<=", "(?<!"), i):
        groups.append(_Group(False, verbose))
        return pattern.index(">", i) + 1
    end, verbose = _leading_flags(pattern, i + 2, verbose)
    groups.append(_Group(kind == ">", verbose))
    if end < len(pattern) and pattern[end] == ")":  # global flags: nothing to group
        return end
    return end + 1 if end < len(pattern) and pattern[end] in ":>=!" else i + 2


def _global_verbose(pattern: str) -> bool:
    """``(?x)`` at the start (flags for the whole pattern)."""
    if not pattern.startswith("(?"):
        return False
    end, verbose = _leading_flags(pattern, 2)
    return verbose and pattern[end : end + 1] == ")"


def _leading_flags(pattern: str, i: int, verbose: bool = False) -> tuple[int, bool]:
    """After ``(?``: skip ``aiLmsux-`` flags; (index after them, verbose mode)."""
    off = False
    while i < len(pattern) and pattern[i] in "aiLmsux-":
        if pattern[i] == "-":
            off = True
        elif pattern[i] == "x":
            verbose = not off
        i += 1
    if pattern.startswith(("<=", "<!"), i):
        i += 1
    return i, verbose


def _atom_end(pattern: str, i: int) -> int:
    if pattern[i] == "\\":
        return i + 2
    if pattern[i] != "[":
        return i + 1
    j = i + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1  # a leading ] is a literal
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def _skip_verbose(pattern: str, i: int) -> int:
    if pattern[i] == "#":
        end = pattern.find("\n", i)
        return len(pattern) if end < 0 else end + 1
    return i + 1


def nested_repeat(pattern: str) -> bool:
    """Whether ``pattern`` (accepted by ``re.compile``) nests unbounded repeats."""
    if USES_STDLIB_PARSER:
        return nested_repeat_by_stdlib(pattern)
    return nested_repeat_by_scan(pattern)

"""The functions expressions may call, and the work budget that bounds them.

Every function that walks a collection (``join``, ``sorted``, ``sum``, a
comprehension ...) charges the items it visits to a per-evaluation budget of
:data:`MAX_WORK` element visits; a collection longer than :data:`MAX_ITEMS`
and a string longer than :data:`MAX_TEXT` are refused. Event data cannot
make an expression run long or build something huge: it fails with
:class:`EvalError` instead (which the engine counts as false, and a step as
a failed template).

The budget is reset at the start of each evaluation of an expression that
uses one of these (the compiler emits the reset), so the rules' hot path,
which rarely iterates, pays nothing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from batond.engine.regex_safety import MAX_MATCH_TEXT, compiled_regex

__all__ = [
    "ARITY",
    "FUNCTIONS",
    "KEYWORDS",
    "MAX_ITEMS",
    "MAX_TEXT",
    "MAX_WORK",
    "PLAYBOOK_ONLY",
    "EvalError",
    "charge",
    "iterate",
    "key_getter",
    "start",
    "text_of",
]

MAX_ITEMS = 10_000  # items of one collection an expression may walk
MAX_WORK = 1_000_000  # element visits per evaluation (comprehensions, sorts, joins ...)
MAX_TEXT = 1_048_576  # characters a join, split or strftime may handle or build


class EvalError(Exception):
    """An expression failed at run time (counted as false by the engine)."""


# per thread (and task): evaluations elsewhere never share a budget
_left: ContextVar[int] = ContextVar("batond_expression_budget", default=MAX_WORK)


def start() -> None:
    """A new evaluation: the full budget again (emitted first in bounded expressions)."""
    _left.set(MAX_WORK)


def charge(n: int) -> None:
    left = _left.get() - n
    _left.set(left)
    if left < 0:
        raise EvalError(f"expression does more than {MAX_WORK} steps of work")


def _seq(value: Any, what: str) -> list[Any] | tuple[Any, ...]:
    """A list to walk: lists and tuples as they are, a mapping's keys, None as empty."""
    if value is None:
        return ()
    if isinstance(value, Mapping):
        value = list(value)
    if not isinstance(value, list | tuple):
        raise EvalError(f"{what}: expected a list, got {type(value).__name__}")
    if len(value) > MAX_ITEMS:
        raise EvalError(f"{what}: {len(value)} items is more than {MAX_ITEMS}")
    charge(len(value) + 1)
    return value


def iterate(value: Any) -> list[Any] | tuple[Any, ...]:
    """What a comprehension walks (``for x in value``)."""
    return _seq(value, "for ... in")


def contains(container: Any, item: Any) -> bool:
    """``in`` inside a comprehension: charged, since it walks the right-hand side."""
    if isinstance(container, list | tuple | str):
        charge(len(container) // 16 + 1)
    return item in container


def text_of(value: Any) -> str:
    """How a value reads when interpolated into a string (and in ``join``)."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def _text(value: Any, what: str) -> str:
    text = text_of(value)
    if len(text) > MAX_TEXT:
        raise EvalError(f"{what}: a string of {len(text)} characters is too long")
    return text


def _join(items: Any, sep: Any = "") -> str:
    parts = [text_of(v) for v in _seq(items, "join()")]
    glue = text_of(sep)
    size = sum(map(len, parts)) + len(glue) * max(0, len(parts) - 1)
    if size > MAX_TEXT:
        raise EvalError(f"join(): the result of {size} characters is too long")
    return glue.join(parts)


def _split(text: Any, sep: Any = None, limit: Any = -1) -> list[str]:
    if text is None:
        return []
    s = _text(text, "split()")
    if sep is not None and not isinstance(sep, str):
        raise EvalError("split(): the separator must be a string")
    if sep == "":
        raise EvalError("split(): empty separator")
    parts = s.split(sep, int(limit))
    if len(parts) > MAX_ITEMS:
        raise EvalError(f"split(): {len(parts)} parts is more than {MAX_ITEMS}")
    charge(len(parts) + 1)
    return parts


@lru_cache(maxsize=256)
def key_getter(path: str) -> Callable[[Any], Any]:
    """``key="a.b"``: the value at that path of an item (None where it is missing)."""
    parts = tuple(path.split("."))

    def get(item: Any) -> Any:
        for part in parts:
            if isinstance(item, Mapping):
                item = item.get(part)
            elif isinstance(item, list | tuple) and part.lstrip("-").isdigit():
                index = int(part)
                item = item[index] if -len(item) <= index < len(item) else None
            else:
                return None
        return item

    return get


def _sorted(items: Any, key: str | None = None, reverse: Any = False) -> list[Any]:
    seq = _seq(items, "sorted()")
    charge(len(seq) * max(1, int(math.log2(len(seq) + 1))))
    if key is None:
        return sorted(seq, reverse=bool(reverse))
    get = key_getter(key)
    # items without the key go last, whatever the direction
    present = [x for x in seq if get(x) is not None]
    missing = [x for x in seq if get(x) is None]
    return sorted(present, key=get, reverse=bool(reverse)) + missing


def _extreme(pick: Callable[..., Any], what: str) -> Callable[..., Any]:
    def fn(*args: Any, key: str | None = None) -> Any:
        if len(args) == 1 and (key is not None or isinstance(args[0], list | tuple | Mapping)):
            seq = list(_seq(args[0], f"{what}()"))
        else:
            seq = list(args)
        if key is not None:
            get = key_getter(key)
            seq = [x for x in seq if get(x) is not None]
            return pick(seq, key=get) if seq else None
        return pick(seq) if seq else None

    return fn


def _first(items: Any) -> Any:
    if isinstance(items, str):
        return items[:1] or None
    seq = _seq(items, "first()")
    return seq[0] if seq else None


def _last(items: Any) -> Any:
    if isinstance(items, str):
        return items[-1:] or None
    seq = _seq(items, "last()")
    return seq[-1] if seq else None


def _mapping(value: Any, what: str) -> Mapping[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise EvalError(f"{what}: expected a mapping, got {type(value).__name__}")
    if len(value) > MAX_ITEMS:
        raise EvalError(f"{what}: {len(value)} items is more than {MAX_ITEMS}")
    charge(len(value) + 1)
    return value


def _keys(value: Any) -> list[Any]:
    return list(_mapping(value, "keys()"))


def _values(value: Any) -> list[Any]:
    return list(_mapping(value, "values()").values())


def _sum(items: Any) -> Any:
    return sum(_seq(items, "sum()"))


def _any(items: Any) -> bool:
    return any(_seq(items, "any()"))


def _all(items: Any) -> bool:
    return all(_seq(items, "all()"))


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise EvalError(f"unknown time zone {name!r}") from None


def _strftime(t: Any, fmt: Any, tz: Any = "UTC") -> str:
    if isinstance(t, bool) or not isinstance(t, int | float):
        raise EvalError(f"strftime(): expected seconds since the epoch, got {t!r}")
    pattern = _text(fmt, "strftime()")
    if len(pattern) > 256:
        raise EvalError("strftime(): the format is longer than 256 characters")
    return datetime.fromtimestamp(t, _zone(str(tz))).strftime(pattern)


_ISO_Z = re.compile(r"[zZ]$")


def _parse_time(text: Any) -> float:
    """ISO 8601 text to seconds since the epoch (no offset: UTC)."""
    s = _text(text, "parse_time()").strip()
    if len(s) > 64:
        raise EvalError("parse_time(): not a timestamp")
    try:
        moment = datetime.fromisoformat(_ISO_Z.sub("+00:00", s))
    except ValueError:
        raise EvalError(f"parse_time(): not an ISO 8601 time: {s!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _matches(text: object, pattern: object) -> bool:
    """(The compiler binds a literal pattern's compiled matcher instead.)"""
    if text is None:
        return False
    return compiled_regex(str(pattern)).search(str(text)[:MAX_MATCH_TEXT]) is not None


def _lower(s: object) -> str:
    return "" if s is None else str(s).lower()


def _upper(s: object) -> str:
    return "" if s is None else str(s).upper()


def _str(value: Any) -> str:
    return text_of(value) if isinstance(value, dict | list | tuple) else str(value)


#: The functions expressions may call.
FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "matches": _matches,
    "abs": abs,
    "min": _extreme(min, "min"),
    "max": _extreme(max, "max"),
    "len": len,
    "round": round,
    "int": int,
    "float": float,
    "str": _str,
    "bool": bool,
    "lower": _lower,
    "upper": _upper,
    "join": _join,
    "split": _split,
    "sorted": _sorted,
    "first": _first,
    "last": _last,
    "keys": _keys,
    "values": _values,
    "sum": _sum,
    "any": _any,
    "all": _all,
    "strftime": _strftime,
    "parse_time": _parse_time,
    # the live time: the caller hands it in as the name "clock" (the core reads no clock)
    "clock": lambda: None,
}

#: (fewest, most) positional arguments of each function; None: any number.
ARITY: Mapping[str, tuple[int, int | None]] = {
    "matches": (2, 2), "abs": (1, 1), "min": (1, None), "max": (1, None), "len": (1, 1),
    "round": (1, 2), "int": (1, 2), "float": (1, 1), "str": (1, 1), "bool": (1, 1),
    "lower": (1, 1), "upper": (1, 1), "join": (1, 2), "split": (1, 3), "sorted": (1, 1),
    "first": (1, 1), "last": (1, 1), "keys": (1, 1), "values": (1, 1), "sum": (1, 1),
    "any": (1, 1), "all": (1, 1), "strftime": (2, 3), "parse_time": (1, 1), "clock": (0, 0),
}  # fmt: skip

#: Keyword arguments a function takes (``key=`` must be a string literal: a field path).
KEYWORDS: Mapping[str, frozenset[str]] = {
    "sorted": frozenset({"key", "reverse"}),
    "max": frozenset({"key"}),
    "min": frozenset({"key"}),
}

#: Functions that charge the work budget (the compiler resets it when one is used).
BOUNDED = frozenset({"min", "max", "join", "split", "sorted", "first", "last", "keys",
                     "values", "sum", "any", "all"})  # fmt: skip

#: Functions only playbooks may call: rules see the input's own time, never the clock.
PLAYBOOK_ONLY = frozenset({"clock"})

"""Silences: matchers as in Alertmanager (``=``, ``!=``, ``=~``, ``!~``) over a decision.

A matcher names ``rule``, ``severity`` or ``playbook`` (the decision's rule, the rule's
severity, the playbook it would run) or a label of the input (``host``, ``alertname``);
``labels.NAME`` names a label that one of those three names would hide. A label the input
lacks is ``""``. Regexes match the whole value (``web-.*`` matches ``web-1``, not
``my-web-1``), as Alertmanager's do; one that nests unbounded repeats (``(a+)+``) is
refused, as in rule expressions, because it can take exponential time.

:func:`check_matchers` refuses matchers that name nothing any loaded rule can produce,
with a "did you mean" for names and values one or two edits away.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from batond.engine import regex_shape
from batond.engine.model import ITEM_LABEL, RuleSet

__all__ = [
    "DECISION_FIELDS",
    "Matcher",
    "MatcherError",
    "Op",
    "Silence",
    "check_matchers",
    "matchers_of",
    "parse_matcher",
]

#: Matcher names that are the decision's own, not labels.
DECISION_FIELDS = ("rule", "severity", "playbook")
_LABEL_PREFIX = "labels."


class MatcherError(ValueError):
    """A matcher that cannot be used, with the reason."""


class Op(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: Op
    value: str

    @property
    def is_regex(self) -> bool:
        return self.op in (Op.REGEX, Op.NOT_REGEX)

    @property
    def text(self) -> str:
        return f"{self.name}{self.op}{self.value}"

    def compiled(self) -> re.Pattern[str] | None:
        return re.compile(self.value) if self.is_regex else None

    def matches(self, value: str, pattern: re.Pattern[str] | None) -> bool:
        if pattern is None:
            return (value == self.value) == (self.op == Op.EQUAL)
        return (pattern.fullmatch(value) is not None) == (self.op == Op.REGEX)

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "op": str(self.op), "value": self.value}


def parse_matcher(text: str) -> Matcher:
    """``name=value``, ``name!=value``, ``name=~regex``, ``name!~regex``."""
    match = re.match(r"^\s*([^=!~\s]+)\s*(=~|!~|!=|=)(.*)$", text)
    if match is None:
        raise MatcherError(f"{text!r}: expected NAME=VALUE, NAME!=VALUE, NAME=~RE or NAME!~RE")
    name, op, value = match.groups()
    return _checked(Matcher(name, Op(op), value.strip().strip('"')))


def _checked(matcher: Matcher) -> Matcher:
    if matcher.is_regex:
        try:
            re.compile(matcher.value)
        except re.error as exc:
            raise MatcherError(f"{matcher.text!r}: not a regex: {exc}") from None
        if regex_shape.nested_repeat(matcher.value):
            raise MatcherError(
                f"{matcher.text!r}: the regex nests unbounded repeats (it can take"
                " exponential time); write it differently"
            )
    return matcher


def matchers_of(obj: Any) -> tuple[Matcher, ...]:
    """Matchers from the API's forms: ``{"name": "value"}`` (equality), a list of
    ``"name=value"`` texts, or a list of ``{"name", "op", "value"}`` objects."""
    if isinstance(obj, Mapping):
        items: list[Any] = [{"name": k, "op": "=", "value": v} for k, v in obj.items()]
    elif isinstance(obj, list):
        items = list(obj)
    else:
        raise MatcherError('"matchers" must be an object or a list')
    out: list[Matcher] = []
    for item in items:
        if isinstance(item, str):
            out.append(parse_matcher(item))
            continue
        if not isinstance(item, Mapping) or not all(
            isinstance(item.get(k), str) for k in ("name", "value")
        ):
            raise MatcherError("each matcher needs a string name and value")
        op = item.get("op", "=")
        if op not in {str(o) for o in Op}:
            raise MatcherError(f"matcher op must be =, !=, =~ or !~, got {op!r}")
        out.append(_checked(Matcher(str(item["name"]), Op(op), str(item["value"]))))
    if not out:
        raise MatcherError('"matchers" must not be empty')
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    reason: str = ""
    _patterns: tuple[re.Pattern[str] | None, ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_patterns", tuple(m.compiled() for m in self.matchers))

    def covers(self, labels: Mapping[str, str], fields: Mapping[str, str], now: float) -> bool:
        """Whether it silences a decision with these input ``labels`` and decision
        ``fields`` (rule, severity, playbook) at ``now``."""
        if not self.starts_at <= now < self.ends_at:
            return False
        for matcher, pattern in zip(self.matchers, self._patterns, strict=True):
            if not matcher.matches(_value(matcher.name, labels, fields), pattern):
                return False
        return True

    @classmethod
    def of(cls, obj: Any) -> Silence:
        if isinstance(obj, Silence):
            return obj
        return cls(
            int(obj["id"]),
            matchers_of(obj["matchers"]),
            float(obj.get("starts_at") or 0.0),
            float(obj["ends_at"]),
            str(obj.get("reason") or ""),
        )


def _value(name: str, labels: Mapping[str, str], fields: Mapping[str, str]) -> str:
    if name in DECISION_FIELDS:
        return fields.get(name, "")
    if name.startswith(_LABEL_PREFIX):
        return labels.get(name[len(_LABEL_PREFIX) :], "")
    return labels.get(name, "")


# -- what loaded rules can produce -------------------------------------------------------
def producible(rules: RuleSet) -> dict[str, set[str] | None]:
    """Per matcher name, the values loaded rules can produce (None: any value)."""
    out: dict[str, set[str] | None] = {
        "rule": {r.name for r in rules.rules} | {s.name for s in rules.schedules},
        "severity": {r.severity for r in rules.rules} | {s.severity for s in rules.schedules},
        "playbook": set(rules.playbooks),
    }
    labels: set[str] = {"host", "schedule"}
    for rule in rules.rules:
        labels.update(rule.group_by)
        if rule.each:
            labels.add(ITEM_LABEL)
        for part in (*rule.parts, *((rule.resolve,) if rule.resolve else ())):
            labels.update(k for k, _ in part.match.labels)
    for label in labels:
        out.setdefault(label, None)
    return out


def check_matchers(matchers: Sequence[Matcher], rules: RuleSet) -> list[str]:
    """Problems of matchers that no loaded rule can produce, each with a did-you-mean."""
    known = producible(rules)
    problems = []
    for m in matchers:
        name = m.name[len(_LABEL_PREFIX) :] if m.name.startswith(_LABEL_PREFIX) else m.name
        if name not in known:
            problems.append(f"{m.text!r}: no loaded rule has {name!r}{_did_you_mean(name, known)}")
            continue
        values = known[name] if not m.name.startswith(_LABEL_PREFIX) else None
        if values is None or m.op in (Op.NOT_EQUAL, Op.NOT_REGEX):
            continue  # any value may come; a negation can match
        problem = _value_problem(m, name, values)
        if problem:
            problems.append(problem)
    return problems


def _value_problem(m: Matcher, name: str, values: set[str]) -> str:
    what = {"rule": "rule", "severity": "rule severity", "playbook": "playbook"}[name]
    if m.op == Op.REGEX:
        pattern = re.compile(m.value)
        if any(pattern.fullmatch(v) for v in values):
            return ""
        return f"{m.text!r}: no loaded {what} matches {m.value!r}"
    if m.value in values:
        return ""
    return f"{m.text!r}: no loaded {what} is {m.value!r}{_did_you_mean(m.value, values)}"


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

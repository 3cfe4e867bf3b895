"""The sections of a ``playbooks:`` list: playbook, step, retry, verify, and every
action's ``with:`` (:data:`ACTION_KEYS`, from the action registry).

:data:`PLAYBOOK_SCHEMA` is generated from them, so the schema and the
reader (:mod:`batond.load.playbooks.reader`) cannot disagree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batond.engine.expr import TEMPLATE_NAMES
from batond.engine.window import DAY_NAMES, Window, parse_span
from batond.load.fields import INVALID, Field, Fields, Kind, SchemaBuilder, Section
from batond.load.kinds import (
    Choice,
    Cron,
    Data,
    Duration,
    Expr,
    Flag,
    Integer,
    Later,
    ListOf,
    Name,
    Nested,
    Raw,
    Switch,
    Text,
    Zone,
)
from batond.load.playbooks.actions import with_sections
from batond.load.playbooks.model import BACKOFFS, MODES, ON_INTERRUPT, Retry
from batond.load.templating import compile_node
from batond.load.yamlfile import Node, Reader, ScalarNode

__all__ = [
    "ACTION_KEYS",
    "PLAYBOOK_FIELDS",
    "PLAYBOOK_LIST",
    "PLAYBOOK_SCHEMA",
    "STEP_FIELDS",
    "STEP_NAME",
    "playbook_schema",
]

#: What a step name may be (``steps.NAME`` in ``when:`` and templates must parse).
STEP_NAME = r"[A-Za-z0-9_][A-Za-z0-9_-]*"


def _step() -> Kind:
    return Nested(STEP_FIELDS)


#: A list of steps (``steps:``, a branch of ``parallel``, ``foreach``'s body); the
#: others (``on_failure:``, ``wait_until``'s checks) may be empty.
_STEPS = ListOf(Later(_step), "list of steps", 1, count_message="needs at least one step")
_ANY_STEPS = ListOf(Later(_step), "list of steps")

#: Action -> the section of its ``with:`` keys, for every kind the registry declares.
ACTION_KEYS: Mapping[str, Section] = with_sections(
    branches=ListOf(
        _STEPS,
        "list of branches (each a list of steps)",
        1,
        count_message="needs at least one branch",
    ),
    block=_ANY_STEPS,
    required_block=_STEPS,
)

_VAR_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"


@dataclass(frozen=True, slots=True)
class _Vars(Kind):
    """``NAME: value`` pairs, each value templated (``set``'s ``with:``, ``outputs:``)."""

    what: str

    def read(self, r: Reader, node: Node, key: str) -> Any:
        fields = r.mapping(node, None, what=self.what)
        if not fields:
            if fields is not None:
                r.error(node, "needs at least one NAME: value")
            return INVALID
        out: dict[str, Any] = {}
        for name, vnode in fields.items():
            if not re.match(_VAR_PATTERN, name):
                r.error(r.key_node(node, name), f"{name!r}: a name of letters, digits, '_'")
                continue
            out[name] = compile_node(r, vnode, TEMPLATE_NAMES)
        return out

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "object", "minProperties": 1, "propertyNames": {"pattern": _VAR_PATTERN}}


#: What a step's ``with:`` is, by its action: the action's section, or for ``set``
#: (declared without keys) any ``NAME: value`` pairs.
_WITH: Mapping[str, Kind] = {
    **{action: Nested(keys) for action, keys in ACTION_KEYS.items()},
    "set": _Vars("with mapping of action 'set' (NAME: value)"),
}


class _Backoff(Kind):
    """``fixed`` or ``exponential``; without ``delay:``, also the older form: a duration
    that is the first delay, doubling (``backoff: 2s``). Read: the mode, or that delay."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        raise TypeError("backoff is read as part of its retry mapping (it depends on delay)")

    def read_in(self, fields: Fields, node: Node, key: str) -> Any:
        if isinstance(node, ScalarNode) and str(node.value) in BACKOFFS:
            return str(node.value)
        if "delay" in fields:
            return Choice(BACKOFFS, "backoff").read(fields.reader, node, key)
        return Duration().read(fields.reader, node, key)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"anyOf": [{"enum": list(BACKOFFS)}, s.kind(Duration())]}


def _retry(f: Fields) -> Any:
    # without attempts there is nothing to retry: the other keys are not read
    if "attempts" not in f or not f.valid():
        return INVALID
    first, backoff = f.get("delay", 0.0), f.get("backoff", "exponential")
    if isinstance(backoff, float):  # the older form
        first, backoff = backoff, "exponential"
    return Retry(f.read("attempts"), first, backoff, f.get("max_backoff"))


RETRY_FIELDS = Section(
    "retry mapping",
    (
        Field("attempts", Integer(1), True, "attempts in all, the first included"),
        Field("delay", Duration(), doc="before the 2nd attempt"),
        Field("backoff", _Backoff(), doc="fixed or exponential (a duration: delay, doubling)"),
        Field("max_backoff", Duration(), doc="no wait is longer than this"),
    ),
    build=_retry,
)


def _window(f: Fields) -> Any:
    """``{cron}`` or ``{days, hours}``, and ``timezone``, as a :class:`Window`."""
    r, tz = f.reader, f.get("timezone")
    text = " ".join(f"{k}={r.plain(v)}" for k, v in f.nodes.items())
    if "cron" in f:
        if "days" in f or "hours" in f:
            r.error(f.node, "only_within takes cron, or days and hours, not both")
            return INVALID
        cron = f.read("cron")
        return INVALID if cron is INVALID else Window(text, cron=cron, tz=tz)
    if "days" not in f and "hours" not in f:
        r.error(f.node, "only_within needs cron, or days and/or hours")
        return INVALID
    days: list[str | None] = list(DAY_NAMES)
    if "days" in f:
        days = [r.one_of(d, DAY_NAMES, "day") for d in r.seq_or_one(f.nodes["days"])]
    if any(d is None for d in days):
        return INVALID
    start, end = 0, 24 * 60
    if "hours" in f:
        try:
            start, end = parse_span(str(f.read("hours")))
        except ValueError as exc:
            r.error(f.nodes["hours"], str(exc))
            return INVALID
    weekdays = frozenset(DAY_NAMES.index(str(d)) for d in days)
    return Window(text, days=weekdays, start=start, end=end, tz=tz)


_DAY = {"enum": list(DAY_NAMES)}
WINDOW_FIELDS = Section(
    "only_within mapping",
    (
        Field("cron", Cron(), doc="a cron expression the time must match"),
        Field("days", Raw({"anyOf": [_DAY, {"type": "array", "items": _DAY}]})),
        Field("hours", Raw({"type": "string", "pattern": r"^\d\d?:\d\d-\d\d?:\d\d$"})),
        Field("timezone", Zone()),
    ),
    build=_window,
)
VERIFY_FIELDS = Section(
    "verify mapping",
    (Field("within", Duration(0.001), True, "the incident must resolve this soon"),),
    build=lambda f: f.read("within"),
)
STEP_FIELDS = Section(
    "step mapping",
    (
        Field("name", Name("step name", STEP_NAME, "use letters, digits, '_' and '-'"), True),
        Field("action", Choice(tuple(ACTION_KEYS), "action"), True),
        Field("with", Switch("action", _WITH), doc="the action's keys"),
        Field("timeout", Duration(0.001), doc="default 5m"),
        Field("retry", Nested(RETRY_FIELDS)),
        Field(
            "when",
            Expr(TEMPLATE_NAMES, "when: expected an expression", empty=""),
            doc="expression over earlier steps, e.g. steps.restart.ok",
        ),
        Field("continue_on_error", Flag()),
        Field("idempotent", Flag()),
        Field("only_within", Nested(WINDOW_FIELDS), doc="the step waits for this window"),
    ),
    ref="step",
)
_OUTPUTS = _Vars("outputs mapping (NAME: value)")
PLAYBOOK_FIELDS = Section(
    "playbook mapping",
    (
        Field("name", Name("playbook name"), True, "unique playbook name"),
        Field("description", Text("description", empty_ok=True)),
        Field("mode", Choice(MODES, "mode"), doc="runs for one key at a time (default single)"),
        Field("max", Integer(1), doc="queued: runs waiting; parallel: runs at once"),
        Field("timeout", Duration(0.001), doc="the whole run (default 1h)"),
        Field("on_interrupt", Choice(ON_INTERRUPT, "on_interrupt")),
        Field("escalate", Name("playbook name"), doc="run when this one fails"),
        Field("steps", _STEPS, True),
        Field("verify", Nested(VERIFY_FIELDS)),
        Field("on_failure", _ANY_STEPS, doc="steps run when the run fails"),
        Field(
            "outputs", _Vars("outputs mapping (NAME: value)"), doc="NAME: template over its steps"
        ),
        Field("params", Data("params mapping (NAME: default)"), doc="NAME: default value"),
        Field("only_within", Nested(WINDOW_FIELDS), doc="a run waits for this window"),
    ),
    ref="playbook",
)
#: A ``playbooks:`` list: the :class:`Fields` of each playbook, for the reader.
PLAYBOOK_LIST = ListOf(Nested(PLAYBOOK_FIELDS), "list of playbooks")


def playbook_schema(s: SchemaBuilder) -> dict[str, Any]:
    """The schema of a ``playbooks:`` list; its definitions go to ``s.defs``."""
    return s.kind(PLAYBOOK_LIST)


def _standalone() -> dict[str, Any]:
    s = SchemaBuilder()
    schema = playbook_schema(s)
    return {"$defs": s.defs, **schema}


#: JSON Schema of a ``playbooks:`` list on its own; ``$defs.step`` is one step.
PLAYBOOK_SCHEMA: Mapping[str, Any] = _standalone()

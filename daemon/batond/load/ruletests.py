"""Rule test files (``batond test``, docs/tuning.md): inputs in, expected decisions out.

A test file names the rule files under test and holds tests; each test gives
inputs at offsets from its start (series in the compact notation of
``promtool test rules``, events, Alertmanager alerts) and what must come of them:
the decisions, the open incidents at given times, and the arguments a step
would be rendered with. The sections below (:data:`TEST_FILE_FIELDS` and the
sections it holds, in the vocabulary of :mod:`batond.load.fields`) are the one
description of the file: the reader validates against them, reporting every
mistake as ``FILE:LINE:COL: message``, and its JSON Schema is generated from
them. Running the tests is :mod:`batond.commands.ruletest`.

Series notation (one value per ``interval``, the first at offset 0):
``a`` one sample; ``_`` no sample (a gap); ``axN`` a, then N more of a (N+1
samples, as in promtool); ``a+bxN`` / ``a-bxN`` a, a+b, ..., a+N*b (N+1
samples); ``_xN`` N gaps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from batond.engine.types import Suppression, verdict
from batond.errors import InputError, Mark
from batond.events import item_from_json
from batond.load.fields import INVALID, Field, Fields, Kind, SchemaBuilder, Section
from batond.load.kinds import Choice, Data, Duration, FilePath, ListOf, Name, Nested, Text
from batond.load.yamlfile import Node, Reader, ScalarNode, compose_file, text_mark
from batond.units import format_duration

__all__ = [
    "ALERT_FIELDS",
    "DECISION_FIELDS",
    "INCIDENTS_FIELDS",
    "OPEN_FIELDS",
    "STEP_CHECK_FIELDS",
    "TEST_FIELDS",
    "TEST_FILE_FIELDS",
    "ExpectedDecision",
    "ExpectedIncidents",
    "ExpectedStep",
    "RuleTest",
    "TestFile",
    "TimedInput",
    "parse_selector",
    "parse_values",
    "read_test_file",
]

DEFAULT_INTERVAL = 60.0

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_ONE = re.compile(rf"({_NUM})")
_REPEAT = re.compile(rf"({_NUM})x(\d+)")
_STEPPED = re.compile(rf"({_NUM})([-+])(\d+(?:\.\d*)?|\.\d+)x(\d+)")
_GAPS = re.compile(r"_x(\d+)")
_NAME_TEXT = r"[A-Za-z_][A-Za-z0-9_.:-]*"
_NAME = re.compile(_NAME_TEXT)
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*')


@dataclass(frozen=True, slots=True)
class TimedInput:
    """One input at an offset: ``kind`` sample or event (an input object as JSON), or
    alert (one alert of an Alertmanager webhook body)."""

    at: float
    kind: str
    obj: Mapping[str, Any]
    mark: Mark


@dataclass(frozen=True, slots=True)
class ExpectedDecision:
    at: float
    rule: str
    key: str
    result: str  # run=PLAYBOOK or suppressed=REASON
    mark: Mark


@dataclass(frozen=True, slots=True)
class ExpectedIncidents:
    """The incidents open at ``at`` (all of them: any other open one is a failure)."""

    at: float
    open: tuple[tuple[str, str], ...]  # (rule, key), sorted
    mark: Mark


@dataclass(frozen=True, slots=True)
class ExpectedStep:
    """The ``with:`` values step ``step`` of the run started at ``at`` would get."""

    at: float
    rule: str
    key: str
    step: str
    args: Mapping[str, Any]  # only the keys given are compared
    mark: Mark


@dataclass(frozen=True, slots=True)
class RuleTest:
    name: str
    mark: Mark
    start: float
    until: float  # offset: the clock runs to here (timers due by then fire)
    inputs: tuple[TimedInput, ...]  # in time order (the written order within one time)
    decisions: tuple[ExpectedDecision, ...] | None  # None: not checked
    incidents: tuple[ExpectedIncidents, ...]
    steps: tuple[ExpectedStep, ...]


@dataclass(frozen=True, slots=True)
class TestFile:
    path: Path
    rule_files: tuple[Path, ...]
    config: Path | None
    tests: tuple[RuleTest, ...]


def read_test_file(path: Path) -> tuple[TestFile | None, Reader]:
    """The file, or None; the reader holds every problem found."""
    node, r = compose_file(path)
    if node is None:
        if not r.problems:
            r.error(Mark(str(path), 1, 1), "the file is empty: it needs rule_files and tests")
        return None, r
    test_file = Nested(TEST_FILE_FIELDS).read(r, node, "")
    return (None if test_file is INVALID else test_file), r


# -- the series notation ----------------------------------------------------------------


def parse_selector(text: str) -> tuple[str, dict[str, str]] | str:
    """``name{label="value", ...}`` as (name, labels), or the message of what is wrong."""
    m = _NAME.match(text)
    if m is None:
        return f"series {text!r}: expected a metric name such as cpu_percent"
    name, rest = m.group(), text[m.end() :].strip()
    labels: dict[str, str] = {}
    if not rest:
        return name, labels
    if not (rest.startswith("{") and rest.endswith("}")):
        return f'series {text!r}: expected labels as {{label="value", ...}} after the name'
    body, pos = rest[1:-1], 0
    while body[pos:].strip():
        lm = _LABEL.match(body, pos)
        if lm is None or (lm.end() < len(body) and body[lm.end()] != ","):
            part = body[pos:].split(",", 1)[0].strip()
            return f'series {text!r}: expected label="value", got {part!r}'
        labels[lm.group(1)] = re.sub(r"\\(.)", r"\1", lm.group(2))
        pos = lm.end() + 1
    return name, labels


def parse_values(text: str) -> list[float | None] | tuple[int, str]:
    """The series notation as values (None: a gap), or (offset, message) of a mistake."""
    out: list[float | None] = []
    for m in re.finditer(r"\S+", text):
        token = m.group()
        if token == "_":
            out.append(None)
        elif g := _GAPS.fullmatch(token):
            out.extend([None] * int(g.group(1)))
        elif g := _ONE.fullmatch(token):
            out.append(float(g.group(1)))
        elif g := _REPEAT.fullmatch(token):
            out.extend([float(g.group(1))] * (int(g.group(2)) + 1))
        elif g := _STEPPED.fullmatch(token):
            a, step = float(g.group(1)), float(g.group(3)) * (1 if g.group(2) == "+" else -1)
            out.extend(a + i * step for i in range(int(g.group(4)) + 1))
        else:
            return m.start(), f"bad value {token!r}: expected a, _, axN, a+bxN, a-bxN or _xN"
    if not out:
        return 0, "expected at least one value"
    return out


@dataclass(frozen=True, slots=True)
class _Written:
    """One series as written: its metric, labels and values (None: a gap), at its key."""

    metric: str
    labels: Mapping[str, str]
    values: tuple[float | None, ...]
    mark: Mark

    def inputs(self, interval: float) -> list[TimedInput]:
        return [
            TimedInput(
                i * interval,
                "sample",
                {"metric": self.metric, "value": v, **self.labels},
                self.mark,
            )
            for i, v in enumerate(self.values)
            if v is not None
        ]


class _Selector(Kind):
    """A series' key, ``METRIC{label="value", ...}``, as (metric, labels)."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        selector = parse_selector(str(node.value) if isinstance(node, ScalarNode) else "")
        if isinstance(selector, str):
            r.error(text_mark(r, node), selector)
            return INVALID
        return selector

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string", "pattern": rf"^{_NAME_TEXT}\s*(\{{.*\}})?$"}


class _Values(Kind):
    """A series' values in the notation above; a mistake is reported at the bad value."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        if not isinstance(node, ScalarNode) or node.tag.endswith(":null"):
            r.error(node, "expected the series' values, such as: 50 95x10 40")
            return INVALID
        values = parse_values(str(node.value))
        if isinstance(values, tuple):
            offset, message = values
            mark = text_mark(r, node)
            r.error(Mark(mark.file, mark.line, mark.col + offset), message)
            return INVALID
        return tuple(values)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": ["string", "number"], "description": "values such as: 50 95x10 40"}


_SELECTOR = _Selector()
_VALUES = _Values()


class _Series(Kind):
    """``series:``, series keys to their values, as the series written (:class:`_Written`)."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        nodes = r.mapping(node, None, what="mapping of series to values")
        if nodes is None:
            return INVALID
        out = []
        for name, vnode in nodes.items():
            knode = r.key_node(node, name)
            selector, values = _SELECTOR.read(r, knode, name), _VALUES.read(r, vnode, name)
            if selector is not INVALID and values is not INVALID:
                metric, labels = selector
                out.append(_Written(metric, labels, values, r.mark(knode)))
        return tuple(out)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {
            "type": "object",
            "propertyNames": s.kind(_SELECTOR),
            "additionalProperties": s.kind(_VALUES),
        }


# -- the other kinds only test files have -----------------------------------------------
_AT = Duration()  # an offset from the test's start


class _Start(Kind):
    """An epoch number or an ISO 8601 time (without a zone: UTC), as epoch seconds."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        value = r.plain(node)
        if isinstance(value, bool):
            value = None
        elif isinstance(value, int | float):
            return float(value)
        elif isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                value = None
        elif isinstance(value, date) and not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day)
        if not isinstance(value, datetime):
            r.error(node, "start: expected epoch seconds or a time such as 2026-01-01T00:00:00Z")
            return INVALID
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": ["number", "string"]}


class _ExistingPath(Kind):
    """A path (relative: to the test file's folder) that must exist."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        path = FilePath().read(r, node, key)
        if path is not INVALID and not path.exists():
            r.error(node, f"{node.value}: no such file or directory")
            return INVALID
        return path

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string"}


class _Paths(Kind):
    """One existing path or a list of them, as a tuple (the ones that exist)."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        paths = (_ExistingPath().read(r, item, key) for item in r.seq_or_one(node))
        return tuple(p for p in paths if p is not INVALID)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        path = s.kind(_ExistingPath())
        return {"anyOf": [path, {"type": "array", "items": path}]}


class _Labels(Kind):
    """A flat mapping of label values (strings, numbers and booleans as their text)."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        labels = r.str_map(node)
        return INVALID if labels is None else labels

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}


class _Event(Kind):
    """``{at: 2m, event: NAME, label: value, ...}``: an input object as JSON, at its offset.

    Any key but ``at`` (and ``ts``: the time is the offset) is the input's, so
    it is not a section: :func:`batond.events.item_from_json` judges it.
    """

    def read(self, r: Reader, node: Node, key: str) -> Any:
        nodes = r.mapping(node, None, required=("at",), what="event")
        if nodes is None or "at" not in nodes:
            return INVALID
        at = _AT.read(r, nodes["at"], "at")
        obj = {k: r.plain(v) for k, v in nodes.items() if k != "at"}
        if "ts" in obj:
            r.error(r.key_node(node, "ts"), "an event's time is its at:, not ts")
            return INVALID
        try:
            item = item_from_json(obj, 0.0, "test")
        except InputError as exc:
            r.error(node, f"not an input: {exc}")
            return INVALID
        if at is INVALID:
            return INVALID
        return TimedInput(at, "sample" if "metric" in obj else "event", item.raw, r.mark(node))

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {
            "type": "object",
            "description": "an input as JSON (docs/inputs.md) at its offset",
            "required": ["at"],
            "properties": {"at": s.kind(_AT)},
            "not": {"required": ["ts"]},
        }


# -- building each section ----------------------------------------------------------------


def _complete(f: Fields) -> bool:
    """Whether every value is valid and every required key given (each problem reported)."""
    valid = f.valid()
    return valid and all(name in f for name in f.section.required)


def _alert(f: Fields) -> Any:
    complete, labels = _complete(f), f.get("labels")
    if labels is not None and "alertname" not in labels:
        f.reader.error(f.nodes["labels"], "an alert's labels need an alertname")
        return INVALID
    if not complete:
        return INVALID
    alert = {"status": f.read("status"), "labels": labels}
    alert.update({k: f.read(k) for k in ("annotations", "fingerprint") if k in f})
    return TimedInput(f.read("at"), "alert", alert, f.mark)


def _decision(f: Fields) -> Any:
    valid = f.valid()
    if not all(name in f for name in f.section.required):
        return INVALID  # which result is meant is moot while the decision is incomplete
    if ("playbook" in f) == ("suppressed" in f):
        f.reader.error(f.node, "a decision has either playbook (a run) or suppressed (the reason)")
        return INVALID
    if not valid:
        return INVALID
    result = verdict(f.get("playbook"), f.get("suppressed"))
    return ExpectedDecision(f.read("at"), f.read("rule"), f.read("key"), result, f.mark)


def _incidents(f: Fields) -> Any:
    if not _complete(f):
        return INVALID
    return ExpectedIncidents(f.read("at"), tuple(sorted(f.read("open"))), f.mark)


def _step(f: Fields) -> Any:
    if not _complete(f):
        return INVALID
    at, rule, key, step, args = (f.read(k) for k in ("at", "rule", "key", "step", "with"))
    return ExpectedStep(at, rule, key, step, args, f.mark)


def _test_file(f: Fields) -> TestFile:
    tests: list[RuleTest] = []
    names: set[str] = set()
    for test in f.get("tests", ()):
        name = test.get("name")
        if name is not None and name in names:
            test.reader.error(test.node, f"duplicate test name {name!r}")
        names.add(name)
        built = _test(test)
        if built is not None:
            tests.append(built)
    return TestFile(Path(f.reader.file), f.get("rule_files", ()), f.get("config"), tuple(tests))


def _test(f: Fields) -> RuleTest | None:
    """The test, or None after a problem that leaves no test to run."""
    interval = f.read("interval") if "interval" in f else DEFAULT_INTERVAL
    every = DEFAULT_INTERVAL if interval is INVALID else interval
    inputs = [x for s in f.get("series", ()) for x in s.inputs(every)]
    inputs += [*f.get("events", ()), *f.get("alerts", ())]
    decisions = f.get("decisions", ()) if "decisions" in f else None
    incidents, steps = f.get("incidents", ()), f.get("steps", ())
    latest = [x.at for group in (inputs, decisions or (), incidents, steps) for x in group]
    until = f.read("until") if "until" in f else max(latest, default=0.0)
    last_input = max((x.at for x in inputs), default=0.0)
    if until is not INVALID and until < last_input:
        message = f"until: is before the last input (at {format_duration(last_input)})"
        f.reader.error(f.nodes["until"], message)
        until = INVALID
    name = f.read("name")
    start = f.read("start") if "start" in f else 0.0
    if any(v is INVALID for v in (name, interval, start, until)):
        return None
    inputs.sort(key=lambda x: x.at)  # stable: the written order within one time
    return RuleTest(
        name=name,
        mark=f.mark,
        start=start,
        until=until,
        inputs=tuple(inputs),
        decisions=decisions,
        incidents=incidents,
        steps=steps,
    )


# -- the sections of a rule test file (docs/tuning.md) ----------------------------------
_AT_FIELD = Field("at", _AT, True, "offset from the test's start")
_RULE_FIELD = Field("rule", Name("rule name"), True, "the rule")
_KEY_FIELD = Field("key", Text("incident key", empty_ok=True), True, "the incident key")
ALERT_FIELDS = Section(
    "alert",
    (
        _AT_FIELD,
        Field("status", Choice(("firing", "resolved"), "status"), True, "firing or resolved"),
        Field("labels", _Labels(), True, "the alert's labels, alertname among them"),
        Field("annotations", _Labels(), doc="the alert's annotations"),
        Field("fingerprint", Text("fingerprint"), doc="Alertmanager's fingerprint"),
    ),
    doc="one alert of an Alertmanager webhook, turned into its alert event",
    build=_alert,
)
DECISION_FIELDS = Section(
    "decision",
    (
        _AT_FIELD,
        _RULE_FIELD,
        _KEY_FIELD,
        Field("playbook", Name("playbook name"), doc="a run of this playbook"),
        Field(
            "suppressed",
            # (not_owner is a fleet central instance's fence: a rule test never meets it)
            Choice(tuple(s.value for s in Suppression if s != "not_owner"), "suppressed"),
            doc="suppressed, for this reason",
        ),
    ),
    exactly_one=("playbook", "suppressed"),
    build=_decision,
)
OPEN_FIELDS = Section(
    "incident",
    (_RULE_FIELD, _KEY_FIELD),
    build=lambda f: (f.read("rule"), f.read("key")) if _complete(f) else INVALID,
)
INCIDENTS_FIELDS = Section(
    "incident check",
    (
        _AT_FIELD,
        Field(
            "open",
            ListOf(Nested(OPEN_FIELDS), "list of open incidents"),
            True,
            "exactly the incidents open then",
        ),
    ),
    build=_incidents,
)
STEP_CHECK_FIELDS = Section(
    "step check",
    (
        _AT_FIELD,
        _RULE_FIELD,
        _KEY_FIELD,
        Field("step", Name("step name"), True, "a top-level step of the run's playbook"),
        Field(
            "with",
            Data("mapping of the step's with: values"),
            True,
            "its expected with: values (only the keys given are compared)",
        ),
    ),
    build=_step,
)
TEST_FIELDS = Section(
    "test",
    (
        Field("name", Name("test name"), True, "unique in the file"),
        Field("start", _Start(), doc="time of offset 0: epoch seconds or ISO 8601 (default 0)"),
        Field("interval", Duration(0.001), doc="time between two values of a series (default 1m)"),
        Field("until", Duration(), doc="the clock runs to this offset (default: the latest)"),
        Field("series", _Series(), doc='METRIC{label="value", ...}: VALUES'),
        Field("events", ListOf(_Event(), "list of events"), doc="inputs at offsets"),
        Field("alerts", ListOf(Nested(ALERT_FIELDS), "list of alerts"), doc="alerts at offsets"),
        Field(
            "decisions",
            ListOf(Nested(DECISION_FIELDS), "list of decisions"),
            doc="every decision of the test (absent: not checked)",
        ),
        Field(
            "incidents",
            ListOf(Nested(INCIDENTS_FIELDS), "list of incident checks"),
            doc="the incidents open at given offsets",
        ),
        Field(
            "steps",
            ListOf(Nested(STEP_CHECK_FIELDS), "list of step checks"),
            doc="the with: values a run's step would be rendered with",
        ),
    ),
    ref="test",
)
TEST_FILE_FIELDS = Section(
    "test file",
    (
        Field("rule_files", _Paths(), True, "rule and playbook files under test"),
        Field("config", _ExistingPath(), doc="a batond.yaml whose governor, mode, models apply"),
        Field("tests", ListOf(Nested(TEST_FIELDS), "list of tests"), True, "the tests"),
    ),
    doc="batond rule test file",
    build=_test_file,
)

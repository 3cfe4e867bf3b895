"""Rule test files (``batond test``, docs/tuning.md): inputs in, expected decisions out.

A test file names the rule files under test and holds tests; each test gives
inputs at offsets from its start (series in the compact notation of
``promtool test rules``, events, Alertmanager alerts) and what must come of them:
the decisions, the open incidents at given times, and the arguments a step
would be rendered with. This module only reads the file into frozen values,
reporting every mistake as ``FILE:LINE:COL: message``; running the tests is
:mod:`batond.commands.ruletest`.

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
from batond.load.yamlfile import MappingNode, Node, Reader, ScalarNode, compose_file, text_mark
from batond.units import format_duration

__all__ = [
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

_FILE_KEYS = ("rule_files", "config", "tests")
_TEST_KEYS = (
    "name", "start", "interval", "until", "series", "events", "alerts",
    "decisions", "incidents", "steps",
)  # fmt: skip
_DECISION_KEYS = ("at", "rule", "key", "playbook", "suppressed")
_STEP_KEYS = ("at", "rule", "key", "step", "with")
_ALERT_KEYS = ("at", "status", "labels", "annotations", "fingerprint")
DEFAULT_INTERVAL = 60.0

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_ONE = re.compile(rf"({_NUM})")
_REPEAT = re.compile(rf"({_NUM})x(\d+)")
_STEPPED = re.compile(rf"({_NUM})([-+])(\d+(?:\.\d*)?|\.\d+)x(\d+)")
_GAPS = re.compile(r"_x(\d+)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
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
    f = r.mapping(node, _FILE_KEYS, required=("rule_files", "tests"), what="test file")
    if f is None:
        return None, r
    base = path.parent
    rule_files = _paths(r, f["rule_files"], base) if "rule_files" in f else []
    config = _path(r, f["config"], base) if "config" in f else None
    tests: list[RuleTest] = []
    names: set[str] = set()
    tnodes = (r.seq(f["tests"], "list of tests") or []) if "tests" in f else []
    for tnode in tnodes:
        name = _name_of(tnode)
        if name is not None and name in names:
            r.error(tnode, f"duplicate test name {name!r}")
        names.add(name or "")
        test = _test(r, tnode)
        if test is not None:
            tests.append(test)
    return TestFile(path, tuple(rule_files), config, tuple(tests)), r


def _name_of(node: Node) -> str | None:
    """A test's name as written (for duplicates, even when the test has problems)."""
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if getattr(k, "value", None) == "name" and isinstance(v, ScalarNode):
                return str(v.value)
    return None


def _path(r: Reader, node: Node, base: Path) -> Path | None:
    text = r.string(node, "path")
    if text is None:
        return None
    path = base / text
    if not path.exists():
        r.error(node, f"{text}: no such file or directory")
        return None
    return path


def _paths(r: Reader, node: Node, base: Path) -> list[Path]:
    out = []
    for item in r.seq_or_one(node):
        path = _path(r, item, base)
        if path is not None:
            out.append(path)
    return out


def _test(r: Reader, node: Node) -> RuleTest | None:
    f = r.mapping(node, _TEST_KEYS, required=("name",), what="test")
    if f is None:
        return None
    name = r.name(f["name"], "test name") if "name" in f else None
    interval = r.duration(f["interval"], 0.001) if "interval" in f else DEFAULT_INTERVAL
    start = _start(r, f["start"]) if "start" in f else 0.0
    inputs = _inputs(r, f, interval or DEFAULT_INTERVAL)
    decisions = _decisions(r, f["decisions"]) if "decisions" in f else None
    incidents = _incidents(r, f["incidents"]) if "incidents" in f else []
    steps = _steps(r, f["steps"]) if "steps" in f else []
    latest = [x.at for x in inputs] + [x.at for x in decisions or ()]
    latest += [x.at for x in incidents] + [x.at for x in steps]
    until = r.duration(f["until"]) if "until" in f else max(latest, default=0.0)
    last_input = max((x.at for x in inputs), default=0.0)
    if until is not None and until < last_input:
        r.error(f["until"], f"until: is before the last input (at {format_duration(last_input)})")
        until = None
    if name is None or interval is None or start is None or until is None:
        return None
    inputs.sort(key=lambda x: x.at)  # stable: the written order within one time
    return RuleTest(
        name=name,
        mark=r.mark(node),
        start=start,
        until=until,
        inputs=tuple(inputs),
        decisions=tuple(decisions) if decisions is not None else None,
        incidents=tuple(incidents),
        steps=tuple(steps),
    )


def _start(r: Reader, node: Node) -> float | None:
    """An epoch number or an ISO 8601 time (without a zone: UTC)."""
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
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


# -- inputs ----------------------------------------------------------------------------


def _inputs(r: Reader, f: Mapping[str, Node], interval: float) -> list[TimedInput]:
    out: list[TimedInput] = []
    if "series" in f:
        fields = r.mapping(f["series"], None, what="mapping of series to values")
        for key, vnode in (fields or {}).items():
            out.extend(_series(r, r.key_node(f["series"], key), vnode, interval))
    if "events" in f:
        for enode in r.seq(f["events"], "list of events") or []:
            item = _event(r, enode)
            if item is not None:
                out.append(item)
    if "alerts" in f:
        for anode in r.seq(f["alerts"], "list of alerts") or []:
            item = _alert(r, anode)
            if item is not None:
                out.append(item)
    return out


def _series(r: Reader, knode: Node, vnode: Node, interval: float) -> list[TimedInput]:
    assert isinstance(knode, ScalarNode)
    selector = parse_selector(str(knode.value))
    if isinstance(selector, str):
        r.error(text_mark(r, knode), selector)
        return []
    if not isinstance(vnode, ScalarNode) or vnode.tag.endswith(":null"):
        r.error(vnode, "expected the series' values, such as: 50 95x10 40")
        return []
    values = parse_values(str(vnode.value))
    if isinstance(values, tuple):
        offset, message = values
        mark = text_mark(r, vnode)
        r.error(Mark(mark.file, mark.line, mark.col + offset), message)
        return []
    metric, labels = selector
    mark = r.mark(knode)
    return [
        TimedInput(i * interval, "sample", {"metric": metric, "value": v, **labels}, mark)
        for i, v in enumerate(values)
        if v is not None
    ]


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


def _event(r: Reader, node: Node) -> TimedInput | None:
    """``{at: 2m, event: NAME, label: value, ...}``: the input as JSON, at its offset."""
    f = r.mapping(node, None, required=("at",), what="event")
    if f is None or "at" not in f:
        return None
    at = r.duration(f["at"])
    obj = {k: r.plain(v) for k, v in f.items() if k != "at"}
    if "ts" in obj:
        r.error(r.key_node(node, "ts"), "an event's time is its at:, not ts")
        return None
    try:
        item = item_from_json(obj, 0.0, "test")
    except InputError as exc:
        r.error(node, f"not an input: {exc}")
        return None
    if at is None:
        return None
    return TimedInput(at, "sample" if "metric" in obj else "event", item.raw, r.mark(node))


def _alert(r: Reader, node: Node) -> TimedInput | None:
    """One Alertmanager alert: ``{at, status: firing|resolved, labels: {alertname, ...}}``."""
    f = r.mapping(node, _ALERT_KEYS, required=("at", "status", "labels"), what="alert")
    if f is None or not {"at", "status", "labels"} <= f.keys():
        return None
    at = r.duration(f["at"])
    status = r.one_of(f["status"], ("firing", "resolved"), "status")
    labels = r.str_map(f["labels"])
    if labels is not None and "alertname" not in labels:
        r.error(f["labels"], "an alert's labels need an alertname")
        return None
    alert: dict[str, Any] = {"status": status, "labels": labels}
    if "annotations" in f:
        alert["annotations"] = r.str_map(f["annotations"])
    if "fingerprint" in f:
        alert["fingerprint"] = r.string(f["fingerprint"], "fingerprint")
    if at is None or status is None or labels is None:
        return None
    return TimedInput(at, "alert", alert, r.mark(node))


# -- expectations ----------------------------------------------------------------------


def _decisions(r: Reader, node: Node) -> list[ExpectedDecision]:
    out = []
    for dnode in r.seq(node, "list of decisions") or []:
        f = r.mapping(dnode, _DECISION_KEYS, required=("at", "rule", "key"), what="decision")
        if f is None or not {"at", "rule", "key"} <= f.keys():
            continue
        at, rule = r.duration(f["at"]), r.name(f["rule"], "rule name")
        key = r.string(f["key"], "incident key", empty_ok=True)
        if ("playbook" in f) == ("suppressed" in f):
            r.error(dnode, "a decision has either playbook (a run) or suppressed (the reason)")
            continue
        if "playbook" in f:
            playbook = r.name(f["playbook"], "playbook name")
            result = None if playbook is None else verdict(playbook, None)
        else:
            reason = r.one_of(f["suppressed"], [s.value for s in Suppression], "suppressed")
            result = None if reason is None else verdict(None, reason)
        if at is not None and rule is not None and key is not None and result is not None:
            out.append(ExpectedDecision(at, rule, key, result, r.mark(dnode)))
    return out


def _incidents(r: Reader, node: Node) -> list[ExpectedIncidents]:
    out = []
    for inode in r.seq(node, "list of incident checks") or []:
        f = r.mapping(inode, ("at", "open"), required=("at", "open"), what="incident check")
        if f is None or not {"at", "open"} <= f.keys():
            continue
        at = r.duration(f["at"])
        pairs = []
        for onode in r.seq(f["open"], "list of open incidents") or []:
            o = r.mapping(onode, ("rule", "key"), required=("rule", "key"), what="incident")
            if o is None or not {"rule", "key"} <= o.keys():
                continue
            rule = r.name(o["rule"], "rule name")
            key = r.string(o["key"], "incident key", empty_ok=True)
            if rule is not None and key is not None:
                pairs.append((rule, key))
        if at is not None:
            out.append(ExpectedIncidents(at, tuple(sorted(pairs)), r.mark(inode)))
    return out


def _steps(r: Reader, node: Node) -> list[ExpectedStep]:
    out = []
    for snode in r.seq(node, "list of step checks") or []:
        f = r.mapping(snode, _STEP_KEYS, required=_STEP_KEYS, what="step check")
        if f is None or not set(_STEP_KEYS) <= f.keys():
            continue
        at, rule = r.duration(f["at"]), r.name(f["rule"], "rule name")
        key = r.string(f["key"], "incident key", empty_ok=True)
        step = r.name(f["step"], "step name")
        if not isinstance(f["with"], MappingNode):
            r.error(f["with"], "expected the step's with: values as a mapping")
            continue
        args = r.plain(f["with"])
        if at is not None and rule is not None and key is not None and step is not None:
            out.append(ExpectedStep(at, rule, key, step, args, r.mark(snode)))
    return out

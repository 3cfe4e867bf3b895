"""Property-based fuzz targets of every parser batond exposes to input (issue 14).

Each target is a hypothesis strategy and a check that holds for every value
it draws: the parser never raises anything but its documented error, what it
accepts is well formed, and a value built to be valid comes back as written.
tests/test_fuzz.py runs each at a size that fits the suite; bench/fuzz.py at
10^5 cases each.
"""

from __future__ import annotations

import math
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import yaml
from hypothesis import strategies as st

from batond.engine.expr import EvalError, compile_expression, regex_problem
from batond.errors import ConfigError, InputError, Mark
from batond.events import Event, Sample, parse_json_payload
from batond.intake.http import parse_alertmanager
from batond.intake.influx import parse_influx
from batond.load.config import load_config
from batond.load.rulefiles import load_rules
from batond.load.yamlfile import compose_text
from batond.remedy.render import render_args
from runner_support import load_playbooks

NOW = 1_767_225_600.0
_REASON = re.compile(r"[a-z_]{1,40}")


@dataclass(frozen=True)
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[[Any], None]


# -- strategies ---------------------------------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=20)
_json_scalar = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _text
_json_scalar |= st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    _json_scalar,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_text, kids, max_size=4),
    max_leaves=12,
)
_label_value = _text | st.integers(-1000, 1000) | st.booleans()
_labels = st.dictionaries(
    _text.filter(lambda k: k not in ("metric", "value", "ts", "event")), _label_value, max_size=4
)
valid_samples = st.builds(
    lambda m, v, labels: {"metric": m, "value": v, **labels},
    _text.filter(bool),
    st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**12), 10**12),
    _labels,
)
valid_events = st.builds(lambda n, labels: {"event": n, **labels}, _text.filter(bool), _labels)
_docs = valid_samples | valid_events | json_values


@st.composite
def event_payloads(draw: st.DrawFn) -> bytes:
    """A JSON document, an array, NDJSON (bad lines included) or any bytes."""
    kind = draw(st.sampled_from(["one", "array", "ndjson", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    docs = draw(st.lists(_docs, min_size=1, max_size=6))
    if kind == "one":
        return orjson.dumps(docs[0])
    if kind == "array":
        return orjson.dumps(docs)
    lines = [orjson.dumps(d) for d in docs]
    lines += draw(st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b), max_size=2))
    return b"\n".join(draw(st.permutations(lines)))


_ident = st.text('abcXYZ09_-.:/ ,=\\"é', min_size=1, max_size=8)
_field_value = (
    st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.integers(-(2**63), 2**63 - 1).map(lambda i: f"{i}i")
    | st.sampled_from(["t", "f", "true", "FALSE"])
    | _text.map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
)


_KEY = ",= \\"  # escaped in tag keys, tag values and field keys


def _escape(text: str, chars: str) -> str:
    out = text.replace("\\", "\\\\") if "\\" in chars else text
    for c in chars.replace("\\", ""):
        out = out.replace(c, "\\" + c)
    return out


@st.composite
def influx_payloads(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, float, dict[str, str]]]]:
    """Lines built with the protocol's escapes (and their expected samples), or noise."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200)), []
    lines, expected = [], []
    for _ in range(draw(st.integers(1, 4))):
        measurement = draw(_ident.filter(lambda s: not s.startswith("#")))
        tags = draw(st.dictionaries(_ident, _ident, max_size=3))
        fields = draw(
            st.dictionaries(_ident, st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=3)
        )
        head = _escape(measurement, ", \\") + "".join(
            f",{_escape(k, _KEY)}={_escape(v, _KEY)}" for k, v in sorted(tags.items())
        )
        body = ",".join(f"{_escape(k, _KEY)}={v!r}" for k, v in fields.items())
        lines.append(f"{head} {body}")
        expected += [(f"{measurement}_{k}", v, tags) for k, v in fields.items()]
    noise = draw(
        st.lists(st.sampled_from(["", "# c", "x", "x y=", "x,=1 y=2", 'x y="s"']), max_size=2)
    )
    return "\n".join(lines + noise).encode(), expected


@st.composite
def alertmanager_payloads(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        return orjson.dumps(draw(json_values))
    alerts = []
    for _ in range(draw(st.integers(0, 4))):
        labels = draw(st.dictionaries(_text, _text, max_size=3))
        if draw(st.booleans()):
            labels["alertname"] = draw(_text)
        alert: dict[str, Any] = {"labels": labels}
        alert["status"] = draw(st.sampled_from(["firing", "resolved", "odd"]))
        alert["annotations"] = draw(st.dictionaries(_text, _text, max_size=2) | json_values)
        alerts.append(draw(st.just(alert) | json_values))
    doc: dict[str, Any] = {"version": draw(st.sampled_from(["4", "3", 4])), "alerts": alerts}
    return orjson.dumps(doc)


_yaml_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | _text
    | st.sampled_from(
        ["rules", "playbooks", "name", "match", "metric", "run", "when", "steps", "action", "with"]
    )
)
yaml_docs = st.recursive(
    _yaml_scalars,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.dictionaries(_yaml_scalars.filter(lambda x: x is not None), kids, max_size=4)
    ),
    max_leaves=15,
)


@st.composite
def yaml_texts(draw: st.DrawFn) -> str:
    """Dumped YAML (rule-file shaped often), with anchors and aliases, or raw text."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(st.sampled_from(list("ab: -[]{}&*!|>'\"#\n 1")), max_size=80))
    doc = draw(yaml_docs)
    if draw(st.booleans()):
        doc = {"rules": [doc], "playbooks": [{"name": "p", "steps": [doc]}]}
    text = yaml.safe_dump(doc, allow_unicode=True)
    if draw(st.booleans()):  # share one block through an anchor, as operators do
        text = "x-base: &b " + orjson.dumps(draw(json_values)).decode() + "\n" + text
        text += "x-use: [*b, *b]\n" if not text.startswith("- ") else ""
    return text


_regex_atoms = st.sampled_from(
    ["a", "b", ".", "\\d", "\\w", "[ab]", "[^a]", "(", ")", "|", "*", "+", "?", "{2}",
     "{1,3}", "^", "$", "(?:", "(?i)", "\\", "x", "(?=", "++"]
)  # fmt: skip
regex_patterns = st.lists(_regex_atoms, max_size=10).map("".join)
_expr_atoms = st.sampled_from(
    ["value", "labels.host", "event.x", " ", "+", "-", "*", "/", "%", ">", "==", "and", "or",
     "not", "(", ")", "[", "]", "1", "2.5", "'s'", "matches(event.msg, 'a+')", "len(", ",",
     "if", "else", "in", "None", "__class__", "lambda", ".", ":", "abs(", "**"]
)  # fmt: skip
expressions = st.lists(_expr_atoms, min_size=1, max_size=10).map(" ".join)
url_values = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["127.0.0.1", "::1", "db-1.example.org", "127.0.0.1:9180/api/v1/pause?", "a@b", "..", "%2e",
     "x/../../y", "h#f", "h?q", "[::1]", "1.2.3.4:80", "0", "65536", "80"]
)  # fmt: skip


# -- checks ---------------------------------------------------------------------------


def _well_formed(items: list[Any], errors: list[InputError]) -> None:
    for error in errors:
        assert isinstance(error, InputError) and _REASON.fullmatch(error.reason), error
    for item in items:
        assert isinstance(item, Sample | Event)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in item.labels.items())
        assert math.isfinite(item.ts) and item.ts <= NOW + 300
        if isinstance(item, Sample):
            assert item.metric and math.isfinite(item.value)


def check_events(payload: bytes) -> None:
    items, errors = parse_json_payload(payload, NOW, "http")
    _well_formed(items, errors)
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return
    docs = doc if isinstance(doc, list) else [doc]
    valid = [d for d in docs if isinstance(d, dict) and _is_valid_item(d)]
    assert len(items) == len(valid) and len(items) + len(errors) == len(docs)


def _is_valid_item(doc: dict[str, Any]) -> bool:
    try:
        parse = parse_json_payload(orjson.dumps(doc), NOW, "t")
    except Exception:  # pragma: no cover - the check above would have failed first
        return False
    return len(parse[0]) == 1


def check_influx(case: tuple[bytes, list[tuple[str, float, dict[str, str]]]]) -> None:
    payload, expected = case
    items, errors = parse_influx(payload, NOW, "mqtt")
    _well_formed(items, errors)
    if expected:
        got = [(s.metric, s.value, s.labels) for s in items if isinstance(s, Sample)]
        assert got == expected, (payload, got, expected)


def check_alertmanager(payload: bytes) -> None:
    items, errors = parse_alertmanager(payload, NOW)
    _well_formed(items, errors)
    for item in items:
        assert isinstance(item, Event) and item.name == "alert"
        assert item.labels["status"] in ("firing", "resolved") and "alertname" in item.labels


_SCRATCH = Path(tempfile.mkdtemp(prefix="batond-fuzz-"))


def check_yaml(text: str) -> None:
    node, reader = compose_text(text, "f.yaml")
    if node is not None:
        reader.plain(node)
    for problem in reader.problems:
        assert problem.file == "f.yaml" and problem.line >= 1 and problem.col >= 1
    path = _SCRATCH / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    for load in (lambda: load_rules([path]), lambda: load_config(_SCRATCH / "rules.yaml")):
        try:
            load()
        except ConfigError as exc:
            assert all(p.line >= 1 and p.col >= 1 for p in exc.problems)


def check_regex(pattern: str) -> None:
    problem, compiled = regex_problem(pattern)
    assert (problem == "") == (compiled is not None)
    if compiled is not None:
        t0 = time.perf_counter()
        compiled.search("a" * 2000 + "x")
        assert time.perf_counter() - t0 < 0.5, pattern


_CTX = {"value": 3, "labels": {"host": "h"}, "event": {"x": 1, "msg": "aa"}, "now": 1.0}


def check_expression(text: str) -> None:
    try:
        expr = compile_expression(text, Mark("r.yaml", 1, 1))
    except ConfigError as exc:
        assert all(p.file == "r.yaml" and p.line >= 1 for p in exc.problems)
        return
    try:
        expr.evaluate(_CTX)
    except EvalError:
        pass


_URL_STEP = load_playbooks(
    "playbooks:\n  - name: p\n    steps:\n      - {name: a, action: http, with: "
    '{url: "http://{{ labels.h }}:8080/a/{{ labels.p }}?q={{ labels.q }}"}}\n'
)["p"].steps[0]


def check_url(values: tuple[str, str, str]) -> None:
    host, segment, query = values
    try:
        url = render_args(_URL_STEP, {"labels": {"h": host, "p": segment, "q": query}})["url"]
    except EvalError:
        return
    parts = urlsplit(url)
    assert parts.port == 8080 and parts.username is None
    assert (parts.hostname or "") in (host.lower().strip("[]"), host.lower())
    assert parts.path.count("/") == 2 and parts.path.startswith("/a/")  # one segment, no more
    assert "&" not in parts.query and "#" not in url


TARGETS = [
    Target("events_json", event_payloads(), check_events),
    Target("influx", influx_payloads(), check_influx),
    Target("alertmanager", alertmanager_payloads(), check_alertmanager),
    Target("yaml_files", yaml_texts(), check_yaml),
    Target("regex", regex_patterns, check_regex),
    Target("expressions", expressions, check_expression),
    Target("http_url", st.tuples(url_values, url_values, url_values), check_url),
]

"""Playbook model and validation (docs/playbooks.md): frozen types built from rule files.

A playbook is ordered steps, each one action with templated ``with:`` values,
a timeout, retries and an optional ``when:`` over earlier steps' results; then
``verify:``, ``on_failure:`` and ``escalate:``. Every ``with:`` key is checked
against the table of its action (:data:`ACTION_KEYS`, as each action module
declares it beside its code: :mod:`batond.remedy.actions`), from which
:data:`PLAYBOOK_SCHEMA` is generated too, so the schema and the validator
cannot disagree. Templates and ``when:`` are compiled here, at load time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from batond.engine.cron import parse_cron
from batond.engine.expr import TEMPLATE_NAMES, EvalError, Expression, compile_expression
from batond.engine.templates import render_value, text_of
from batond.engine.window import DAY_NAMES, Window, parse_span
from batond.errors import ConfigError, Mark, Problem
from batond.load.rendering import render_cwd, render_url
from batond.load.templating import compile_node
from batond.load.yamlfile import Node, Reader, ScalarNode, text_mark
from batond.remedy.actions import ActionKeys, Key, action_keys, action_kinds

__all__ = [
    "ACTION_KEYS",
    "DEFAULT_MAX",
    "DEFAULT_RUN_TIMEOUT",
    "DEFAULT_STEP_TIMEOUT",
    "MODES",
    "PLAYBOOK_SCHEMA",
    "RENDER_ERRORS",
    "Playbook",
    "Retry",
    "Step",
    "check_references",
    "read_playbooks",
    "render_args",
]

MODES = ("single", "queued", "restart", "parallel")
ON_INTERRUPT = ("escalate", "resume")
DEFAULT_STEP_TIMEOUT = 300.0  # a step without timeout: gets 5m
DEFAULT_RUN_TIMEOUT = 3600.0
DEFAULT_MAX = 10  # queued: runs waiting; parallel: runs at once (per incident key)
_STEP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_STEP_REF = re.compile(r"\bsteps\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")


#: action -> its ``with:`` keys (keys, required keys, keys of which exactly one is
#: required), as each action module declares them beside its code.
ACTION_KEYS: Mapping[str, ActionKeys] = {kind: action_keys(kind) for kind in action_kinds()}

_PLAYBOOK_KEYS = (
    "name", "description", "mode", "max", "timeout", "on_interrupt", "escalate",
    "steps", "verify", "on_failure", "outputs", "params", "only_within",
)  # fmt: skip
_STEP_KEYS = (
    "name", "action", "with", "timeout", "retry", "when", "continue_on_error", "idempotent",
    "only_within",
)  # fmt: skip
_RETRY_KEYS = ("attempts", "delay", "backoff", "max_backoff")
_WINDOW_KEYS = ("cron", "days", "hours", "timezone")


BACKOFFS = ("fixed", "exponential")


@dataclass(frozen=True, slots=True)
class Retry:
    """``retry: {attempts, delay, backoff: fixed|exponential, max_backoff}``; the older
    ``backoff: 2s`` is ``delay: 2s`` with ``backoff: exponential``."""

    attempts: int = 1  # in all, the first included
    first: float = 0.0  # before the 2nd attempt (delay:)
    backoff: str = "exponential"  # exponential: doubles before each further attempt
    max_backoff: float | None = None  # no wait is longer than this

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed ``attempt`` (1-based) before the next."""
        wait = self.first if self.backoff == "fixed" else self.first * 2 ** (attempt - 1)
        return float(wait if self.max_backoff is None else min(wait, self.max_backoff))


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    action: str
    mark: Mark
    args: Mapping[str, Any] = field(default_factory=dict)  # compiled with: values
    timeout: float = DEFAULT_STEP_TIMEOUT
    retry: Retry = Retry()
    when: Expression | None = None
    # None: not said (compensation goes on after a failed step; steps stop)
    continue_on_error: bool | None = None
    idempotent: bool = False
    branches: tuple[tuple[Step, ...], ...] = ()  # parallel; foreach and wait_until: one block
    only_within: Window | None = None  # the step waits for this window


@dataclass(frozen=True, slots=True)
class Playbook:
    name: str
    mark: Mark
    steps: tuple[Step, ...] = ()
    mode: str = "single"
    max: int = DEFAULT_MAX
    timeout: float = DEFAULT_RUN_TIMEOUT
    on_interrupt: str = "escalate"
    escalate: str | None = None
    verify_within: float | None = None
    on_failure: tuple[Step, ...] = ()
    description: str = ""
    outputs: Mapping[str, Any] = field(default_factory=dict)  # compiled values
    params: Mapping[str, Any] = field(default_factory=dict)  # declared, with defaults
    only_within: Window | None = None  # a run waits (queued) for this window

    def step_index(self, name: str) -> int | None:
        """Position of the top-level step ``name``."""
        for i, step in enumerate(self.steps):
            if step.name == name:
                return i
        return None


# -- rendering -------------------------------------------------------------------


#: (action, key) -> the renderer that keeps templated values inside their component.
_CONFINED = {
    ("http", "url"): render_url,
    ("notify", "url"): render_url,
    ("exec", "cwd"): render_cwd,
}


#: What rendering a step's ``with:`` may raise on data it cannot take (the step fails).
RENDER_ERRORS = (EvalError, TypeError, ValueError, AttributeError)


def render_args(step: Step, ctx: Mapping[str, Any]) -> dict[str, Any]:
    """The step's ``with:`` values for this attempt; raises EvalError.

    Each templated value stays ONE value of its key's type: a text key gets
    one string (an argv element never splits), a data key keeps JSON types.
    """
    keys = ACTION_KEYS[step.action][0]
    out: dict[str, Any] = {}
    for name, compiled in step.args.items():
        confined = _CONFINED.get((step.action, name))
        if confined is not None:  # event data must stay in the part of a URL or path it fills
            out[name] = confined(compiled, ctx)
            continue
        value = render_value(compiled, ctx)
        spec = keys.get(name)  # None: a set step's NAME (data)
        kind = spec.kind if spec is not None else "data"
        if kind in ("text", "choice"):
            value = text_of(value)
        elif kind == "text_list":
            value = [text_of(v) for v in value]
        elif kind == "text_map":
            value = {str(k): text_of(v) for k, v in value.items()}
        out[name] = value
    return out


# -- reading -------------------------------------------------------------------


def read_playbooks(reader: Reader, node: Node) -> list[Playbook]:
    """The playbooks of one ``playbooks:`` list; problems go to ``reader``.

    Names unique across files and the existence of ``escalate:`` and nested
    ``playbook`` targets are for the caller: :func:`check_references`.
    """
    out: list[Playbook] = []
    seen: set[str] = set()
    for item in reader.seq(node, "list of playbooks") or []:
        pb = _read_playbook(reader, item)
        if pb is None:
            continue
        if pb.name in seen:
            reader.error(pb.mark, f"duplicate playbook name {pb.name!r}")
            continue
        seen.add(pb.name)
        out.append(pb)
    return out


def _read_playbook(reader: Reader, node: Node) -> Playbook | None:
    f = reader.mapping(node, _PLAYBOOK_KEYS, ("name", "steps"), "playbook mapping")
    if f is None or "name" not in f:
        return None
    name = reader.name(f["name"], "playbook name")
    if name is None:
        return None
    kw: dict[str, Any] = {}
    if "description" in f:
        kw["description"] = reader.string(f["description"], "description", empty_ok=True) or ""
    mode = reader.one_of(f["mode"], MODES, "mode") if "mode" in f else "single"
    kw["mode"] = mode or "single"
    if "max" in f:
        if kw["mode"] not in ("queued", "parallel"):
            reader.error(reader.key_node(node, "max"), "max applies to mode queued or parallel")
        kw["max"] = reader.integer(f["max"], minimum=1) or DEFAULT_MAX
    if "timeout" in f:
        kw["timeout"] = reader.duration(f["timeout"], minimum=0.001) or DEFAULT_RUN_TIMEOUT
    if "on_interrupt" in f:
        kw["on_interrupt"] = reader.one_of(f["on_interrupt"], ON_INTERRUPT, "on_interrupt")
    if "escalate" in f:
        kw["escalate"] = reader.name(f["escalate"], "playbook name")
        if kw["escalate"] == name:
            reader.error(f["escalate"], f"playbook {name!r} cannot escalate to itself")
    if "verify" in f:
        vf = reader.mapping(f["verify"], ("within",), ("within",), "verify mapping")
        if vf and "within" in vf:
            kw["verify_within"] = reader.duration(vf["within"], minimum=0.001)
    names: dict[str, Mark] = {}
    if "steps" in f:
        kw["steps"] = _read_steps(reader, f["steps"], names, nonempty=True)
    if "on_failure" in f:
        kw["on_failure"] = _read_steps(reader, f["on_failure"], names, nonempty=False)
    if "outputs" in f:
        kw["outputs"] = _read_vars(reader, f["outputs"], "outputs mapping (NAME: value)")
    if "params" in f:
        fields = reader.mapping(f["params"], None, what="params mapping (NAME: default)")
        kw["params"] = {k: reader.plain(v) for k, v in (fields or {}).items()}
    if "only_within" in f:
        kw["only_within"] = read_window(reader, f["only_within"])
    kw = {k: v for k, v in kw.items() if v is not None}
    return Playbook(name=name, mark=reader.mark(f["name"]), **kw)


def _read_steps(
    reader: Reader, node: Node, names: dict[str, Mark], *, nonempty: bool
) -> tuple[Step, ...]:
    items = reader.seq(node, "list of steps")
    if items is None:
        return ()
    if nonempty and not items:
        reader.error(node, "needs at least one step")
    steps = []
    for item in items:
        step = _read_step(reader, item, names)
        if step is not None:
            steps.append(step)
    return tuple(steps)


def _read_step(reader: Reader, node: Node, names: dict[str, Mark]) -> Step | None:
    f = reader.mapping(node, _STEP_KEYS, ("name", "action"), "step mapping")
    if f is None or "name" not in f or "action" not in f:
        return None
    name = reader.name(f["name"], "step name")
    action = reader.one_of(f["action"], ACTION_KEYS, "action")
    if name is not None and not _STEP_NAME.fullmatch(name):
        reader.error(f["name"], f"step name {name!r}: use letters, digits, '_' and '-'")
    if name is not None and name in names:
        reader.error(f["name"], f"duplicate step name {name!r} (first at {names[name]})")
    # `when:` sees only the steps named before this one
    when = _read_when(reader, f["when"], names) if "when" in f else None
    if name is not None:
        names.setdefault(name, reader.mark(f["name"]))
    if name is None or action is None:
        return None
    kw: dict[str, Any] = {}
    if "timeout" in f:
        kw["timeout"] = reader.duration(f["timeout"], minimum=0.001)
    if "retry" in f:
        kw["retry"] = _read_retry(reader, f["retry"])
    for flag in ("continue_on_error", "idempotent"):
        if flag in f:
            kw[flag] = reader.boolean(f[flag])
    if "only_within" in f:
        kw["only_within"] = read_window(reader, f["only_within"])
    args, branches = _read_with(reader, action, node, f.get("with"), names)
    kw = {k: v for k, v in kw.items() if v is not None}
    return Step(name, action, reader.mark(f["name"]), args=args, when=when, branches=branches, **kw)


def _read_retry(reader: Reader, node: Node) -> Retry | None:
    f = reader.mapping(node, _RETRY_KEYS, ("attempts",), "retry mapping")
    if f is None or "attempts" not in f:
        return None
    attempts = reader.integer(f["attempts"], minimum=1)
    first = reader.duration(f["delay"]) if "delay" in f else 0.0
    backoff: str | None = "exponential"
    if "backoff" in f:
        given = f["backoff"]
        if isinstance(given, ScalarNode) and str(given.value) in BACKOFFS:
            backoff = str(given.value)
        elif "delay" in f:
            backoff = reader.one_of(given, BACKOFFS, "backoff")
        else:  # the older form: backoff is the first delay, doubling
            first = reader.duration(given)
    cap = reader.duration(f["max_backoff"]) if "max_backoff" in f else None
    if attempts is None or first is None or backoff is None or ("max_backoff" in f and cap is None):
        return None
    return Retry(attempts, first, backoff, cap)


def _read_expression(reader: Reader, node: Node, what: str) -> Expression | None:
    if not isinstance(node, ScalarNode) or node.tag == "tag:yaml.org,2002:null":
        reader.error(node, f"{what} expected an expression")
        return None
    try:
        return compile_expression(str(node.value), text_mark(reader, node), TEMPLATE_NAMES)
    except ConfigError as exc:
        reader.problems.extend(exc.problems)
        return None


def _read_when(reader: Reader, node: Node, names: Mapping[str, Mark]) -> Expression | None:
    expr = _read_expression(reader, node, "when:")
    if expr is None:
        return None
    text = str(node.value)
    mark = text_mark(reader, node)
    for m in _STEP_REF.finditer(text):
        if m.group(1) not in names:
            at = Mark(mark.file, mark.line, mark.col + m.start(1)) if "\n" not in text else mark
            reader.error(at, f"no earlier step named {m.group(1)!r}")
    return expr


def _read_with(
    reader: Reader, action: str, step_node: Node, node: Node | None, names: dict[str, Mark]
) -> tuple[dict[str, Any], tuple[tuple[Step, ...], ...]]:
    keys, required, one_of = ACTION_KEYS[action]
    if action == "set" and node is not None:
        return _read_vars(reader, node), ()
    if node is None:
        if required or one_of:
            needs = ", ".join(required or one_of)
            reader.error(step_node, f"action {action!r} needs with: {needs}")
        return {}, ()
    fields = reader.mapping(node, keys, required, f"with mapping of action {action!r}")
    if fields is None:
        return {}, ()
    if one_of and sum(k in fields for k in one_of) != 1:
        reader.error(node, f"action {action!r} needs exactly one of: {', '.join(one_of)}")
    args: dict[str, Any] = {}
    branches: tuple[tuple[Step, ...], ...] = ()
    for key, vnode in fields.items():
        spec = keys[key]
        if spec.kind == "branches":
            branches = _read_branches(reader, vnode, names)
            continue
        if spec.kind == "steps":  # a block: foreach's body, wait_until's checks
            branches = (_read_steps(reader, vnode, names, nonempty=action == "foreach"),)
            continue
        value = _read_key(reader, key, spec, vnode)
        if value is not _BAD:
            args[key] = value
    return args, branches


_VAR_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
_VAR_NAME = re.compile(_VAR_PATTERN)


def _read_vars(
    reader: Reader, node: Node, what: str = "with mapping of action 'set' (NAME: value)"
) -> dict[str, Any]:
    """``set``'s ``with:`` and ``outputs:``: each key a name, each value templated."""
    fields = reader.mapping(node, None, what=what)
    if not fields:
        if fields is not None:
            reader.error(node, "needs at least one NAME: value")
        return {}
    out: dict[str, Any] = {}
    for key, vnode in fields.items():
        if not _VAR_NAME.match(key):
            reader.error(reader.key_node(node, key), f"{key!r}: a name of letters, digits, '_'")
            continue
        out[key] = _compile(reader, vnode)
    return out


def read_window(reader: Reader, node: Node) -> Window | None:
    """``only_within: {cron: "..."} | {days: [...], hours: "HH:MM-HH:MM"}`` (+ ``timezone``)."""
    f = reader.mapping(node, _WINDOW_KEYS, (), "only_within mapping")
    if f is None:
        return None
    tz = read_zone(reader, f["timezone"]) if "timezone" in f else None
    text = " ".join(f"{k}={reader.plain(v)}" for k, v in f.items())
    if "cron" in f:
        if "days" in f or "hours" in f:
            reader.error(node, "only_within takes cron, or days and hours, not both")
            return None
        try:
            return Window(text, cron=parse_cron(str(reader.plain(f["cron"]))), tz=tz)
        except ValueError as exc:
            reader.error(f["cron"], str(exc))
            return None
    if "days" not in f and "hours" not in f:
        reader.error(node, "only_within needs cron, or days and/or hours")
        return None
    days = (
        [reader.one_of(d, DAY_NAMES, "day") for d in reader.seq_or_one(f["days"])]
        if ("days" in f)
        else list(DAY_NAMES)
    )
    if any(d is None for d in days):
        return None
    start, end = 0, 24 * 60
    if "hours" in f:
        try:
            start, end = parse_span(str(reader.plain(f["hours"])))
        except ValueError as exc:
            reader.error(f["hours"], str(exc))
            return None
    weekdays = frozenset(DAY_NAMES.index(str(d)) for d in days)
    return Window(text, days=weekdays, start=start, end=end, tz=tz)


def read_zone(reader: Reader, node: Node) -> tzinfo | None:
    """An IANA time zone name (``Europe/Berlin``)."""
    name = reader.name(node, "time zone")
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        reader.error(node, f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)")
        return None


def _read_branches(
    reader: Reader, node: Node, names: dict[str, Mark]
) -> tuple[tuple[Step, ...], ...]:
    items = reader.seq(node, "list of branches (each a list of steps)")
    if items is None:
        return ()
    if len(items) < 1:
        reader.error(node, "needs at least one branch")
    return tuple(_read_steps(reader, item, names, nonempty=True) for item in items)


_BAD = object()


def _read_key(reader: Reader, key: str, spec: Key, node: Node) -> Any:
    """The compiled value of one ``with:`` key, or _BAD after reporting a problem."""
    if spec.templated and isinstance(node, ScalarNode) and "{{" in str(node.value):
        return _compile(reader, node)
    kind = spec.kind
    if kind == "ref":
        ref = reader.name(node, "playbook name")
        if ref is not None and "{{" in ref:  # checked against the loaded set (dataflow)
            return _compile(reader, node, text=True)
        return _BAD if ref is None else ref
    if kind == "expression":
        expr = _read_expression(reader, node, f"{key}:")
        return _BAD if expr is None else expr
    if kind == "steps":
        return _BAD  # read by _read_with (the block's steps)
    if kind == "text":
        text = reader.string(node, f"string for {key!r}")
        return _BAD if text is None else _compile(reader, node, text=True)
    if kind == "choice":
        value = reader.one_of(node, spec.choices, key)
        return _BAD if value is None else value
    if kind == "text_list":
        items = reader.seq(node, f"list of strings for {key!r}")
        if items is None or not items:
            if items is not None:
                reader.error(node, f"{key!r} needs at least one element")
            return _BAD
        bad = [i for i in items if not isinstance(i, ScalarNode)]
        for item in bad:  # any scalar is its text as written (see compile_node)
            reader.error(item, f"expected a string in {key!r}, got a {type(item.value).__name__}")
        return _BAD if bad else _compile(reader, node, text=True)
    if kind in ("text_map", "data_map"):
        fields = reader.mapping(node, None, what=f"mapping for {key!r}")
        if fields is None:
            return _BAD
        if kind == "text_map":
            for k, v in fields.items():
                if not isinstance(v, ScalarNode) or v.tag == "tag:yaml.org,2002:null":
                    reader.error(v, f"value of {k!r} must be a string")
        return _compile(reader, node, text=kind == "text_map")
    if kind == "data":
        return _compile(reader, node)
    return _read_static(reader, key, kind, node)


def _read_static(reader: Reader, key: str, kind: str, node: Node) -> Any:
    value: Any
    if kind == "int":
        value = reader.integer(node, minimum=1)
    elif kind == "qos":
        value = reader.integer(node, minimum=0)
        if value is not None and value > 2:
            reader.error(node, f"qos must be 0, 1 or 2; got {value}")
            value = None
    elif kind == "bool":
        value = reader.boolean(node)
    elif kind == "duration":
        value = reader.duration(node)
    elif kind == "status":
        value = _read_status(reader, node)
    else:  # pragma: no cover - every kind is handled above
        raise AssertionError(kind)
    return _BAD if value is None else value


def _read_status(reader: Reader, node: Node) -> int | list[int] | None:
    items = reader.seq_or_one(node)
    codes = []
    for item in items:
        code = reader.integer(item, minimum=100)
        if code is None:
            return None
        if code > 599:
            reader.error(item, f"HTTP status must be 100..599, got {code}")
            return None
        codes.append(code)
    return codes if len(codes) != 1 or not isinstance(node, ScalarNode) else codes[0]


def _compile(reader: Reader, node: Node, *, text: bool = False) -> Any:
    return compile_node(reader, node, TEMPLATE_NAMES, text=text)


# -- cross-playbook checks ---------------------------------------------------------


def check_references(playbooks: Mapping[str, Playbook]) -> list[Problem]:
    """``escalate:`` and nested ``playbook`` names must exist; nesting must not loop."""
    problems: list[Problem] = []

    def at(mark: Mark, message: str) -> None:
        problems.append(Problem(mark.file, mark.line, mark.col, message))

    for pb in playbooks.values():
        if pb.escalate is not None and pb.escalate not in playbooks:
            at(pb.mark, f"playbook {pb.name!r}: escalate names unknown playbook {pb.escalate!r}")
        for step in _all_steps(pb):
            target = nested_target(step)
            if target is not None and target not in playbooks:
                at(step.mark, f"step {step.name!r}: unknown playbook {target!r}")
    for pb in playbooks.values():
        if _nests(pb.name, playbooks, (pb.name,)):
            at(pb.mark, f"playbook {pb.name!r} runs itself through nested playbook steps")
    return problems


def nested_target(step: Step) -> str | None:
    if step.action != "playbook":
        return None
    name = step.args.get("name")
    return name if isinstance(name, str) else None


def _all_steps(pb: Playbook) -> list[Step]:
    out: list[Step] = []

    def walk(steps: Sequence[Step]) -> None:
        for step in steps:
            out.append(step)
            for branch in step.branches:
                walk(branch)

    walk(pb.steps)
    walk(pb.on_failure)
    return out


def _nests(name: str, playbooks: Mapping[str, Playbook], path: tuple[str, ...]) -> bool:
    pb = playbooks.get(path[-1])
    if pb is None:
        return False
    for step in _all_steps(pb):
        target = nested_target(step)
        if target is None:
            continue
        if target == name:
            return True
        if target not in path and _nests(name, playbooks, (*path, target)):
            return True
    return False


# -- JSON Schema -------------------------------------------------------------------

_STEP_REF_SCHEMA = {"$ref": "#/$defs/step"}
_DURATION_SCHEMA = {"type": "string", "pattern": r"^(\d+(ms|s|m|h|d))+$"}
_WINDOW_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "cron": {"type": "string"},
        "days": {
            "anyOf": [
                {"enum": list(DAY_NAMES)},
                {"type": "array", "items": {"enum": list(DAY_NAMES)}},
            ]
        },
        "hours": {"type": "string", "pattern": r"^\d\d?:\d\d-\d\d?:\d\d$"},
        "timezone": {"type": "string"},
    },
}
_TEMPLATE_OR_INT = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"\{\{"}]}


def _key_schema(spec: Key) -> dict[str, Any]:
    kinds: dict[str, dict[str, Any]] = {
        "text": {"type": ["string", "number"]},
        "ref": {"type": "string"},
        "text_list": {"type": "array", "minItems": 1, "items": {"type": ["string", "number"]}},
        "text_map": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
        "data": {},
        "data_map": {"type": "object"},
        "int": _TEMPLATE_OR_INT,
        "qos": {"enum": [0, 1, 2]},
        "bool": {"type": "boolean"},
        "duration": _DURATION_SCHEMA,
        "status": {
            "anyOf": [
                {"type": "integer", "minimum": 100, "maximum": 599},
                {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}},
            ]
        },
        "branches": {"type": "array", "items": {"type": "array", "items": _STEP_REF_SCHEMA}},
        "expression": {"type": ["string", "boolean"]},
        "steps": {"type": "array", "items": _STEP_REF_SCHEMA},
    }
    schema = dict(kinds["text"] if spec.kind == "choice" else kinds[spec.kind])
    if spec.kind == "choice":
        schema = {"anyOf": [{"enum": list(spec.choices)}, {"type": "string", "pattern": r"\{\{"}]}
    if spec.description:
        schema["description"] = spec.description
    return schema


def _with_schema(action: str) -> dict[str, Any]:
    keys, required, one_of = ACTION_KEYS[action]
    if action == "set":  # NAME: value pairs
        return {"type": "object", "minProperties": 1, "propertyNames": {"pattern": _VAR_PATTERN}}
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {k: _key_schema(s) for k, s in keys.items()},
    }
    if required:
        schema["required"] = list(required)
    if one_of:
        schema["oneOf"] = [{"required": [k]} for k in one_of]
    return schema


def _step_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "action"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_-]*$"},
            "action": {"enum": list(ACTION_KEYS)},
            "with": {"type": "object"},
            "timeout": {**_DURATION_SCHEMA, "description": "default 5m"},
            "retry": {
                "type": "object",
                "additionalProperties": False,
                "required": ["attempts"],
                "properties": {
                    "attempts": {"type": "integer", "minimum": 1},
                    "delay": {**_DURATION_SCHEMA, "description": "before the 2nd attempt"},
                    "backoff": {
                        "anyOf": [{"enum": list(BACKOFFS)}, _DURATION_SCHEMA],
                        "description": "fixed or exponential (a duration: delay, doubling)",
                    },
                    "max_backoff": _DURATION_SCHEMA,
                },
            },
            "only_within": _WINDOW_SCHEMA,
            "when": {"type": "string", "description": "expression, e.g. steps.restart.ok"},
            "continue_on_error": {"type": "boolean"},
            "idempotent": {"type": "boolean"},
        },
        "allOf": [
            {
                "if": {"properties": {"action": {"const": a}}, "required": ["action"]},
                "then": {"properties": {"with": _with_schema(a)}},
            }
            for a in ACTION_KEYS
        ],
    }


def _playbook_schema() -> dict[str, Any]:
    steps = {"type": "array", "items": {"$ref": "#/$defs/step"}}
    return {
        "$defs": {"step": _step_schema()},
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "steps"],
            "properties": {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "mode": {"enum": list(MODES)},
                "max": {"type": "integer", "minimum": 1},
                "timeout": _DURATION_SCHEMA,
                "on_interrupt": {"enum": list(ON_INTERRUPT)},
                "escalate": {"type": "string"},
                "steps": {**steps, "minItems": 1},
                "verify": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["within"],
                    "properties": {"within": _DURATION_SCHEMA},
                },
                "on_failure": steps,
                "outputs": {"type": "object", "description": "NAME: template over its steps"},
                "params": {"type": "object", "description": "NAME: default value"},
                "only_within": _WINDOW_SCHEMA,
            },
        },
    }


#: JSON Schema of a ``playbooks:`` list (``batond schema``); ``$defs.step`` is one step.
PLAYBOOK_SCHEMA: Mapping[str, Any] = _playbook_schema()

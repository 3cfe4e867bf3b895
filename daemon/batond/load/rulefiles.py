"""Rule files: ``rules:``, ``schedules:`` and ``playbooks:`` read into a RuleSet.

The sections below (:data:`RULE_FIELDS` and friends, in the vocabulary of
:mod:`batond.load.fields`) are the single description of rule files: the
reader validates against them and ``batond schema`` generates the JSON Schema
from them. Every problem of every file is collected and raised together as
one ConfigError; a duplicate name is reported at its later definition, a
``run`` naming no playbook at that value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batond.engine.model import (
    ALERT_GROUP_BY,
    NO_LIMITS,
    NOT_LABELS,
    Count,
    Limits,
    Match,
    Part,
    Rate,
    Rule,
    RuleSet,
    Schedule,
    is_alert_match,
)
from batond.errors import ConfigError, Mark, Problem
from batond.load.dataflow import dataflow_problems
from batond.load.fields import (
    INVALID,
    At,
    Field,
    Fields,
    Kind,
    SchemaBuilder,
    Section,
    read_section,
)
from batond.load.fleetrules import FLEET_FIELDS, FleetRef, fleet_ref_problems
from batond.load.kinds import (
    Choice,
    Cron,
    Data,
    Duration,
    Expr,
    Flag,
    Integer,
    ListOf,
    Name,
    Nested,
    Text,
    Zone,
)
from batond.load.playbooks import Playbook, build_playbooks, check_references
from batond.load.playbooks.sections import PLAYBOOK_LIST
from batond.load.yamlfile import Node, Reader, compose_file

__all__ = [
    "COUNT_FIELDS",
    "FILE_FIELDS",
    "LIMITS_FIELDS",
    "ORDERS",
    "PART_FIELDS",
    "RATE_FIELDS",
    "RULE_FIELDS",
    "SCHEDULE_FIELDS",
    "SEVERITIES",
    "load_rules",
    "rule_files",
]

SEVERITIES = ("info", "warning", "error", "critical")
ORDERS = ("adaptive", "fixed")


# -- the kinds only rule files have ---------------------------------------------------
def _names_once(
    r: Reader,
    items: Sequence[Node],
    what: str,
    twice: str,
    refuse: Callable[[str], str | None] = lambda name: None,
) -> list[At[str]]:
    """The valid names of ``items``, each once and where it was written.

    A name ``refuse`` has a message for, or one listed again (``twice``, with
    ``{name!r}``), is reported at that item and left out.
    """
    out: list[At[str]] = []
    for item in items:
        name = r.name(item, what)
        if name is None:
            continue
        again = any(name == seen.value for seen in out)
        why = refuse(name) or (twice.format(name=name) if again else None)
        if why:
            r.error(item, why)
        else:
            out.append(At(name, r.mark(item)))
    return out


def _label(name: str) -> str | None:
    if name in NOT_LABELS:
        return f"{name!r} is not a label and cannot be in group_by"
    return None


class _Match(Kind):
    """``{metric|event: NAME, label: value...}``: equality on the input's name and labels."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        labels = r.str_map(node)
        if labels is None:
            return INVALID
        kinds = [k for k in ("metric", "event") if k in labels]
        if len(kinds) != 1:
            message = "match needs exactly one of 'metric' or 'event'"
            r.error(node if not kinds else r.key_node(node, kinds[1]), message)
            return INVALID
        kind = kinds[0]
        name = labels.pop(kind)
        if not name:
            r.error(node, f"{kind} name must not be empty")
            return INVALID
        return Match(kind, name, tuple(sorted(labels.items())))

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return s.define(
            "match",
            {
                "type": "object",
                "description": "metric or event name, plus labels that must be equal",
                "additionalProperties": {"type": ["string", "number", "boolean"]},
                "oneOf": [{"required": ["metric"]}, {"required": ["event"]}],
            },
        )


class _GroupBy(Kind):
    """Label names, each once, each where it was written (for the checks across keys)."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        items = r.seq(node, "list of labels")
        if items is None:
            return INVALID
        return tuple(_names_once(r, items, "label name", "label {name!r} is listed twice", _label))

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        label = {"type": "string", "not": {"enum": list(NOT_LABELS)}}
        return {"type": "array", "items": label}


@dataclass(frozen=True, slots=True)
class _RunList:
    """The playbook names of ``run:`` that are valid, and whether all of them are."""

    names: tuple[At[str], ...]
    complete: bool


class _Run(Kind):
    """A playbook name, or a list tried in order; each name is checked to exist later."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        items = r.seq_or_one(node)
        if not items:
            r.error(node, "run needs at least one playbook")
            return INVALID
        names = _names_once(r, items, "playbook name", "playbook {name!r} is listed twice")
        return _RunList(tuple(names), len(names) == len(items))

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        name = {"type": "string", "minLength": 1}
        return {"anyOf": [name, {"type": "array", "minItems": 1, "items": name}]}


class _Playbook(Kind):
    """A playbook name, checked to exist once every file is read."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        name = r.name(node, "playbook name")
        return INVALID if name is None else At(name, r.mark(node))

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string", "minLength": 1, "pattern": r"^\S(.*\S)?$"}


def _rate(f: Fields) -> Any:
    values = f.values()
    if "count" not in values or "per" not in values:
        return INVALID
    if values["per"] <= 0:
        f.reader.error(f.nodes["per"], "per must be longer than 0s")
        return INVALID
    return Rate(values["count"], values["per"])


def _limits(f: Fields) -> Any:
    if not f.valid():
        return INVALID  # a problem was recorded
    return Limits(**f.values())


def _part(f: Fields) -> Any:
    values = f.values()
    return Part(**values) if "match" in values else INVALID


def _count(f: Fields) -> Any:
    if not f.valid("at_least", "within") or "at_least" not in f or "within" not in f:
        return INVALID
    if f.read("within") <= 0:
        f.reader.error(f.nodes["within"], "count window must be longer than 0s")
        return INVALID
    return Count(f.read("at_least"), f.read("within"))


# -- the sections of a rule file (docs/rules.md) --------------------------------------
PART_FIELDS = Section(
    "mapping {match, when}",
    (
        Field("match", _Match(), True, "equality on metric or event name and labels"),
        Field("when", Expr(), doc="expression that must be true"),
    ),
    ref="part",
    build=_part,
)
COUNT_FIELDS = Section(
    "mapping {at_least, within}",
    (
        Field("at_least", Integer(1), True, "how many matching inputs"),
        Field("within", Duration(), True, "sliding window"),
    ),
    build=_count,
)
RATE_FIELDS = Section(
    "mapping {count, per}",
    (
        Field("count", Integer(1), True, "how many runs"),
        Field("per", Duration(), True, "per this window"),
    ),
    build=_rate,
)
LIMITS_FIELDS = Section(
    "mapping {max_runs, per_target, max_concurrent_runs, blast_radius}",
    (
        Field(
            "max_runs",
            Nested(RATE_FIELDS),
            doc="this rule's own rate limit (else governor.max_runs)",
        ),
        Field(
            "per_target",
            Nested(RATE_FIELDS),
            doc="runs per key before its circuit opens (else governor.per_target)",
        ),
        Field("max_concurrent_runs", Integer(1), doc="this rule's runs at once (own slots)"),
        Field(
            "blast_radius",
            Flag(),
            doc="whether its runs count as acting on hosts (default: not each:)",
        ),
    ),
    build=_limits,
)
_NAME = Name()
_RUN = _Run()
_PARAMS = Data("mapping of parameters")
_SEVERITY = Choice(SEVERITIES, "severity")
RULE_FIELDS = Section(
    "rule mapping",
    (
        Field("name", _NAME, True, "unique rule name"),
        Field("description", Text(empty_ok=True), doc="what the rule is about"),
        Field("match", _Match(), doc="equality on {metric|event: NAME, label: value...}"),
        Field("when", Expr(), doc="expression over value, labels, event, anomaly, now"),
        Field("for", Duration(), doc="the condition must hold this long for the group"),
        Field("count", Nested(COUNT_FIELDS), doc="at least N passing inputs within a window"),
        Field("absent", Duration(), doc="fires when a group seen before goes silent"),
        Field(
            "all",
            ListOf(
                Nested(PART_FIELDS),
                "list of {match, when} parts",
                2,
                count_message="all: needs at least two parts",
                partial=False,
            ),
            doc="correlation: every part seen for the same key",
        ),
        Field("within", Duration(), doc="window of all:"),
        Field(
            "group_by",
            _GroupBy(),
            doc="labels forming the incident key (default [host]; [alertname, instance]"
            " for an alert rule)",
        ),
        Field("cooldown", Duration(), doc="no new run for the key this long after one"),
        Field("severity", _SEVERITY, doc="severity of the incident"),
        Field("resolve", Nested(PART_FIELDS), doc="explicit resolving input"),
        Field("run", _RUN, True, "playbook, or a list tried in order until one resolves"),
        Field("params", _PARAMS, doc="parameters handed to the playbook"),
        Field("order", Choice(ORDERS, "order"), doc="adaptive (default) or fixed order of run:"),
        Field("on_resolve", _Playbook(), doc="playbook run when an incident resolves"),
        Field("each", Flag(), doc="each matching event is its own work item"),
        Field("limits", Nested(LIMITS_FIELDS), doc="this rule's own governor limits"),
        Field("resolve_after", Duration(), doc="an event incident closes after this quiet"),
        Field(
            "fleet",
            Nested(FLEET_FIELDS),
            doc="a fleet rule: at least N (or N%) of some hosts with an open incident of a rule",
        ),
    ),
    ref="rule",
    # what _RuleChecks.kind() asks of a rule beyond its keys' kinds
    schema_extra={
        "anyOf": [
            {"required": ["match"]},
            {"required": ["all", "within"]},
            {"required": ["fleet"]},
        ]
    },
)
SCHEDULE_FIELDS = Section(
    "schedule mapping",
    (
        Field("name", _NAME, True, "unique schedule name"),
        Field("description", Text(empty_ok=True), doc="what the schedule does"),
        Field("cron", Cron(), True, "five-field cron expression (machine's local time)"),
        Field("run", _RUN, True, "playbook, or a list tried in order"),
        Field("params", _PARAMS, doc="parameters handed to the playbook"),
        Field("severity", _SEVERITY, doc="severity recorded with the decision"),
        Field("timezone", Zone(), doc="IANA time zone of the cron (default: the machine's)"),
        Field("catch_up", Flag(), doc="run once at start-up if it came due while down"),
    ),
    ref="schedule",
)
FILE_FIELDS = Section(
    "rule file mapping",
    (
        Field("rules", ListOf(Nested(RULE_FIELDS), "list of rules"), doc="rules"),
        Field(
            "schedules", ListOf(Nested(SCHEDULE_FIELDS), "list of schedules"), doc="cron schedules"
        ),
        Field("playbooks", PLAYBOOK_LIST, doc="playbooks (see docs/playbooks.md)"),
    ),
    doc="batond rule and playbook file",
)


def rule_files(
    paths: Sequence[Path | str], missing_ok: bool = False
) -> tuple[list[Path], list[Problem]]:
    """Files named, and each named directory's own ``*.yaml`` files (sorted)."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.glob("*.yaml") if p.is_file()))
        elif path.exists():
            files.append(path)
        elif not missing_ok:
            problems.append(Problem(str(path), 1, 1, "no such file or directory"))
    return files, problems


def load_rules(paths: Sequence[Path | str], missing_ok: bool = False) -> RuleSet:
    """Every rule, schedule and playbook of ``paths``; ConfigError with ALL problems.

    A path that does not exist is a problem unless ``missing_ok`` (built-in defaults).
    """
    files, problems = rule_files(paths, missing_ok)
    loader = _Loader()
    for file in files:
        loader.load_file(file)
    problems.extend(loader.problems())
    if problems:
        raise ConfigError(sorted(set(problems)))
    return loader.ruleset()


class _Loader:
    """Reads files one by one, then checks names across them."""

    def __init__(self) -> None:
        self.readers: list[Reader] = []
        self.rules: list[Rule] = []
        self.schedules: list[Schedule] = []
        self.playbooks: dict[str, Playbook] = {}
        self.run_refs: list[tuple[str, Mark]] = []
        self.cross: list[Problem] = []
        self.names: dict[str, Mark] = {}
        self.playbook_marks: dict[str, Mark] = {}
        self.fleet_refs: list[tuple[Rule, Mark]] = []  # fleet rules, where each names its rule

    def load_file(self, path: Path) -> None:
        node, reader = compose_file(path)
        self.readers.append(reader)
        if node is None:
            return  # empty file, or a syntax error already recorded
        fields = read_section(reader, node, FILE_FIELDS)
        if fields is not None:
            _FileReader(self).read(fields)

    def add_name(self, table: dict[str, Mark], what: str, name: str, mark: Mark) -> bool:
        first = table.get(name)
        if first is not None:
            self.cross.append(
                Problem(
                    mark.file,
                    mark.line,
                    mark.col,
                    f"duplicate {what} name {name!r} (first at {first})",
                )
            )
            return False
        table[name] = mark
        return True

    def problems(self) -> list[Problem]:
        out = [p for r in self.readers for p in r.problems] + self.cross
        out += fleet_ref_problems(self.rules, self.fleet_refs)
        for name, mark in self.run_refs:
            if name not in self.playbooks:
                out.append(
                    Problem(mark.file, mark.line, mark.col, f"run names unknown playbook {name!r}")
                )
        if not out:  # then what templates read that will not be there
            out.extend(
                check_references(self.playbooks)
                or dataflow_problems(self.playbooks, self.rules, self.schedules)
            )
        return out

    def ruleset(self) -> RuleSet:
        return RuleSet(tuple(self.rules), tuple(self.schedules), dict(self.playbooks))


class _FileReader:
    """The rules, schedules and playbooks of one file, into the loader's tables."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader

    def read(self, f: Fields) -> None:
        loader = self.loader
        for pb in build_playbooks(f.reader, f.get("playbooks", ())):
            if loader.add_name(loader.playbook_marks, "playbook", pb.name, pb.mark):
                loader.playbooks[pb.name] = pb
        for fields in f.get("rules", ()):
            rule = self.rule(fields)
            if rule is not None:
                loader.rules.append(rule)
                ref: FleetRef | None = fields.get("fleet")
                if rule.fleet is not None and ref is not None and ref.mark is not None:
                    loader.fleet_refs.append((rule, ref.mark))
        for fields in f.get("schedules", ()):
            schedule = self.schedule(fields)
            if schedule is not None:
                loader.schedules.append(schedule)

    def refs(self, f: Fields) -> _RunList | None:
        """The ``run:`` (and ``on_resolve:``) names, to be checked once every file is read."""
        run: _RunList | None = f.get("run")
        on_resolve: At[str] | None = f.get("on_resolve")
        for ref in (*(run.names if run is not None else ()), *filter(None, [on_resolve])):
            self.loader.run_refs.append((ref.value, ref.mark))
        return run

    def named(self, f: Fields, what: str) -> bool:
        """Registers the (valid) name; whether it is new."""
        return self.loader.add_name(self.loader.names, what, f.read("name"), f.mark_of("name"))

    def rule(self, f: Fields) -> Rule | None:
        valid = f.valid()  # every value is read (and every problem reported) first
        run = self.refs(f)
        if f.get("name") is None:
            return None
        ok = self.named(f, "rule")
        kind = _RuleChecks(f).kind()
        if kind is None or not ok or run is None or not run.complete or not valid:
            return None  # a problem was recorded
        group, each, on_resolve = f.get("group_by"), f.get("each", False), f.get("on_resolve")
        default_group: tuple[str, ...] = ALERT_GROUP_BY if kind == "alert" else ("host",)
        if each or kind == "fleet":
            default_group = ()
        fleet: FleetRef | None = f.get("fleet")
        return Rule(
            name=f.read("name"),
            mark=f.mark_of("name"),
            kind=kind,
            parts=_rule_parts(kind, f),
            group_by=tuple(a.value for a in group) if group is not None else default_group,
            description=f.get("description", ""),
            for_s=f.get("for", 0.0),
            count=f.get("count"),
            absent=f.get("absent"),
            within=f.get("within", 0.0),
            cooldown=f.get("cooldown", 0.0),
            severity=f.get("severity", "warning"),
            resolve=f.get("resolve"),
            run=tuple(a.value for a in run.names),
            params=f.get("params", {}),
            order=f.get("order", "adaptive"),
            fingerprint=_fingerprint(f.reader.plain(f.node)),
            on_resolve=on_resolve.value if on_resolve is not None else None,
            each=each,
            limits=f.get("limits", NO_LIMITS),
            resolve_after=f.get("resolve_after"),
            fleet=fleet.spec if fleet is not None else None,
        )

    def schedule(self, f: Fields) -> Schedule | None:
        valid = f.valid()
        run = self.refs(f)
        if f.get("name") is None:
            return None
        ok = self.named(f, "schedule")
        if not ok or not valid or "cron" not in f or run is None or not run.complete:
            return None
        return Schedule(
            name=f.read("name"),
            mark=f.mark_of("name"),
            cron=f.read("cron"),
            run=tuple(a.value for a in run.names),
            params=f.get("params", {}),
            severity=f.get("severity", "info"),
            fingerprint=_fingerprint(f.reader.plain(f.node)),
            tz=f.get("timezone"),
            catch_up=f.get("catch_up", True),
        )


def _rule_parts(kind: str, f: Fields) -> tuple[Part, ...]:
    if kind == "fleet":
        return ()  # no input reaches a fleet rule: a central instance counts for it
    if kind == "all":
        parts: tuple[Part, ...] = f.read("all")
        return parts
    match: Match = f.read("match")
    if kind == "alert":  # the rule follows each alert through firing and resolved itself
        match = Match(match.kind, match.name, tuple(kv for kv in match.labels if kv[0] != "status"))
    return (Part(match, f.get("when")),)


class _RuleChecks:
    """The rules between keys of one rule: which combinations make sense."""

    def __init__(self, f: Fields) -> None:
        self.r = f.reader
        self.f = f

    def at(self, key: str, message: str) -> None:
        self.r.error(self.f.key_node(key), message)

    def kind(self) -> str | None:
        f = self.f
        if "fleet" in f:
            return self._fleet()
        if "all" in f:
            return self._all()
        if "match" not in f:
            self.r.error(f.node, "a rule needs match: or all:")
            return None
        if "within" in f:
            self.at("within", "within: belongs to all: (count: has its own within)")
        timers = [k for k in ("for", "count", "absent") if k in f]
        for extra in timers[1:]:
            self.at(extra, f"{extra}: cannot be combined with {timers[0]}:")
        match = f.get("match")
        alert = match is not None and is_alert_match(match)
        if "for" in f and match is not None and match.kind == "event" and not alert:
            self.at(
                "for",
                "for: needs a metric match or an Alertmanager alert (an event does not hold"
                " over time)",
            )
        if "resolve" in f and ("count" in f or "absent" in f):
            self.at(
                "resolve",
                "resolve: cannot be combined with count: or absent: (they resolve by themselves)",
            )
        self._group_by_possible([match] if match is not None else [])
        kind = "edge"
        if "count" in f:
            kind = "count"
        elif "absent" in f:
            kind = "absent"
        elif match is not None and match.kind == "metric" and ("when" in f or "for" in f):
            kind = "level"
        elif alert:
            kind = "alert"
        self._work_items(kind, match)
        return kind

    def _work_items(self, kind: str, match: Match | None) -> None:
        """``each:`` and ``resolve_after:`` are for event incidents."""
        f = self.f
        if "resolve_after" in f and kind not in ("edge", "all"):
            self.at(
                "resolve_after",
                "resolve_after: is for event rules (this rule's incidents resolve by themselves)",
            )
        if not f.get("each"):
            return
        if match is not None and match.kind != "event":
            self.at("each", "each: true needs an event match (every event is a work item)")
        elif kind == "alert":
            self.at("each", "each: true is not for alert rules (an alert has its own identity)")
        for key in ("for", "count", "absent", "resolve", "resolve_after"):
            if key in f:
                self.at(
                    key,
                    f"{key}: cannot be combined with each: true (an item closes when its run ends)",
                )

    def _fleet(self) -> str | None:
        """A fleet rule counts hosts: it has no inputs of its own, and one key."""
        ok = True
        for key in ("match", "all", "when", "for", "count", "absent", "within", "resolve",
                    "each", "group_by", "resolve_after"):  # fmt: skip
            if key in self.f:
                self.at(key, f"{key}: cannot be combined with fleet: (a fleet rule counts hosts)")
                ok = False
        return "fleet" if ok and self.f.get("fleet") is not None else None

    def _all(self) -> str | None:
        if self.f.get("each"):
            self.at("each", "each: true is for event rules, not all:")
        for key in ("match", "when", "for", "count", "absent"):
            if key in self.f:
                self.at(key, f"{key}: cannot be combined with all: (put it in a part)")
        if "within" not in self.f:
            self.at("all", "all: needs within: (the correlation window)")
        parts = self.f.get("all") or ()
        self._group_by_possible([p.match for p in parts])
        return "all"

    def _group_by_possible(self, matches: Sequence[Match]) -> None:
        """A group_by label that match pins to different values can never form one key."""
        for label in self.f.get("group_by") or ():
            pinned = {dict(m.labels)[label.value] for m in matches if label.value in dict(m.labels)}
            if len(pinned) > 1:
                values = ", ".join(repr(v) for v in sorted(pinned))
                self.r.error(
                    label.mark,
                    f"group_by label {label.value!r} can never be equal: the parts match {values}",
                )


def _fingerprint(plain: Any) -> str:
    data = orjson.dumps(plain, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(data).hexdigest()[:16]

"""Rule files: ``rules:``, ``schedules:`` and ``playbooks:`` read into a RuleSet.

The key tables below (:data:`RULE_FIELDS` and friends) are the single
description of rule files: the reader validates against them and
``batond schema`` generates the JSON Schema from them. Every problem of every
file is collected and raised together as one ConfigError; a duplicate name
is reported at its later definition, a ``run`` naming no playbook at that value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batond.engine.cron import parse_cron
from batond.engine.expr import Expression, compile_expression
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
from batond.load.yamlfile import Node, Reader, ScalarNode, compose_file, text_mark

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
    "Field",
    "load_rules",
    "rule_files",
]

SEVERITIES = ("info", "warning", "error", "critical")
ORDERS = ("adaptive", "fixed")


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a mapping in a rule file: its kind (see ``_READERS``), need, meaning."""

    kind: str
    required: bool = False
    description: str = ""


PART_FIELDS: Mapping[str, Field] = {
    "match": Field("match", True, "equality on metric or event name and labels"),
    "when": Field("expr", description="expression that must be true"),
}
COUNT_FIELDS: Mapping[str, Field] = {
    "at_least": Field("int", True, "how many matching inputs"),
    "within": Field("duration", True, "sliding window"),
}
RATE_FIELDS: Mapping[str, Field] = {
    "count": Field("int", True, "how many runs"),
    "per": Field("duration", True, "per this window"),
}
LIMITS_FIELDS: Mapping[str, Field] = {
    "max_runs": Field("rate", description="this rule's own rate limit (else governor.max_runs)"),
    "per_target": Field(
        "rate", description="runs per key before its circuit opens (else governor.per_target)"
    ),
    "max_concurrent_runs": Field("int", description="this rule's runs at once (own slots)"),
    "blast_radius": Field(
        "bool", description="whether its runs count as acting on hosts (default: not each:)"
    ),
}
RULE_FIELDS: Mapping[str, Field] = {
    "name": Field("name", True, "unique rule name"),
    "description": Field("text", description="what the rule is about"),
    "match": Field("match", description="equality on {metric|event: NAME, label: value...}"),
    "when": Field("expr", description="expression over value, labels, event, anomaly, now"),
    "for": Field("duration", description="the condition must hold this long for the group"),
    "count": Field("count", description="at least N passing inputs within a window"),
    "absent": Field("duration", description="fires when a group seen before goes silent"),
    "all": Field("parts", description="correlation: every part seen for the same key"),
    "within": Field("duration", description="window of all:"),
    "group_by": Field(
        "labels",
        description="labels forming the incident key (default [host]; [alertname, instance]"
        " for an alert rule)",
    ),
    "cooldown": Field("duration", description="no new run for the key this long after one"),
    "severity": Field("severity", description="severity of the incident"),
    "resolve": Field("part", description="explicit resolving input"),
    "run": Field("run", True, "playbook, or a list tried in order until one resolves"),
    "params": Field("params", description="parameters handed to the playbook"),
    "order": Field("order", description="adaptive (default) or fixed order of run:"),
    "on_resolve": Field("playbook", description="playbook run when an incident resolves"),
    "each": Field("bool", description="each matching event is its own work item"),
    "limits": Field("limits", description="this rule's own governor limits"),
    "resolve_after": Field("duration", description="an event incident closes after this quiet"),
}
SCHEDULE_FIELDS: Mapping[str, Field] = {
    "name": Field("name", True, "unique schedule name"),
    "description": Field("text", description="what the schedule does"),
    "cron": Field("cron", True, "five-field cron expression (machine's local time)"),
    "run": Field("run", True, "playbook, or a list tried in order"),
    "params": Field("params", description="parameters handed to the playbook"),
    "severity": Field("severity", description="severity recorded with the decision"),
    "timezone": Field("zone", description="IANA time zone of the cron (default: the machine's)"),
    "catch_up": Field("bool", description="run once at start-up if it came due while down"),
}
FILE_FIELDS: Mapping[str, Field] = {
    "rules": Field("rules", description="rules"),
    "schedules": Field("schedules", description="cron schedules"),
    "playbooks": Field("playbooks", description="playbooks (see docs/playbooks.md)"),
}


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
        self.playbooks: dict[str, Any] = {}
        self.run_refs: list[tuple[str, Mark]] = []
        self.cross: list[Problem] = []
        self.names: dict[str, Mark] = {}
        self.playbook_marks: dict[str, Mark] = {}

    def load_file(self, path: Path) -> None:
        node, reader = compose_file(path)
        self.readers.append(reader)
        if node is None:
            return  # empty file, or a syntax error already recorded
        fields = reader.mapping(node, FILE_FIELDS, what="rule file mapping")
        if fields is None:
            return
        _FileReader(reader, self).read(fields)

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
        for name, mark in self.run_refs:
            if name not in self.playbooks:
                out.append(
                    Problem(mark.file, mark.line, mark.col, f"run names unknown playbook {name!r}")
                )
        if not out:
            out.extend(_playbook_references(self.playbooks, self.rules, self.schedules))
        return out

    def ruleset(self) -> RuleSet:
        return RuleSet(tuple(self.rules), tuple(self.schedules), dict(self.playbooks))


def _playbook_references(
    playbooks: Mapping[str, Any], rules: Sequence[Rule], schedules: Sequence[Schedule]
) -> list[Problem]:
    """``escalate:`` and nested playbook names across all files (the playbooks module's
    check), then what templates read that will not be there (:mod:`batond.load.dataflow`)."""
    from batond.load.dataflow import dataflow_problems
    from batond.load.playbooks import check_references

    return check_references(playbooks) or dataflow_problems(playbooks, rules, schedules)


class _FileReader:
    def __init__(self, reader: Reader, loader: _Loader) -> None:
        self.r = reader
        self.loader = loader

    def read(self, fields: Mapping[str, Node]) -> None:
        if "playbooks" in fields:
            self.read_playbooks(fields["playbooks"])
        for node in self.r.seq(fields["rules"], "list of rules") or [] if "rules" in fields else []:
            rule = self.rule(node)
            if rule is not None:
                self.loader.rules.append(rule)
        for node in (
            self.r.seq(fields["schedules"], "list of schedules") or []
            if "schedules" in fields
            else []
        ):
            schedule = self.schedule(node)
            if schedule is not None:
                self.loader.schedules.append(schedule)

    def read_playbooks(self, node: Node) -> None:
        from batond.load.playbooks import read_playbooks

        for pb in read_playbooks(self.r, node):
            if self.loader.add_name(self.loader.playbook_marks, "playbook", pb.name, pb.mark):
                self.loader.playbooks[pb.name] = pb

    # -- generic table-driven reading --------------------------------------------------
    def fields(self, node: Node, table: Mapping[str, Field], what: str) -> dict[str, Any] | None:
        """Read a mapping by its key table; invalid values are left out (problems recorded)."""
        required = [k for k, f in table.items() if f.required]
        nodes = self.r.mapping(node, table, required, what)
        if nodes is None:
            return None
        out: dict[str, Any] = {}
        for key, vnode in nodes.items():
            value = _READERS[table[key].kind](self, vnode)
            if value is not None:
                out[key] = value
        out["__nodes__"] = nodes
        return out

    def name(self, node: Node) -> Any:
        return self.r.name(node)

    def text(self, node: Node) -> Any:
        return self.r.string(node, empty_ok=True)

    def expr(self, node: Node) -> Expression | None:
        if not isinstance(node, ScalarNode) or node.tag.endswith(":null"):
            self.r.error(node, "expected an expression (a string)")
            return None
        text = str(node.value)
        if not text.strip():
            self.r.error(node, "expected an expression, got an empty string")
            return None
        try:
            return compile_expression(text, text_mark(self.r, node))
        except ConfigError as exc:
            self.r.problems.extend(exc.problems)
            return None

    def duration(self, node: Node) -> float | None:
        return self.r.duration(node)

    def integer(self, node: Node) -> int | None:
        return self.r.integer(node, 1)

    def rate(self, node: Node) -> Rate | None:
        f = self.fields(node, RATE_FIELDS, "mapping {count, per}")
        if f is None or "count" not in f or "per" not in f:
            return None
        if f["per"] <= 0:
            self.r.error(f["__nodes__"]["per"], "per must be longer than 0s")
            return None
        return Rate(f["count"], f["per"])

    def limits(self, node: Node) -> Limits | None:
        f = self.fields(
            node, LIMITS_FIELDS,
            "mapping {max_runs, per_target, max_concurrent_runs, blast_radius}",
        )  # fmt: skip
        if f is None or len(f) != len(f["__nodes__"]) + 1:
            return None  # a problem was recorded
        return Limits(
            max_runs=f.get("max_runs"),
            per_target=f.get("per_target"),
            max_concurrent_runs=f.get("max_concurrent_runs"),
            blast_radius=f.get("blast_radius"),
        )

    def severity(self, node: Node) -> str | None:
        return self.r.one_of(node, SEVERITIES, "severity")

    def order(self, node: Node) -> str | None:
        return self.r.one_of(node, ORDERS, "order")

    def params(self, node: Node) -> Any:
        if self.r.mapping(node, None, what="mapping of parameters") is None:
            return None
        return self.r.plain(node)

    def labels(self, node: Node) -> tuple[tuple[str, Node], ...] | None:
        items = self.r.seq(node, "list of labels")
        if items is None:
            return None
        out: list[tuple[str, Node]] = []
        for item in items:
            label = self.r.name(item, "label name")
            if label is None:
                continue
            if label in NOT_LABELS:
                self.r.error(item, f"{label!r} is not a label and cannot be in group_by")
            elif any(label == seen for seen, _ in out):
                self.r.error(item, f"label {label!r} is listed twice")
            else:
                out.append((label, item))
        return tuple(out)

    def playbook(self, node: Node) -> str | None:
        name = self.r.name(node, "playbook name")
        if name is not None:
            self.loader.run_refs.append((name, self.r.mark(node)))
        return name

    def zone(self, node: Node) -> Any:
        from batond.load.playbooks import read_zone

        return read_zone(self.r, node)

    def flag(self, node: Node) -> bool | None:
        return self.r.boolean(node)

    def run(self, node: Node) -> tuple[str, ...] | None:
        items = self.r.seq_or_one(node)
        if not items:
            self.r.error(node, "run needs at least one playbook")
            return None
        names = []
        for item in items:
            name = self.r.name(item, "playbook name")
            if name is None:
                continue
            if name in names:
                self.r.error(item, f"playbook {name!r} is listed twice")
                continue
            names.append(name)
            self.loader.run_refs.append((name, self.r.mark(item)))
        return tuple(names) if len(names) == len(items) else None

    def cron(self, node: Node) -> Any:
        text = self.r.string(node, "cron expression")
        if text is None:
            return None
        try:
            return parse_cron(text)
        except ValueError as exc:
            self.r.error(node, str(exc))
            return None

    def match(self, node: Node) -> Match | None:
        labels = self.r.str_map(node)
        if labels is None:
            return None
        kinds = [k for k in ("metric", "event") if k in labels]
        if len(kinds) != 1:
            message = "match needs exactly one of 'metric' or 'event'"
            self.r.error(node if not kinds else self.r.key_node(node, kinds[1]), message)
            return None
        kind = kinds[0]
        name = labels.pop(kind)
        if not name:
            self.r.error(node, f"{kind} name must not be empty")
            return None
        return Match(kind, name, tuple(sorted(labels.items())))

    def part(self, node: Node) -> Part | None:
        f = self.fields(node, PART_FIELDS, "mapping {match, when}")
        if f is None or "match" not in f:
            return None
        return Part(f["match"], f.get("when"))

    def parts(self, node: Node) -> tuple[Part, ...] | None:
        items = self.r.seq(node, "list of {match, when} parts")
        if items is None:
            return None
        if len(items) < 2:
            self.r.error(node, "all: needs at least two parts")
        parts = [self.part(item) for item in items]
        return tuple(p for p in parts if p is not None) if all(parts) else None

    def count(self, node: Node) -> Count | None:
        f = self.fields(node, COUNT_FIELDS, "mapping {at_least, within}")
        if f is None or "at_least" not in f or "within" not in f:
            return None
        if f["within"] <= 0:
            self.r.error(f["__nodes__"]["within"], "count window must be longer than 0s")
            return None
        return Count(f["at_least"], f["within"])

    # -- rules and schedules ---------------------------------------------------------------
    def rule(self, node: Node) -> Rule | None:
        f = self.fields(node, RULE_FIELDS, "rule mapping")
        if f is None or "name" not in f:
            return None
        nodes: dict[str, Node] = f["__nodes__"]
        ok = self.loader.add_name(self.loader.names, "rule", f["name"], self.r.mark(nodes["name"]))
        kind = _RuleChecks(self.r, node, f).kind()
        if kind is None or not ok or "run" not in f or len(f) != len(nodes) + 1:
            return None  # a problem was recorded (a missing value means an invalid one)
        parts = _rule_parts(kind, f)
        group = f.get("group_by")
        each = bool(f.get("each", False))
        default_group: tuple[str, ...] = ALERT_GROUP_BY if kind == "alert" else ("host",)
        if each:
            default_group = ()
        return Rule(
            name=f["name"],
            mark=self.r.mark(nodes["name"]),
            kind=kind,
            parts=parts,
            group_by=tuple(label for label, _ in group) if group is not None else default_group,
            description=f.get("description", ""),
            for_s=f.get("for", 0.0),
            count=f.get("count"),
            absent=f.get("absent"),
            within=f.get("within", 0.0),
            cooldown=f.get("cooldown", 0.0),
            severity=f.get("severity", "warning"),
            resolve=f.get("resolve"),
            run=f["run"],
            params=f.get("params", {}),
            order=f.get("order", "adaptive"),
            fingerprint=_fingerprint(self.r.plain(node)),
            on_resolve=f.get("on_resolve"),
            each=each,
            limits=f.get("limits", NO_LIMITS),
            resolve_after=f.get("resolve_after"),
        )

    def schedule(self, node: Node) -> Schedule | None:
        f = self.fields(node, SCHEDULE_FIELDS, "schedule mapping")
        if f is None or "name" not in f:
            return None
        nodes: dict[str, Node] = f["__nodes__"]
        mark = self.r.mark(nodes["name"])
        ok = self.loader.add_name(self.loader.names, "schedule", f["name"], mark)
        if not ok or len(f) != len(nodes) + 1 or "cron" not in f or "run" not in f:
            return None
        return Schedule(
            name=f["name"],
            mark=mark,
            cron=f["cron"],
            run=f["run"],
            params=f.get("params", {}),
            severity=f.get("severity", "info"),
            fingerprint=_fingerprint(self.r.plain(node)),
            tz=f.get("timezone"),
            catch_up=f.get("catch_up", True),
        )


def _rule_parts(kind: str, f: Mapping[str, Any]) -> tuple[Part, ...]:
    if kind == "all":
        parts: tuple[Part, ...] = f["all"]
        return parts
    match: Match = f["match"]
    if kind == "alert":  # the rule follows each alert through firing and resolved itself
        match = Match(match.kind, match.name, tuple(kv for kv in match.labels if kv[0] != "status"))
    return (Part(match, f.get("when")),)


class _RuleChecks:
    """The rules between keys of one rule: which combinations make sense."""

    def __init__(self, reader: Reader, node: Node, f: Mapping[str, Any]) -> None:
        self.r = reader
        self.node = node
        self.f = f
        self.nodes: Mapping[str, Node] = f["__nodes__"]

    def at(self, key: str, message: str) -> None:
        self.r.error(self.r.key_node(self.node, key), message)

    def kind(self) -> str | None:
        n = self.nodes
        if "all" in n:
            return self._all()
        if "match" not in n:
            self.r.error(self.node, "a rule needs match: or all:")
            return None
        if "within" in n:
            self.at("within", "within: belongs to all: (count: has its own within)")
        timers = [k for k in ("for", "count", "absent") if k in n]
        for extra in timers[1:]:
            self.at(extra, f"{extra}: cannot be combined with {timers[0]}:")
        match = self.f.get("match")
        alert = match is not None and is_alert_match(match)
        if "for" in n and match is not None and match.kind == "event" and not alert:
            self.at(
                "for",
                "for: needs a metric match or an Alertmanager alert (an event does not hold"
                " over time)",
            )
        if "resolve" in n and ("count" in n or "absent" in n):
            self.at(
                "resolve",
                "resolve: cannot be combined with count: or absent: (they resolve by themselves)",
            )
        self._group_by_possible([match] if match is not None else [])
        kind = "edge"
        if "count" in n:
            kind = "count"
        elif "absent" in n:
            kind = "absent"
        elif match is not None and match.kind == "metric" and ("when" in n or "for" in n):
            kind = "level"
        elif alert:
            kind = "alert"
        self._work_items(kind, match)
        return kind

    def _work_items(self, kind: str, match: Match | None) -> None:
        """``each:`` and ``resolve_after:`` are for event incidents."""
        n = self.nodes
        if "resolve_after" in n and kind not in ("edge", "all"):
            self.at(
                "resolve_after",
                "resolve_after: is for event rules (this rule's incidents resolve by themselves)",
            )
        if not self.f.get("each"):
            return
        if match is not None and match.kind != "event":
            self.at("each", "each: true needs an event match (every event is a work item)")
        elif kind == "alert":
            self.at("each", "each: true is not for alert rules (an alert has its own identity)")
        for key in ("for", "count", "absent", "resolve", "resolve_after"):
            if key in n:
                self.at(
                    key,
                    f"{key}: cannot be combined with each: true (an item closes when its run ends)",
                )

    def _all(self) -> str | None:
        if self.f.get("each"):
            self.at("each", "each: true is for event rules, not all:")
        for key in ("match", "when", "for", "count", "absent"):
            if key in self.nodes:
                self.at(key, f"{key}: cannot be combined with all: (put it in a part)")
        if "within" not in self.nodes:
            self.at("all", "all: needs within: (the correlation window)")
        parts = self.f.get("all") or ()
        self._group_by_possible([p.match for p in parts])
        return "all"

    def _group_by_possible(self, matches: Sequence[Match]) -> None:
        """A group_by label that match pins to different values can never form one key."""
        group = self.f.get("group_by") or ()
        for label, node in group:
            pinned = {dict(m.labels)[label] for m in matches if label in dict(m.labels)}
            if len(pinned) > 1:
                values = ", ".join(repr(v) for v in sorted(pinned))
                self.r.error(
                    node, f"group_by label {label!r} can never be equal: the parts match {values}"
                )


def _fingerprint(plain: Any) -> str:
    data = orjson.dumps(plain, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(data).hexdigest()[:16]


_READERS: dict[str, Callable[[_FileReader, Node], Any]] = {
    "name": _FileReader.name,
    "text": _FileReader.text,
    "expr": _FileReader.expr,
    "duration": _FileReader.duration,
    "int": _FileReader.integer,
    "severity": _FileReader.severity,
    "order": _FileReader.order,
    "params": _FileReader.params,
    "labels": _FileReader.labels,
    "run": _FileReader.run,
    "cron": _FileReader.cron,
    "match": _FileReader.match,
    "part": _FileReader.part,
    "parts": _FileReader.parts,
    "count": _FileReader.count,
    "playbook": _FileReader.playbook,
    "zone": _FileReader.zone,
    "bool": _FileReader.flag,
    "rate": _FileReader.rate,
    "limits": _FileReader.limits,
}

"""The ``fleet:`` key of a rule (docs/rules.md#fleet-rules): its sections and checks.

``fleet: {at_least: 30%, of: {labels: {role: web}}, incidents: {rule: web-5xx},
within: 5m}`` (or ``anomalous: {metric: cpu}`` instead of ``incidents:``) reads into a
:class:`batond.engine.fleet.FleetSpec`; the rule it names must be another rule, not a
fleet rule, which :func:`fleet_ref_problems` checks once every file is read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batond.engine.fleet import FleetSpec
from batond.engine.model import Rule
from batond.errors import Mark, Problem
from batond.load.fields import INVALID, At, Field, Fields, Kind, SchemaBuilder, Section
from batond.load.kinds import Duration, Nested
from batond.load.yamlfile import Node, Reader

__all__ = ["FLEET_FIELDS", "FleetRef", "fleet_ref_problems", "not_central_problems"]

_PERCENT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*$")


class _AtLeast(Kind):
    """A count of hosts (an integer of at least 1) or a percentage (``30%``, 0-100%)."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        value = r.plain(node)
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                r.error(node, f"at_least must be at least 1 host, got {value}")
                return INVALID
            return (float(value), False)
        found = _PERCENT.match(value) if isinstance(value, str) else None
        if found is None:
            r.error(
                node, f"at_least must be a count of hosts (3) or a percentage (30%), got {value!r}"
            )
            return INVALID
        percent = float(found.group(1))
        if not 0 < percent <= 100:
            r.error(node, f"at_least must be a percentage above 0% and at most 100%, got {value!r}")
            return INVALID
        return (percent, True)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        count = {"type": "integer", "minimum": 1}
        percent = {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*%\s*$"}
        return {"anyOf": [count, percent]}


class _Labels(Kind):
    """Labels a host must carry, each with this value (``{role: web}``)."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        labels = r.str_map(node)
        return INVALID if labels is None else tuple(sorted(labels.items()))

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        value = {"type": ["string", "number", "boolean"]}
        return {"type": "object", "additionalProperties": value}


class _MetricName(Kind):
    """The metric whose anomalous series are counted."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        name = r.name(node, "metric name")
        return INVALID if name is None else name

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}


class _RuleName(Kind):
    """The name of the rule whose open incidents are counted (checked once all is read)."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        name = r.name(node, "rule name")
        return INVALID if name is None else At(name, r.mark(node))

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string", "minLength": 1}


def _fleet(f: Fields) -> Any:
    if not f.valid() or "at_least" not in f or not _one_counted(f):
        return INVALID  # a problem was recorded
    within = f.get("within", 0.0)
    if "within" in f and within <= 0:
        f.reader.error(f.nodes["within"], "within must be longer than 0s")
        return INVALID
    at_least, percent = f.read("at_least")
    of = f.get("of", ())
    if "anomalous" in f:
        spec = FleetSpec(at_least, percent, of, "", within, metric=f.read("anomalous"))
        return FleetRef(spec, None)
    ref: At[str] = f.read("incidents")
    return FleetRef(FleetSpec(at_least, percent, of, ref.value, within), ref.mark)


def _one_counted(f: Fields) -> bool:
    """Exactly one of ``incidents:`` and ``anomalous:`` (what an affected host has)."""
    given = [k for k in ("incidents", "anomalous") if k in f]
    if len(given) == 1:
        return True
    if given:
        f.reader.error(f.key_node("anomalous"), "fleet takes incidents or anomalous, not both")
    else:
        f.reader.error(f.node, "fleet needs incidents: {rule: NAME} or anomalous: {metric: NAME}")
    return False


@dataclass(frozen=True, slots=True)
class FleetRef:
    """A read ``fleet:``: the spec, and where the counted rule was named (None: it
    counts anomalous series, no rule)."""

    spec: FleetSpec
    mark: Mark | None


def _of(f: Fields) -> Any:
    return f.get("labels", ()) if f.valid() else INVALID


def _incidents(f: Fields) -> Any:
    return f.read("rule") if f.valid() and "rule" in f else INVALID


def _anomalous(f: Fields) -> Any:
    return f.read("metric") if f.valid() and "metric" in f else INVALID


OF_FIELDS = Section(
    "mapping {labels}",
    (Field("labels", _Labels(), doc="labels the counted hosts carry (as their samples do)"),),
    build=_of,
)
INCIDENTS_FIELDS = Section(
    "mapping {rule}",
    (Field("rule", _RuleName(), True, "the rule whose open incidents are counted"),),
    build=_incidents,
)
ANOMALOUS_FIELDS = Section(
    "mapping {metric}",
    (Field("metric", _MetricName(), True, "the metric whose anomalous series are counted"),),
    build=_anomalous,
)
FLEET_FIELDS = Section(
    "mapping {at_least, of, incidents, anomalous, within}",
    (
        Field("at_least", _AtLeast(), True, "how many hosts: a count (3) or a percentage (30%)"),
        Field("of", Nested(OF_FIELDS), doc="which hosts count (default: every agent)"),
        Field("incidents", Nested(INCIDENTS_FIELDS), doc="hosts with an open incident of"),
        Field("anomalous", Nested(ANOMALOUS_FIELDS), doc="hosts with an anomalous series of"),
        Field("within", Duration(), doc="hosts seen within (default 3 batch intervals)"),
    ),
    ref="fleet",
    build=_fleet,
)


def fleet_ref_problems(rules: Sequence[Rule], refs: Sequence[tuple[Rule, Mark]]) -> list[Problem]:
    """A fleet rule must count the incidents of a rule that exists and is not a fleet rule."""
    kinds = {r.name: r.kind for r in rules}
    out: list[Problem] = []
    for rule, mark in refs:
        assert rule.fleet is not None
        name = rule.fleet.rule
        if rule.fleet.metric:
            continue  # it counts anomalous series: no rule to check
        why = None
        if name not in kinds:
            why = f"fleet rule {rule.name!r} counts the incidents of unknown rule {name!r}"
        elif kinds[name] == "fleet":
            why = f"fleet rule {rule.name!r} cannot count the incidents of fleet rule {name!r}"
        if why:
            out.append(Problem(mark.file, mark.line, mark.col, why))
    return out


def not_central_problems(rules: Sequence[Rule], central: bool) -> list[Problem]:
    """Fleet rules where no central instance would count for them: refused (they could
    never fire, and an operator should not believe they watch the fleet)."""
    if central:
        return []
    return [
        Problem(
            r.mark.file,
            r.mark.line,
            r.mark.col,
            f"fleet rule {r.name!r} is evaluated by a fleet's central instance only"
            " (fleet: {role: central} in batond.yaml); this batond is not one",
        )
        for r in rules
        if r.fleet is not None
    ]

"""The rule model: frozen types that rule files are read into.

A rule's *kind* says how its condition is judged for a group:

=========  ==================================================================
``level``  a metric match with ``when:`` (and/or ``for:``): true while matching
           samples pass ``when``; a false sample resolves (unless ``resolve:``)
``edge``   an event match (or a metric match without ``when:``/``for:``): every
           matching input that passes ``when`` fires; the run resolves it
``count``  ``count: {at_least, within}`` over matching inputs that pass ``when``
``absent`` no matching input for ``absent:`` seconds, for a group seen before
``all``    every part of ``all:`` seen for the same key within ``within:``
``alert``  an Alertmanager ``alert`` event match (not pinned to ``status: resolved``):
           each alert's firing state by fingerprint; ``for:`` counts from its
           ``startsAt``; its ``resolved`` notification resolves (unless ``resolve:``)
``fleet``  ``fleet:`` counts hosts across the fleet (:mod:`batond.engine.fleet`): no
           input reaches it; a central instance hands it the count
=========  ==================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from batond.engine.cron import Cron
from batond.engine.expr import Expression
from batond.engine.fleet import FleetSpec
from batond.errors import Mark

__all__ = [
    "ALERT_GROUP_BY",
    "ITEM_LABEL",
    "KINDS",
    "NOT_LABELS",
    "NO_LIMITS",
    "Count",
    "Limits",
    "Match",
    "Part",
    "Rate",
    "Rule",
    "RuleSet",
    "Schedule",
    "is_alert_match",
]

KINDS = ("level", "edge", "count", "absent", "all", "alert", "fleet")
#: An alert rule's incident key when it names no group_by: one incident per alert and instance.
ALERT_GROUP_BY = ("alertname", "instance")
#: The label of a work item's key (``each: true``) that makes it unique.
ITEM_LABEL = "item"
#: Names that are not labels (docs/rules.md): errors in ``group_by``.
NOT_LABELS = ("metric", "value", "event", "ts")


@dataclass(frozen=True, slots=True)
class Match:
    """Equality on the input's kind and name and on some labels."""

    kind: str  # "metric" | "event"
    name: str
    labels: tuple[tuple[str, str], ...] = ()

    def matches(self, kind: str, name: str, labels: Mapping[str, str]) -> bool:
        return (
            kind == self.kind
            and name == self.name
            and all(labels.get(k, "") == v for k, v in self.labels)
        )


def is_alert_match(match: Match) -> bool:
    """An Alertmanager alert's firing (``status`` unpinned or ``firing``): an ``alert`` rule."""
    status = dict(match.labels).get("status", "firing")
    return match.kind == "event" and match.name == "alert" and status == "firing"


@dataclass(frozen=True, slots=True)
class Part:
    """A match plus an optional ``when:`` (one part of ``all:``, or ``resolve:``)."""

    match: Match
    when: Expression | None = None


@dataclass(frozen=True, slots=True)
class Count:
    at_least: int
    within: float


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` runs per ``per`` seconds."""

    count: int
    per: float


@dataclass(frozen=True, slots=True)
class Limits:
    """A rule's own governor limits (``limits:``); None: the governor's setting applies.

    ``blast_radius`` None means the default: rules that act on hosts are inside the
    blast radius, work items (``each: true``) are not.
    """

    max_runs: Rate | None = None
    per_target: Rate | None = None
    max_concurrent_runs: int | None = None
    blast_radius: bool | None = None


NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    mark: Mark
    kind: str
    parts: tuple[Part, ...]  # one part, or the parts of all:
    group_by: tuple[str, ...] = ("host",)
    description: str = ""
    for_s: float = 0.0
    count: Count | None = None
    absent: float | None = None
    within: float = 0.0
    cooldown: float = 0.0
    severity: str = "warning"
    resolve: Part | None = None
    run: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    order: str = "adaptive"  # adaptive | fixed
    fingerprint: str = ""  # identity of the definition: state survives a reload if equal
    on_resolve: str | None = None  # playbook run when an incident of this rule resolves
    each: bool = False  # every matching event is its own work item (edge rules)
    limits: Limits = NO_LIMITS
    resolve_after: float | None = None  # an event incident closes after this quiet time
    fleet: FleetSpec | None = None  # a fleet rule (kind "fleet": parts and group_by empty)

    @property
    def resolves_by_run(self) -> bool:
        """Only a run (or a decision without one) can resolve this rule's incidents."""
        return self.kind in ("edge", "all") and self.resolve is None

    @property
    def decides_again(self) -> bool:
        """An open incident of this rule is decided again by further matching input
        (event incidents: their condition cannot turn false by itself)."""
        return self.kind in ("edge", "all") and not self.each

    @property
    def in_blast_radius(self) -> bool:
        """Whether this rule's runs count as acting on hosts (governor blast radius)."""
        if self.limits.blast_radius is not None:
            return self.limits.blast_radius
        return not self.each

    @property
    def match(self) -> Match:
        return self.parts[0].match

    @property
    def when(self) -> Expression | None:
        return self.parts[0].when if self.parts else None


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    mark: Mark
    cron: Cron
    run: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)
    severity: str = "info"
    fingerprint: str = ""
    tz: tzinfo | None = None  # the zone its cron is read in (None: the machine's)
    catch_up: bool = True  # came due while batond was down: one run at start-up

    @property
    def key(self) -> str:
        return f"schedule={self.name}"


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    playbooks: Mapping[str, Any] = field(default_factory=dict)  # name -> playbooks.Playbook

    @property
    def rule_count(self) -> int:
        return len(self.rules)

    def rule(self, name: str) -> Rule | None:
        for r in self.rules:
            if r.name == name:
                return r
        return None

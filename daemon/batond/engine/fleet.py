"""Fleet rules: counting across hosts, and when that opens or resolves the fleet incident.

A fleet rule (``fleet: {at_least: 30%, of: {labels: {role: web}}, incidents: {rule:
web-5xx}}``, docs/rules.md) counts, among the agents seen within ``within`` whose
labels match ``of``, those with an open incident of ``incidents.rule`` (or, with
``anomalous: {metric: cpu}`` instead, those with a series of ``cpu`` that scored
anomalous within ``within``: the agent's row says when each metric last did). When that count
reaches ``at_least`` (a count, or a percentage of the matching agents) the rule decides
once for the fleet, for incident key :data:`FLEET_KEY`; when it falls below, the incident
resolves. Pure: the central instance that owns partition 0 reads the journal and gives
this module what it read and the clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "FLEET_KEY",
    "AgentSeen",
    "FleetCount",
    "FleetSpec",
    "FleetVerdict",
    "count",
    "fleet_cause",
    "fleet_labels",
    "threshold",
    "verdict",
]

#: The incident key of every fleet rule: one incident for the whole fleet.
FLEET_KEY = "fleet"


@dataclass(frozen=True, slots=True)
class AgentSeen:
    """One agent's last batch, as the journal's ``fleet_agents`` keeps it; ``anomalous``:
    metric -> when a series of it on this host last scored at or above its model's
    threshold (the sample's ``ts``)."""

    host: str
    partition: int
    last_seen: float
    seq: int
    labels: Mapping[str, str]
    anomalous: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """A rule's ``fleet:``: ``at_least`` hosts (``percent``: of the matching hosts) of
    those with labels ``of``, seen within ``within`` seconds, having an open incident of
    ``rule`` or, when ``metric`` is set (``rule`` is then empty), a series of ``metric``
    anomalous within ``within``. ``within`` 0: three batch intervals (the loader's
    default)."""

    at_least: float
    percent: bool
    of: tuple[tuple[str, str], ...]
    rule: str
    within: float = 0.0
    metric: str = ""

    def describe(self) -> str:
        n = f"{self.at_least:g}%" if self.percent else f"{self.at_least:g}"
        of = ", ".join(f"{k}={v}" for k, v in self.of) or "all hosts"
        return f"at least {n} of {of} {self.what()}"

    def what(self) -> str:
        """What an affected host has, in words."""
        if self.metric:
            return f"with an anomalous series of {self.metric}"
        return f"with an open incident of {self.rule}"


@dataclass(frozen=True, slots=True)
class FleetCount:
    """What one evaluation counted: ``affected`` of ``matching`` hosts (the hosts by name)."""

    matching: int
    affected: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.affected)


class FleetVerdict(Enum):
    OPEN = "open"
    RESOLVE = "resolve"
    STAY = "stay"


def threshold(spec: FleetSpec, matching: int) -> int:
    """How many affected hosts fire the rule, given ``matching`` hosts (at least 1: an
    empty fleet never fires)."""
    if spec.percent:
        return max(1, math.ceil(spec.at_least * matching / 100.0 - 1e-9))
    return max(1, math.ceil(spec.at_least))


def count(
    spec: FleetSpec, agents: Iterable[AgentSeen], open_hosts: Iterable[str], since: float
) -> FleetCount:
    """The hosts ``of`` matches among ``agents`` seen at or after ``since``, and which of
    them are affected: have an open incident (``open_hosts``: the hosts of the rule's
    open incidents) or, for ``spec.metric``, a series of it anomalous at or after
    ``since``."""
    want, metric = spec.of, spec.metric
    seen = [
        a for a in agents if a.last_seen >= since and all(a.labels.get(k) == v for k, v in want)
    ]
    seen.sort(key=lambda a: a.host)
    if metric:
        hit = [a.host for a in seen if a.anomalous.get(metric, -math.inf) >= since]
    else:
        hosts = set(open_hosts)
        hit = [a.host for a in seen if a.host in hosts]
    return FleetCount(len(seen), tuple(hit))


def verdict(spec: FleetSpec, counted: FleetCount, is_open: bool) -> FleetVerdict:
    """Open when the count reaches the threshold and the incident is not open; resolve
    when it falls below and the incident is open; else stay as it is."""
    firing = counted.matching > 0 and counted.n >= threshold(spec, counted.matching)
    if firing and not is_open:
        return FleetVerdict.OPEN
    if not firing and is_open:
        return FleetVerdict.RESOLVE
    return FleetVerdict.STAY


#: How many affected hosts a fleet decision names in its ``hosts`` label.
HOSTS_NAMED = 20


def fleet_labels(spec: FleetSpec, counted: FleetCount) -> dict[str, str]:
    """The labels of a fleet decision (what its playbook's templates and silences see):
    the counted rule (or ``fleet_metric``, the anomalous metric), how many of how many,
    and the first affected hosts by name."""
    named = counted.affected[:HOSTS_NAMED]
    more = counted.n - len(named)
    counted_what = {"fleet_metric": spec.metric} if spec.metric else {"fleet_rule": spec.rule}
    return {
        **counted_what,
        "affected": str(counted.n),
        "matching": str(counted.matching),
        "hosts": ",".join(named) + (f",... ({more} more)" if more else ""),
    }


def fleet_cause(spec: FleetSpec, counted: FleetCount) -> str:
    """Why the fleet rule decided, in words (the decision's ``cause``)."""
    need = threshold(spec, counted.matching)
    return (
        f"{counted.n} of {counted.matching} hosts {_have(spec)}"
        f" (at least {need}: {spec.describe()})"
    )


def _have(spec: FleetSpec) -> str:
    if spec.metric:
        return f"have an anomalous series of {spec.metric}"
    return f"have an open incident of {spec.rule}"

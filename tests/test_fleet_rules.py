"""Fleet rules, the pure part: reading ``fleet:`` (problems at FILE:LINE:COL), the count
over agents and open incidents, the threshold crossing, and the engine's decision for
the fleet incident through the governor."""

from __future__ import annotations

from pathlib import Path

import pytest

from batond.commands.explain import explain
from batond.engine.engine import Engine
from batond.engine.fleet import (
    FLEET_KEY,
    AgentSeen,
    FleetCount,
    FleetSpec,
    FleetVerdict,
    count,
    fleet_cause,
    fleet_labels,
    threshold,
    verdict,
)
from batond.engine.governor import Governor
from batond.engine.types import Decision, Output, Resolved, Suppression
from batond.errors import ConfigError
from batond.fleet.fleetrules import FleetRules
from batond.load.config import load_config
from batond.load.rulefiles import load_rules
from batond.runtime.definitions import load_definitions
from engine_support import GENEROUS, compact, make_engine, write_rules
from support import write_yaml

FLEET_RULES = """
rules:
  - name: web-5xx
    match: {metric: http_5xx}
    when: value > 10
    run: fix
  - name: web-tier
    fleet:
      at_least: 30%
      of: {labels: {role: web}}
      incidents: {rule: web-5xx}
      within: 1m
    run: page
    severity: critical
"""


def spec(at_least: float, percent: bool = False) -> FleetSpec:
    return FleetSpec(at_least, percent, (("role", "web"),), "web-5xx", 60.0)


def web(host: str, seen: float = 100.0, role: str = "web") -> AgentSeen:
    return AgentSeen(host, 0, seen, 1, {"role": role})


@pytest.mark.parametrize(
    ("at_least", "percent", "matching", "need"),
    [(30, True, 4, 2), (50, True, 4, 2), (100, True, 3, 3), (1, True, 10, 1), (3, False, 9, 3)],
)
def test_threshold(at_least: float, percent: bool, matching: int, need: int) -> None:
    assert threshold(spec(at_least, percent), matching) == need


def test_only_matching_hosts_seen_within_the_window_count() -> None:
    agents = [web("w1"), web("w2"), web("w3", seen=10.0), web("d1", role="db")]
    counted = count(spec(1), agents, {"w1", "w3", "d1"}, since=50.0)
    assert counted == FleetCount(matching=2, affected=("w1",))


def anomalous_spec(at_least: float, percent: bool = False) -> FleetSpec:
    return FleetSpec(at_least, percent, (("role", "web"),), "", 60.0, metric="cpu")


def test_hosts_with_a_series_anomalous_within_the_window_count() -> None:
    agents = [
        AgentSeen("w1", 0, 100.0, 1, {"role": "web"}, {"cpu": 95.0}),  # within: counts
        AgentSeen("w2", 0, 100.0, 1, {"role": "web"}, {"cpu": 40.0}),  # before the window
        AgentSeen("w3", 0, 100.0, 1, {"role": "web"}, {"mem": 99.0}),  # another metric
        AgentSeen("w4", 0, 100.0, 1, {"role": "web"}, {"cpu": 50.0}),  # at the window's start
        AgentSeen("w5", 0, 10.0, 1, {"role": "web"}, {"cpu": 99.0}),  # not seen within
        AgentSeen("d1", 0, 100.0, 1, {"role": "db"}, {"cpu": 99.0}),  # not of
    ]
    # open incidents do not matter to an anomalous count
    counted = count(anomalous_spec(50, True), agents, {"w2", "w3"}, since=50.0)
    assert counted == FleetCount(matching=4, affected=("w1", "w4"))
    assert verdict(anomalous_spec(50, True), counted, is_open=False) is FleetVerdict.OPEN
    later = count(anomalous_spec(50, True), agents, (), since=96.0)
    assert later == FleetCount(matching=4, affected=())
    assert verdict(anomalous_spec(50, True), later, is_open=True) is FleetVerdict.RESOLVE


def test_an_anomalous_fleet_decision_names_the_metric() -> None:
    spec = anomalous_spec(2)
    counted = FleetCount(4, ("w1", "w4"))
    assert fleet_labels(spec, counted) == {
        "fleet_metric": "cpu", "affected": "2", "matching": "4", "hosts": "w1,w4"
    }  # fmt: skip
    assert fleet_cause(spec, counted).startswith(
        "2 of 4 hosts have an anomalous series of cpu (at least 2: at least 2 of role=web"
        " with an anomalous series of cpu)"
    )


def test_an_anomalous_fleet_rule_is_read_and_names_no_rule(tmp_path: Path) -> None:
    text = FLEET_RULES.replace("incidents: {rule: web-5xx}", "anomalous: {metric: cpu}")
    rules = load_rules([write_rules(tmp_path, text)])
    (rule,) = [r for r in rules.rules if r.fleet is not None]
    assert rule.fleet == FleetSpec(30.0, True, (("role", "web"),), "", 60.0, metric="cpu")


def test_the_verdict_opens_on_crossing_and_resolves_below() -> None:
    half = spec(50, True)
    two_of_four = FleetCount(4, ("a", "b"))
    one_of_four = FleetCount(4, ("a",))
    assert verdict(half, two_of_four, is_open=False) is FleetVerdict.OPEN
    assert verdict(half, two_of_four, is_open=True) is FleetVerdict.STAY
    assert verdict(half, one_of_four, is_open=True) is FleetVerdict.RESOLVE
    assert verdict(half, one_of_four, is_open=False) is FleetVerdict.STAY
    assert verdict(half, FleetCount(0, ()), is_open=True) is FleetVerdict.RESOLVE


def test_a_fleet_rule_is_read_through_the_vocabulary(tmp_path: Path) -> None:
    rules = load_rules([write_rules(tmp_path, FLEET_RULES)])
    rule = rules.rule("web-tier")
    assert rule is not None and rule.kind == "fleet" and rule.parts == ()
    assert rule.fleet == FleetSpec(30.0, True, (("role", "web"),), "web-5xx", 60.0)
    counted = load_rules([write_rules(tmp_path, FLEET_RULES.replace("30%", "3"))])
    assert counted.rule("web-tier").fleet.at_least == 3.0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fleet", "message"),
    [
        ("{at_least: 0, incidents: {rule: web-5xx}}", "8:23: at_least must be at least 1 host"),
        ("{at_least: 120%, incidents: {rule: web-5xx}}", "8:23: at_least must be a percentage"),
        ("{at_least: many, incidents: {rule: web-5xx}}", "8:23: at_least must be a count"),
        ("{at_least: 2}", "8:12: fleet needs incidents: {rule: NAME} or anomalous:"),
        ("{at_least: 2, incidents: {rule: web-5xx}, anomalous: {metric: cpu}}",
         "8:54: fleet takes incidents or anomalous, not both"),
        ("{at_least: 2, anomalous: {}}", "8:37: missing required key 'metric'"),
        ("{at_least: 2, anomalous: {metric: cpu, rule: x}}", "8:51: unknown key 'rule'"),
        ("{at_least: 2, incidents: {rule: nope}}", "8:44: fleet rule 'f' counts the incidents"
         " of unknown rule 'nope'"),
        ("{at_least: 2, incidents: {rule: f}}", "8:44: fleet rule 'f' cannot count the"
         " incidents of fleet rule 'f'"),
        ("{at_least: 2, incidents: {rule: web-5xx}, within: 0s}", "8:62: within must be"
         " longer than 0s"),
    ],
)  # fmt: skip
def test_fleet_mistakes_are_reported_where_they_are(
    tmp_path: Path, fleet: str, message: str
) -> None:
    text = FLEET_RULES.split("  - name: web-tier")[0] + f"  - name: f\n    fleet: {fleet}\n"
    path = write_rules(tmp_path, text + "    run: page\n")
    with pytest.raises(ConfigError) as caught:
        load_rules([path])
    assert any(f"{path}:{message}" in str(p) for p in caught.value.problems), caught.value


def test_fleet_cannot_be_combined_with_match(tmp_path: Path) -> None:
    text = FLEET_RULES.replace("    run: page", "    match: {metric: x}\n    run: page")
    path = write_rules(tmp_path, text)
    with pytest.raises(ConfigError, match=r":13:5: match: cannot be combined with fleet:"):
        load_rules([path])


def test_a_fleet_rule_outside_a_central_instance_is_refused_at_load(tmp_path: Path) -> None:
    write_rules(tmp_path, FLEET_RULES)
    config = load_config(write_yaml(tmp_path, f"state_dir: {tmp_path}\nrules: [rules.yaml]\n"))
    with pytest.raises(ConfigError) as caught:
        load_definitions(config)
    (problem,) = caught.value.problems
    assert str(problem).startswith(f"{tmp_path / 'rules.yaml'}:7:11: fleet rule 'web-tier'")
    assert "central instance only" in str(problem)


def test_the_engine_opens_the_fleet_incident_once_and_resolves_it(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, FLEET_RULES)
    two = FleetCount(4, ("web-1", "web-2"))
    (decision,) = engine.fleet_count("web-tier", two, 10.0)
    assert isinstance(decision, Decision)
    assert (decision.key, decision.playbook, decision.severity) == (FLEET_KEY, "page", "critical")
    assert decision.labels == {
        "fleet_rule": "web-5xx", "affected": "2", "matching": "4", "hosts": "web-1,web-2"
    }  # fmt: skip
    assert "2 of 4 hosts have an open incident of web-5xx" in decision.cause
    assert engine.fleet_count("web-tier", FleetCount(4, ("web-1", "web-2", "web-3")), 15.0) == []
    out = engine.fleet_count("web-tier", FleetCount(4, ("web-1",)), 20.0)
    assert [compact(o) for o in out] == [("R", 20.0, "web-tier", FLEET_KEY)]
    assert isinstance(out[0], Resolved)
    assert engine.fleet_count("web-5xx", two, 21.0) == []  # not a fleet rule


def test_the_fleet_decision_goes_through_the_governor(tmp_path: Path) -> None:
    governor = Governor(GENEROUS)
    engine = make_engine(tmp_path, FLEET_RULES, governor)
    governor.set_paused(True)
    (decision,) = engine.fleet_count("web-tier", FleetCount(2, ("a", "b")), 10.0)
    assert isinstance(decision, Decision)
    assert decision.playbook is None and decision.suppressed == Suppression.PAUSED
    assert FLEET_KEY in engine.states["web-tier"].open  # held open: it resolves when below


def test_explain_and_the_rules_view_know_fleet_rules(tmp_path: Path) -> None:
    rules = load_rules([write_rules(tmp_path, FLEET_RULES)])
    rule = rules.rule("web-tier")
    assert rule is not None
    text = explain(rule, rules, GENEROUS)
    assert "fleet rule" in text and "at least 30% of role=web" in text
    assert "resolves: when the count falls below at_least" in text
    (shown,) = [r for r in Engine(rules).describe_rules() if r["name"] == "web-tier"]
    assert (shown["kind"], shown["metric"], shown["when"]) == ("fleet", None, None)


class FakeJournal:
    """The fleet's journal at its boundary: what ``fleet_view`` answers, or its failure."""

    def __init__(self, agents: list[AgentSeen], hosts: set[str]) -> None:
        self.agents, self.hosts = agents, hosts
        self.asked: list[tuple[str, float]] = []
        self.fails = False

    async def fleet_view(self, rule: str, since: float) -> tuple[list[AgentSeen], set[str]]:
        self.asked.append((rule, since))
        if self.fails:
            raise OSError("connection refused")
        return self.agents, self.hosts


class Holder:
    def __init__(self, held: dict[int, int]) -> None:
        self.held = held


async def test_only_the_holder_of_partition_0_counts_and_acts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(tmp_path, FLEET_RULES)
    journal = FakeJournal([web("w1"), web("w2"), web("w3")], {"w1"})
    acted: list[list[Output]] = []

    async def act(outputs: list[Output], now: float) -> None:
        acted.append(outputs)

    holder = Holder({3: 1})
    rules = FleetRules(holder, engine, journal, act, interval=1.0, batch_interval=10.0)
    assert await rules.round(100.0) == 0 and journal.asked == [] and rules.state == "idle"
    holder.held = {0: 4}
    assert await rules.round(100.0) == 1  # 1 of 3 web hosts: 30% of 3 is 1
    assert journal.asked == [("web-5xx", 40.0)]  # within: 1m
    assert [compact(o) for o in acted[0]] == [("D", 100.0, "web-tier", FLEET_KEY, "page")]
    assert await rules.round(101.0) == 0  # still at or above: nothing more
    journal.fails = True
    assert await rules.round(102.0) == 0
    assert "fleet rule web-tier: the journal cannot be read: connection refused" in caplog.text
    journal.fails, journal.hosts = False, set()
    assert await rules.round(103.0) == 1
    assert [compact(o) for o in acted[1]] == [("R", 103.0, "web-tier", FLEET_KEY)]

"""The governor: each suppression reason, circuits, blast radius, adaptive order."""

from __future__ import annotations

from pathlib import Path

import pytest

from batond.config import GovernorConfig, RateLimit
from batond.engine.governor import (
    CIRCUIT_STREAK,
    Governor,
    GovernorSettings,
    Silence,
    target_class,
)
from engine_support import drive, event, make_engine

LABELS = {"host": "web-1", "service": "nginx"}
WIDE = GovernorSettings(max_runs_count=100, per_target_count=100, min_fleet=1000)


def test_settings_come_from_the_daemon_config() -> None:
    config = GovernorConfig(max_runs=RateLimit(5, 60.0), per_target=RateLimit(2, 30.0))
    s = Governor(config).settings
    assert (s.max_runs_count, s.max_runs_per, s.per_target_count, s.per_target_per) == (
        5,
        60.0,
        2,
        30.0,
    )


def test_a_clean_decision_runs() -> None:
    assert Governor(WIDE).check(LABELS, "host=web-1", "fix", 0.0) is None


def test_reasons_in_spec_order() -> None:
    g = Governor(WIDE, shadow=True)
    g.set_paused(True)
    g.set_silences([{"id": 1, "matchers": {"host": "web-1"}, "starts_at": 0, "ends_at": 100}])
    assert g.check(LABELS, "k", "fix", 1.0, in_cooldown=True) == "paused"
    g.set_paused(False)
    assert g.check(LABELS, "k", "fix", 1.0, in_cooldown=True) == "shadow"
    g.shadow = False
    assert g.check(LABELS, "k", "fix", 1.0, in_cooldown=True) == "silenced"
    g.set_silences([])
    assert g.check(LABELS, "k", "fix", 1.0, in_cooldown=True) == "cooldown"


def test_silence_matchers_and_window() -> None:
    s = Silence(7, {"host": "web-1", "service": "nginx"}, 10.0, 20.0, "maintenance")
    assert s.covers(LABELS, 10.0) and s.covers(LABELS, 19.9)
    assert not s.covers(LABELS, 9.9) and not s.covers(LABELS, 20.0)
    assert not s.covers({"host": "web-1"}, 15.0)


def test_already_running_only_for_single_mode_until_the_run_ends() -> None:
    g = Governor(WIDE)
    g.admit("fix", "k", 0.0)
    assert g.check(LABELS, "k", "fix", 1.0) == "already_running"
    assert g.check(LABELS, "k", "fix", 1.0, single=False) is None
    assert g.check(LABELS, "other", "fix", 1.0) is None
    g.record_outcome("r", "fix", "k", "", "resolved", 2.0)
    assert g.check(LABELS, "k", "fix", 3.0) is None


def test_per_target_limit_opens_the_circuit_until_cool_off() -> None:
    g = Governor(GovernorSettings(per_target_count=2, per_target_per=100.0, min_fleet=1000))
    for t in (0.0, 1.0):
        assert g.check(LABELS, "k", "fix", t, single=False) is None
        g.admit("fix", "k", t)
    assert g.check(LABELS, "k", "fix", 2.0, single=False) == "circuit_open"
    assert [c["target"] for c in g.open_circuits()] == ["k"]
    assert g.check(LABELS, "k", "fix", 101.0, single=False) == "circuit_open"
    assert g.check(LABELS, "k", "fix", 102.0, single=False) is None  # cooled off
    assert g.open_circuits() == []


def test_unresolved_streak_opens_the_circuit_and_reset_closes_it() -> None:
    g = Governor(WIDE)
    for i in range(CIRCUIT_STREAK):
        assert g.check(LABELS, "k", "fix", float(i)) is None
        g.admit("fix", "k", float(i))
        g.record_outcome("r", "fix", "k", "web", "unresolved", float(i))
    assert g.check(LABELS, "k", "fix", 10.0) == "circuit_open"
    assert g.reset_circuit("k") is True
    assert g.check(LABELS, "k", "fix", 11.0) is None
    assert g.reset_circuit("k") is False


def test_a_resolved_run_breaks_the_streak() -> None:
    g = Governor(WIDE)
    for outcome in ("failed", "timed_out", "resolved", "unresolved", "failed"):
        g.record_outcome("r", "fix", "k", "", outcome, 0.0)
    assert g.open_circuits() == []


def test_blast_radius_counts_targets_against_hosts_seen() -> None:
    g = Governor(GovernorSettings(max_targets_fraction=0.2, min_fleet=10, max_runs_count=100))
    for i in range(10):
        g.hosts_seen[f"web-{i}"] = 0.0
    g.admit("fix", "host=web-0", 0.0)
    g.admit("fix", "host=web-1", 0.0)  # 2 of 10 hosts: the limit
    assert g.check(LABELS, "host=web-2", "fix", 1.0) == "blast_radius"
    assert g.check(LABELS, "host=web-1", "fix", 1.0, single=False) is None  # not a new target
    assert g.check(LABELS, "host=web-2", "fix", 1.0, fleet=False) is None  # schedules


def test_blast_radius_waits_for_min_fleet() -> None:
    g = Governor(GovernorSettings(max_targets_fraction=0.1, min_fleet=10, max_runs_count=100))
    for i in range(9):
        g.hosts_seen[f"web-{i}"] = 0.0
    g.admit("fix", "host=web-0", 0.0)
    assert g.check(LABELS, "host=web-2", "fix", 1.0) is None


def test_global_rate_limit_slides() -> None:
    g = Governor(GovernorSettings(max_runs_count=2, max_runs_per=60.0, min_fleet=1000))
    g.admit("fix", "a", 0.0)
    g.admit("fix", "b", 10.0)
    assert g.check(LABELS, "c", "fix", 30.0) == "rate_limited"
    assert g.check(LABELS, "c", "fix", 60.0) is None


def test_target_class_strips_the_host_number() -> None:
    assert target_class({"host": "web-017"}) == "web"
    assert target_class({"host": "db01"}) == "db"
    assert target_class({}) == ""


def test_adaptive_order_prefers_what_resolves_and_is_deterministic() -> None:
    def trained(seed: int) -> Governor:
        g = Governor(WIDE, seed=seed)
        for _ in range(20):
            g.record_outcome("r", "restart", "k", "web", "unresolved", 0.0)
            g.record_outcome("r", "failover", "k", "web", "resolved", 0.0)
        return g

    orders = [trained(1).order("r", ("restart", "failover"), "web") for _ in range(2)]
    assert orders[0] == orders[1] == ("failover", "restart")
    # another class has no history: the configured order stands
    assert trained(1).order("r", ("restart", "failover"), "db") == ("restart", "failover")


def test_fixed_order_is_kept_by_the_engine(tmp_path: Path) -> None:
    text = """
    rules:
      - name: down
        match: {event: process.exited}
        run: [fix, alt]
        order: %s
    """
    for order, expected in (("fixed", "fix"), ("adaptive", "alt")):
        engine = make_engine(tmp_path, text % order)
        for _ in range(20):
            engine.record_outcome("down", "fix", "host=h1", "failed", 0.0)
            engine.record_outcome("down", "alt", "host=h1", "resolved", 0.0)
        (decision,) = drive(engine, [event("process.exited", 1)])
        assert decision[4] == expected, order


def test_engine_applies_pause_as_a_reason(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, "rules: [{name: down, match: {event: e}, run: fix}]")
    engine.governor.set_paused(True)
    assert drive(engine, [event("e", 1)]) == [
        ("D", 1.0, "down", "host=h1", "paused"),
        ("R", 1.0, "down", "host=h1"),  # no run starts: an event incident resolves at once
    ]


@pytest.mark.parametrize("outcome", ["cancelled", "denied", "interrupted", "none"])
def test_outcomes_without_evidence_do_not_count(outcome: str) -> None:
    g = Governor(WIDE)
    g.record_outcome("r", "fix", "k", "", outcome, 0.0)
    assert g.resolve_rates("r") == {}


def test_state_round_trip() -> None:
    g = Governor(WIDE)
    g.admit("fix", "k", 5.0)
    for _ in range(CIRCUIT_STREAK):
        g.record_outcome("r", "fix", "k", "web", "failed", 6.0)
    g.hosts_seen["web-1"] = 7.0
    h = Governor(WIDE)
    h.import_state(g.export_state())
    assert h.open_circuits() == g.open_circuits() and h.open_circuits()
    assert h.resolve_rates("r") == g.resolve_rates("r")
    assert h.hosts_seen == {"web-1": 7.0}


def test_open_circuits_close_by_the_latest_clock() -> None:
    g = Governor(GovernorSettings(per_target_per=100.0, min_fleet=1000))
    for _ in range(CIRCUIT_STREAK):
        g.record_outcome("r", "fix", "k", "", "failed", 10.0)
    assert len(g.open_circuits()) == 1
    assert g.check(LABELS, "other", "fix", 111.0) is None  # the clock moves on
    assert g.open_circuits() == []


def test_later_candidates_count_as_running(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, "rules: [{name: down, match: {event: e}, run: [fix, alt]}]")
    engine.run_started("down", "alt", "host=h1", 0.0)
    assert engine.governor.check(LABELS, "host=h1", "alt", 1.0) == "already_running"
    engine.record_outcome("down", "alt", "host=h1", "resolved", 2.0)
    assert engine.governor.check(LABELS, "host=h1", "alt", 3.0) is None

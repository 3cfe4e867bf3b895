"""The governor: each suppression reason, circuits, blast radius, adaptive order."""

from __future__ import annotations

from pathlib import Path

import pytest

from batond.engine import governor as governor_module
from batond.engine.governor import (
    CIRCUIT_STREAK,
    HOSTS_SEEN_S,
    Governor,
    GovernorSettings,
    Silence,
    target_class,
)
from batond.load.config import GovernorConfig, RateLimit
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
    assert Governor(WIDE).check(LABELS, "r", "host=web-1", "fix", 0.0) is None


def test_reasons_in_spec_order() -> None:
    g = Governor(WIDE, shadow=True)
    g.set_paused(True)
    g.set_silences([{"id": 1, "matchers": {"host": "web-1"}, "starts_at": 0, "ends_at": 100}])
    assert g.check(LABELS, "r", "k", "fix", 1.0, in_cooldown=True) == "paused"
    g.set_paused(False)
    assert g.check(LABELS, "r", "k", "fix", 1.0, in_cooldown=True) == "shadow"
    g.shadow = False
    assert g.check(LABELS, "r", "k", "fix", 1.0, in_cooldown=True) == "silenced"
    g.set_silences([])
    assert g.check(LABELS, "r", "k", "fix", 1.0, in_cooldown=True) == "cooldown"


def test_silence_matchers_and_window() -> None:
    s = Silence.of(
        {"id": 7, "matchers": {"host": "web-1", "service": "nginx"}, "starts_at": 10.0,
         "ends_at": 20.0, "reason": "maintenance"}
    )  # fmt: skip
    assert s.covers(LABELS, {}, 10.0) and s.covers(LABELS, {}, 19.9)
    assert not s.covers(LABELS, {}, 9.9) and not s.covers(LABELS, {}, 20.0)
    assert not s.covers({"host": "web-1"}, {}, 15.0)


def test_a_silenced_decision_says_which_silence_for_how_long_and_why() -> None:
    g = Governor(WIDE)
    g.set_silences([
        {"id": 3, "matchers": {"host": "web-2"}, "starts_at": 0, "ends_at": 9000},
        {"id": 4, "matchers": ["host=~web-.*", "severity!=critical"], "starts_at": 0,
         "ends_at": 7200, "reason": "disk replacement"},
    ])  # fmt: skip
    why = g.silenced_by(LABELS, "r", "warning", "fix", 0.5)
    assert why == "silence #4 (host=~web-.*, severity!=critical) for 2h more: disk replacement"
    # the time left in whole minutes, rounded up; a silence without a reason says none
    assert g.silenced_by({"host": "web-2"}, "r", "critical", "fix", 9000 - 61) == (
        "silence #3 (host=web-2) for 2m more"
    )
    g.set_silences([])  # (no silence covers it any longer: the bare reason)
    assert g.silenced_by(LABELS, "r", "warning", "fix", 0.5) == "silenced"


def test_already_running_only_for_single_mode_until_the_run_ends() -> None:
    g = Governor(WIDE)
    g.admit("fix", "r", "k", 0.0)
    assert g.check(LABELS, "r", "k", "fix", 1.0) == "already_running"
    assert g.check(LABELS, "r", "k", "fix", 1.0, single=False) is None
    assert g.check(LABELS, "r", "other", "fix", 1.0) is None
    g.record_outcome("r", "fix", "k", "", "resolved", 2.0)
    assert g.check(LABELS, "r", "k", "fix", 3.0) is None


def test_per_target_limit_opens_the_circuit_until_cool_off() -> None:
    g = Governor(GovernorSettings(per_target_count=2, per_target_per=100.0, min_fleet=1000))
    for t in (0.0, 1.0):
        assert g.check(LABELS, "r", "k", "fix", t, single=False) is None
        g.admit("fix", "r", "k", t)
    assert g.check(LABELS, "r", "k", "fix", 2.0, single=False) == "circuit_open"
    assert [c["target"] for c in g.open_circuits()] == ["k"]
    assert g.check(LABELS, "r", "k", "fix", 101.0, single=False) == "circuit_open"
    assert g.check(LABELS, "r", "k", "fix", 102.0, single=False) is None  # cooled off
    assert g.open_circuits() == []


def test_unresolved_streak_opens_the_circuit_and_reset_closes_it() -> None:
    g = Governor(WIDE)
    for i in range(CIRCUIT_STREAK):
        assert g.check(LABELS, "r", "k", "fix", float(i)) is None
        g.admit("fix", "r", "k", float(i))
        g.record_outcome("r", "fix", "k", "web", "unresolved", float(i))
    assert g.check(LABELS, "r", "k", "fix", 10.0) == "circuit_open"
    assert g.reset_circuit("k") == [("r", "k")]
    assert g.check(LABELS, "r", "k", "fix", 11.0) is None
    assert g.reset_circuit("k") == []


def test_a_resolved_run_breaks_the_streak() -> None:
    g = Governor(WIDE)
    for outcome in ("failed", "timed_out", "resolved", "unresolved", "failed"):
        g.record_outcome("r", "fix", "k", "", outcome, 0.0)
    assert g.open_circuits() == []


def test_blast_radius_counts_targets_against_hosts_seen() -> None:
    g = Governor(GovernorSettings(max_targets_fraction=0.2, min_fleet=10, max_runs_count=100))
    for i in range(10):
        g.hosts_seen[f"web-{i}"] = 0.0
    g.admit("fix", "r", "host=web-0", 0.0)
    g.admit("fix", "r", "host=web-1", 0.0)  # 2 of 10 hosts: the limit
    web2 = {"host": "web-2"}
    assert g.check(web2, "r", "host=web-2", "fix", 1.0) == "blast_radius"
    assert g.check(LABELS, "r", "host=web-1", "fix", 1.0, single=False) is None  # not a new target
    assert g.check(web2, "r", "host=web-2", "fix", 1.0, fleet=False) is None  # schedules


def test_blast_radius_waits_for_min_fleet() -> None:
    g = Governor(GovernorSettings(max_targets_fraction=0.1, min_fleet=10, max_runs_count=100))
    for i in range(9):
        g.hosts_seen[f"web-{i}"] = 0.0
    g.admit("fix", "r", "host=web-0", 0.0)
    assert g.check(LABELS, "r", "host=web-2", "fix", 1.0) is None


def test_global_rate_limit_slides() -> None:
    g = Governor(GovernorSettings(max_runs_count=2, max_runs_per=60.0, min_fleet=1000))
    g.admit("fix", "r", "a", 0.0)
    g.admit("fix", "r", "b", 10.0)
    assert g.check(LABELS, "r", "c", "fix", 30.0) == "rate_limited"
    assert g.check(LABELS, "r", "c", "fix", 60.0) is None


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
    """They feed no streak and no adaptive order; a run that ended counts in the runs of
    the resolve rate (``none``: no run happened)."""
    g = Governor(WIDE)
    for _ in range(CIRCUIT_STREAK):
        g.record_outcome("r", "fix", "k", "", outcome, 0.0)
    assert g.open_circuits() == []
    runs = 0 if outcome == "none" else CIRCUIT_STREAK
    expected = {"fix": {"resolved": 0, "runs": runs, "rate": 0.0}} if runs else {}
    assert g.resolve_rates("r") == expected
    assert g._stats.get(("r", "fix", ""), [0, 0, 0])[1] == 0  # not concluded


def test_state_round_trip() -> None:
    g = Governor(WIDE)
    g.admit("fix", "r", "k", 5.0)
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
    assert g.check(LABELS, "r", "other", "fix", 111.0) is None  # the clock moves on
    assert g.open_circuits() == []


def test_next_change_follows_circuits_and_silences() -> None:
    """The soonest end of a cool-off or a silence, kept as they open, close and restore
    (the engine asks after every input, so it is not recomputed there)."""
    g = Governor(GovernorSettings(per_target_per=100.0, min_fleet=1000))
    assert g.next_change() is None
    for key, at in (("a", 10.0), ("b", 20.0)):
        for _ in range(CIRCUIT_STREAK):
            g.record_outcome("r", "fix", key, "", "failed", at)
    assert g.next_change() == 110.0
    g.set_silences([{"id": 1, "matchers": {"host": "web-1"}, "ends_at": 50.0}])
    assert g.next_change() == 50.0
    g.drop_ended_silences(50.0)
    assert g.silences == () and g.next_change() == 110.0
    assert g.reset_circuit("a") == [("r", "a")]
    assert g.next_change() == 120.0
    h = Governor(GovernorSettings(per_target_per=100.0, min_fleet=1000))
    h.import_state(g.export_state())
    assert h.next_change() == 120.0
    assert g.reset_circuit("b") == [("r", "b")] and g.next_change() is None


def test_later_candidates_count_as_running(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, "rules: [{name: down, match: {event: e}, run: [fix, alt]}]")
    engine.run_started("down", "alt", "host=h1", 0.0)
    assert engine.governor.check(LABELS, "down", "host=h1", "alt", 1.0) == "already_running"
    engine.record_outcome("down", "alt", "host=h1", "resolved", 2.0)
    assert engine.governor.check(LABELS, "down", "host=h1", "alt", 3.0) is None


def test_blast_radius_counts_hosts_not_incident_keys(tmp_path: Path) -> None:
    """Three services of one host are one host acted on, not three (docs/governor.md)."""
    settings = GovernorSettings(max_targets_fraction=0.2, min_fleet=10, max_runs_count=100)
    engine = make_engine(
        tmp_path,
        "rules: [{name: down, match: {event: e}, group_by: [host, svc], run: fix}]",
        Governor(settings),
    )
    for i in range(10):
        engine.governor.hosts_seen[f"web-{i}"] = 0.0
    script = [event("e", 1.0, host="web-1", svc=s) for s in ("nginx", "redis", "cron")]
    script += [event("e", 2.0, host="web-2", svc="nginx")]  # 2 of 10 hosts: still allowed
    script += [event("e", 3.0, host="web-3", svc="nginx")]  # a third host: beyond 20%
    assert [d[-1] for d in drive(engine, script) if d[0] == "D"] == [
        "fix", "fix", "fix", "fix", "blast_radius",
    ]  # fmt: skip


def test_blast_radius_falls_back_to_the_key_without_a_host_label() -> None:
    g = Governor(GovernorSettings(max_targets_fraction=0.2, min_fleet=10, max_runs_count=100))
    for i in range(10):
        g.hosts_seen[f"web-{i}"] = 0.0
    g.admit("fix", "r", "svc=a", 0.0, "svc=a")
    g.admit("fix", "r", "svc=b", 0.0, "svc=b")
    assert g.check({"svc": "a"}, "r", "svc=a", "fix", 1.0, single=False) is None
    assert g.check({"svc": "c"}, "r", "svc=c", "fix", 1.0) == "blast_radius"


def test_hosts_seen_are_pruned_after_the_window_and_capped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(governor_module, "HOSTS_SEEN_MAX", 50)
    g = Governor(WIDE)
    for i in range(40):
        g.note_host(f"old-{i}", 0.0)
    g.note_host("old-0", 10.0)  # seen again: now the most recent of them
    for i in range(30):
        g.note_host(f"new-{i}", 100.0)
    # over the cap: the least recently seen go first, one seen again survives
    assert len(g.hosts_seen) == 50
    assert "old-0" in g.hosts_seen and "old-1" not in g.hosts_seen
    g.prune(100.0 + HOSTS_SEEN_S - 1)
    assert len(g.hosts_seen) == 30  # the old ones (seen at 0 and 10) are past the hour
    assert g.export_state()["hosts_seen"].keys() == {f"new-{i}" for i in range(30)}


def test_stale_hosts_are_not_exported() -> None:
    g = Governor(WIDE)
    g.note_host("gone", 0.0)
    g.note_host("here", HOSTS_SEEN_S + 5.0)
    g.check(LABELS, "r", "k", "fix", HOSTS_SEEN_S + 5.0)  # the clock
    assert g.export_state()["hosts_seen"] == {"here": HOSTS_SEEN_S + 5.0}


def test_fake_hosts_beyond_the_cap_cannot_dilute_the_blast_radius(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(governor_module, "HOSTS_SEEN_MAX", 100)
    g = Governor(GovernorSettings(max_targets_fraction=0.2, min_fleet=10, max_runs_count=1000))
    for i in range(10_000):
        g.note_host(f"fake-{i}", float(i) / 1000)
    assert len(g.hosts_seen) == 100  # 20 hosts acted on at most, not 2,000
    for i in range(20):
        g.admit("fix", "r", f"host=web-{i}", 11.0)
    assert g.check({"host": "web-99"}, "r", "host=web-99", "fix", 11.0) == "blast_radius"


def test_prune_forgets_empty_windows_closed_circuits_and_old_streaks() -> None:
    g = Governor(GovernorSettings(per_target_per=100.0, max_runs_per=100.0, min_fleet=1000))
    for i in range(1000):
        g.admit("fix", "r", f"host=h{i}", 0.0)
        g.run_ended("fix", f"host=h{i}")
        g.record_outcome("r", "fix", f"host=h{i}", "", "failed", 0.0)  # a streak of 1
    for _ in range(CIRCUIT_STREAK):
        g.record_outcome("r", "fix", "host=h0", "", "failed", 0.0)
    assert g.take_escalation("r", "host=h0")
    g.prune(50.0)
    assert len(g.export_state()["scopes"]["streaks"]) == 1000  # too early: all kept
    g.prune(200.0)
    state = g.export_state()
    scopes = state["scopes"]
    assert scopes["target_runs"] == [] and state["acted"] == {}
    assert scopes["circuits"] == [] and scopes["streaks"] == [] and scopes["escalated"] == []
    assert g._target_runs == {} and g._streak_at == {} and g._escalated == {}


def test_an_open_circuit_escalates_once_per_opening() -> None:
    g = Governor(GovernorSettings(per_target_per=100.0, min_fleet=1000))
    assert not g.take_escalation("r", "k")  # no circuit
    for _ in range(CIRCUIT_STREAK):
        g.record_outcome("r", "fix", "k", "", "failed", 0.0)
    assert g.check(LABELS, "r", "k", "fix", 1.0) == "circuit_open"
    assert g.take_escalation("r", "k")
    assert g.check(LABELS, "r", "k", "fix", 2.0) == "circuit_open"
    assert not g.take_escalation("r", "k")  # the same opening: no second page
    h = Governor(GovernorSettings(per_target_per=100.0, min_fleet=1000))
    h.import_state(g.export_state())  # nor after a restart
    assert not h.take_escalation("r", "k")
    assert g.reset_circuit("k")
    for _ in range(CIRCUIT_STREAK):
        g.record_outcome("r", "fix", "k", "", "failed", 3.0)
    assert g.take_escalation("r", "k")  # a new opening pages again


def test_schedule_runs_are_outside_the_blast_radius(tmp_path: Path) -> None:
    settings = GovernorSettings(max_targets_fraction=0.2, min_fleet=10, max_runs_count=100)
    g = Governor(settings)
    for i in range(10):
        g.hosts_seen[f"web-{i}"] = 0.0
    g.admit("backup", "nightly", "schedule=nightly", 0.0, "")
    g.admit("backup", "weekly", "schedule=weekly", 0.0, "")
    assert g.check({"host": "web-1"}, "r", "host=web-1", "fix", 1.0) is None


def _streak_circuit(g: Governor, key: str, at: float) -> None:
    for _ in range(CIRCUIT_STREAK):
        g.record_outcome("r", "fix", key, "", "failed", at)


def test_scopes_of_some_keys_round_trip_into_another_governor() -> None:
    """A partition's checkpoint carries its keys' circuits, budgets and streaks only."""
    g = Governor(GovernorSettings(per_target_per=100.0, min_fleet=1000))
    _streak_circuit(g, "mine", 10.0)
    _streak_circuit(g, "theirs", 5.0)
    g.admit("fix", "r", "mine", 11.0)
    g.record_outcome("r", "fix", "mine-too", "", "failed", 12.0)
    assert g.take_escalation("r", "mine")
    part = g.export_scopes(lambda key: key.startswith("mine"))
    assert [c[1] for c in part["circuits"]] == ["mine"]
    h = Governor(GovernorSettings(per_target_per=100.0, min_fleet=1000))
    h.merge_scopes(part)
    assert [c["target"] for c in h.open_circuits(20.0)] == ["mine"]
    assert h.next_change() == 110.0
    assert h.check(LABELS, "r", "mine", "fix", 20.0) == "circuit_open"
    assert not h.take_escalation("r", "mine")  # escalated once already, on the old owner
    assert h.export_scopes(lambda key: True) == part
    g.drop_scopes(lambda key: key.startswith("mine"))
    assert [c["target"] for c in g.open_circuits(20.0)] == ["theirs"]
    assert g.export_scopes(lambda key: key.startswith("mine"))["streaks"] == []
    assert g.next_change() == 105.0


def test_merging_scopes_keeps_the_others_and_the_later_state() -> None:
    settings = GovernorSettings(per_target_per=100.0, min_fleet=1000)
    old, new = Governor(settings), Governor(settings)
    _streak_circuit(new, "other", 50.0)
    _streak_circuit(new, "shared", 30.0)
    _streak_circuit(old, "shared", 20.0)  # an older opening of the same scope
    _streak_circuit(old, "moved", 1.0)  # the soonest close: 101
    old.admit("fix", "r", "moved", 2.0)
    new.admit("fix", "r", "moved", 3.0)
    assert new.next_change() == 130.0
    new.merge_scopes(old.export_scopes(lambda key: True))
    circuits = {c["target"]: c for c in new.open_circuits(40.0)}
    assert sorted(circuits) == ["moved", "other", "shared"]
    assert new.export_scopes(lambda key: key == "shared")["circuits"][0][2] == 30.0
    assert new.export_scopes(lambda key: key == "moved")["target_runs"] == [
        ["r", "moved", [2.0, 3.0]]
    ]
    assert new.next_change() == 101.0  # the merged circuit's close, not the cached 130
    new.expire_circuits(101.0)
    assert new.next_change() == 130.0

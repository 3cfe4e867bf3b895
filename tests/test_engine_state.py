"""Rule state across a hot reload and a restart (export_state / import_state)."""

from __future__ import annotations

import json
from pathlib import Path

from batond.engine.engine import Engine
from batond.engine.governor import Governor
from batond.engine.partial import drop_keys, merge_keys, take_keys
from batond.load.rulefiles import load_rules
from engine_support import GENEROUS, drive, event, make_engine, sample, write_rules

RULES = """
rules:
  - name: hot
    match: {metric: temp}
    when: value > 90
    for: 30s
    cooldown: 1h
    run: fix
  - name: burst
    match: {event: log.error}
    count: {at_least: 2, within: 60s}
    run: fix
  - name: heartbeat
    match: {metric: beat}
    absent: 100s
    run: fix
"""


def _reload(engine: Engine, tmp_path: Path, text: str) -> None:
    engine.replace_rules(load_rules([write_rules(tmp_path, text, "new.yaml")]))


def test_pending_for_timer_survives_reload_of_unchanged_rule(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, RULES)
    drive(engine, [sample("temp", 95, 10)])
    _reload(engine, tmp_path, RULES + "  - {name: extra, match: {event: x}, run: fix}\n")
    assert drive(engine, [("tick", 40)]) == [("D", 40.0, "hot", "host=h1", "fix")]


def test_changed_rule_starts_afresh(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, RULES)
    drive(engine, [sample("temp", 95, 10)])
    _reload(engine, tmp_path, RULES.replace("for: 30s", "for: 20s"))
    assert drive(engine, [("tick", 40)]) == []
    assert drive(engine, [sample("temp", 95, 50), ("tick", 70)]) == [
        ("D", 70.0, "hot", "host=h1", "fix")
    ]


def test_removed_rule_timers_are_dropped(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, RULES)
    drive(engine, [sample("temp", 95, 10)])
    _reload(engine, tmp_path, "rules: []\n")
    assert drive(engine, [("tick", 100)]) == []
    assert engine.describe_rules() == []


def _busy_engine(tmp_path: Path) -> Engine:
    engine = make_engine(tmp_path, RULES)
    drive(
        engine,
        [
            sample("temp", 95, 0),
            ("tick", 30),  # hot fires: open incident + cooldown
            ("outcome", "hot", "fix", "host=h1", "unresolved", 30),
            sample("temp", 50, 31),
            sample("temp", 95, 40),  # pending for: again
            event("log.error", 41),
            event("log.error", 42),  # burst open, window [41, 42]
            ("outcome", "burst", "fix", "host=h1", "unresolved", 42),
            sample("beat", 1, 45),  # absent timer due at 145
        ],
    )
    return engine


def test_export_import_round_trip_restores_every_timer(tmp_path: Path) -> None:
    before = _busy_engine(tmp_path)
    state = json.loads(json.dumps(before.export_state()))  # what the journal stores
    after = Engine(load_rules([tmp_path / "rules.yaml"]), Governor(GENEROUS))
    after.import_state(state)
    assert after.open_incident_count() == before.open_incident_count() == 1
    expected = [
        ("D", 70.0, "hot", "host=h1", "cooldown"),
        ("R", 101.0, "burst", "host=h1"),
        ("D", 145.0, "heartbeat", "host=h1", "fix"),
    ]
    assert drive(before, [("tick", 200)]) == expected
    assert drive(after, [("tick", 200)]) == expected


def test_import_ignores_state_of_changed_rules(tmp_path: Path) -> None:
    state = _busy_engine(tmp_path).export_state()
    changed = RULES.replace("at_least: 2", "at_least: 3")
    engine = Engine(load_rules([write_rules(tmp_path, changed, "b.yaml")]), Governor(GENEROUS))
    engine.import_state(state)
    assert drive(engine, [("tick", 200)]) == [
        ("D", 70.0, "hot", "host=h1", "cooldown"),
        ("D", 145.0, "heartbeat", "host=h1", "fix"),
    ]


def test_import_of_another_version_is_ignored(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, RULES)
    engine.import_state({"version": 999, "rules": {"hot": {"open": {"host=h1": 1}}}})
    assert engine.open_incident_count() == 0


def test_describe_rules_reports_fires_and_resolve_rates(tmp_path: Path) -> None:
    engine = _busy_engine(tmp_path)
    engine.record_outcome("hot", "fix", "host=h1", "resolved", 50)
    hot = next(r for r in engine.describe_rules() if r["name"] == "hot")
    assert hot["fires"] == 1 and hot["last_fire"] == 30.0
    assert hot["resolve_rates"] == {"fix": {"resolved": 1, "runs": 2, "rate": 0.5}}
    assert engine.resolves_by_run("burst") is False


# -- a part of the state: one partition's keys (engine.partial, the fleet's checkpoints) --
def _h1(key: str) -> bool:
    return key == "host=h1"


def test_a_part_taken_from_one_engine_resumes_its_timers_in_another(tmp_path: Path) -> None:
    old_owner = make_engine(tmp_path, RULES)
    drive(old_owner, [sample("temp", 95, 10), sample("temp", 95, 12, host="h2")])
    part = json.loads(json.dumps(take_keys(old_owner.export_state(), _h1)))
    assert list(part["rules"]) == ["hot"]  # only rules with keys of the part
    assert list(part["rules"]["hot"]["pending"]) == ["host=h1"]

    new_owner = make_engine(tmp_path, RULES)
    drive(new_owner, [sample("temp", 95, 20, host="h3")])  # its own pending timer
    merged = merge_keys(new_owner.export_state(), part)
    new_owner.import_rule_states(merged, only=tuple(part["rules"]))
    # h1's timer fires at its time (10 + 30), h3's own is kept; h2 stayed with the old owner
    assert drive(new_owner, [("tick", 60)]) == [
        ("D", 40.0, "hot", "host=h1", "fix"),
        ("D", 50.0, "hot", "host=h3", "fix"),
    ]

    names = tuple(take_keys(old_owner.export_state(), _h1)["rules"])
    old_owner.import_rule_states(drop_keys(old_owner.export_state(), _h1), only=names)
    assert drive(old_owner, [("tick", 60)]) == [("D", 42.0, "hot", "host=h2", "fix")]


def test_a_part_of_a_changed_rule_or_version_is_not_merged(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, RULES)
    drive(engine, [sample("temp", 95, 10)])
    part = take_keys(engine.export_state(), _h1)
    part["rules"]["hot"]["fingerprint"] = "another"
    fresh = make_engine(tmp_path, RULES)
    state = fresh.export_state()
    assert merge_keys(state, part) == state
    assert merge_keys(state, {**part, "version": -1}) == state

"""Loading rule files into a RuleSet: what is read, how rules are typed, fingerprints."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from batond.engine.cron import parse_cron
from batond.engine.model import Match
from batond.errors import ConfigError
from batond.load.rulefiles import load_rules
from engine_support import PLAYBOOKS

REPO = Path(__file__).resolve().parent.parent


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_rules_may_use_playbooks_of_any_file(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "rules:\n  - {name: r, match: {event: e}, run: fix}\n")
    _write(tmp_path / "b.yaml", PLAYBOOKS)
    rules = load_rules([tmp_path])
    assert rules.rule_count == 1 and set(rules.playbooks) == {"fix", "alt", "page"}
    assert rules.rule("r") is not None and rules.rule("nope") is None


def test_a_directory_means_its_own_yaml_files_only(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", PLAYBOOKS)
    (tmp_path / "examples").mkdir()
    _write(tmp_path / "examples" / "x.yaml", "rules: [broken")
    _write(tmp_path / "README.md", "# not read")
    assert load_rules([tmp_path]).rule_count == 0


def test_an_empty_file_is_fine(tmp_path: Path) -> None:
    assert load_rules([_write(tmp_path / "e.yaml", "")]).rule_count == 0


def test_missing_paths_can_be_allowed_for_the_defaults(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file or directory"):
        load_rules([tmp_path / "nope"])
    assert load_rules([tmp_path / "nope"], missing_ok=True).rule_count == 0


@pytest.mark.parametrize(
    ("body", "kind", "by_run"),
    [
        ("match: {metric: m}\n    when: value > 1", "level", False),
        ("match: {metric: m}\n    for: 1m", "level", False),
        ("match: {metric: m}", "edge", True),
        ("match: {event: e}\n    when: event.x == 1", "edge", True),
        ("match: {event: e}\n    resolve: {match: {event: f}}", "edge", False),
        ("match: {event: e}\n    count: {at_least: 2, within: 1m}", "count", False),
        ("match: {metric: m}\n    absent: 1h", "absent", False),
        ("all: [{match: {event: e}}, {match: {metric: m}}]\n    within: 1m", "all", True),
    ],
)
def test_rule_kinds(tmp_path: Path, body: str, kind: str, by_run: bool) -> None:
    text = f"rules:\n  - name: r\n    {body}\n    run: fix\n{PLAYBOOKS}"
    (rule,) = load_rules([_write(tmp_path / "r.yaml", text)]).rules
    assert (rule.kind, rule.resolves_by_run) == (kind, by_run)


def test_rule_fields(tmp_path: Path) -> None:
    text = """
rules:
  - name: disk
    description: Root filesystem full
    match: {metric: disk_used_percent, mount: /, port: 8080}
    when: value > 90
    for: 5m
    group_by: [host, mount]
    cooldown: 30m
    severity: critical
    run: [fix, alt]
    order: fixed
    params: {path: /var/tmp, keep: 3}
schedules:
  - {name: nightly, cron: "0 2 * * *", run: page, params: {db: main}}
"""
    rules = load_rules([_write(tmp_path / "r.yaml", text + PLAYBOOKS)])
    (rule,) = rules.rules
    assert rule.match == Match("metric", "disk_used_percent", (("mount", "/"), ("port", "8080")))
    assert (rule.for_s, rule.cooldown, rule.severity, rule.order) == (
        300.0,
        1800.0,
        "critical",
        "fixed",
    )
    assert rule.group_by == ("host", "mount") and rule.run == ("fix", "alt")
    assert dict(rule.params) == {"path": "/var/tmp", "keep": 3}
    assert rule.mark.line == 3 and rule.mark.col == 11
    (schedule,) = rules.schedules
    assert schedule.cron == parse_cron("0 2 * * *") and schedule.run == ("page",)
    assert schedule.key == "schedule=nightly"


def test_fingerprint_follows_the_definition_not_its_place(tmp_path: Path) -> None:
    one = "rules:\n  - {name: r, match: {event: e}, run: fix}\n" + PLAYBOOKS
    moved = "\n\n# moved\nrules:\n  - {run: fix, name: r, match: {event: e}}\n" + PLAYBOOKS
    changed = "rules:\n  - {name: r, match: {event: e}, run: alt}\n" + PLAYBOOKS
    prints = [
        load_rules([_write(tmp_path / f"{i}.yaml", t)]).rules[0].fingerprint
        for i, t in enumerate((one, moved, changed))
    ]
    assert prints[0] == prints[1] != prints[2]


def test_all_problems_together(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", "rules:\n  - {name: r, match: {event: e}, run: x}\n")
    _write(tmp_path / "b.yaml", "rules:\n  - {name: s, match: {event: e}, when: '1 +', run: y}\n")
    with pytest.raises(ConfigError) as info:
        load_rules([tmp_path])
    assert len(info.value.problems) == 3


def test_the_shipped_default_set_loads() -> None:
    rules = load_rules([REPO / "rules"])
    names = {r.name for r in rules.rules}
    assert {"disk-almost-full", "memory-pressure", "demo-worker-down"} <= names
    for rule in rules.rules:
        assert all(p in rules.playbooks for p in rule.run)


def test_cron_next_times() -> None:
    cron = parse_cron("*/15 9-17 * * mon-fri")
    from datetime import datetime

    thursday = datetime(2026, 1, 1, 17, 50, tzinfo=UTC).timestamp()
    nxt = cron.next_after(thursday, UTC)
    assert nxt is not None
    assert datetime.fromtimestamp(nxt, UTC) == datetime(2026, 1, 2, 9, 0, tzinfo=UTC)
    friday_evening = datetime(2026, 1, 2, 17, 46, tzinfo=UTC).timestamp()
    monday = cron.next_after(friday_evening, UTC)
    assert monday is not None
    assert datetime.fromtimestamp(monday, UTC) == datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    assert parse_cron("0 0 30 2 *").next_after(thursday, UTC) is None
    # both day fields restricted: either one is due (cron's rule)
    either = parse_cron("0 0 13 * fri").next_after(thursday, UTC)
    assert either is not None
    assert datetime.fromtimestamp(either, UTC).day == 2  # Friday the 2nd comes before the 13th

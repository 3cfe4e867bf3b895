"""Incident semantics of docs/rules.md, table-driven: a rule file, an input story, the outputs.

The engine is pure, so time is the inputs' ``ts`` and explicit ticks: no sleeping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine_support import drive, event, make_engine, sample

LEVEL = """
rules:
  - name: hot
    match: {metric: temp}
    when: value > 90
    run: fix
"""

LEVEL_FOR = """
rules:
  - name: hot
    match: {metric: temp}
    when: value > 90
    for: 30s
    run: fix
"""

EDGE = """
rules:
  - name: down
    match: {event: process.exited, name: nginx}
    run: fix
"""

CASES: list[tuple[str, str, list[Any], list[tuple[Any, ...]]]] = [
    (
        "level fires once, resolves on a false sample, fires again",
        LEVEL,
        [
            sample("temp", 95, 1),
            sample("temp", 97, 2),
            ("outcome", "hot", "fix", "host=h1", "unresolved", 2.5),
            sample("temp", 50, 3),
            sample("temp", 99, 4),
        ],
        [
            ("D", 1.0, "hot", "host=h1", "fix"),
            ("R", 3.0, "hot", "host=h1"),
            ("D", 4.0, "hot", "host=h1", "fix"),
        ],
    ),
    (
        "a sample that does not pass match touches nothing",
        LEVEL,
        [sample("temp", 95, 1), sample("other", 10, 2), {"event": "temp", "ts": 3, "host": "h1"}],
        [("D", 1.0, "hot", "host=h1", "fix")],
    ),
    (
        "groups are independent",
        LEVEL,
        [
            sample("temp", 95, 1),
            sample("temp", 95, 2, host="h2"),
            sample("temp", 10, 3, host="h2"),
        ],
        [
            ("D", 1.0, "hot", "host=h1", "fix"),
            ("D", 2.0, "hot", "host=h2", "fix"),
            ("R", 3.0, "hot", "host=h2"),
        ],
    ),
    (
        "for: fires at first-true + for without a further sample",
        LEVEL_FOR,
        [sample("temp", 95, 10), sample("temp", 96, 20), ("tick", 39.9), ("tick", 45)],
        [("D", 40.0, "hot", "host=h1", "fix")],
    ),
    (
        "for: a false sample resets the timer",
        LEVEL_FOR,
        [sample("temp", 95, 10), sample("temp", 50, 20), sample("temp", 95, 25), ("tick", 45)],
        [],
    ),
    (
        "for: the timer restarts at the next true sample",
        LEVEL_FOR,
        [sample("temp", 95, 10), sample("temp", 50, 20), sample("temp", 95, 25), ("tick", 60)],
        [("D", 55.0, "hot", "host=h1", "fix")],
    ),
    (
        "for: an input after the deadline sees the decision first",
        LEVEL_FOR,
        [sample("temp", 95, 10), sample("temp", 50, 100)],
        [("D", 40.0, "hot", "host=h1", "fix"), ("R", 100.0, "hot", "host=h1")],
    ),
    (
        "group_by of two labels, written in group_by order",
        """
        rules:
          - name: disk
            match: {metric: disk}
            when: value > 90
            group_by: [mount, host]
            run: fix
        """,
        [sample("disk", 95, 1, mount="/"), sample("disk", 95, 2, mount="/var")],
        [
            ("D", 1.0, "disk", "mount=/,host=h1", "fix"),
            ("D", 2.0, "disk", "mount=/var,host=h1", "fix"),
        ],
    ),
    (
        "match labels are equalities; a missing label is the empty string",
        """
        rules:
          - name: root
            match: {metric: disk, mount: /}
            when: value > 90
            group_by: [host, mount]
            run: fix
          - name: unlabelled
            match: {metric: disk, mount: ""}
            when: value > 90
            run: fix
        """,
        [
            sample("disk", 95, 1, mount="/var"),
            sample("disk", 95, 2, mount="/"),
            sample("disk", 95, 3),
        ],
        [("D", 2.0, "root", "host=h1,mount=/", "fix"), ("D", 3.0, "unlabelled", "host=h1", "fix")],
    ),
    (
        "an event rule stays open while its run is active (inputs recorded"
        " already_running), resolves when it resolved",
        EDGE,
        [
            event("process.exited", 1, name="nginx"),
            event("process.exited", 2, name="nginx"),
            ("outcome", "down", "fix", "host=h1", "resolved", 3),
            event("process.exited", 4, name="nginx"),
            event("process.exited", 5, name="haproxy"),
        ],
        [
            ("D", 1.0, "down", "host=h1", "fix"),
            ("D", 2.0, "down", "host=h1", "already_running"),
            ("R", 3.0, "down", "host=h1"),
            ("D", 4.0, "down", "host=h1", "fix"),
        ],
    ),
    (
        "an unresolved run leaves an event incident open: the next event decides it again",
        EDGE,
        [
            event("process.exited", 1, name="nginx"),
            ("outcome", "down", "fix", "host=h1", "unresolved", 2),
            event("process.exited", 3, name="nginx"),
        ],
        [("D", 1.0, "down", "host=h1", "fix"), ("D", 3.0, "down", "host=h1", "fix")],
    ),
    (
        "explicit resolve: input",
        """
        rules:
          - name: down
            match: {event: process.exited, name: nginx}
            resolve: {match: {event: process.started, name: nginx}}
            run: fix
        """,
        [
            event("process.exited", 1, name="nginx"),
            ("outcome", "down", "fix", "host=h1", "succeeded", 2),
            event("process.exited", 3, name="nginx"),  # still down, no run: decided again
            event("process.started", 4, name="nginx"),
            ("outcome", "down", "fix", "host=h1", "resolved", 4),
            event("process.exited", 5, name="nginx"),
        ],
        [
            ("D", 1.0, "down", "host=h1", "fix"),
            ("D", 3.0, "down", "host=h1", "fix"),
            ("R", 4.0, "down", "host=h1"),
            ("D", 5.0, "down", "host=h1", "fix"),
        ],
    ),
    (
        "resolve: with when on a level rule; false samples no longer resolve",
        """
        rules:
          - name: hot
            match: {metric: temp}
            when: value > 90
            resolve: {match: {metric: temp}, when: value < 50}
            run: fix
        """,
        [sample("temp", 95, 1), sample("temp", 70, 2), sample("temp", 40, 3)],
        [("D", 1.0, "hot", "host=h1", "fix"), ("R", 3.0, "hot", "host=h1")],
    ),
    (
        "count: fires at the at_least-th passing input, resolves when the window falls below",
        """
        rules:
          - name: burst
            match: {event: log.error}
            count: {at_least: 3, within: 60s}
            run: fix
        """,
        [
            event("log.error", 0),
            event("log.error", 10),
            event("log.error", 20),
            event("log.error", 30),
            ("tick", 69),
            ("tick", 75),
        ],
        [("D", 20.0, "burst", "host=h1", "fix"), ("R", 70.0, "burst", "host=h1")],
    ),
    (
        "count: only inputs that pass when: count; old ones slide out",
        """
        rules:
          - name: burst
            match: {event: log.error}
            when: event.level == "error"
            count: {at_least: 2, within: 10s}
            run: fix
        """,
        [
            event("log.error", 0, level="error"),
            event("log.error", 1, level="debug"),
            event("log.error", 11, level="error"),
            event("log.error", 12, level="error"),
        ],
        [("D", 12.0, "burst", "host=h1", "fix")],
    ),
    (
        "absent: fires for a group seen before, at last-seen + absent; resolves at the next input",
        """
        rules:
          - name: heartbeat
            match: {metric: backup_heartbeat}
            absent: 100s
            run: fix
        """,
        [
            sample("backup_heartbeat", 1, 0),
            sample("backup_heartbeat", 1, 50),
            ("tick", 149),
            ("tick", 500),
            sample("backup_heartbeat", 1, 600),
        ],
        [("D", 150.0, "heartbeat", "host=h1", "fix"), ("R", 600.0, "heartbeat", "host=h1")],
    ),
    (
        "absent: never fires for a group never seen",
        """
        rules:
          - name: heartbeat
            match: {metric: backup_heartbeat, host: other}
            absent: 100s
            run: fix
        """,
        [sample("backup_heartbeat", 1, 0), ("tick", 1000)],
        [],
    ),
    (
        "all + within: every part for the same key within the window (not too old, same key)",
        """
        rules:
          - name: failover
            all:
              - {match: {event: alert, alertname: HostDown, status: firing}}
              - {match: {metric: http_errors_percent}, when: value > 20}
            within: 2m
            run: [fix, page]
            order: fixed
        """,
        [
            event("alert", 0, alertname="HostDown", status="firing"),
            sample("http_errors_percent", 30, 200),
            event("alert", 300, alertname="HostDown", status="firing"),
            sample("http_errors_percent", 30, 301, host="h2"),
            sample("http_errors_percent", 30, 350),
        ],
        [("D", 300.0, "failover", "host=h1", "fix")],
    ),
    (
        "all: a false sample withdraws its part",
        """
        rules:
          - name: failover
            all:
              - {match: {event: alert, alertname: HostDown}}
              - {match: {metric: http_errors_percent}, when: value > 20}
            within: 2m
            run: fix
        """,
        [
            sample("http_errors_percent", 30, 0),
            sample("http_errors_percent", 5, 10),
            event("alert", 20, alertname="HostDown"),
        ],
        [],
    ),
    (
        "cooldown: a firing within it still opens the incident, suppressed",
        """
        rules:
          - name: hot
            match: {metric: temp}
            when: value > 90
            cooldown: 100s
            run: fix
        """,
        [
            sample("temp", 95, 0),
            ("outcome", "hot", "fix", "host=h1", "resolved", 5),
            sample("temp", 10, 10),
            sample("temp", 95, 20),
            sample("temp", 96, 30),
            sample("temp", 10, 40),
            sample("temp", 95, 150),
        ],
        [
            ("D", 0.0, "hot", "host=h1", "fix"),
            ("R", 10.0, "hot", "host=h1"),
            ("D", 20.0, "hot", "host=h1", "cooldown"),
            ("R", 40.0, "hot", "host=h1"),
            ("D", 150.0, "hot", "host=h1", "fix"),
        ],
    ),
    (
        "cooldown counts from the decision that started a run, not a suppressed one",
        """
        rules:
          - name: down
            match: {event: process.exited}
            cooldown: 100s
            run: fix
        """,
        [
            event("process.exited", 0),
            ("outcome", "down", "fix", "host=h1", "resolved", 1),
            event("process.exited", 90),
            event("process.exited", 101),
        ],
        [
            ("D", 0.0, "down", "host=h1", "fix"),
            ("R", 1.0, "down", "host=h1"),
            ("D", 90.0, "down", "host=h1", "cooldown"),
            ("R", 90.0, "down", "host=h1"),
            ("D", 101.0, "down", "host=h1", "fix"),
        ],
    ),
    (
        "many rules may match one input; each decides on its own",
        """
        rules:
          - {name: warm, match: {metric: temp}, when: value > 50, run: fix}
          - {name: hot, match: {metric: temp}, when: value > 90, run: alt}
        """,
        [sample("temp", 95, 1)],
        [("D", 1.0, "warm", "host=h1", "fix"), ("D", 1.0, "hot", "host=h1", "alt")],
    ),
    (
        "labels as bare names and regular expressions in when:",
        """
        rules:
          - name: oom
            match: {event: log.line}
            when: matches(event.msg, "Out of memory") and unit != ""
            group_by: [host, unit]
            run: fix
        """,
        [
            event("log.line", 1, msg="all fine", unit="a"),
            event("log.line", 2, msg="Out of memory: killed", unit=""),
            event("log.line", 3, msg="Out of memory: killed", unit="db"),
        ],
        [("D", 3.0, "oom", "host=h1,unit=db", "fix")],
    ),
]


@pytest.mark.parametrize(
    ("rules", "script", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_incident_semantics(
    tmp_path: Path, rules: str, script: list[Any], expected: list[tuple[Any, ...]]
) -> None:
    engine = make_engine(tmp_path, rules)
    assert drive(engine, script) == expected


def test_anomaly_score_is_the_name_anomaly(tmp_path: Path) -> None:
    from batond.events import item_from_json

    engine = make_engine(
        tmp_path,
        """
        rules:
          - {name: odd, match: {metric: cpu}, when: anomaly > 0.99, run: fix}
        """,
    )
    item = item_from_json(sample("cpu", 10, 1), 1, "test")
    assert engine.evaluate(item, 1, 0.5) == []
    (decision,) = engine.evaluate(item, 2, 0.995)
    assert decision.rule == "odd"


def test_failing_expression_counts_as_false_and_is_reported(tmp_path: Path) -> None:
    engine = make_engine(
        tmp_path,
        """
        rules:
          - {name: bad, match: {event: e}, when: event.code > 3, run: fix}
        """,
    )
    assert drive(engine, [event("e", 1), event("e", 2, code=5)]) == [
        ("D", 2.0, "bad", "host=h1", "fix")
    ]
    errors = engine.take_errors()
    assert len(errors) == 1 and errors[0][0] == "bad" and "TypeError" in errors[0][1]
    assert engine.take_errors() == []
    assert engine.describe_rules()[0]["eval_errors"] == 1


def test_schedule_fires_on_cron_without_incident(tmp_path: Path) -> None:
    engine = make_engine(
        tmp_path,
        """
        schedules:
          - {name: every-minute, cron: "* * * * *", run: fix}
        """,
    )
    base = 1_767_225_600.0  # a whole minute
    assert engine.tick(base + 1) == []  # learns the clock
    assert engine.next_deadline() == base + 60
    (decision,) = engine.tick(base + 60)
    assert (decision.ts, decision.rule, decision.key, decision.playbook) == (
        base + 60,
        "every-minute",
        "schedule=every-minute",
        "fix",
    )
    assert decision.opens_incident is False
    assert engine.next_deadline() == base + 120
    assert engine.open_incident_count() == 0


def test_next_deadline_follows_for_timers(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, LEVEL_FOR)
    assert engine.next_deadline() is None
    drive(engine, [sample("temp", 95, 10)])
    assert engine.next_deadline() == 40.0
    drive(engine, [("tick", 40)])
    assert engine.next_deadline() is None


def test_decision_carries_rule_settings(tmp_path: Path) -> None:
    engine = make_engine(
        tmp_path,
        """
        rules:
          - name: hot
            match: {metric: temp}
            when: value > 90
            severity: critical
            params: {unit: nginx.service, n: 3}
            run: [fix, alt]
        """,
    )
    from batond.events import item_from_json

    (d,) = engine.evaluate(item_from_json(sample("temp", 95, 1, role="web"), 1, "t"), 1)
    assert d.severity == "critical"
    assert dict(d.params) == {"unit": "nginx.service", "n": 3}
    assert d.candidates == ("fix", "alt") and d.playbook == "fix"
    assert d.labels["role"] == "web" and d.target == d.key == "host=h1"
    assert d.item is not None and d.opens_incident


def test_due_timers_fire_before_an_input_even_without_tick(tmp_path: Path) -> None:
    from batond.events import item_from_json

    engine = make_engine(tmp_path, LEVEL_FOR)
    assert engine.evaluate(item_from_json(sample("temp", 95, 10), 10, "t"), 10) == []
    out = engine.evaluate(item_from_json(sample("other", 1, 50), 50, "t"), 50)
    assert [(o.ts, o.rule) for o in out] == [(40.0, "hot")]

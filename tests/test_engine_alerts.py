"""Alert rules (``match: {event: alert, ...}``): Alertmanager's firing state in the engine.

``for:`` counts from the alert's ``startsAt``; repeat notifications change
nothing; without ``resolve:`` the ``resolved`` notification with the same
fingerprint resolves; ``group_by`` may use ``alertname`` and any alert label.
Time is the inputs' ``ts`` and explicit ticks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from batond.engine.state import parse_rfc3339
from batond.errors import ConfigError
from batond.load.rulefiles import load_rules
from engine_support import drive, make_engine, write_rules

T0 = 1_800_000_000.0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def alert(
    ts: float, status: str = "firing", fp: str = "fp1", starts: float | None = None, **labels: str
) -> dict[str, Any]:
    return {
        "event": "alert",
        "ts": ts,
        "alertname": labels.pop("alertname", "Nginx5xx"),
        "instance": labels.pop("instance", "web-1:9113"),
        "status": status,
        "fingerprint": fp,
        "startsAt": iso(T0 if starts is None else starts),
        "endsAt": iso(ts + 300) if status == "firing" else iso(ts),
        **labels,
    }


FOR_2M = """
rules:
  - name: nginx-5xx
    match: {event: alert, alertname: Nginx5xx}
    for: 2m
    run: fix
"""
KEY = "alertname=Nginx5xx,instance=web-1:9113"


def test_for_counts_from_starts_at_not_from_arrival(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, FOR_2M)
    # Alertmanager held the first notification 30 s (group_wait): 90 s of for: remain
    out = drive(engine, [alert(T0 + 30), alert(T0 + 60), ("tick", T0 + 119)])
    assert out == []
    assert drive(engine, [("tick", T0 + 120)]) == [("D", T0 + 120, "nginx-5xx", KEY, "fix")]


def test_an_alert_firing_longer_than_for_fires_at_once(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, FOR_2M)
    out = drive(engine, [alert(T0 + 600)])  # batond was down while it started firing
    assert out == [("D", T0 + 600, "nginx-5xx", KEY, "fix")]


def test_resolved_before_for_cancels_the_firing(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, FOR_2M)
    out = drive(
        engine,
        [alert(T0 + 10), alert(T0 + 60, status="resolved"), ("tick", T0 + 200)],
    )
    assert out == []


def test_the_resolved_notification_with_the_same_fingerprint_resolves(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, FOR_2M)
    out = drive(
        engine,
        [
            alert(T0 + 130),
            alert(T0 + 140, status="resolved", fp="other"),  # another alert: no effect
            alert(T0 + 150),  # a repeat notification: no second decision
            alert(T0 + 200, status="resolved"),
        ],
    )
    assert out == [("D", T0 + 130, "nginx-5xx", KEY, "fix"), ("R", T0 + 200, "nginx-5xx", KEY)]
    assert not engine.resolves_by_run("nginx-5xx")  # the run's verify: waits for the resolved


def test_group_by_alertname_resolves_when_the_last_of_its_alerts_does(tmp_path: Path) -> None:
    engine = make_engine(
        tmp_path,
        """
        rules:
          - name: any-5xx
            match: {event: alert}
            group_by: [alertname, team]
            run: fix
        """,
    )
    key = "alertname=Nginx5xx,team=web"
    out = drive(
        engine,
        [
            alert(T0, fp="a", team="web", instance="web-1"),
            alert(T0 + 1, fp="b", team="web", instance="web-2"),  # the same incident
            alert(T0 + 2, fp="c", team="db", alertname="PgDown"),
            alert(T0 + 10, status="resolved", fp="a", team="web", instance="web-1"),
            alert(T0 + 20, status="resolved", fp="b", team="web", instance="web-2"),
        ],
    )
    assert out == [
        ("D", T0, "any-5xx", key, "fix"),
        ("D", T0 + 2, "any-5xx", "alertname=PgDown,team=db", "fix"),
        ("R", T0 + 20, "any-5xx", key),
    ]


def test_an_explicit_resolve_decides_and_status_firing_is_implied(tmp_path: Path) -> None:
    engine = make_engine(
        tmp_path,
        """
        rules:
          - name: host-down
            match: {event: alert, alertname: HostDown, status: firing}
            resolve: {match: {event: alert, alertname: HostUp}}
            group_by: [instance]
            run: fix
        """,
    )
    key = "instance=web-1:9113"
    out = drive(
        engine,
        [
            alert(T0, alertname="HostDown"),
            alert(T0 + 5, status="resolved", alertname="HostDown"),  # resolve: decides
            alert(T0 + 9, alertname="HostUp", fp="up"),
        ],
    )
    assert out == [("D", T0, "host-down", key, "fix"), ("R", T0 + 9, "host-down", key)]


def test_the_firing_state_survives_a_restart(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, FOR_2M)
    drive(engine, [alert(T0 + 30)])
    state = engine.export_state()
    again = make_engine(tmp_path, FOR_2M)
    again.import_state(state)
    assert drive(again, [("tick", T0 + 121)]) == [("D", T0 + 120, "nginx-5xx", KEY, "fix")]


def test_for_on_other_events_is_still_refused(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        """
        rules:
          - name: exits
            match: {event: process.exited}
            for: 1m
            run: fix
        """,
    )
    with pytest.raises(ConfigError, match="for: needs a metric match or an Alertmanager alert"):
        load_rules([path])


def test_a_rule_on_resolved_notifications_is_an_edge_rule(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        """
        rules:
          - name: resolved-seen
            match: {event: alert, status: resolved}
            run: fix
        """,
    )
    (rule,) = load_rules([path]).rules
    assert rule.kind == "edge" and rule.group_by == ("host",)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-01-15T12:00:00Z", 1768478400.0),
        ("2026-01-15T12:00:00.123456789Z", 1768478400.123456),
        ("2026-01-15T14:00:00+02:00", 1768478400.0),
        ("0001-01-01T00:00:00Z", None),
        ("", None),
        ("yesterday", None),
    ],
)
def test_starts_at_as_alertmanager_writes_it(text: str, expected: float | None) -> None:
    assert parse_rfc3339(text) == expected

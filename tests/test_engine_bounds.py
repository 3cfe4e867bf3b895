"""Per-key state stays bounded however many hosts and groups come and go;
incident keys never collide."""

from __future__ import annotations

from pathlib import Path

from batond.engine.engine import SWEEP_S
from batond.engine.governor import HOSTS_SEEN_S
from batond.engine.keys import incident_key, split_key
from engine_support import drive, event, make_engine, sample


def test_keys_of_different_groups_never_collide(tmp_path: Path) -> None:
    engine = make_engine(
        tmp_path, "rules: [{name: r, match: {event: e}, group_by: [host, svc], run: fix}]"
    )
    out = drive(
        engine,
        [
            event("e", 1.0, host="a,svc=b", svc=""),
            event("e", 2.0, host="a", svc="b,svc="),  # the same text, unescaped
        ],
    )
    keys = [d[3] for d in out if d[0] == "D"]
    assert len(keys) == 2 and keys[0] != keys[1]
    assert keys == ["host=a\\,svc\\=b,svc=", "host=a,svc=b\\,svc\\="]


def test_key_text_round_trips_and_plain_keys_read_as_the_spec_writes() -> None:
    assert incident_key(["host", "svc"], {"host": "web-017", "svc": "nginx"}) == (
        "host=web-017,svc=nginx"
    )
    for labels in ({"host": "a,b=c\\"}, {"host": "", "svc": "="}, {"x": "\\,"}):
        assert split_key(incident_key(list(labels), labels)) == labels


def test_single_label_keys_escape_too(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, "rules: [{name: r, match: {event: e}, run: fix}]")
    (d,) = drive(engine, [event("e", 1.0, host="a,b")])
    assert d[3] == "host=a\\,b"
    # the outcome finds the incident by that key (only a run resolves it)
    assert drive(engine, [("outcome", "r", "fix", "host=a\\,b", "resolved", 2.0)]) == [
        ("R", 2.0, "r", "host=a\\,b")
    ]


def test_hosts_seen_are_pruned_by_the_engine_clock(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, "rules: [{name: r, match: {event: e}, run: fix}]")
    drive(engine, [event("x", float(i) / 100, host=f"h{i}") for i in range(5000)])
    assert len(engine.governor.hosts_seen) == 5000
    later = HOSTS_SEEN_S + 100.0
    drive(engine, [event("x", later, host="now")])
    assert engine.governor.hosts_seen.keys() == {"now"}
    assert engine.export_state()["governor"]["hosts_seen"] == {"now": later}


def test_cooldown_starts_are_forgotten_after_the_cooldown(tmp_path: Path) -> None:
    engine = make_engine(
        tmp_path,
        "rules: [{name: r, match: {metric: m}, when: value > 1, cooldown: 10s, run: fix}]",
    )
    script = []
    for i in range(200):
        script += [sample("m", 5, float(i), host=f"h{i}"), sample("m", 0, float(i), host=f"h{i}")]
    drive(engine, script)
    # 200 keys ran; only those within the cooldown (plus one sweep interval) are kept
    assert 10 <= len(engine.states["r"].last_run) <= 10 + SWEEP_S + 1
    drive(engine, [("tick", 200.0 + SWEEP_S)])
    assert engine.states["r"].last_run == {}
    assert engine.export_state()["rules"]["r"]["last_run"] == {}


def test_no_cooldown_keeps_no_cooldown_starts(tmp_path: Path) -> None:
    engine = make_engine(
        tmp_path, "rules: [{name: r, match: {metric: m}, when: value > 1, run: fix}]"
    )
    drive(engine, [sample("m", 5, float(i), host=f"h{i}") for i in range(100)])
    assert engine.states["r"].last_run == {}


def test_count_windows_and_correlation_slots_of_quiet_groups_go(tmp_path: Path) -> None:
    engine = make_engine(
        tmp_path,
        """
        rules:
          - {name: c, match: {event: e}, count: {at_least: 5, within: 1m}, run: fix}
          - name: a
            all: [{match: {event: e}}, {match: {event: f}}]
            within: 1m
            run: fix
        """,
    )
    drive(engine, [event("e", float(i) / 10, host=f"h{i}") for i in range(300)])
    assert len(engine.states["c"].windows) == 300  # type: ignore[attr-defined]
    assert len(engine.states["a"].slots) == 300  # type: ignore[attr-defined]
    drive(engine, [("tick", 30.0 + 60.0 + SWEEP_S)])
    assert engine.states["c"].windows == {}  # type: ignore[attr-defined]
    assert engine.states["a"].slots == {}  # type: ignore[attr-defined]


def test_a_flood_of_unique_hosts_keeps_the_state_small(tmp_path: Path) -> None:
    """68k unique hosts over a day: the exported state holds only the last hour's."""
    engine = make_engine(tmp_path, "rules: [{name: r, match: {event: e}, run: fix}]")
    drive(engine, [event("x", float(i), host=f"fake-{i}") for i in range(0, 86_400, 2)])
    assert len(engine.governor.hosts_seen) <= HOSTS_SEEN_S / 2 + SWEEP_S / 2 + 1
    assert len(engine.export_state()["governor"]["hosts_seen"]) <= HOSTS_SEEN_S / 2 + 1

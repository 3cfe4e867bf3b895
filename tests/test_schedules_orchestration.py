"""Schedules in a time zone, catch-up after downtime, a trigger by hand, on_resolve."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from batond.engine.types import Decision
from batond.events import item_from_json
from engine_support import make_engine, sample

SCHEDULES = """
schedules:
  - {name: tokyo, cron: "0 9 * * *", timezone: Asia/Tokyo, run: fix}
  - {name: strict, cron: "0 9 * * *", timezone: Asia/Tokyo, catch_up: false, run: fix}
"""  # the playbooks are engine_support's


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_a_schedule_reads_its_cron_in_its_time_zone(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, SCHEDULES)
    engine.tick(ts("2026-03-01T12:00:00"))  # places the next due times
    nexts = {r["name"]: r["next"] for r in engine.describe_rules()}
    assert nexts["tokyo"] == ts("2026-03-02T00:00:00")  # 09:00 in Tokyo is 00:00 UTC


def test_catch_up_runs_a_missed_time_once_unless_it_says_false(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, SCHEDULES)
    engine.tick(ts("2026-03-01T12:00:00"))
    # down for three days: the missed 09:00s come due at the next look
    late = engine.tick(ts("2026-03-04T12:00:00"))
    decided = [out.rule for out in late if isinstance(out, Decision)]
    assert decided == ["tokyo"]  # once, not three times; "strict" skips what it missed
    assert engine.tick(ts("2026-03-04T12:01:00")) == []
    on_time = engine.tick(ts("2026-03-05T00:00:10"))  # both run at their time again
    assert sorted(out.rule for out in on_time if isinstance(out, Decision)) == ["strict", "tokyo"]


def test_a_trigger_decides_now_and_keeps_the_next_due_time(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, SCHEDULES)
    now = ts("2026-03-01T12:00:00")
    engine.tick(now)
    decision = engine.trigger_schedule("tokyo", now)
    assert decision is not None and decision.playbook == "fix"
    assert decision.labels == {"schedule": "tokyo", "trigger": "manual"}
    assert {r["name"]: r["next"] for r in engine.describe_rules()}["tokyo"] == ts(
        "2026-03-02T00:00:00"
    )
    assert engine.trigger_schedule("nope", now) is None


def test_on_resolve_decides_its_playbook_when_the_incident_resolves(tmp_path: Path) -> None:
    engine = make_engine(
        tmp_path,
        """
rules:
  - {name: hot, match: {metric: cpu}, when: value > 90, run: fix, on_resolve: alt}
""",
    )
    t0 = ts("2026-03-01T12:00:00")
    fired = engine.evaluate(item_from_json(sample("cpu", 95, t0, host="h1"), t0, "test"), t0)
    assert [o.playbook for o in fired if isinstance(o, Decision)] == ["fix"]
    assert engine.on_resolve("hot", "host=h1", t0 + 5) is not None
    after = engine.on_resolve("hot", "host=h1", t0 + 5)
    assert after is not None and after.playbook is None  # single mode: one at a time
    assert after.suppressed == "already_running"

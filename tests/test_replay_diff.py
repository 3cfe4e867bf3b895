"""``batond replay --diff``: a recorded synthetic day (the daemon's own recorder writes it)
where raising thresholds 90 -> 95 gives a known diff, unchanged rules give none, and the
pairing of decisions (window, anchors, reasons)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batond.commands.diff import Change, Seen, compare
from batond.events import item_from_json
from batond.intake.recorder import Recorder, record_dir
from batond.load.config import RecordConfig

OLD_RULES = """
rules:
  - {name: cpu-hot, match: {metric: cpu_percent}, when: value > 90, for: 5m, cooldown: 30m,
     run: p}
  - {name: mem-high, match: {metric: memory_percent}, when: value > 90, run: p}
  - {name: disk-full, match: {metric: disk_used_percent}, when: value > 90, for: 10m, run: p}
playbooks:
  - {name: p, steps: [{name: s, action: wait, with: {duration: 0s}}]}
"""
NEW_RULES = OLD_RULES.replace("value > 90, for: 5m", "value > 95, for: 5m").replace(
    "memory_percent}, when: value > 90", "memory_percent}, when: value > 95"
)
HOSTS = ("h1", "h2", "h3", "h4")
BASE = {"cpu_percent": 40.0, "memory_percent": 60.0, "disk_used_percent": 70.0}
# (host, metric, from minute, to minute (excluded), value): the day's excursions
EPISODES = [
    ("h1", "cpu_percent", 120, 135, 93.0),  # above 90, never 95: gone
    ("h2", "cpu_percent", 240, 243, 92.0),  # 90 < v <= 95 for 3 minutes, then above 95:
    ("h2", "cpu_percent", 243, 260, 97.0),  # the for: 5m rule fires 3 minutes later
    ("h3", "cpu_percent", 360, 370, 99.0),  # above both: the same decision
    ("h1", "memory_percent", 480, 482, 92.0),  # gone
    ("h2", "memory_percent", 600, 601, 96.0),  # the same
    ("h4", "memory_percent", 700, 701, 91.0),  # then above 95 a minute later: later
    ("h4", "memory_percent", 701, 702, 97.0),
    ("h4", "disk_used_percent", 900, 915, 95.0),  # an unchanged rule: the same
]


def _value(host: str, metric: str, minute: int) -> float:
    for h, m, start, end, value in EPISODES:
        if (h, m) == (host, metric) and start <= minute < end:
            return value
    return BASE[metric] + (minute % 7)  # some movement, far below every threshold


def _record(state: Path, start: float) -> int:
    """A day at 60 s for 4 hosts x 3 metrics, through the daemon's recorder (small files,
    so the day spans several); before it, an excursion three days earlier."""
    now = [start - 3 * 86400]
    recorder = Recorder(record_dir(state), RecordConfig(), clock=lambda: now[0], file_size=65536)
    for minute in range(20):  # three days before: h1 hot for 20 minutes (outside --since)
        obj = {"metric": "cpu_percent", "value": 93.0, "host": "h1", "ts": now[0] + minute * 60}
        recorder.append(item_from_json(obj, obj["ts"], "mqtt"))
    recorder.close()
    lines = 0
    for minute in range(1440):
        now[0] = start + minute * 60
        for host in HOSTS:
            for metric in BASE:
                obj = {"metric": metric, "value": _value(host, metric, minute), "host": host}
                recorder.append(item_from_json(obj, now[0], "mqtt"))
                lines += 1
    recorder.close()
    return lines


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, int]:
    tmp = tmp_path_factory.mktemp("day")
    start = float(int(time.time() // 60) * 60 - 86400 + 600)  # within the last 24 h
    lines = _record(tmp / "state", start)
    (tmp / "batond.yaml").write_text("state_dir: state\nmodels: []\n")
    (tmp / "old.yaml").write_text(OLD_RULES)
    (tmp / "new.yaml").write_text(NEW_RULES)
    return tmp, start, lines


def batond(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batond", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_recording_spans_several_files(day: tuple[Path, float, int]) -> None:
    tmp, _, _ = day
    assert len(list(record_dir(tmp / "state").glob("inputs-*.jsonl"))) > 3


def test_raising_thresholds_90_to_95_over_a_recorded_day(day: tuple[Path, float, int]) -> None:
    tmp, start, lines = day
    done = batond(
        "replay", "--diff", str(tmp / "old.yaml"), str(tmp / "new.yaml"),
        "--recorded", "--since", "24h", "-c", str(tmp / "batond.yaml"), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = [json.loads(line) for line in done.stdout.splitlines()]

    def at(minute: int) -> float:
        return start + minute * 60

    assert got == [
        {"change": "gone", "rule": "cpu-hot", "key": "host=h1", "old_ts": at(125),
         "new_ts": None, "shift_s": None, "old": "run=p", "new": None},
        {"change": "later", "rule": "cpu-hot", "key": "host=h2", "old_ts": at(245),
         "new_ts": at(248), "shift_s": 180.0, "old": "run=p", "new": "run=p"},
        {"change": "gone", "rule": "mem-high", "key": "host=h1", "old_ts": at(480),
         "new_ts": None, "shift_s": None, "old": "run=p", "new": None},
        {"change": "later", "rule": "mem-high", "key": "host=h4", "old_ts": at(700),
         "new_ts": at(701), "shift_s": 60.0, "old": "run=p", "new": "run=p"},
    ]  # fmt: skip
    assert done.stderr.splitlines()[-1] == (
        f"events={lines} old_decisions=7 new_decisions=5 differences=4"
    )


def test_the_text_report_groups_by_rule(day: tuple[Path, float, int]) -> None:
    tmp, start, _ = day
    done = batond(
        "replay", "--diff", str(tmp / "old.yaml"), str(tmp / "new.yaml"),
        "--recorded", "--since", "24h", "-c", str(tmp / "batond.yaml"), "--examples", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    from batond.commands.replay import decision_time

    def at(minute: int) -> str:
        return decision_time(start + minute * 60)

    assert done.stdout.splitlines() == [
        "cpu-hot: 2 differences (gone 1, later 1)",
        f"  gone           host=h1 {at(125)} run=p",
        "  ... and 1 more",
        "mem-high: 2 differences (gone 1, later 1)",
        f"  gone           host=h1 {at(480)} run=p",
        "  ... and 1 more",
    ]


def test_unchanged_rules_over_a_recorded_day_make_no_difference(
    day: tuple[Path, float, int],
) -> None:
    tmp, _, lines = day
    done = batond(
        "replay", "--diff", str(tmp / "old.yaml"), str(tmp / "old.yaml"),
        "--recorded", "-c", str(tmp / "batond.yaml"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no differences\n"
    # without --since the day three days before is read too: h1's cpu-hot fires there
    assert done.stderr.splitlines()[-1] == (
        f"events={lines + 20} old_decisions=8 new_decisions=8 differences=0"
    )


def test_a_changed_cooldown_changes_the_reason(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text(
        "rules:\n  - {name: down, match: {event: process.exited}, cooldown: 10m, run: p}\n"
        "playbooks:\n  - {name: p, steps: [{name: s, action: wait, with: {duration: 0s}}]}\n"
    )
    new = tmp_path / "new.yaml"
    new.write_text(old.read_text().replace("cooldown: 10m", "cooldown: 1m"))
    events = tmp_path / "e.jsonl"
    events.write_text(
        "".join(
            json.dumps({"event": "process.exited", "host": "a", "ts": t}) + "\n"
            for t in (1000.0, 1300.0)
        )
    )
    done = batond("replay", "--diff", str(old), str(new), str(events), "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"change": "reason_changed", "rule": "down", "key": "host=a", "old_ts": 1300.0,
         "new_ts": 1300.0, "shift_s": 0.0, "old": "suppressed=cooldown", "new": "run=p"},
    ]  # fmt: skip
    assert done.stderr.splitlines()[-1] == "events=2 old_decisions=2 new_decisions=2 differences=1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name EVENTS files or --recorded (one of them)"),
        (["e.jsonl", "--recorded"], "name EVENTS files or --recorded (one of them)"),
        (["e.jsonl", "--diff", "a", "b", "--rules", "c"], "--rules and --diff exclude each other"),
        (["e.jsonl", "--since", "yesterday"], "--since: "),
        (["e.jsonl", "--window", "1h"], "--window is an option of --diff"),
    ],
)
def test_usage_mistakes_exit_2(args: list[str], message: str) -> None:
    done = batond("replay", *args)
    assert done.returncode == 2
    assert done.stderr.startswith(f"batond replay: {message}")


def test_no_recording_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "batond.yaml").write_text("state_dir: state\nrules: []\nmodels: []\n")
    done = batond("replay", "--recorded", "-c", str(tmp_path / "batond.yaml"))
    assert done.returncode == 1
    assert "no recorded inputs" in done.stderr


def _s(ts: float, result: str = "run=p", key: str = "k") -> Seen:
    return Seen(ts, "r", key, result)


def test_pairing_same_times_anchor_and_the_window_bounds_a_shift() -> None:
    old = [_s(100), _s(1000), _s(5000)]
    new = [_s(50), _s(1000), _s(9000)]
    got = [(d.change, d.old and d.old.ts, d.new and d.new.ts) for d in compare(old, new, 3600)]
    assert got == [
        (Change.EARLIER, 100, 50),  # 50 s earlier, within the window
        # 1000 pairs with 1000: an anchor, no difference
        (Change.GONE, 5000, None),  # 9000 is more than the window away
        (Change.NEW, None, 9000),
    ]


def test_pairs_never_cross_an_anchor() -> None:
    """An old decision before a same-time pair never pairs with a new one after it."""
    got = compare([_s(10), _s(100)], [_s(100), _s(150)], 3600)
    assert [(d.change, d.old and d.old.ts, d.new and d.new.ts) for d in got] == [
        (Change.GONE, 10, None),
        (Change.NEW, None, 150),
    ]


def test_pairing_is_per_rule_and_key_and_compares_results() -> None:
    old = [_s(10, "suppressed=cooldown"), _s(10, key="other")]
    new = [_s(10, "run=p"), _s(20, key="other")]
    got = [(d.change, d.key) for d in compare(old, new, 3600)]
    assert got == [(Change.REASON_CHANGED, "k"), (Change.LATER, "other")]


def test_progress_on_a_terminal_only(tmp_path: Path) -> None:
    """stderr a terminal: a progress line rewritten in place, cleared at the end."""
    import os
    import pty

    events = tmp_path / "e.jsonl"
    line = json.dumps({"metric": "m", "value": 1, "host": "a", "ts": 1000.0}) + "\n"
    events.write_text(line * 140_000)  # the clock is looked at every 131,072 lines
    rules = tmp_path / "r.yaml"
    rules.write_text(
        "rules:\n  - {name: x, match: {metric: other}, run: p}\n"
        "playbooks:\n  - {name: p, steps: [{name: s, action: wait, with: {duration: 0s}}]}\n"
    )
    master, slave = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "batond", "replay", str(events), "--rules", str(rules)],
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=120,
            check=False,
        )
        os.close(slave)
        slave = -1
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child's end is closed and everything was read
                break
            if not chunk:
                break
            seen += chunk
    finally:
        if slave != -1:
            os.close(slave)
        os.close(master)
    assert done.returncode == 0
    text = seen.decode()
    assert "\rreplay: " in text and "events=131,071" in text, text
    assert "\r\x1b[K" in text  # cleared before the summary
    assert text.split("\r\x1b[K")[-1].startswith("events=140000 decisions=0 ")
    # not a terminal: no progress at all
    quiet = batond("replay", str(events), "--rules", str(rules))
    assert "replay:" not in quiet.stderr

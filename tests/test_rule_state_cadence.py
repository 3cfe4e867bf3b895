"""When the rule state and the governor's hosts seen are saved (RuleStateSaver, Journal).

A real SQLite journal and a real engine; only the saver's clock is faked (the
cadence of the hosts seen), and the coalescing is judged by the event loop's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from batond.engine.engine import Engine
from batond.engine.governor import Governor
from batond.journal.facade import STATE_SAVE_INTERVAL_S, Journal
from batond.runtime.ports import HOSTS_SEEN_SAVE_S, RuleStateSaver
from engine_support import GENEROUS, drive, make_engine, sample
from support import ManualClock

RULES = """
rules:
  - name: hot
    match: {metric: temp}
    when: value > 90
    for: 30s
    run: fix
"""


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = Journal.open(tmp_path / "state")
    yield j
    await j.close()


def committed(state_dir: Path, name: str) -> Any:
    """The document ``name`` as committed (read beside the journal, read-only)."""
    db = state_dir / "journal.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT value FROM kv WHERE name = ?", (name,)).fetchone()
    return orjson.loads(row[0]) if row else None


async def settle(journal: Journal) -> None:
    await asyncio.sleep(0)  # the loop turn on which save_rule_state_soon exports
    await journal.flush()


def engine_with_hosts(tmp_path: Path, *hosts: str) -> Engine:
    engine = make_engine(tmp_path, RULES, Governor(GENEROUS))
    drive(engine, [sample("temp", 95, 10, host=h) for h in hosts])
    return engine


async def test_the_save_after_a_decision_leaves_hosts_seen_out(
    tmp_path: Path, journal: Journal
) -> None:
    engine = engine_with_hosts(tmp_path, "h1", "h2")
    saver = RuleStateSaver(journal, engine, ManualClock())
    saver.changed()
    await settle(journal)
    saved = committed(tmp_path / "state", "rule_state")
    assert "hosts_seen" not in saved["governor"]
    assert sorted(saved["rules"]["hot"]["pending"]) == ["host=h1", "host=h2"]
    assert committed(tmp_path / "state", "hosts_seen") is None


async def test_hosts_seen_are_saved_on_their_own_slower_cadence(
    tmp_path: Path, journal: Journal
) -> None:
    engine = engine_with_hosts(tmp_path, "h1")
    clock = ManualClock()
    saver = RuleStateSaver(journal, engine, clock)
    state = tmp_path / "state"
    saver.touched()
    await saver.save_if_touched()  # the first housekeeping after start saves them
    await settle(journal)
    assert committed(state, "hosts_seen") == {"h1": 10.0}

    drive(engine, [sample("temp", 95, 20, host="h2")])
    saver.touched()
    clock.now += HOSTS_SEEN_SAVE_S - 1
    await saver.save_if_touched()
    await settle(journal)
    assert committed(state, "hosts_seen") == {"h1": 10.0}  # not due yet

    clock.now += 1
    await saver.save_if_touched()
    await settle(journal)
    assert committed(state, "hosts_seen") == {"h1": 10.0, "h2": 20.0}


async def test_no_input_since_the_last_save_writes_no_hosts_seen(
    tmp_path: Path, journal: Journal
) -> None:
    engine = engine_with_hosts(tmp_path, "h1")
    clock = ManualClock()
    saver = RuleStateSaver(journal, engine, clock)
    saver.touched()
    await saver.save_if_touched()
    engine.governor.note_host("h3", 30.0)  # not through an input: nothing touched
    clock.now += 10 * HOSTS_SEEN_SAVE_S
    await saver.save_if_touched()
    await settle(journal)
    assert committed(tmp_path / "state", "hosts_seen") == {"h1": 10.0}


async def test_stop_saves_both_and_a_restart_restores_both(
    tmp_path: Path, journal: Journal
) -> None:
    engine = engine_with_hosts(tmp_path, "h1", "h2")
    saver = RuleStateSaver(journal, engine, ManualClock())
    await saver.save()
    await journal.close()
    again = Journal.open(tmp_path / "state")
    try:
        rule_state, hosts = await again.load_rule_state(), await again.load_hosts_seen()
    finally:
        await again.close()
    assert rule_state is not None and hosts == {"h1": 10.0, "h2": 10.0}
    restarted = make_engine(tmp_path, RULES, Governor(GENEROUS))
    restarted.import_state(rule_state, hosts)
    assert restarted.governor.hosts_seen == {"h1": 10.0, "h2": 10.0}
    assert drive(restarted, [("tick", 40)]) == [
        ("D", 40.0, "hot", "host=h1", "fix"),
        ("D", 40.0, "hot", "host=h2", "fix"),
    ]


def test_hosts_in_an_older_whole_state_merge_with_the_saved_hosts(tmp_path: Path) -> None:
    old = engine_with_hosts(tmp_path, "h1", "h2").export_state()  # hosts_seen inside
    restarted = make_engine(tmp_path, RULES, Governor(GENEROUS))
    restarted.import_state(old, {"h2": 50.0, "h3": 40.0})
    seen = restarted.governor.hosts_seen
    assert seen == {"h1": 10.0, "h2": 50.0, "h3": 40.0}
    assert list(seen) == ["h1", "h3", "h2"]  # least recently seen first, for pruning


async def test_a_burst_exports_at_most_once_per_interval(journal: Journal) -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []
    second = asyncio.Event()

    def export() -> dict[str, int]:
        times.append(loop.time())
        if len(times) == 2:
            second.set()
        return {"exports": len(times)}

    journal.save_rule_state_soon(export)
    await asyncio.sleep(0)
    assert len(times) == 1  # an isolated change: saved on the next loop turn
    for _ in range(50):  # the rest of the burst: one export waits for the interval
        journal.save_rule_state_soon(export)
    await asyncio.wait_for(second.wait(), timeout=10)
    assert times[1] - times[0] >= STATE_SAVE_INTERVAL_S - 1e-3
    await journal.flush()
    assert await journal.load_rule_state() == {"exports": 2}

"""Write-ahead records: committed on the loop's thread when the writer is free, in order.

A failing write-ahead record fails alone, and ``settled`` waits for what was
posted before it, on both backends (``journal_factory``). The other tests are
SQLite's only: they are about committing inline on the loop's thread, and use
the writer directly on a SQLite file; on PostgreSQL a write-ahead record always
goes through the writer thread (``journal.pg`` says why).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from batond.engine.types import Decision
from batond.errors import StateError
from batond.journal.backend import SqliteBackend
from batond.journal.db import connect, open_database
from batond.journal.writer import Database
from journal_backends import JournalFactory


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    path = tmp_path / "journal.db"
    database = Database(SqliteBackend(path), open_database(path))
    database.run_sync(lambda c: c.execute("CREATE TABLE log (n INTEGER PRIMARY KEY, what TEXT)"))
    yield database
    await asyncio.to_thread(database.close)


def logging_job(what: str, threads: list[int] | None = None) -> Callable[[sqlite3.Connection], int]:
    def job(conn: sqlite3.Connection) -> int:
        if threads is not None:
            threads.append(threading.get_ident())
        cur = conn.execute("INSERT INTO log (what) VALUES (?)", (what,))
        assert cur.lastrowid is not None
        return cur.lastrowid

    return job


def committed(path: Path) -> list[str]:
    """What another connection sees: only committed rows."""
    conn = connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT what FROM log ORDER BY n")]
    finally:
        conn.close()


async def test_write_ahead_commits_on_the_loop_thread_after_what_was_posted(db: Database) -> None:
    loop_thread = threading.get_ident()
    seen: list[str] = []
    inline = 0
    # the writer thread may still hold the connection for a moment after a
    # commit (then write_ahead queues instead): some of these must run inline
    for i in range(20):
        threads: list[int] = []
        db.post(logging_job(f"posted{i}"))
        await db.write_ahead(logging_job(f"ahead{i}", threads))
        seen += [f"posted{i}", f"ahead{i}"]
        assert committed(Path(db.where)) == seen  # durable, and behind what was posted first
        inline += threads == [loop_thread]
    assert inline > 0


async def test_write_ahead_does_not_hold_the_loop_behind_a_long_write(db: Database) -> None:
    started, release = threading.Event(), threading.Event()
    safety = threading.Timer(20.0, release.set)  # a blocked loop could not set it
    safety.start()

    def long_job(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait()
        conn.execute("INSERT INTO log (what) VALUES ('long')")

    try:
        long_write = asyncio.ensure_future(db.write(long_job))
        assert await asyncio.to_thread(started.wait, 30.0)
        threads: list[int] = []
        t0 = time.monotonic()
        ahead = asyncio.ensure_future(db.write_ahead(logging_job("ahead", threads)))
        await asyncio.sleep(0.05)
        held = time.monotonic() - t0
        assert not ahead.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(long_write, ahead), 30.0)
    finally:
        release.set()
        safety.cancel()
    assert held < 5.0  # the loop went on while the writer was busy
    assert threads and threads != [threading.get_ident()]  # it went through the writer
    assert committed(Path(db.where)) == ["long", "ahead"]


def a_decision() -> Decision:
    return Decision(
        ts=1.0, rule="r", key="k", target="k", labels={}, candidates=("p",),
        playbook="p", suppressed=None,
    )  # fmt: skip


async def test_a_failing_write_ahead_fails_alone(journal_factory: JournalFactory) -> None:
    j = journal_factory.open()
    try:
        decision_id, _ = await j.record_decision(a_decision())  # posted, not yet committed
        with pytest.raises(StateError, match=r"(?i)foreign key"):
            await j.step_started(4242, "s", "exec", 1, 2.0)  # no such run
        run_id = await j.run_created(
            rule="r", playbook="p", key="k", params={}, labels={}, created_at=2.0,
            decision_id=decision_id, state="running",
        )  # fmt: skip
        step_id = await j.step_started(run_id, "s", "exec", 1, 2.0)
        # committed: another connection sees the decision, the run and the step
        assert journal_factory.rows("SELECT id FROM decisions") == [(decision_id,)]
        assert journal_factory.rows("SELECT decision_id FROM runs") == [(decision_id,)]
        assert journal_factory.rows("SELECT id, run_id FROM steps") == [(step_id, run_id)]
    finally:
        await j.close()


async def test_settled_calls_back_once_everything_submitted_has_committed(
    db: Database, tmp_path: Path
) -> None:
    """What acknowledges input after its decision (MQTT QoS 1, http.ack: decided) waits on."""
    now: list[str] = []
    db.settled(lambda: now.append("idle"))
    assert now == ["idle"]  # nothing pending: at once
    other = sqlite3.connect(tmp_path / "journal.db", isolation_level=None, timeout=10)
    other.execute("BEGIN IMMEDIATE")  # the writer waits for this lock
    db.post(logging_job("a"))
    called = asyncio.Event()
    db.settled(called.set)
    db.post(logging_job("b"))  # submitted later: not waited for, but commits in order
    await asyncio.sleep(0.05)
    assert not called.is_set()  # the post has not committed
    other.execute("ROLLBACK")
    other.close()
    await asyncio.wait_for(called.wait(), 10)
    rows = await db.read(lambda c: [w for (w,) in c.execute("SELECT what FROM log")])
    assert "a" in rows


async def test_settled_waits_for_what_was_posted_before(journal_factory: JournalFactory) -> None:
    """What acknowledges input after its decision (MQTT QoS 1, http.ack: decided)
    waits on, on both backends: the callback comes once the decision has committed."""
    j = journal_factory.open()
    try:
        await j.flush()
        called = asyncio.Event()
        with journal_factory.writes_held():
            decision_id, _ = await j.record_decision(a_decision())  # posted
            j.settled(called.set)
            await asyncio.sleep(0.1)
            assert not called.is_set()  # the decision has not committed
            assert journal_factory.rows("SELECT id FROM decisions") == []
        await asyncio.wait_for(called.wait(), 10)
        assert journal_factory.rows("SELECT id FROM decisions") == [(decision_id,)]
    finally:
        await j.close()

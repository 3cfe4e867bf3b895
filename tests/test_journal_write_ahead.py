"""Write-ahead records: committed on the loop's thread when the writer is free, in order.

Every test runs on both backends (``journal_factory``; ``db`` is the writer
alone on the test's database). What differs by design: on SQLite a write-ahead
record commits on the loop's thread when the writer is free; on PostgreSQL it
always goes through the writer thread (``journal.pg`` says why). The
Database-level ``settled`` test holds SQLite's file lock and stays SQLite's;
the journal-level one below holds either backend's writes.
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
from batond.journal.backend import Conn, SqliteBackend, render_schema
from batond.journal.db import open_database
from batond.journal.pg import open_pg_database
from batond.journal.writer import Database
from journal_backends import JournalFactory


@pytest.fixture
async def db(journal_factory: JournalFactory) -> AsyncIterator[Database]:
    if journal_factory.database is None:
        journal_factory.state_dir.mkdir()
        database = sqlite_database(journal_factory.state_dir / "journal.db")
    else:
        database = Database(*open_pg_database(journal_factory.database))
        database.run_sync(lambda c: c.execute(render_schema(LOG, "postgresql")))
    yield database
    await asyncio.to_thread(database.close)


LOG = "CREATE TABLE log (n $id, what TEXT)"


def sqlite_database(path: Path) -> Database:
    database = Database(SqliteBackend(path), open_database(path))
    database.run_sync(lambda c: c.execute(render_schema(LOG, "sqlite")))
    return database


@pytest.fixture
def committed(journal_factory: JournalFactory) -> Callable[[], list[str]]:
    """What another connection sees: only committed rows."""
    return lambda: [r[0] for r in journal_factory.rows("SELECT what FROM log ORDER BY n")]


def logging_job(what: str, threads: list[int] | None = None) -> Callable[[Conn], int]:
    def job(conn: Conn) -> int:
        if threads is not None:
            threads.append(threading.get_ident())
        return int(
            conn.execute("INSERT INTO log (what) VALUES (?) RETURNING n", (what,)).fetchone()[0]
        )

    return job


async def test_write_ahead_commits_on_the_loop_thread_after_what_was_posted(
    db: Database, committed: Callable[[], list[str]]
) -> None:
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
        assert committed() == seen  # durable, and behind what was posted first
        inline += threads == [loop_thread]
    if db.backend.inline_write_ahead:  # SQLite
        assert inline > 0
    else:  # PostgreSQL: a commit is a round trip, never on the loop
        assert inline == 0


async def test_write_ahead_does_not_hold_the_loop_behind_a_long_write(
    db: Database, committed: Callable[[], list[str]]
) -> None:
    started, release = threading.Event(), threading.Event()
    safety = threading.Timer(20.0, release.set)  # a blocked loop could not set it
    safety.start()

    def long_job(conn: Conn) -> None:
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
    assert committed() == ["long", "ahead"]


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


async def test_settled_calls_back_once_everything_submitted_has_committed(tmp_path: Path) -> None:
    """What acknowledges input after its decision (MQTT QoS 1, http.ack: decided) waits on."""
    db = sqlite_database(tmp_path / "journal.db")
    try:
        await settled_in_order(db, tmp_path)
    finally:
        await asyncio.to_thread(db.close)


async def settled_in_order(db: Database, tmp_path: Path) -> None:
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

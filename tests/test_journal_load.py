"""Concurrent writers and readers; retention that keeps the event loop responsive.

On SQLite and on PostgreSQL (``journal_factory``); that pruning shrinks the
file is SQLite's alone (PostgreSQL's autovacuum reclaims space on its own time).
"""

from __future__ import annotations

import asyncio
import time

from batond.engine.types import Decision
from batond.journal.backend import Conn
from batond.journal.facade import PRUNE_BATCH, Journal
from journal_backends import JournalFactory


async def one_run(j: Journal, worker: int, n: int) -> int:
    run_id = await j.run_created(
        rule="r", playbook="p", key=f"w{worker}", params={"n": n}, labels={}, created_at=time.time()
    )
    await j.run_state(run_id, "running", time.time())
    for name in ("a", "b"):
        step = await j.step_started(run_id, name, "exec", 1, time.time())
        await j.step_finished(step, status="ok", ended_at=time.time(), exit_code=0)
    await j.run_finished(run_id, "resolved", time.time())
    return run_id


async def test_concurrent_writers_and_readers(journal_factory: JournalFactory) -> None:
    j = journal_factory.open()
    stop = asyncio.Event()
    reads = 0

    async def writer(worker: int) -> list[int]:
        return [await one_run(j, worker, n) for n in range(40)]

    async def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            runs = (await j.list_runs(50))["runs"]
            # a reader never sees a half-written run: done runs have both steps ended
            for run in runs:
                if run["state"] == "done":
                    assert [s["status"] for s in run["steps"]] == ["ok", "ok"]
            reads += 1

    try:
        readers = [asyncio.create_task(reader()) for _ in range(3)]
        results = await asyncio.gather(*(writer(w) for w in range(20)))
        stop.set()
        await asyncio.gather(*readers)
        ids = [i for r in results for i in r]
        assert len(set(ids)) == 20 * 40
        listed = (await j.list_runs(10_000))["runs"]
        assert len(listed) == 800 and all(r["outcome"] == "resolved" for r in listed)
        assert reads > 0
    finally:
        await j.close()


def old_history(journal_factory: JournalFactory, old: float) -> None:
    """Bulk history, written directly for speed."""
    journal_factory.execute(
        "INSERT INTO runs (rule, playbook, key, state, outcome, created_at, ended_at)"
        " VALUES ('r', 'p', 'k', 'done', 'resolved', ?, ?)",
        [(old, old + 1)] * (PRUNE_BATCH * 8),
    )
    journal_factory.execute(
        "INSERT INTO steps (run_id, path, action, attempt, status, started_at, stdout)"
        " SELECT id, 's', 'exec', 1, 'ok', ?, ? FROM runs",
        [(old, "y" * 500)],
    )
    journal_factory.execute(
        "INSERT INTO incidents (rule, key, severity, state, opened_at, resolved_at)"
        " VALUES ('r', 'k', 'warning', 'resolved', ?, ?)",
        [(old, old + 5)] * PRUNE_BATCH * 3,
    )


def pages(conn: Conn) -> int:
    return int(conn.execute("PRAGMA page_count").fetchone()[0])


async def test_prune_keeps_open_and_unfinished_and_the_loop_responsive(
    journal_factory: JournalFactory,
) -> None:
    old, now, retention = 1000.0, 1000.0 + 40 * 86400, 30 * 86400.0
    journal_factory.open().close_sync()
    old_history(journal_factory, old)
    sqlite = journal_factory.backend == "sqlite"
    j = journal_factory.open()
    keep_open = await j.record_decision(
        Decision(ts=old, rule="r", key="k", target="k", labels={}, candidates=(),
                 playbook=None, suppressed="paused")
    )  # fmt: skip
    unfinished = await j.run_created(
        rule="r", playbook="p", key="k", params={}, labels={}, created_at=old, state="running"
    )
    recent = await j.run_created(
        rule="r", playbook="p", key="k", params={}, labels={}, created_at=now
    )
    await j.run_finished(recent, "resolved", now)

    lags: list[float] = []

    async def probe() -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - t - 0.001)

    pages_before = await j._read(pages) if sqlite else 0
    task = asyncio.create_task(probe())
    try:
        counts = await j.prune(retention, now)
    finally:
        task.cancel()
    assert counts["runs"] == PRUNE_BATCH * 8
    assert counts["incidents"] == PRUNE_BATCH * 3
    assert counts["decisions"] == 1
    # the open incident stays (its decision was old); unfinished and recent runs stay
    incidents = (await j.list_incidents(10_000))["incidents"]
    assert [i["id"] for i in incidents] == [keep_open[1]]
    assert {r["id"] for r in (await j.list_runs(10_000))["runs"]} == {unfinished, recent}
    steps = await j._read(lambda c: c.execute("SELECT count(*) FROM steps").fetchone()[0])
    assert steps == 0  # cascaded with their runs
    if sqlite:  # the file shrank: the journal stays bounded
        assert await j._read(pages) < pages_before / 2
    # loose: deleting 7000 rows in batches never holds the loop for long
    assert lags and max(lags) < 0.5
    await j.close()

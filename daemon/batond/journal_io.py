"""SQLite off the event loop: one writer thread, one reader thread, one checkpointer.

The writer thread owns the writing connection and runs jobs strictly in the
order they were submitted (a single-thread executor is a FIFO), each in its
own transaction. Two ways to write:

- ``write(job)``: awaited; returns once the job has committed. The runner's
  write-ahead records (a run's intent, a step's start) use it.
- ``post(job)``: returns at once, the commit follows in order. Decisions,
  incident changes and rule state use it, so the engine loop never waits for
  a disk round trip. Because the queue is FIFO, anything awaited later (a
  run's intent) commits after everything posted before it: no run is ever
  durable without its decision. A SIGKILL can lose only posts not yet
  committed (well under a millisecond's worth), the same as a kill a moment
  earlier would have; and they never precede an action.

Reads run on their own thread and connection (WAL readers never wait for the
writer) after the writes posted before them have committed, so a caller
always reads its own writes. WAL checkpoints (they fsync) run on a third
thread so that no commit waits for one; ``wal_autocheckpoint`` is off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from batond.errors import StateError
from batond.journal_db import connect

__all__ = ["CHECKPOINT_EVERY", "Database", "PostedRows"]

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]
log = logging.getLogger("batond.journal")

#: Writes between two WAL checkpoints (each write adds a few pages to the WAL).
CHECKPOINT_EVERY = 200
#: Most writes committed in one transaction (group commit).
GROUP_MAX = 256
#: At most one log line per this many seconds for failed posted writes.
_ERROR_LOG_EVERY = 10.0


class _JobFailed(Exception):
    """A job of a group commit failed; the group is retried job by job."""


class Database:
    def __init__(self, path: Path, wconn: sqlite3.Connection) -> None:
        self.path = path
        self._wconn = wconn
        self._rconn = connect(path)
        self._cconn = connect(path)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="batond-journal-w")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="batond-journal-r")
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="batond-journal-c")
        self._tail: Future[Any] | None = None  # the last submitted write
        self._queue: deque[tuple[Job[Any], Future[Any]]] = deque()
        self._queue_lock = threading.Lock()
        self._drain_scheduled = False
        self._ckpt: Future[None] | None = None
        self._writes = 0
        self._closed = False
        self._failed_posts = 0
        self._last_error_log = -_ERROR_LOG_EVERY

    # -- writes ------------------------------------------------------------------
    def post(self, job: Job[Any]) -> None:
        """Queue a write; it commits after every write submitted before it."""
        self._submit(job).add_done_callback(self._log_post_failure)

    async def write(self, job: Job[T]) -> T:
        """Run a write and return its result once committed."""
        # shielded: a cancelled caller does not take back what it asked to record
        return await asyncio.shield(asyncio.wrap_future(self._submit(job)))

    async def maintain(self, job: Job[T]) -> T:
        """A writer-thread job outside a transaction (PRAGMA incremental_vacuum)."""
        self._check_open()
        return await asyncio.wrap_future(self._writer.submit(self._run, self._wconn, job, False))

    async def barrier(self) -> None:
        """Wait until every write submitted so far has committed (or failed)."""
        tail = self._tail
        if tail is not None and not tail.done():
            try:
                await asyncio.wrap_future(tail)
            except Exception:  # the writer reported it; a barrier only waits
                pass

    def _submit(self, job: Job[T]) -> Future[T]:
        self._check_open()
        future: Future[T] = Future()
        with self._queue_lock:
            self._queue.append((job, future))
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self._writer.submit(self._drain)
        self._tail = future
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY and (self._ckpt is None or self._ckpt.done()):
            self._writes = 0
            self._ckpt = self._checkpointer.submit(self._checkpoint)
        return future

    def _drain(self) -> None:
        """Group commit: the queued writes, in order, up to ``GROUP_MAX`` a transaction.

        Should one job fail, the group is run again with each job in its own
        savepoint, so the failing job is rolled back alone and only its
        caller hears of it. Results are delivered after the COMMIT: nobody
        learns of a write before it is durable.
        """
        while True:
            with self._queue_lock:
                if not self._queue:
                    self._drain_scheduled = False
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), GROUP_MAX))]
            self._commit(batch)

    def _commit(self, batch: list[tuple[Job[Any], Future[Any]]]) -> None:
        try:
            results = self._transaction(batch, isolate=False)
        except _JobFailed:
            # someone's job failed: run them again, each in a savepoint, so that
            # only the failing job is rolled back and only its caller hears of it
            try:
                results = self._transaction(batch, isolate=True)
            except sqlite3.Error as exc:
                results = [(False, self._state_error(exc))] * len(batch)
        except sqlite3.Error as exc:
            results = [(False, self._state_error(exc))] * len(batch)
        for (_, future), (ok, value) in zip(batch, results, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _transaction(
        self, batch: list[tuple[Job[Any], Future[Any]]], *, isolate: bool
    ) -> list[tuple[bool, Any]]:
        conn = self._wconn
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for job, _ in batch:
                if not isolate:
                    try:
                        results.append((True, job(conn)))
                    except Exception as exc:
                        raise _JobFailed from exc
                    continue
                conn.execute("SAVEPOINT job")
                try:
                    results.append((True, job(conn)))
                except Exception as exc:
                    conn.execute("ROLLBACK TO job")
                    results.append((False, self._state_error(exc)))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _state_error(self, exc: Exception) -> Exception:
        if isinstance(exc, sqlite3.Error):
            return StateError(f"{self.path}: journal error: {exc}")
        return exc

    def _log_post_failure(self, future: Future[Any]) -> None:
        exc = future.exception()
        if exc is None:
            return
        self._failed_posts += 1
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_EVERY:
            self._last_error_log = now
            log.error("journal: %d write(s) lost: %s", self._failed_posts, exc)
            self._failed_posts = 0

    def _checkpoint(self) -> None:
        try:
            self._cconn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the next one retries; commits are unaffected
            log.warning("journal checkpoint failed: %s", exc)

    # -- reads ---------------------------------------------------------------------
    async def read(self, job: Job[T]) -> T:
        """Run a read in one snapshot that includes every write submitted before."""
        await self.barrier()
        self._check_open()
        return await asyncio.wrap_future(self._reader.submit(self._run, self._rconn, job, True))

    # -- both ------------------------------------------------------------------------
    def _run(self, conn: sqlite3.Connection, job: Job[T], snapshot: bool) -> T:
        """A read in one snapshot (``snapshot``), or a job with no transaction around it."""
        try:
            if not snapshot:
                return job(conn)
            conn.execute("BEGIN")  # one consistent snapshot for multi-query reads
            try:
                return job(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: journal error: {exc}") from None

    def run_sync(self, job: Job[T]) -> T:
        """A write run to completion from a plain thread (opening, tests)."""
        return self._submit(job).result()

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"{self.path}: the journal is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Let queued writes commit, then close every connection."""
        if self._closed:
            return
        self._closed = True
        self._reader.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._checkpointer.shutdown(wait=True)
        self._rconn.close()
        self._cconn.close()
        try:
            self._wconn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        self._wconn.close()


class _Rows:
    def __init__(self) -> None:
        self.incidents: list[tuple[Any, ...]] = []
        self.decisions: list[tuple[Any, ...]] = []
        self.resolves: list[tuple[float, int]] = []


class PostedRows:
    """Decision, incident and resolve rows, posted as one queued batch job.

    Rows join the batch waiting in the writer queue, if there is one, else a
    new batch is posted; the writer detaches the batch when it starts it.
    Rows therefore commit no later than anything written after them, and a
    burst of decisions costs three ``executemany`` calls on the writer
    thread instead of a statement each: the writer holds the GIL less, so
    the engine loop runs faster. Every row names its ids, so running the
    inserts before the resolves within a batch is always right.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._queued: _Rows | None = None

    @contextlib.contextmanager
    def batch(self) -> Iterator[_Rows]:
        """The batch to add rows to, held until the ``with`` block ends."""
        created: _Rows | None = None
        try:
            with self._lock:
                if self._queued is None:
                    self._queued = created = _Rows()
                yield self._queued
        finally:
            if created is not None:  # even when the block failed: rows must not strand
                batch = created
                self._db.post(lambda conn: self._write(batch, conn))

    def _write(self, rows: _Rows, conn: sqlite3.Connection) -> None:
        with self._lock:
            if self._queued is rows:
                self._queued = None  # later rows go to a new batch
        conn.executemany(
            "INSERT INTO incidents (id, rule, key, severity, state, opened_at, labels, metric)"
            " VALUES (?, ?, ?, ?, 'open', ?, ?, ?)",
            rows.incidents,
        )
        conn.executemany(
            "INSERT INTO decisions (id, ts, rule, key, target, playbook, suppressed,"
            " candidates, params, labels, severity, item, incident_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows.decisions,
        )
        conn.executemany(
            "UPDATE incidents SET state = 'resolved', resolved_at = ? WHERE id = ?", rows.resolves
        )

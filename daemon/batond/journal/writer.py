"""SQLite off the event loop: one writer thread, one reader thread, one checkpointer.

The writer thread owns the writing connection and runs jobs strictly in the
order they were submitted (a FIFO queue, drained in group commits). Three
ways to write:

- ``write(job)``: awaited; returns once the job has committed.
- ``write_ahead(job)``: the same promise, for the runner's write-ahead
  records (a run's intent, a step's start), which sit between an event and
  its first action. When the writing connection is free it commits them
  right here on the event loop's thread, after everything queued before
  them; else it waits like ``write``. Why on the loop: a round trip to the
  writer thread costs two thread wake-ups, and on a busy machine (2 cores,
  other processes running) each can take milliseconds, which blew the
  event-to-first-action budget (p99 <= 2 ms) while the transaction itself
  takes ~0.1 ms: with ``synchronous=NORMAL`` a WAL commit is a ``write()``
  into the page cache, never an fsync (checkpoints, which fsync, stay on
  their own thread). Measured in ``bench/bench_runner.py``.
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
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from batond.errors import StateError
from batond.journal.backend import Backend, Conn

__all__ = ["CHECKPOINT_EVERY", "INLINE_WAIT_S", "Database", "PostedRows"]

T = TypeVar("T")
Job = Callable[[Conn], T]
log = logging.getLogger("batond.journal.facade")

#: Writes between two WAL checkpoints (each write adds a few pages to the WAL).
CHECKPOINT_EVERY = 200
#: Most writes committed in one transaction (group commit).
GROUP_MAX = 256
#: Longest ``write_ahead`` waits on the loop for the writer thread's current
#: transaction (a group commit takes ~0.1 ms) before it queues instead: a long
#: job (a prune batch, a vacuum step) must not hold the loop.
INLINE_WAIT_S = 0.001
#: At most one log line per this many seconds for failed posted writes.
_ERROR_LOG_EVERY = 10.0


class _JobFailed(Exception):
    """A job of a group commit failed; the group is retried job by job."""


class Database:
    def __init__(self, backend: Backend, wconn: Conn) -> None:
        self.backend = backend
        self.where = backend.where
        self._errors = backend.errors
        self._wconn = wconn
        self._rconn = backend.connect()
        self._cconn = backend.connect()
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="batond-journal-w")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="batond-journal-r")
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="batond-journal-c")
        self._tail: Future[Any] | None = None  # the last submitted write
        self._queue: deque[tuple[Job[Any], Future[Any]]] = deque()
        self._queue_lock = threading.Lock()
        # held while a thread uses the writing connection: a batch is taken from
        # the queue and committed under it, so commits follow submission order
        self._conn_lock = threading.Lock()
        self._drain_scheduled = False
        self._ckpt: Future[None] | None = None
        self._writes = 0
        self._closed = False
        self._failed_posts = 0
        self._last_error_log = -_ERROR_LOG_EVERY
        #: Why the last commit failed ("" while commits succeed): for /readyz and status.
        self.trouble = ""

    # -- writes ------------------------------------------------------------------
    def post(self, job: Job[Any]) -> None:
        """Queue a write; it commits after every write submitted before it."""
        self._submit(job).add_done_callback(self._log_post_failure)

    async def write(self, job: Job[T]) -> T:
        """Run a write and return its result once committed."""
        # shielded: a cancelled caller does not take back what it asked to record
        return await asyncio.shield(asyncio.wrap_future(self._submit(job)))

    async def write_ahead(self, job: Job[T]) -> T:
        """``write``, committed on the calling thread when the writer is free (no thread hop).

        Everything queued before ``job`` commits first, in the same
        transaction, so the order is the same as through the writer thread.
        """
        self._check_open()
        # inline only where a commit is a local write (SQLite), and not while the
        # database is in trouble (a reconnection attempt must not hold the loop)
        inline = self.backend.inline_write_ahead and not self.trouble
        if not inline or not self._conn_lock.acquire(timeout=INLINE_WAIT_S):
            return await self.write(job)
        try:
            self._check_open()
            future: Future[T] = Future()
            with self._queue_lock:
                batch = [*self._queue, (job, future)]
                self._queue.clear()
            self._tail = future
            self._count_write()
            for i in range(0, len(batch), GROUP_MAX):
                self._commit(batch[i : i + GROUP_MAX])
        finally:
            self._conn_lock.release()
        return future.result()

    async def maintain(self, job: Job[T]) -> T:
        """A writer-thread job outside a transaction (PRAGMA incremental_vacuum)."""
        self._check_open()
        return await asyncio.wrap_future(self._writer.submit(self._maintain, job))

    def _maintain(self, job: Job[T]) -> T:
        with self._conn_lock:
            self._wconn = self._usable(self._wconn)
            return self._run(self._wconn, job, False)

    def _usable(self, conn: Conn) -> Conn:
        try:
            return self.backend.usable(conn)
        except self._errors as exc:
            raise StateError(f"{self.where}: journal error: {exc}") from None

    async def barrier(self) -> None:
        """Wait until every write submitted so far has committed (or failed)."""
        tail = self._tail
        if tail is not None and not tail.done():
            try:
                await asyncio.wrap_future(tail)
            except Exception:  # the writer reported it; a barrier only waits
                pass

    def settled(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the loop once every write submitted so far has committed
        (or failed: the journal's trouble says so); at once when none is pending.

        What acknowledges input after its decisions are journaled (MQTT QoS 1,
        ``http.ack: decided``) waits on this: no polling, one callback per batch.
        """
        tail = self._tail
        if tail is None or tail.done():
            callback()
            return
        loop = asyncio.get_running_loop()

        def done(_: Future[Any]) -> None:  # on the writer thread (or here, if done by now)
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(callback)

        tail.add_done_callback(done)

    def _submit(self, job: Job[T]) -> Future[T]:
        self._check_open()
        future: Future[T] = Future()
        with self._queue_lock:
            self._queue.append((job, future))
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self._writer.submit(self._drain)
        self._tail = future
        self._count_write()
        return future

    def _count_write(self) -> None:
        self._writes += 1
        if self._closed:  # closing: the checkpointer takes no more work
            return
        if self._writes >= CHECKPOINT_EVERY and (self._ckpt is None or self._ckpt.done()):
            self._writes = 0
            self._ckpt = self._checkpointer.submit(self._checkpoint)

    def _drain(self) -> None:
        """Group commit: the queued writes, in order, up to ``GROUP_MAX`` a transaction.

        Should one job fail, the group is run again with each job in its own
        savepoint, so the failing job is rolled back alone and only its
        caller hears of it. Results are delivered after the COMMIT: nobody
        learns of a write before it is durable.
        """
        while True:
            with self._conn_lock:
                with self._queue_lock:
                    if not self._queue:  # write_ahead may have committed it all
                        self._drain_scheduled = False
                        return
                    n = min(len(self._queue), GROUP_MAX)
                    batch = [self._queue.popleft() for _ in range(n)]
                self._commit(batch)

    def _commit(self, batch: list[tuple[Job[Any], Future[Any]]]) -> None:
        try:
            results = self._transaction(batch, isolate=False)
        except _JobFailed:
            # someone's job failed: run them again, each in a savepoint, so that
            # only the failing job is rolled back and only its caller hears of it
            try:
                results = self._transaction(batch, isolate=True)
            except self._errors as exc:
                results = [(False, self._state_error(exc))] * len(batch)
                self._trouble(exc)
        except self._errors as exc:
            results = [(False, self._state_error(exc))] * len(batch)
            self._trouble(exc)
        else:
            # a job may have failed on its own (a disk full at its INSERT) inside a commit
            lost = next((v for ok, v in results if not ok and isinstance(v, StateError)), None)
            if lost is not None:
                self._trouble(lost)
            elif self.trouble:
                self.trouble = ""
                log.warning("journal: writing again")
        for (_, future), (ok, value) in zip(batch, results, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _transaction(
        self, batch: list[tuple[Job[Any], Future[Any]]], *, isolate: bool
    ) -> list[tuple[bool, Any]]:
        conn = self._wconn = self.backend.usable(self._wconn)
        results: list[tuple[bool, Any]] = []
        self.backend.begin(conn, write=True)
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
                    if not self.backend.in_transaction(conn):
                        # SQLite rolled the whole transaction back (SQLITE_FULL, an I/O
                        # error): there is no savepoint left, and the batch fails as one
                        raise
                    conn.execute("ROLLBACK TO job")
                    results.append((False, self._state_error(exc)))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise
        return results

    def _rollback(self, conn: Conn) -> None:
        try:
            if self.backend.in_transaction(conn):
                conn.execute("ROLLBACK")
        except self._errors:  # the connection broke: the server rolled it back
            pass

    def _trouble(self, exc: Exception) -> None:
        """A commit failed (disk full, I/O error): say so until one succeeds again."""
        if not self.trouble:
            log.error("journal: cannot write: %s (runs are refused until it can)", exc)
        self.trouble = f"journal cannot write: {exc}"

    def _state_error(self, exc: Exception) -> Exception:
        if isinstance(exc, self._errors):
            return StateError(f"{self.where}: journal error: {exc}")
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
            self._cconn = self.backend.usable(self._cconn)
            self.backend.checkpoint(self._cconn)
        except self._errors as exc:  # the next one retries; commits are unaffected
            log.warning("journal checkpoint failed: %s", exc)

    # -- reads ---------------------------------------------------------------------
    async def read(self, job: Job[T]) -> T:
        """Run a read in one snapshot that includes every write submitted before."""
        await self.barrier()
        self._check_open()
        return await asyncio.wrap_future(self._reader.submit(self._read, job))

    # -- both ------------------------------------------------------------------------
    def _read(self, job: Job[T]) -> T:
        self._rconn = self._usable(self._rconn)
        try:
            return self._run(self._rconn, job, True)
        except StateError:
            # the server dropped the session (PostgreSQL restarted, failed over): the
            # connection knows only once a statement fails; a read changes nothing,
            # so it runs again once on a new session instead of failing its caller
            if not self.backend.broken(self._rconn):
                raise
            self._rconn = self._usable(self._rconn)
            return self._run(self._rconn, job, True)

    def _run(self, conn: Conn, job: Job[T], snapshot: bool) -> T:
        """A read in one snapshot (``snapshot``), or a job with no transaction around it."""
        try:
            if not snapshot:
                return job(conn)
            self.backend.begin(conn, write=False)  # one snapshot for multi-query reads
            try:
                return job(conn)
            finally:
                self._end_read(conn)
        except self._errors as exc:
            raise StateError(f"{self.where}: journal error: {exc}") from None

    def _end_read(self, conn: Conn) -> None:
        try:
            conn.execute("COMMIT")
        except self._errors:
            self._rollback(conn)

    def run_sync(self, job: Job[T]) -> T:
        """A write run to completion from a plain thread (opening, tests)."""
        return self._submit(job).result()

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"{self.where}: the journal is closed")

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
        for conn in (self._rconn, self._cconn):
            self._close(conn)
        with self._conn_lock:  # a write_ahead under way on another thread ends first
            self._close(self._wconn)

    def _close(self, conn: Conn) -> None:
        try:
            self.backend.close(conn)
        except self._errors:
            pass


class _Rows:
    def __init__(self) -> None:
        self.incidents: list[tuple[Any, ...]] = []
        self.decisions: list[tuple[Any, ...]] = []
        self.resolves: list[tuple[float, str, int]] = []  # (at, by, incident id)


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

    def _write(self, rows: _Rows, conn: Conn) -> None:
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
            " candidates, params, labels, severity, item, cause, reason, incident_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows.decisions,
        )
        conn.executemany(
            "UPDATE incidents SET state = 'resolved', resolved_at = ?, resolved_by = ?"
            " WHERE id = ? AND state = 'open'",
            rows.resolves,
        )

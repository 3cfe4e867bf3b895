"""The journal: what batond decided and did, durable across crashes (SQLite, WAL).

Every write is one job on a dedicated writer thread that owns the writing
connection, so SQLite never runs on the event loop and writes are ordered;
an awaited write has been committed (see ``journal_db`` for what that means
under SIGKILL and power loss). Reads go to a second thread with its own
connection: WAL lets them see every committed write without waiting for the
writer. The runner's write-ahead path (``run_created`` + ``step_started``)
costs two thread round trips and two small commits.

``Journal`` implements ``records.RunStore`` and the queries behind the API
(SPEC section 9 shapes: newest first, integer ids, epoch-second times).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from batond.engine.types import Decision
from batond.errors import StateError
from batond.events import Sample
from batond.journal_db import DbLock, connect, open_database
from batond.records import InterruptedRun

__all__ = ["OUTPUT_TAIL", "Journal"]

T = TypeVar("T")
log = logging.getLogger("batond.journal")

#: Characters of stdout/stderr kept per step attempt (the end: a tail).
OUTPUT_TAIL = 4096
#: Bytes of a decision's triggering input kept.
ITEM_MAX = 16384
#: Writes between two WAL checkpoints (each write adds a few pages to the WAL).
CHECKPOINT_EVERY = 200
#: Rows deleted per pruning transaction: keeps each writer job short.
PRUNE_BATCH = 500
_DB_NAME = "journal.db"
_RULE_STATE = "rule_state"
_PAUSED = "paused"


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _tail(text: str) -> str:
    return text[-OUTPUT_TAIL:] if len(text) > OUTPUT_TAIL else text


class Journal:
    """The SQLite journal in ``state_dir``. Build with ``Journal.open``."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: DbLock) -> None:
        self.path = path
        self._lock = lock
        self._wconn = conn
        self._rconn = connect(path)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="batond-journal-w")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="batond-journal-r")
        # checkpoints (WAL -> database, with an fsync) run on their own thread and
        # connection, so a commit never waits for one (wal_autocheckpoint is off)
        self._ckpt_conn = connect(path)
        self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="batond-journal-c")
        self._ckpt_pending: Future[None] | None = None
        self._writes = 0
        self._closed = False

    @classmethod
    def open(cls, state_dir: Path) -> Journal:
        """Open (or create) ``state_dir/journal.db``; blocking, so call it in a thread.

        Raises StateError, leaving the file untouched, when it is not a
        journal this batond can use.
        """
        state_dir = Path(state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"{state_dir}: cannot create the state directory: {exc}") from None
        lock = DbLock(state_dir / "journal.lock")
        try:
            path = state_dir / _DB_NAME
            return cls(path, open_database(path), lock)
        except BaseException:
            lock.release()
            raise

    # -- plumbing ------------------------------------------------------------
    async def _write(self, job: Callable[[sqlite3.Connection], T]) -> T:
        result = await self._call(self._writer, self._wconn, job, transaction=True)
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY and (
            self._ckpt_pending is None or self._ckpt_pending.done()
        ):
            self._writes = 0
            self._ckpt_pending = self._checkpointer.submit(self._checkpoint)
        return result

    def _checkpoint(self) -> None:
        try:
            self._ckpt_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the next one retries; commits are unaffected
            log.warning("journal checkpoint failed: %s", exc)

    async def _read(self, job: Callable[[sqlite3.Connection], T]) -> T:
        return await self._call(self._reader, self._rconn, job, transaction=False)

    async def _call(
        self,
        pool: ThreadPoolExecutor,
        conn: sqlite3.Connection,
        job: Callable[[sqlite3.Connection], T],
        *,
        transaction: bool | None,
    ) -> T:
        if self._closed:
            raise StateError(f"{self.path}: the journal is closed")
        loop = asyncio.get_running_loop()
        # a cancelled caller does not cancel the job: what was asked is still recorded
        return await asyncio.shield(
            loop.run_in_executor(pool, self._run_job, conn, job, transaction)
        )

    def _run_job(
        self,
        conn: sqlite3.Connection,
        job: Callable[[sqlite3.Connection], T],
        transaction: bool | None,
    ) -> T:
        """``transaction``: True a write transaction, False a read snapshot, None neither."""
        try:
            if transaction is None:
                return job(conn)
            if not transaction:
                conn.execute("BEGIN")  # one consistent snapshot for multi-query reads
                try:
                    return job(conn)
                finally:
                    conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = job(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            raise StateError(f"{self.path}: journal error: {exc}") from None

    async def close(self) -> None:
        """Finish pending writes, close the connections, release the lock."""
        if self._closed:
            return
        await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._reader.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._checkpointer.shutdown(wait=True)
        self._rconn.close()
        self._ckpt_conn.close()
        try:
            self._wconn.execute("PRAGMA optimize")
        except sqlite3.Error:
            pass
        self._wconn.close()
        self._lock.release()

    # -- decisions and incidents --------------------------------------------
    async def record_decision(self, decision: Decision) -> tuple[int, int | None]:
        """Record a decision (suppressed ones too); opens its incident when it says so."""
        item = decision.item
        raw = _dumps(item.raw) if item is not None and item.raw else None
        if raw is not None and len(raw) > ITEM_MAX:
            raw = _dumps({"truncated": True, "size": len(raw)})
        metric = item.metric if isinstance(item, Sample) else None
        labels = _dumps(dict(decision.labels))
        row = (
            decision.ts,
            decision.rule,
            decision.key,
            decision.target,
            decision.playbook,
            decision.suppressed,
            _dumps(list(decision.candidates)),
            _dumps(dict(decision.params)),
            labels,
            decision.severity,
            raw,
        )

        def job(conn: sqlite3.Connection) -> tuple[int, int | None]:
            incident_id = None
            if decision.opens_incident:
                cur = conn.execute(
                    "INSERT INTO incidents (rule, key, severity, state, opened_at, labels, metric)"
                    " VALUES (?, ?, ?, 'open', ?, ?, ?)",
                    (decision.rule, decision.key, decision.severity, decision.ts, labels, metric),
                )
                incident_id = cur.lastrowid
            cur = conn.execute(
                "INSERT INTO decisions (ts, rule, key, target, playbook, suppressed, candidates,"
                " params, labels, severity, item, incident_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, incident_id),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid, incident_id

        return await self._write(job)

    async def resolve_incident(self, rule: str, key: str, ts: float) -> int | None:
        """Resolve the open incident of ``rule`` for ``key``; its id, or None if none was open."""

        def job(conn: sqlite3.Connection) -> int | None:
            rows = conn.execute(
                "UPDATE incidents SET state = 'resolved', resolved_at = ?"
                " WHERE rule = ? AND key = ? AND state = 'open' RETURNING id",
                (ts, rule, key),
            ).fetchall()
            return max((int(r[0]) for r in rows), default=None)

        return await self._write(job)

    async def reconcile_incidents(
        self, open_keys: Iterable[tuple[str, str]], now: float
    ) -> list[int]:
        """Resolve, at ``now``, incidents open here that the engine does not hold open.

        After a restart: a kill between ``record_decision`` and the next rule
        state save leaves an incident open in the journal that the restored
        engine never heard of, so nothing would ever resolve it. Call with the
        engine's open (rule, key) pairs once its state is imported.
        """
        keep = set(open_keys)

        def job(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute("SELECT id, rule, key FROM incidents WHERE state = 'open'")
            stale = [(now, r[0]) for r in rows.fetchall() if (r[1], r[2]) not in keep]
            conn.executemany(
                "UPDATE incidents SET state = 'resolved', resolved_at = ? WHERE id = ?", stale
            )
            return [incident_id for _, incident_id in stale]

        return await self._write(job)

    async def feedback(self, incident_id: int, kind: str, at: float | None = None) -> bool:
        """Operator feedback on an incident; False when there is no such incident."""
        when = time.time() if at is None else at

        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE incidents SET feedback = ?, feedback_at = ? WHERE id = ?",
                (kind, when, incident_id),
            )
            return cur.rowcount > 0

        return await self._write(job)

    async def list_incidents(self, limit: int = 100) -> dict[str, Any]:
        def job(conn: sqlite3.Connection) -> dict[str, Any]:
            rows = conn.execute(f"{_INCIDENT_SELECT} ORDER BY id DESC LIMIT ?", (limit,))
            return {"incidents": [_incident(r) for r in rows]}

        return await self._read(job)

    async def get_incident(self, incident_id: int) -> dict[str, Any] | None:
        """One incident with its labels, decisions and run ids."""

        def job(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(f"{_INCIDENT_SELECT} WHERE id = ?", (incident_id,)).fetchone()
            if row is None:
                return None
            found = _incident(row)
            found["decisions"] = [
                {"id": r[0], "ts": r[1], "playbook": r[2], "suppressed": r[3]}
                for r in conn.execute(
                    "SELECT id, ts, playbook, suppressed FROM decisions"
                    " WHERE incident_id = ? ORDER BY id",
                    (incident_id,),
                )
            ]
            found["runs"] = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM runs WHERE incident_id = ? ORDER BY id", (incident_id,)
                )
            ]
            return found

        return await self._read(job)

    async def list_decisions(self, limit: int = 100) -> dict[str, Any]:
        def job(conn: sqlite3.Connection) -> dict[str, Any]:
            rows = conn.execute(
                "SELECT id, ts, rule, key, playbook, suppressed, incident_id FROM decisions"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            )
            names = ("id", "ts", "rule", "key", "playbook", "suppressed", "incident_id")
            return {"decisions": [dict(zip(names, r, strict=True)) for r in rows]}

        return await self._read(job)

    # -- runs and steps (records.RunStore) ------------------------------------
    async def run_created(
        self,
        *,
        rule: str,
        playbook: str,
        key: str,
        params: Mapping[str, Any],
        labels: Mapping[str, str],
        created_at: float,
        decision_id: int | None = None,
        incident_id: int | None = None,
        resumes: int | None = None,
        state: str = "queued",
    ) -> int:
        started_at = created_at if state == "running" else None
        row = (
            rule,
            playbook,
            key,
            _dumps(dict(params)),
            _dumps(dict(labels)),
            state,
            created_at,
            started_at,
            decision_id,
            incident_id,
            resumes,
        )

        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO runs (rule, playbook, key, params, labels, state, created_at,"
                " started_at, decision_id, incident_id, resumes)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._write(job)

    async def run_state(self, run_id: int, state: str, at: float) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE runs SET state = ?, started_at = CASE WHEN ? = 'running'"
                " THEN coalesce(started_at, ?) ELSE started_at END WHERE id = ?",
                (state, state, at, run_id),
            )

        await self._write(job)

    async def step_started(
        self, run_id: int, path: str, action: str, attempt: int, started_at: float
    ) -> int:
        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO steps (run_id, path, action, attempt, status, started_at)"
                " VALUES (?, ?, ?, ?, 'running', ?)",
                (run_id, path, action, attempt, started_at),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._write(job)

    async def step_finished(
        self,
        step_id: int,
        *,
        status: str,
        ended_at: float,
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        row = (
            status,
            ended_at,
            exit_code,
            _tail(stdout),
            _tail(stderr),
            None if detail is None else _dumps(dict(detail)),
            step_id,
        )

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE steps SET status = ?, ended_at = ?, exit_code = ?, stdout = ?,"
                " stderr = ?, detail = ? WHERE id = ?",
                row,
            )

        await self._write(job)

    async def run_finished(self, run_id: int, outcome: str, ended_at: float) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE runs SET state = 'done', outcome = ?, ended_at = ? WHERE id = ?",
                (outcome, ended_at, run_id),
            )

        await self._write(job)

    async def record_approval(
        self, run_id: int, verdict: str, by: str = "api", at: float | None = None
    ) -> int:
        """Who approved, denied or cancelled a run, and when."""
        when = time.time() if at is None else at

        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO approvals (run_id, verdict, by, at) VALUES (?, ?, ?, ?)",
                (run_id, verdict, by, when),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._write(job)

    async def list_runs(self, limit: int = 100) -> dict[str, Any]:
        def job(conn: sqlite3.Connection) -> dict[str, Any]:
            runs = [
                _run(r) for r in conn.execute(f"{_RUN_SELECT} ORDER BY id DESC LIMIT ?", (limit,))
            ]
            _attach_steps(conn, runs)
            return {"runs": runs}

        return await self._read(job)

    async def get_run(self, run_id: int) -> dict[str, Any] | None:
        """One run with its step timeline and approvals."""

        def job(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(f"{_RUN_SELECT} WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            run = _run(row)
            _attach_steps(conn, [run])
            run["approvals"] = [
                {"verdict": r[0], "by": r[1], "at": r[2]}
                for r in conn.execute(
                    "SELECT verdict, by, at FROM approvals WHERE run_id = ? ORDER BY id", (run_id,)
                )
            ]
            return run

        return await self._read(job)

    async def recover_interrupted(self, now: float) -> list[InterruptedRun]:
        """Mark every unfinished run and step ``interrupted``, durably; call before ready."""
        return await self._write(lambda conn: _recover(conn, now))

    # -- silences, pause, saved state -----------------------------------------
    async def add_silence(
        self,
        matchers: Mapping[str, str],
        starts_at: float,
        ends_at: float,
        reason: str,
        created_by: str = "api",
    ) -> int:
        row = (_dumps(dict(matchers)), starts_at, ends_at, reason, created_by, time.time())

        def job(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO silences (matchers, starts_at, ends_at, reason, created_by,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._write(job)

    async def expire_silence(self, silence_id: int, now: float) -> bool:
        """End a silence now; False when it does not exist or has already ended."""

        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE silences SET ends_at = ?, expired_at = ? WHERE id = ? AND ends_at > ?",
                (now, now, silence_id, now),
            )
            return cur.rowcount > 0

        return await self._write(job)

    async def list_silences(
        self, now: float, include_expired: bool = False
    ) -> list[dict[str, Any]]:
        """Silences in force at ``now`` (or all kept ones), newest first."""

        def job(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            where = "" if include_expired else "WHERE starts_at <= ? AND ends_at > ?"
            args = () if include_expired else (now, now)
            rows = conn.execute(
                "SELECT id, matchers, starts_at, ends_at, reason, created_by, created_at"
                f" FROM silences {where} ORDER BY id DESC",
                args,
            )
            return [
                {
                    "id": r[0],
                    "matchers": orjson.loads(r[1]),
                    "starts_at": r[2],
                    "ends_at": r[3],
                    "reason": r[4],
                    "created_by": r[5],
                    "created_at": r[6],
                }
                for r in rows
            ]

        return await self._read(job)

    async def set_paused(self, paused: bool, by: str = "api") -> None:
        await self.save_state(_PAUSED, {"paused": paused, "by": by})

    async def is_paused(self) -> bool:
        state = await self.load_state(_PAUSED)
        return bool(state and state.get("paused"))

    async def save_rule_state(self, state: Mapping[str, Any]) -> None:
        """The engine's ``export_state()``; saved whole, replacing the previous one."""
        await self.save_state(_RULE_STATE, state)

    async def load_rule_state(self) -> dict[str, Any] | None:
        return await self.load_state(_RULE_STATE)

    async def save_state(self, name: str, state: Mapping[str, Any]) -> None:
        """A named JSON document (serialized here, on the caller's thread, as it is now)."""
        blob = orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS)
        now = time.time()

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO kv (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (name)"
                " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (name, blob, now),
            )

        await self._write(job)

    async def load_state(self, name: str) -> dict[str, Any] | None:
        def job(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT value FROM kv WHERE name = ?", (name,)).fetchone()
            return None if row is None else bytes(row[0])

        blob = await self._read(job)
        if blob is None:
            return None
        try:
            value = orjson.loads(blob)
        except orjson.JSONDecodeError as exc:
            raise StateError(f"{self.path}: saved state {name!r} is not JSON: {exc}") from None
        return value if isinstance(value, dict) else None

    # -- retention -------------------------------------------------------------
    async def prune(self, retention_s: float, now: float) -> dict[str, int]:
        """Delete finished records older than ``retention_s``, in short batches.

        Open incidents and unfinished runs are kept whatever their age. Each
        batch is its own writer job, so runner writes interleave with pruning.
        """
        cutoff = now - retention_s
        counts: dict[str, int] = {}
        for table, where in _PRUNE_RULES:
            counts[table] = 0
            while True:
                deleted = await self._write(_prune_batch(table, where, cutoff))
                counts[table] += deleted
                if deleted < PRUNE_BATCH:
                    break
                await asyncio.sleep(0)
        # hand freed pages back to the file system in bounded steps
        free = -1
        while sum(counts.values()):
            left = await self._call(self._writer, self._wconn, _vacuum_step, transaction=None)
            if left == 0 or left == free:  # done, or auto_vacuum is off for this file
                break
            free = left
            await asyncio.sleep(0)
        return counts

    async def summary(self) -> dict[str, int]:
        """Counts for status pages."""

        def job(conn: sqlite3.Connection) -> dict[str, int]:
            (open_incidents,) = conn.execute(
                "SELECT count(*) FROM incidents WHERE state = 'open'"
            ).fetchone()
            (unfinished,) = conn.execute(
                "SELECT count(*) FROM runs WHERE state != 'done'"
            ).fetchone()
            return {"open_incidents": open_incidents, "unfinished_runs": unfinished}

        return await self._read(job)


# -- row shapes ----------------------------------------------------------------
_INCIDENT_SELECT = (
    "SELECT id, rule, key, state, severity, opened_at, resolved_at, labels, metric, feedback"
    " FROM incidents"
)
_RUN_SELECT = (
    "SELECT id, rule, playbook, key, state, outcome, created_at, started_at, ended_at,"
    " decision_id, incident_id, resumes, params, labels FROM runs"
)


def _incident(r: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": r[0],
        "rule": r[1],
        "key": r[2],
        "state": r[3],
        "severity": r[4],
        "opened_at": r[5],
        "resolved_at": r[6],
        "labels": orjson.loads(r[7]),
        "metric": r[8],
        "feedback": r[9],
    }


def _run(r: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": r[0],
        "rule": r[1],
        "playbook": r[2],
        "key": r[3],
        "state": r[4],
        "outcome": r[5],
        "created_at": r[6],
        "started_at": r[7],
        "ended_at": r[8],
        "decision_id": r[9],
        "incident_id": r[10],
        "resumes": r[11],
        "params": orjson.loads(r[12]),
        "labels": orjson.loads(r[13]),
        "steps": [],
    }


def _attach_steps(conn: sqlite3.Connection, runs: list[dict[str, Any]]) -> None:
    by_id = {run["id"]: run for run in runs}
    if not by_id:
        return
    marks = ",".join("?" * len(by_id))
    rows = conn.execute(
        "SELECT run_id, path, action, attempt, status, started_at, ended_at, exit_code,"
        f" stdout, stderr, detail FROM steps WHERE run_id IN ({marks}) ORDER BY id",
        tuple(by_id),
    )
    for r in rows:
        started, ended = r[5], r[6]
        by_id[r[0]]["steps"].append(
            {
                "name": r[1].rsplit("/", 1)[-1],
                "path": r[1],
                "action": r[2],
                "attempt": r[3],
                "status": r[4],
                "started_at": started,
                "ended_at": ended,
                "duration_s": None if ended is None else max(0.0, ended - started),
                "exit_code": r[7],
                "stdout": r[8],
                "stderr": r[9],
                "detail": None if r[10] is None else orjson.loads(r[10]),
            }
        )


def _recover(conn: sqlite3.Connection, now: float) -> list[InterruptedRun]:
    found: list[InterruptedRun] = []
    rows = conn.execute(f"{_RUN_SELECT} WHERE state != 'done' ORDER BY id").fetchall()
    for row in rows:
        run = _run(row)
        steps = conn.execute(
            "SELECT path, status FROM steps WHERE run_id = ? ORDER BY id", (run["id"],)
        ).fetchall()
        conn.execute(
            "UPDATE steps SET status = 'interrupted', ended_at = ?"
            " WHERE run_id = ? AND status = 'running'",
            (now, run["id"]),
        )
        conn.execute(
            "UPDATE runs SET state = 'done', outcome = 'interrupted', ended_at = ? WHERE id = ?",
            (now, run["id"]),
        )
        found.append(
            InterruptedRun(
                run_id=run["id"],
                rule=run["rule"],
                playbook=run["playbook"],
                key=run["key"],
                params=run["params"],
                labels=run["labels"],
                created_at=run["created_at"],
                state=run["state"],
                decision_id=run["decision_id"],
                incident_id=run["incident_id"],
                resumes=run["resumes"],
                in_flight=tuple(p for p, s in steps if s == "running"),
                completed=tuple(p for p, s in steps if s == "ok"),
            )
        )
    return found


# table -> which rows retention may delete (finished ones only)
_PRUNE_RULES = (
    ("runs", "state = 'done' AND coalesce(ended_at, created_at) < ?"),
    ("decisions", "ts < ?"),
    ("incidents", "state = 'resolved' AND resolved_at < ?"),
    ("silences", "ends_at < ?"),
)


def _prune_batch(table: str, where: str, cutoff: float) -> Callable[[sqlite3.Connection], int]:
    def job(conn: sqlite3.Connection) -> int:
        cur = conn.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE {where} LIMIT ?)",
            (cutoff, PRUNE_BATCH),
        )
        return cur.rowcount

    return job


def _vacuum_step(conn: sqlite3.Connection) -> int:
    """Free up to 1000 pages; how many free pages remain."""
    conn.execute("PRAGMA incremental_vacuum(1000)").fetchall()
    return int(conn.execute("PRAGMA freelist_count").fetchone()[0])

"""The journal: what batond decided and did, durable across crashes (SQLite, WAL).

``Journal`` implements ``records.RunStore`` (the runner's write-ahead
records: each call returns once committed, so a run's intent and each step's
start are durable before the action begins; those two commit on the event
loop's thread when the writer is free, see ``journal.writer.Database.write_ahead``)
and the queries behind the API (docs/api.md shapes: newest first, integer
ids, epoch-second times).

Decisions, incident changes and rule state are *posted*: their ids are given
here, in-process (this process holds the journal's lock, so it alone
allocates ids), and the write commits in order behind the scenes, so the
engine loop never waits for the disk. ``journal.writer`` explains why that loses
nothing that matters; ``journal.db`` covers opening, migrations and what
"durable" means under SIGKILL and power loss.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import orjson

from batond.engine.fleet import AgentSeen
from batond.engine.types import Decision, Outcome, ResolvedBy
from batond.errors import StateError
from batond.events import Sample
from batond.journal import queries as q
from batond.journal.backend import Backend, Conn, SqliteBackend
from batond.journal.db import DbLock, open_database
from batond.journal.ids import CounterIds, IdSource, SequenceIds
from batond.journal.queries import PRUNE_BATCH
from batond.journal.writer import Database, PostedRows
from batond.remedy.records import InterruptedRun
from batond.remedy.run import RunState, StepStatus

__all__ = ["OUTPUT_TAIL", "PRUNE_BATCH", "Journal"]

T = TypeVar("T")

#: Characters of stdout/stderr kept per step attempt (the end: a tail).
OUTPUT_TAIL = 4096
#: Bytes of a decision's triggering input kept.
ITEM_MAX = 16384
#: Least time between two rule state exports by ``save_rule_state_soon`` in a burst: a
#: storm's saves are 10 a second at most; a SIGKILL in a storm loses at most this much
#: of the rule state's changes (never a decision or a run: those are journaled on their
#: own). An isolated change is still saved on the next loop turn (docs/journal.md).
STATE_SAVE_INTERVAL_S = 0.1
_DB_NAME = "journal.db"
#: A fleet agent not seen for this long (or the retention, if shorter) is pruned: a host
#: gone does not stay listed for ever.
AGENTS_KEPT_S = 86400.0
_RULE_STATE = "rule_state"
_HOSTS_SEEN = "hosts_seen"
_PAUSED = "paused"


def _dumps(value: Any) -> str:
    # default=str: a value JSON cannot hold is recorded as text, never an error
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _tail(text: str) -> str:
    # NUL as U+FFFD: PostgreSQL's text cannot hold it, and a step's output reads the
    # same on either backend (binary output is text only so far anyway)
    text = text.replace("\x00", "\ufffd")
    return text[-OUTPUT_TAIL:] if len(text) > OUTPUT_TAIL else text


class Journal:
    """The journal: SQLite in ``state_dir``, or PostgreSQL. Build with ``Journal.open``."""

    def __init__(self, backend: Backend, conn: Conn, lock: DbLock) -> None:
        self.path = backend.where
        self._lock = lock
        self._db = Database(backend, conn)
        try:
            self._ids = self._id_source(backend)
            # (rule, key) -> id of its open incident: resolving needs no round trip
            self._open: dict[tuple[str, str], int] = self._db.run_sync(q.open_incidents)
        except BaseException:
            self._db.close()
            raise
        self._rows = PostedRows(self._db)
        #: The kv name of the engine's rule state. Instances that share one journal
        #: (central instances of a fleet) each keep their own: see :meth:`open`.
        self.rule_state_name = _RULE_STATE
        #: The kv name of the governor's hosts seen, saved apart on a slower cadence.
        self.hosts_seen_name = _HOSTS_SEEN
        #: The central instance whose runs these are (runs.instance); None on one host.
        self.instance: str | None = None
        # named state documents waiting to be written; a newer save replaces the blob
        self._state_lock = threading.Lock()
        self._state_pending: dict[str, bytes] = {}
        self._export_handle: asyncio.Handle | None = None
        self._export_now: Callable[[], None] = lambda: None
        self._last_export = float("-inf")

    def _id_source(self, backend: Backend) -> IdSource:
        if isinstance(backend, SqliteBackend):
            return CounterIds(*self._db.run_sync(q.next_ids))
        return SequenceIds(self._db)

    @classmethod
    def open(
        cls, state_dir: Path, database: str | None = None, *, instance: str | None = None
    ) -> Journal:
        """Open (or create) ``state_dir/journal.db``, or the PostgreSQL journal at
        ``database`` (a postgresql:// URL); blocking, so call it in a thread.

        ``instance``: one of several processes sharing the journal (a central
        instance); its rule state is its own document, never another's.

        Raises StateError, leaving the journal untouched, when it is not a
        journal this batond can use. ``state_dir`` is locked either way: it
        holds this batond's other state.
        """
        state_dir = Path(state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"{state_dir}: cannot create the state directory: {exc}") from None
        lock = DbLock(state_dir / "journal.lock")
        try:
            backend, conn = _open_backend(state_dir, database)
            try:
                journal = cls(backend, conn, lock)
            except BaseException:
                backend.close(conn)
                raise
        except BaseException:
            lock.release()
            raise
        if instance is not None:
            journal.rule_state_name = f"{_RULE_STATE}@{instance}"
            journal.hosts_seen_name = f"{_HOSTS_SEEN}@{instance}"
            journal.instance = instance
        return journal

    @property
    def backend(self) -> str:
        """Which database holds the journal: "sqlite" or "postgresql"."""
        return "sqlite" if isinstance(self._db.backend, SqliteBackend) else "postgresql"

    async def _write(self, job: Callable[[Conn], T]) -> T:
        return await self._db.write(job)

    async def _read(self, job: Callable[[Conn], T]) -> T:
        return await self._db.read(job)

    @property
    def trouble(self) -> str:
        """Why the journal cannot write now (disk full...), "" while it can."""
        return self._db.trouble

    async def flush(self) -> None:
        """Wait until everything posted so far has committed."""
        await self._db.barrier()

    def settled(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop) once everything written or posted so far has
        committed; see ``Database.settled``."""
        self._db.settled(callback)

    async def close(self) -> None:
        """Commit what is queued, close the connections, release the lock."""
        if self._export_handle is not None:  # save the scheduled rule state first
            self._export_handle.cancel()
            self._export_now()
        if not self._db.closed:
            await asyncio.to_thread(self.close_sync)

    def close_sync(self) -> None:
        if not self._db.closed:
            self._db.close()
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
            decision.cause,
            decision.reason,
        )
        scope = (decision.rule, decision.key)
        incident_id = None
        opens = decision.opens_incident
        if opens and decision.continues:  # decided again: the incident open for the key
            incident_id = self._open.get(scope)
            opens = incident_id is None  # (lost in a crash: a new one, then)
        if opens:
            incident_id = self._ids.take("incidents")
        decision_id = self._ids.take("decisions")
        with self._rows.batch() as rows:
            if opens:
                # one open incident per rule and key: an older one (the engine lost
                # track of it in a crash) ends where the new one starts
                previous = self._open.pop(scope, None)
                if previous is not None:
                    rows.resolves.append((decision.ts, ResolvedBy.RESTART, previous))
                self._open[scope] = incident_id  # type: ignore[assignment]
                rows.incidents.append(
                    (incident_id, decision.rule, decision.key, decision.severity, decision.ts,
                     labels, metric)
                )  # fmt: skip
            rows.decisions.append((decision_id, *row, incident_id))
        return decision_id, incident_id

    async def resolve_incident(
        self, rule: str, key: str, ts: float, by: str = ResolvedBy.INPUT
    ) -> int | None:
        """Resolve the open incident of ``rule`` for ``key``; its id, or None if none was open."""
        incident_id = self._open.pop((rule, key), None)
        if incident_id is not None:
            with self._rows.batch() as rows:
                rows.resolves.append((ts, by, incident_id))
        return incident_id

    def open_incident(self, rule: str, key: str) -> int | None:
        """The id of the open incident of ``rule`` for ``key``, if there is one."""
        return self._open.get((rule, key))

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
        stale = sorted(self._open.pop(rk) for rk in list(self._open) if rk not in keep)
        with self._rows.batch() as rows:
            rows.resolves.extend((now, ResolvedBy.RESTART, i) for i in stale)
        return stale

    async def feedback(self, incident_id: int, kind: str, at: float | None = None) -> bool:
        """Operator feedback on an incident; False when there is no such incident."""
        when = time.time() if at is None else at

        def job(conn: Conn) -> bool:
            cur = conn.execute(
                "UPDATE incidents SET feedback = ?, feedback_at = ? WHERE id = ?",
                (kind, when, incident_id),
            )
            return cur.rowcount > 0

        return await self._write(job)

    async def list_incidents(self, limit: int = 100) -> dict[str, Any]:
        return await self._read(lambda conn: q.incidents(conn, limit))

    async def get_incident(self, incident_id: int) -> dict[str, Any] | None:
        """One incident with its labels, decisions and run ids."""
        return await self._read(lambda conn: q.incident(conn, incident_id))

    async def list_decisions(
        self, limit: int = 100, filters: q.DecisionFilter | None = None
    ) -> dict[str, Any]:
        """Decisions newest first, optionally only those of a rule, key, result, since."""
        return await self._read(lambda conn: q.decisions(conn, limit, filters))

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
        state: RunState = RunState.QUEUED,
        escalation: bool = False,
        escalates: int | None = None,
    ) -> int:
        started_at = created_at if state == RunState.RUNNING else None
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
            int(escalation),
            escalates,
            self.instance,
        )

        def job(conn: Conn) -> int:
            return _new_id(
                conn,
                "INSERT INTO runs (rule, playbook, key, params, labels, state, created_at,"
                " started_at, decision_id, incident_id, resumes, escalation, escalates,"
                " instance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        return await self._db.write_ahead(job)

    async def run_state(self, run_id: int, state: RunState, at: float) -> None:
        running = state == RunState.RUNNING

        def job(conn: Conn) -> None:
            conn.execute(
                "UPDATE runs SET state = ?, started_at = CASE WHEN ?"
                " THEN coalesce(started_at, ?) ELSE started_at END WHERE id = ?",
                (state, running, at, run_id),
            )

        await self._write(job)

    async def step_started(
        self,
        run_id: int,
        path: str,
        action: str,
        attempt: int,
        started_at: float,
        *,
        args: Mapping[str, Any] | None = None,
    ) -> int:
        row = (
            run_id, path, action, attempt, StepStatus.RUNNING, started_at,
            None if args is None else _dumps(dict(args)),
        )  # fmt: skip

        def job(conn: Conn) -> int:
            return _new_id(
                conn,
                "INSERT INTO steps (run_id, path, action, attempt, status, started_at, args)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        return await self._db.write_ahead(job)

    async def step_finished(
        self,
        step_id: int,
        *,
        status: StepStatus,
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

        def job(conn: Conn) -> None:
            conn.execute(
                "UPDATE steps SET status = ?, ended_at = ?, exit_code = ?, stdout = ?,"
                " stderr = ?, detail = ? WHERE id = ?",
                row,
            )

        await self._write(job)

    async def run_finished(self, run_id: int, outcome: Outcome, ended_at: float) -> None:
        def job(conn: Conn) -> None:
            conn.execute(
                "UPDATE runs SET state = ?, outcome = ?, ended_at = ? WHERE id = ?",
                (RunState.DONE, outcome, ended_at, run_id),
            )

        await self._write(job)

    async def record_approval(
        self, run_id: int, verdict: str, by: str = "api", at: float | None = None
    ) -> int:
        """Who approved, denied or cancelled a run, and when."""
        when = time.time() if at is None else at

        def job(conn: Conn) -> int:
            return _new_id(
                conn,
                "INSERT INTO approvals (run_id, verdict, by, at) VALUES (?, ?, ?, ?)",
                (run_id, verdict, by, when),
            )

        return await self._write(job)

    async def list_runs(self, limit: int = 100) -> dict[str, Any]:
        return await self._read(lambda conn: q.runs(conn, limit))

    async def get_run(self, run_id: int) -> dict[str, Any] | None:
        """One run with its step timeline and approvals."""
        return await self._read(lambda conn: q.run(conn, run_id))

    async def recover_interrupted(
        self, now: float, of: Callable[[str | None, float, str], bool] | None = None
    ) -> list[InterruptedRun]:
        """Mark every unfinished run and step ``interrupted``, durably; call before ready.

        ``of(instance, created_at, key)``: only those runs (a fleet's central instance
        recovers the runs of instances gone, for the partitions it claims)."""
        return await self._write(lambda conn: q.recover(conn, now, of))

    # -- silences, pause, saved state -----------------------------------------
    async def add_silence(
        self,
        matchers: Mapping[str, str] | list[dict[str, str]],
        starts_at: float,
        ends_at: float,
        reason: str,
        created_by: str = "api",
    ) -> int:
        stored = matchers if isinstance(matchers, list) else dict(matchers)
        row = (_dumps(stored), starts_at, ends_at, reason, created_by, time.time())

        def job(conn: Conn) -> int:
            return _new_id(
                conn,
                "INSERT INTO silences (matchers, starts_at, ends_at, reason, created_by,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )

        return await self._write(job)

    async def expire_silence(self, silence_id: int, now: float) -> bool:
        """End a silence now; False when it does not exist or has already ended."""

        def job(conn: Conn) -> bool:
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
        return await self._read(lambda conn: q.silences(conn, now, include_expired))

    async def set_paused(self, paused: bool, by: str = "api") -> None:
        """Durable on return: an operator's pause must survive a crash right after."""
        await self.save_state(_PAUSED, {"paused": paused, "by": by, "at": time.time()})
        await self.flush()

    async def is_paused(self) -> bool:
        state = await self.load_state(_PAUSED)
        return bool(state and state.get("paused"))

    async def save_rule_state(self, state: Mapping[str, Any]) -> None:
        """The engine's ``export_state()``; saved whole, replacing the previous one."""
        await self.save_state(self.rule_state_name, state)

    def save_rule_state_soon(self, export: Callable[[], Mapping[str, Any]]) -> None:
        """Save ``export()`` soon, however often this is called.

        For the engine loop after each decision. An isolated decision is saved
        when the event loop next turns; in a burst (an alert storm) exports
        are at least ``STATE_SAVE_INTERVAL_S`` apart, so a storm of decisions
        costs a few exports (10 a second at most), not one each. An isolated
        change (cooldowns, open incidents) is committed within milliseconds; in a
        burst, within ``STATE_SAVE_INTERVAL_S`` plus the commit.
        """
        if self._export_handle is not None:
            return
        loop = asyncio.get_running_loop()
        wait = self._last_export + STATE_SAVE_INTERVAL_S - loop.time()

        def save() -> None:
            self._export_handle = None
            self._last_export = loop.time()
            if not self._db.closed:
                self._post_state(self.rule_state_name, export())

        self._export_now = save
        if wait > 0:
            self._export_handle = loop.call_later(wait, save)
        else:
            self._export_handle = loop.call_soon(save)

    async def load_rule_state(self) -> dict[str, Any] | None:
        return await self.load_state(self.rule_state_name)

    async def save_hosts_seen(self, hosts: Mapping[str, float]) -> None:
        """The governor's ``export_hosts_seen()``: saved apart from the rule state, on a
        slower cadence (``RuleStateSaver``), since it changes with every sample."""
        await self.save_state(self.hosts_seen_name, hosts)

    async def load_hosts_seen(self) -> dict[str, Any] | None:
        return await self.load_state(self.hosts_seen_name)

    async def save_state(self, name: str, state: Mapping[str, Any]) -> None:
        """Save a named JSON document (serialized now, on the caller's thread).

        Posted: it commits in order after what was posted before. While a save
        of the same name still waits in the queue, a newer one just replaces
        its content, so saving after every decision costs one write per
        queue turn, not one per call.
        """
        self._post_state(name, state)

    def _post_state(self, name: str, state: Mapping[str, Any]) -> None:
        blob = orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS)
        with self._state_lock:
            queued = name in self._state_pending
            self._state_pending[name] = blob
        if not queued:
            self._db.post(self._state_job(name))

    def _state_job(self, name: str) -> Callable[[Conn], None]:
        def job(conn: Conn) -> None:
            with self._state_lock:
                blob = self._state_pending.pop(name)
            conn.execute(
                "INSERT INTO kv (name, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (name)"
                " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (name, blob, time.time()),
            )

        return job

    async def load_state(self, name: str) -> dict[str, Any] | None:
        blob = await self._read(lambda conn: q.state_blob(conn, name))
        if blob is None:
            return None
        try:
            value = orjson.loads(blob)
        except orjson.JSONDecodeError as exc:
            raise StateError(f"{self.path}: saved state {name!r} is not JSON: {exc}") from None
        return value if isinstance(value, dict) else None

    # -- fleet requests ----------------------------------------------------------
    async def remember_nonce(self, nonce: str, ts: float, forget_before: float) -> bool:
        """Keep a request's nonce (committed before the request acts); False when it was
        already kept (a replay). Nonces older than ``forget_before`` go: a request that
        old is refused as stale anyway."""

        def job(conn: Conn) -> bool:
            conn.execute("DELETE FROM fleet_nonces WHERE ts < ?", (forget_before,))
            cur = conn.execute(  # ON CONFLICT: the one spelling both backends take
                "INSERT INTO fleet_nonces (nonce, ts) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (nonce, ts),
            )
            return cur.rowcount > 0

        return await self._write(job)

    async def note_agents(self, rows: Iterable[AgentSeen]) -> None:
        """Agents last seen (``fleet.agents``): one upsert per host."""
        params = [
            (r.host, r.partition, r.last_seen, r.seq, _dumps(dict(r.labels)),
             _dumps(dict(r.anomalous)))
            for r in rows
        ]  # fmt: skip
        if not params:
            return

        def job(conn: Conn) -> None:
            conn.executemany(
                "INSERT INTO fleet_agents (host, partition, last_seen, seq, labels, anomalous)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (host) DO UPDATE SET"
                " partition = excluded.partition, last_seen = excluded.last_seen,"
                " seq = excluded.seq, labels = excluded.labels, anomalous = excluded.anomalous",
                params,
            )

        await self._write(job)

    async def list_agents(self, limit: int = 1000) -> dict[str, Any]:
        """The agents most recently seen first (at most ``limit``), and how many there are."""
        return await self._read(lambda conn: q.agents(conn, limit))

    async def fleet_view(self, rule: str, since: float) -> tuple[list[AgentSeen], set[str]]:
        """For a fleet rule: the agents seen since ``since``, and the hosts with an open
        incident of ``rule``."""
        return await self._read(lambda conn: q.fleet_view(conn, rule, since))

    # -- retention -------------------------------------------------------------
    async def prune(self, retention_s: float, now: float) -> dict[str, int]:
        """Delete finished records older than ``retention_s``, in short batches; and the
        fleet's agents not seen for :data:`AGENTS_KEPT_S` (or ``retention_s`` if shorter).

        Open incidents and unfinished runs are kept whatever their age. Each
        batch is its own writer job, so runner writes interleave with pruning.
        """
        cutoff = now - retention_s
        counts: dict[str, int] = {}
        for table, where, key in q.PRUNE_RULES:
            counts[table] = 0
            before = now - min(retention_s, AGENTS_KEPT_S) if table == "fleet_agents" else cutoff
            while True:
                deleted = await self._write(q.prune_batch(table, where, before, key))
                counts[table] += deleted
                if deleted < q.PRUNE_BATCH:
                    break
                await asyncio.sleep(0)
        # hand freed pages back to the file system in bounded steps
        free = -1
        while sum(counts.values()):
            left = await self._db.maintain(self._db.backend.vacuum_step)
            if left == 0 or left == free:  # done, or auto_vacuum is off for this file
                break
            free = left
            await asyncio.sleep(0)
        return counts

    async def summary(self) -> dict[str, int]:
        """Counts for status pages."""
        return await self._read(q.summary)


def _new_id(conn: Conn, sql: str, row: tuple[Any, ...]) -> int:
    """Insert one row; its new id."""
    if isinstance(conn, sqlite3.Connection):  # RETURNING would defer SQLITE_FULL past the job
        cur = conn.execute(sql, row)
        assert cur.lastrowid is not None
        return cur.lastrowid
    return int(conn.execute(f"{sql} RETURNING id", row).fetchone()[0])


def _open_backend(state_dir: Path, database: str | None) -> tuple[Backend, Conn]:
    if database is None:
        path = state_dir / _DB_NAME
        return SqliteBackend(path), open_database(path)
    from batond.journal.pg import open_pg_database  # psycopg only when it is used

    return open_pg_database(database)

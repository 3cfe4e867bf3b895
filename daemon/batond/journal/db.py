"""Opening the journal's SQLite file safely: checks, pragmas, schema migrations.

Nothing here ever overwrites or deletes a file it cannot fully understand:
a file that is not SQLite, fails ``quick_check``, belongs to another program
or carries a newer schema raises ``StateError`` before anything is written.

Durability: WAL with ``synchronous=NORMAL``. A commit is a ``write()`` into
the WAL, so it survives the death of the process (SIGKILL, OOM kill) at any
moment; only a power loss or kernel crash can lose the last few commits,
never the database's consistency. ``FULL`` would fsync every commit and cost
the runner's latency budget for a risk (power loss mid-remediation) that
the restart's ``interrupted`` recovery covers anyway.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import IO

from batond import __version__
from batond.errors import StateError
from batond.journal.backend import render_schema

__all__ = ["APPLICATION_ID", "MIGRATIONS", "DbLock", "connect", "open_database"]

#: Marks the file as a batond journal (``PRAGMA application_id``): "btnd".
APPLICATION_ID = 0x62746E64
_HEADER = b"SQLite format 3\x00"

_V1 = """
CREATE TABLE incidents (
    id $id,  -- ids are never reused, even after pruning
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    severity TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'resolved')),
    opened_at $real NOT NULL,
    resolved_at $real,
    labels TEXT NOT NULL DEFAULT '{}',
    metric TEXT,
    feedback TEXT,
    feedback_at $real
);
CREATE INDEX incidents_open ON incidents (rule, key) WHERE state = 'open';
CREATE INDEX incidents_resolved_at ON incidents (resolved_at);

CREATE TABLE decisions (
    id $id,
    ts $real NOT NULL,
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    target TEXT NOT NULL,
    playbook TEXT,
    suppressed TEXT,
    candidates TEXT NOT NULL DEFAULT '[]',
    params TEXT NOT NULL DEFAULT '{}',
    labels TEXT NOT NULL DEFAULT '{}',
    severity TEXT NOT NULL,
    item TEXT,
    incident_id $int REFERENCES incidents (id) ON DELETE SET NULL
);
CREATE INDEX decisions_ts ON decisions (ts);
CREATE INDEX decisions_incident ON decisions (incident_id);

CREATE TABLE runs (
    id $id,
    rule TEXT NOT NULL,
    playbook TEXT NOT NULL,
    key TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    labels TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'waiting_approval', 'done')),
    outcome TEXT,
    created_at $real NOT NULL,
    started_at $real,
    ended_at $real,
    decision_id $int REFERENCES decisions (id) ON DELETE SET NULL,
    incident_id $int REFERENCES incidents (id) ON DELETE SET NULL,
    resumes $int REFERENCES runs (id) ON DELETE SET NULL
);
CREATE INDEX runs_unfinished ON runs (state) WHERE state != 'done';
CREATE INDEX runs_ended_at ON runs (ended_at);
CREATE INDEX runs_decision ON runs (decision_id);
CREATE INDEX runs_incident ON runs (incident_id);
CREATE INDEX runs_resumes ON runs (resumes);

CREATE TABLE steps (
    id $id,
    run_id $int NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    action TEXT NOT NULL,
    attempt $int NOT NULL,
    status TEXT NOT NULL,
    started_at $real NOT NULL,
    ended_at $real,
    exit_code $int,
    stdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    detail TEXT
);
CREATE INDEX steps_run ON steps (run_id);
CREATE INDEX steps_running ON steps (run_id) WHERE status = 'running';

CREATE TABLE approvals (
    id $id,
    run_id $int NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    verdict TEXT NOT NULL,
    by TEXT NOT NULL,
    at $real NOT NULL
);
CREATE INDEX approvals_run ON approvals (run_id);

CREATE TABLE silences (
    id $id,
    matchers TEXT NOT NULL,
    starts_at $real NOT NULL,
    ends_at $real NOT NULL,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at $real NOT NULL,
    expired_at $real
);
CREATE INDEX silences_ends_at ON silences (ends_at);

-- named JSON documents: rule state (timers, counts, cooldowns, circuits,
-- outcome statistics), pause, anything saved whole
CREATE TABLE kv (
    name TEXT PRIMARY KEY,
    value $blob NOT NULL,
    updated_at $real NOT NULL
);
"""

# Why each decision was taken (again) and suppressed, in words; what closed an incident;
# which runs were escalations (paging someone, counted in no resolve rate).
_V2 = """
ALTER TABLE decisions ADD COLUMN cause TEXT NOT NULL DEFAULT '';
ALTER TABLE decisions ADD COLUMN reason TEXT NOT NULL DEFAULT '';
CREATE INDEX decisions_rule_key ON decisions (rule, key);
ALTER TABLE incidents ADD COLUMN resolved_by TEXT;
ALTER TABLE runs ADD COLUMN escalation $int NOT NULL DEFAULT 0;
"""

# The nonces of the fleet's remediation requests this agent took (docs/fleet.md): a
# replayed request is refused across restarts; rows older than the window are pruned.
_V3 = """
CREATE TABLE fleet_nonces (
    nonce TEXT PRIMARY KEY,
    ts $real NOT NULL
);
CREATE INDEX fleet_nonces_ts ON fleet_nonces (ts);
"""

# What the run view shows (docs/api.md): each step attempt's rendered ``with:`` values
# (JSON, redacted and bounded by remedy.shown before they are stored) and the run an
# escalation run escalates (its chain's last run, or the interrupted run).
_V4 = """
ALTER TABLE steps ADD COLUMN args TEXT;
ALTER TABLE runs ADD COLUMN escalates $int REFERENCES runs (id) ON DELETE SET NULL;
CREATE INDEX runs_escalates ON runs (escalates);
"""

# Which central instance of a fleet ran each run (docs/fleet.md#central): NULL on a
# single host. The owner of a partition recovers the unfinished runs of instances gone.
_V5 = """
ALTER TABLE runs ADD COLUMN instance TEXT;
"""

# Agents last seen (docs/fleet.md#agents-last-seen): one row per agent host, written by
# the owner of its partition at most once per batch_interval; labels are JSON.
_V6 = """
CREATE TABLE fleet_agents (
    host TEXT PRIMARY KEY,
    partition $int NOT NULL,
    last_seen $real NOT NULL,
    seq $int NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX fleet_agents_last_seen ON fleet_agents (last_seen);
"""

# Anomalous metrics of each agent (docs/fleet.md#fleet-rules): JSON metric -> when a
# series of it on the host last scored at or above its model's threshold.
_V7 = """
ALTER TABLE fleet_agents ADD COLUMN anomalous TEXT NOT NULL DEFAULT '{}';
"""

#: Schema migrations; entry N-1 takes the schema from version N-1 to N. Append only.
#: Written once for both backends: ``journal.backend.render_schema`` fills in the types.
MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7)


class DbLock:
    """An exclusive ``flock`` on ``journal.lock``: one batond per state_dir.

    The kernel drops it when the process dies, so a SIGKILLed daemon never
    leaves a stale lock behind.
    """

    def __init__(self, path: Path) -> None:
        try:
            self._file: IO[str] | None = open(path, "a+", encoding="ascii")  # noqa: SIM115
        except OSError as exc:
            raise StateError(f"{path}: cannot open the journal lock: {exc.strerror}") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise StateError(
                f"{path.parent}: the journal is in use by another batond process"
            ) from None
        self._file.truncate(0)
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit)."""
    uri = f"file:{path}?mode={'ro' if read_only else 'rwc'}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def open_database(path: Path) -> sqlite3.Connection:
    """The journal at ``path``, checked and migrated; creates it when absent."""
    existing = _check_file(path)
    if existing:
        _check_contents(path)
    else:
        # step outputs and approvals are private: owner only (SQLite gives -wal/-shm the same)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    try:
        conn = connect(path)
        try:
            _configure(conn, new=not existing)
            _migrate(conn, path)
        except BaseException:
            conn.close()
            raise
    except sqlite3.Error as exc:
        raise StateError(f"{path}: cannot open the journal: {exc}") from None
    return conn


def _check_file(path: Path) -> bool:
    """True when a non-empty file exists; raises StateError for what SQLite must not touch."""
    try:
        with open(path, "rb") as f:
            header = f.read(len(_HEADER))
    except FileNotFoundError:
        return False
    except IsADirectoryError:
        raise StateError(f"{path}: is a directory, not a journal database") from None
    except OSError as exc:
        raise StateError(f"{path}: cannot read the journal: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise StateError(f"{path}: the journal is not writable by this user")
    if not header:
        return False  # an empty file is a new database to SQLite
    if header != _HEADER:
        raise StateError(
            f"{path}: not a SQLite database (corrupted or another file); "
            "it was left untouched: move it away or point state_dir elsewhere"
        )
    return True


def _check_contents(path: Path) -> None:
    """Integrity, ownership and schema version, all read-only."""
    try:
        conn = connect(path, read_only=True)
    except sqlite3.Error as exc:
        raise StateError(f"{path}: cannot open the journal: {exc}") from None
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise StateError(_corrupt(path, "; ".join(problems)))
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app_id not in (0, APPLICATION_ID) or (tables and "schema_version" not in tables):
            raise StateError(
                f"{path}: a SQLite database of another program, not a batond journal; "
                "it was left untouched"
            )
        version = _version(conn) if tables else 0
    except sqlite3.DatabaseError as exc:
        raise StateError(_corrupt(path, str(exc))) from None
    finally:
        conn.close()
    if version > len(MIGRATIONS):
        raise StateError(
            f"{path}: journal schema version {version} is newer than this batond "
            f"{__version__} understands (up to {len(MIGRATIONS)}); upgrade batond "
            "or use another state_dir; the journal was left untouched"
        )


def _corrupt(path: Path, why: str) -> str:
    return (
        f"{path}: the journal is corrupted ({why}); it was left untouched: "
        "keep a copy, then try `sqlite3 journal.db .recover` or move it away"
    )


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def _configure(conn: sqlite3.Connection, *, new: bool) -> None:
    if new:
        # must precede the first table; lets pruning hand pages back to the file system
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StateError(f"cannot switch the journal to WAL mode (got {mode})")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")  # Journal checkpoints on its own thread


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
        "applied_at REAL NOT NULL, batond_version TEXT NOT NULL)"
    )
    current = _version(conn)
    for version in range(current + 1, len(MIGRATIONS) + 1):
        script = render_schema(MIGRATIONS[version - 1], "sqlite")
        record = f"INSERT INTO schema_version VALUES ({version}, {time.time()!r}, '{__version__}');"
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{script}\n{record}\nCOMMIT;")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise StateError(
                f"{path}: migrating the journal to version {version} failed: {exc}"
            ) from None

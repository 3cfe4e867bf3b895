"""The journal in PostgreSQL (psycopg 3): one database for a central instance's fleet.

Same schema, same migrations, same jobs as SQLite (``journal.backend``).
What differs, and why:

- Durability: a commit returns after the server has written its WAL
  (``synchronous_commit`` as the server has it, ``on`` by default), so a
  run's intent survives the death of batond and of the server alike.
- Write-ahead records go through the writer thread, never inline on the
  event loop: a commit here is a network round trip plus the server's WAL
  flush, which must not hold the loop (``bench/bench_journal.py`` measures it).
- Ids come from the database's sequences (``nextval``), so several batond
  processes may share one journal without handing out the same id.
- Unreachable server: a statement fails, the writer reports trouble
  (``journal_unavailable`` for runs), and the next transaction reconnects;
  after a failed attempt the next is at least ``RECONNECT_EVERY_S`` later so
  a dead server is not hammered. Nothing is written again behind the
  caller's back: a failed write fails its caller, like a full disk does on
  SQLite. A read that meets a session the server dropped (a restart, a
  failover) runs again once on a new one (``writer.Database``): a read
  changes nothing, and on SQLite a read never fails that way.
- Maintenance: autovacuum does what SQLite's checkpoints and incremental
  vacuum do, so those are no-ops.
- NUL: PostgreSQL's text cannot hold the character (SQLite's can); a text
  parameter that has one is written with U+FFFD in its place, so that a key
  or reason carrying one (from an input's label) is journaled, not refused
  with the whole batch of decisions it was posted in. (A step's output
  has it replaced on both backends: ``facade._tail``.)
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import pq

from batond import __version__
from batond.errors import StateError
from batond.journal.backend import Conn, Cursor, placeholders, render_schema
from batond.journal.db import APPLICATION_ID, MIGRATIONS

__all__ = ["RECONNECT_EVERY_S", "PgBackend", "PgConn", "open_pg_database", "public_url"]

#: Least time between two connection attempts while the server is away.
RECONNECT_EVERY_S = 1.0
#: Seconds to wait for a connection, and for any one statement.
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 30_000


def public_url(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class PgConn:
    """A psycopg connection in autocommit mode that speaks the jobs' ``?`` SQL."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self._sql: dict[str, str] = {}  # translated once: jobs repeat the same statements

    def _translate(self, sql: str) -> str:
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = placeholders(sql)
        return out

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        if not parameters:  # no placeholders: a script may hold several statements
            return self.raw.execute(sql.encode())
        return self.raw.execute(self._translate(sql).encode(), _without_nul(parameters))

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        rows = [_without_nul(row) for row in parameters]
        cur = self.raw.cursor()
        if rows:
            cur.executemany(self._translate(sql).encode(), rows)
        return cur

    @property
    def broken(self) -> bool:
        return self.raw.closed or self.raw.broken


def _without_nul(row: Any) -> Any:
    """``row`` with NUL in its text values as U+FFFD (the module's docstring says why);
    ``row`` itself when there is none, the usual case."""
    if not any(type(v) is str and "\x00" in v for v in row):
        return row
    return tuple(v.replace("\x00", "\ufffd") if type(v) is str else v for v in row)


class PgBackend:
    errors: tuple[type[Exception], ...] = (psycopg.Error,)
    inline_write_ahead = False

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = public_url(url)
        self._failed_at = float("-inf")  # the last connection attempt that failed

    def connect(self) -> PgConn:
        try:
            raw = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                application_name="batond-journal",
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
            )
        except psycopg.Error:
            self._failed_at = time.monotonic()
            raise
        return PgConn(raw)

    def broken(self, conn: Conn) -> bool:
        return _pg(conn).broken

    def usable(self, conn: Conn) -> Conn:
        pg = _pg(conn)
        if not pg.broken:
            return conn
        # throttled only while the server refuses: the writer's reconnection a moment
        # ago must not keep the reader (or the checkpointer) from reconnecting too
        if time.monotonic() - self._failed_at < RECONNECT_EVERY_S:
            raise psycopg.OperationalError("the journal database is unreachable (retrying)")
        pg.raw.close()
        return self.connect()

    def begin(self, conn: Conn, *, write: bool) -> None:
        # one snapshot for a multi-query read, as SQLite's BEGIN gives
        conn.execute("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def in_transaction(self, conn: Conn) -> bool:
        status = _pg(conn).raw.info.transaction_status
        return status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)

    def checkpoint(self, conn: Conn) -> None:
        return None

    def vacuum_step(self, conn: Conn) -> int:
        return 0

    def close(self, conn: Conn) -> None:
        _pg(conn).raw.close()


def _pg(conn: Conn) -> PgConn:
    assert isinstance(conn, PgConn)
    return conn


def open_pg_database(url: str) -> tuple[PgBackend, PgConn]:
    """The journal database at ``url``, checked and migrated; raises StateError."""
    backend = PgBackend(url)
    try:
        conn = backend.connect()
    except psycopg.Error as exc:
        raise StateError(f"{backend.where}: cannot open the journal: {_first_line(exc)}") from None
    try:
        _migrate(conn, backend.where)
    except BaseException:
        conn.raw.close()
        raise
    return backend, conn


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _migrate(conn: PgConn, where: str) -> None:
    """Every missing migration in one transaction, under an advisory lock: two
    instances starting at once against one database migrate it once."""
    try:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(?)", (APPLICATION_ID,))
        current = _check(conn, where)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
            " applied_at DOUBLE PRECISION NOT NULL, batond_version TEXT NOT NULL)"
        )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            conn.execute(render_schema(MIGRATIONS[version - 1], "postgresql"))
            conn.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)", (version, time.time(), __version__)
            )
        conn.execute("COMMIT")
    except psycopg.Error as exc:
        if not conn.broken:
            conn.execute("ROLLBACK")
        raise StateError(f"{where}: migrating the journal failed: {_first_line(exc)}") from None
    except BaseException:
        if not conn.broken:
            conn.execute("ROLLBACK")
        raise


def _check(conn: PgConn, where: str) -> int:
    """The schema version; StateError for a database of another program or a newer batond."""
    tables = {
        r[0]
        for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    }
    if tables and "schema_version" not in tables:
        raise StateError(
            f"{where}: a database of another program, not a batond journal; it was left untouched"
        )
    if not tables:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    version = int(row[0] or 0)
    if version > len(MIGRATIONS):
        raise StateError(
            f"{where}: journal schema version {version} is newer than this batond "
            f"{__version__} understands (up to {len(MIGRATIONS)}); upgrade batond "
            "or use another database; the journal was left untouched"
        )
    return version

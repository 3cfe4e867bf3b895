"""The journal on each of its backends, for tests that hold for both (issue 17).

``journal_factory`` (tests/conftest.py) is parametrized "sqlite" and "postgresql":
the SQLite journal in the test's ``tmp_path``, or a PostgreSQL journal in a
private database on the machine's server (``support.pg_database``), created
for the test and dropped after it, so every test starts from an empty
journal as it does on SQLite. PostgreSQL must be running (the test command
starts it): nothing here skips.

``rows`` and ``execute`` use a connection of their own, as another process
would: they see only what was committed. Both take the journal's ``?``
placeholders.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from batond.journal.backend import placeholders
from batond.journal.facade import Journal

__all__ = ["BACKENDS", "JournalFactory"]

BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class JournalFactory:
    backend: str  # "sqlite" or "postgresql"
    state_dir: Path
    database: str | None  # the PostgreSQL URL; None for SQLite

    def open(self, state_dir: Path | None = None, *, instance: str | None = None) -> Journal:
        """A Journal on this test's journal (again, after a close: a restart)."""
        return Journal.open(state_dir or self.state_dir, self.database, instance=instance)

    def rows(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """What an independent connection reads: committed rows only."""
        if self.database is None:
            conn = sqlite3.connect(f"file:{self.state_dir / 'journal.db'}?mode=ro", uri=True)
            try:
                return conn.execute(sql, parameters).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self.database) as pg:
            return [tuple(r) for r in pg.execute(placeholders(sql).encode(), parameters)]

    def script(self, sql: str) -> None:
        """Several statements, committed together (an old schema, say)."""
        if self.database is None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.state_dir / "journal.db")
            try:
                conn.executescript(f"BEGIN;\n{sql}\nCOMMIT;")
            finally:
                conn.close()
            return
        with psycopg.connect(self.database) as pg:
            pg.execute(sql.encode())

    def execute(self, sql: str, rows: Iterable[tuple[Any, ...]] | None = None) -> None:
        """Write directly, in one transaction: ``sql`` once, or once for each of ``rows``
        (bulk history, another program's table)."""
        if self.database is None:
            conn = sqlite3.connect(self.state_dir / "journal.db")
            try:
                with conn:
                    if rows is None:
                        conn.execute(sql)
                    else:
                        conn.executemany(sql, rows)
            finally:
                conn.close()
            return
        with psycopg.connect(self.database) as pg, pg.cursor() as cur:
            if rows is None:
                cur.execute(sql.encode())
            else:
                cur.executemany(placeholders(sql).encode(), list(rows))

    @contextlib.contextmanager
    def writes_held(self) -> Iterator[None]:
        """Another session that keeps the journal's writes waiting until the block ends
        (reads go on)."""
        if self.database is None:
            conn = sqlite3.connect(self.state_dir / "journal.db", isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")  # the journal's writer waits for this lock
                yield
                conn.execute("ROLLBACK")
            finally:
                conn.close()
            return
        with psycopg.connect(self.database) as pg:  # a transaction until the block ends
            pg.execute(
                b"LOCK TABLE incidents, decisions, runs, steps, kv IN SHARE ROW EXCLUSIVE MODE"
            )
            yield
            pg.rollback()

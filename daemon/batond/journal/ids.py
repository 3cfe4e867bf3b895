"""Incident and decision ids, handed out at once on the engine loop (no round trip).

SQLite: this process holds the journal's lock, so it alone allocates ids: a
counter past every id ever given. PostgreSQL: several batond processes may
share the database, so ids are drawn from its sequences in blocks (``nextval``
never hands the same value twice, even across sessions); the next block is
fetched in the background while half of the current one is left.
"""

from __future__ import annotations

import functools
import threading
from collections import deque
from typing import Protocol

from batond.journal.backend import Conn
from batond.journal.writer import Database

__all__ = ["BLOCK", "CounterIds", "IdSource", "SequenceIds"]

#: Ids reserved per sequence fetch.
BLOCK = 512
_TABLES = ("incidents", "decisions")


class IdSource(Protocol):
    def take(self, table: str) -> int: ...


class CounterIds:
    def __init__(self, incident: int, decision: int) -> None:
        self._next = {"incidents": incident, "decisions": decision}

    def take(self, table: str) -> int:
        value = self._next[table]
        self._next[table] = value + 1
        return value


class SequenceIds:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._free: dict[str, deque[int]] = {t: deque() for t in _TABLES}
        self._fetching: set[str] = set()
        for table in _TABLES:
            self._add(table, db.run_sync(functools.partial(_reserve, table=table)))

    def take(self, table: str) -> int:
        with self._lock:
            free = self._free[table]
            value = free.popleft() if free else None
            low = len(free) < BLOCK // 2 and table not in self._fetching
            if low:
                self._fetching.add(table)
        if low:
            self._db.post(lambda conn: self._refill(conn, table))
        if value is None:  # a burst used the whole block: wait for ids (rare)
            self._add(table, self._db.run_sync(lambda conn: _reserve(conn, table)))
            return self.take(table)
        return value

    def _refill(self, conn: Conn, table: str) -> None:
        try:
            ids = _reserve(conn, table)
        except BaseException:
            with self._lock:  # the next take asks again
                self._fetching.discard(table)
            raise
        self._add(table, ids)

    def _add(self, table: str, ids: list[int]) -> None:
        with self._lock:
            self._free[table].extend(ids)
            self._fetching.discard(table)


def _reserve(conn: Conn, table: str) -> list[int]:
    rows = conn.execute(
        "SELECT nextval(pg_get_serial_sequence(?, 'id')) FROM generate_series(1, ?)",
        (table, BLOCK),
    ).fetchall()
    return [int(r[0]) for r in rows]

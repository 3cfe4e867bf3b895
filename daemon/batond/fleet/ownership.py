"""Partition ownership: PostgreSQL advisory locks on one session, epochs as fencing tokens.

An instance owns partition ``p`` while its session holds the advisory lock
``(LOCK_CLASS, p)`` (``pg_try_advisory_lock(int, int)``, session level): the
server grants it to one session at a time, and frees it when that session
ends, so a crashed instance's partitions are free as soon as its connection
drops. Every claim bumps ``fleet_partitions.epoch`` (and names the owner): the
epoch is the fencing token. Before acting on a partition's input an instance
:meth:`Ownership.confirm` s, on the same session, that it still holds the lock
and that the epoch is the one it claimed; a stale owner (a session that broke,
a lock taken over) learns it there and does not act.

The session must be a real one: behind a pooler in transaction mode advisory
locks would wander between clients (docs/fleet.md, limits).
"""

from __future__ import annotations

from typing import Any

import psycopg

__all__ = ["LOCK_CLASS", "Ownership", "connect"]

#: The first key of every partition lock ("btnd"): the second is the partition.
LOCK_CLASS = 0x62746E64
#: Seconds to wait for the connection, and for any statement on it.
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 5000

Conn = psycopg.AsyncConnection[Any]


async def connect(url: str, instance: str) -> Conn:
    """The instance's session: autocommit, short timeouts, TCP keepalives (a server that
    vanished is noticed within seconds, not at the kernel's two hours)."""
    return await psycopg.AsyncConnection.connect(
        url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        application_name=f"batond-fleet {instance}"[:63],
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
    )


class Ownership:
    """The partitions this session holds, and their epochs."""

    def __init__(self, conn: Conn, instance: str) -> None:
        self.conn = conn
        self.instance = instance
        self.held: dict[int, int] = {}  # partition -> the epoch of our claim

    async def try_claim(self, partition: int) -> int | None:
        """The new epoch when the lock was free and is now ours; None when another holds it."""
        cur = await self.conn.execute(
            "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, partition)
        )
        row = await cur.fetchone()
        if row is None or not row[0]:
            return None
        try:
            cur = await self.conn.execute(
                "INSERT INTO fleet_partitions (partition, epoch, owner, since)"
                " VALUES (%s, 1, %s, extract(epoch from clock_timestamp()))"
                " ON CONFLICT (partition) DO UPDATE SET epoch = fleet_partitions.epoch + 1,"
                " owner = excluded.owner, since = excluded.since RETURNING epoch",
                (partition, self.instance),
            )
            row = await cur.fetchone()
        except BaseException:
            await self._unlock_quietly(partition)
            raise
        assert row is not None
        self.held[partition] = int(row[0])
        return self.held[partition]

    async def release(self, partition: int) -> None:
        """Give the partition up (its lock last: what it stopped doing has stopped)."""
        self.held.pop(partition, None)
        await self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, partition))

    async def _unlock_quietly(self, partition: int) -> None:
        try:
            await self.conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, partition))
        except psycopg.Error:
            pass  # a broken session frees its locks anyway

    async def confirm(self, partition: int) -> bool:
        """Whether this session still holds ``partition`` at the epoch it claimed."""
        epoch = self.held.get(partition)
        if epoch is None:
            return False
        cur = await self.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = %s AND objid = %s AND objsubid = 2 AND granted"
            " AND pid = pg_backend_pid())"
            " AND (SELECT epoch FROM fleet_partitions WHERE partition = %s) = %s",
            (LOCK_CLASS, partition, partition, epoch),
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    async def locked(self) -> set[int]:
        """The partitions whose locks this session holds, as the server says."""
        cur = await self.conn.execute(
            "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
            " AND objsubid = 2 AND granted AND pid = pg_backend_pid()",
            (LOCK_CLASS,),
        )
        return {int(r[0]) for r in await cur.fetchall()}

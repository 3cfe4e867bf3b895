"""The members of a fleet's central tier: one row per instance in PostgreSQL.

Every ``fleet.heartbeat`` an instance writes its row (its id, the backend pid of
its session, what it holds) and reads everyone's. A member is live while its
row was written within ``fleet.lease`` *and* its session is still connected
(its backend pid is in ``pg_stat_activity``): a SIGKILLed instance's session
ends at once, so the survivors count it gone at their next heartbeat instead
of a lease later. Times are the database's clock, never an instance's, so a
skewed host clock cannot make a member look dead or alive.

All statements run on the instance's one session connection (``fleet.ownership``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["FORGET_AFTER_S", "SCHEMA", "Member", "beat", "ensure_schema", "members"]

#: Rows of members gone longer than this are deleted (until then the API shows them).
FORGET_AFTER_S = 86400.0
#: Serializes the schema's creation (CREATE ... IF NOT EXISTS races under concurrency).
_SCHEMA_LOCK = 0x62746E65

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS fleet_members ("
    " instance TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,"
    " joined_at DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL,"
    " held INTEGER[] NOT NULL DEFAULT '{}')",
    "CREATE TABLE IF NOT EXISTS fleet_partitions ("
    " partition INTEGER PRIMARY KEY, epoch BIGINT NOT NULL, owner TEXT NOT NULL,"
    " since DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE IF NOT EXISTS fleet_checkpoints ("
    " partition INTEGER PRIMARY KEY, epoch BIGINT NOT NULL, state BYTEA NOT NULL,"
    " saved_at DOUBLE PRECISION NOT NULL)",
)
_NOW = "extract(epoch from clock_timestamp())"


@dataclass(frozen=True, slots=True)
class Member:
    instance: str
    host: str
    pid: int
    last_seen: float  # epoch seconds, the database's clock
    held: tuple[int, ...]  # what it said it holds at its last heartbeat
    live: bool


Conn = psycopg.AsyncConnection[Any]


async def ensure_schema(conn: Conn) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in SCHEMA:
            await conn.execute(statement.encode())


async def beat(conn: Conn, instance: str, host: str, held: list[int], lease: float) -> list[Member]:
    """Write this instance's row (``held``: what it holds now) and read every member's."""
    await conn.execute(
        "INSERT INTO fleet_members (instance, host, pid, joined_at, last_seen, held)"
        f" VALUES (%s, %s, pg_backend_pid(), {_NOW}, {_NOW}, %s)"
        " ON CONFLICT (instance) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
        " last_seen = excluded.last_seen, held = excluded.held",
        (instance, host, sorted(held)),
    )
    await conn.execute(
        f"DELETE FROM fleet_members WHERE last_seen < {_NOW} - %s", (FORGET_AFTER_S,)
    )
    return await members(conn, lease)


async def members(conn: Conn, lease: float) -> list[Member]:
    """Every member row, with whether it is live (seen within ``lease``, session up)."""
    cur = await conn.execute(
        "SELECT m.instance, m.host, m.pid, m.last_seen, m.held,"
        f" m.last_seen > {_NOW} - %s"
        " AND EXISTS (SELECT 1 FROM pg_stat_activity a"
        " WHERE a.pid = m.pid AND a.datname = current_database())"
        " FROM fleet_members m ORDER BY m.instance",
        (lease,),
    )
    return [
        Member(str(i), str(h), int(pid), float(seen), tuple(held or ()), bool(live))
        for i, h, pid, seen, held, live in await cur.fetchall()
    ]

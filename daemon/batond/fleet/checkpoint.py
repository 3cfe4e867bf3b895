"""Per-partition checkpoints of rule state in PostgreSQL (``fleet_checkpoints``).

The owner of a partition writes the part of its engine's rule state that belongs
to the partition's hosts (``engine.partial``: open incidents, pending ``for:``
timers, windows, cooldowns; and the governor's scopes of those keys: circuits,
``per_target`` windows, streaks) every heartbeat when it changed, and once more when
it gives the partition up; a new owner merges it into its engine before it takes
the partition's first batch, so a pending timer fires there at its time.

A write is fenced: it lands only while the writer's epoch is the partition's
current one, so a stale owner can never overwrite the checkpoint of the new one.
"""

from __future__ import annotations

from typing import Any

import orjson

from batond.fleet.membership import Conn

__all__ = ["load", "save"]

_NOW = "extract(epoch from clock_timestamp())"


async def save(conn: Conn, partition: int, epoch: int, state: dict[str, Any]) -> bool:
    """Write the checkpoint; False when ``epoch`` is no longer the partition's (fenced)."""
    blob = orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS)
    cur = await conn.execute(
        "INSERT INTO fleet_checkpoints (partition, epoch, state, saved_at)"
        f" SELECT %s, %s, %s, {_NOW}"
        " WHERE (SELECT epoch FROM fleet_partitions WHERE partition = %s) = %s"
        " ON CONFLICT (partition) DO UPDATE SET epoch = excluded.epoch,"
        " state = excluded.state, saved_at = excluded.saved_at",
        (partition, epoch, blob, partition, epoch),
    )
    return cur.rowcount > 0


async def load(conn: Conn, partition: int) -> dict[str, Any] | None:
    """The partition's last checkpoint, or None (never written, or not JSON)."""
    cur = await conn.execute(
        "SELECT state FROM fleet_checkpoints WHERE partition = %s", (partition,)
    )
    row = await cur.fetchone()
    if row is None:
        return None
    try:
        state = orjson.loads(bytes(row[0]))
    except orjson.JSONDecodeError:
        return None
    return state if isinstance(state, dict) else None

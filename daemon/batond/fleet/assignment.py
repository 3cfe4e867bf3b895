"""Who should own what: the pure fair-share plan of one central instance.

Each instance decides for itself, from what it reads in PostgreSQL (the live
members, what each says it holds) and what it holds: keep at most its fair
share ``ceil(P / live members)``, release the excess (the partitions it
prefers least), and try to claim free partitions up to its share, the ones
it prefers most first. Preference is rendezvous hashing (the CRC-32 of
``instance/partition``): instances try different partitions first, so they
rarely contend for the same lock, and the partitions an instance keeps do
not depend on the order in which the others came.

The locks themselves (``fleet.ownership``) are what makes ownership exclusive;
this plan only decides what to try. Shares sum to at least P whatever the
count, so every partition finds an owner once the members agree on who is live.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["Plan", "fair_share", "plan", "preference"]


@dataclass(frozen=True, slots=True)
class Plan:
    """What one instance does in one round: release these, then try these in order
    until it holds ``want`` partitions."""

    release: tuple[int, ...]
    claim: tuple[int, ...]
    want: int  # how many more it should hold after releasing


def fair_share(partitions: int, live: int) -> int:
    """The most partitions one of ``live`` instances should hold."""
    return math.ceil(partitions / max(1, live))


def preference(instance: str, partition: int) -> int:
    """How much ``instance`` wants ``partition`` (higher first); the same everywhere."""
    return zlib.crc32(f"{instance}/{partition}".encode())


def plan(
    me: str,
    live: Collection[str],
    held: Collection[int],
    partitions: int,
    taken: Collection[int] = (),
) -> Plan:
    """The round of ``me`` holding ``held``; ``live`` are the members seen alive (``me``
    counts whether listed or not); ``taken`` are partitions other live members hold."""
    members = set(live) | {me}
    share = fair_share(partitions, len(members))
    mine = sorted(held, key=lambda p: (preference(me, p), p))  # least wanted first
    excess = max(0, len(mine) - share)
    release = tuple(mine[:excess])
    keep = set(mine[excess:])
    busy = keep | set(taken)
    free = [p for p in range(partitions) if p not in busy]
    free.sort(key=lambda p: (-preference(me, p), p))  # most wanted first
    want = max(0, share - len(keep))
    return Plan(release=release, claim=tuple(free) if want else (), want=want)

"""Partition ownership of central instances: the pure fair-share plan (fleet.assignment),
and the advisory locks, epochs and member rows against the machine's PostgreSQL
(fleet.ownership, fleet.membership), a private database per run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batond.engine.types import Decision
from batond.fleet.assignment import fair_share, plan, preference
from batond.fleet.membership import Member, beat, ensure_schema, members
from batond.fleet.ownership import Ownership, connect
from batond.fleet.partition import partition_of
from support import until
from test_pipeline import Ended, Parts, nginx_exited


# -- the plan (pure) -----------------------------------------------------------------------
def test_fair_share_is_the_ceiling() -> None:
    assert [fair_share(64, n) for n in (0, 1, 2, 3, 5, 64, 100)] == [64, 64, 32, 22, 13, 1, 1]


def test_alone_an_instance_wants_every_partition_most_preferred_first() -> None:
    p = plan("a", [], [], 8)
    assert (p.release, p.want, sorted(p.claim)) == ((), 8, list(range(8)))
    assert list(p.claim) == sorted(range(8), key=lambda x: -preference("a", x))


def test_a_member_joining_makes_the_holder_release_its_excess() -> None:
    p = plan("a", ["a", "b"], range(8), 8)
    assert (len(p.release), p.want, p.claim) == (4, 0, ())
    # the least preferred ones go, so what is kept does not depend on who came when
    kept = set(range(8)) - set(p.release)
    assert min(preference("a", k) for k in kept) > max(preference("a", r) for r in p.release)


def test_free_partitions_are_claimed_up_to_the_share_taken_ones_never() -> None:
    p = plan("b", ["a", "b", "c"], [0], 9, taken=[1, 2, 3, 4])
    assert p.release == ()
    assert p.want == 2  # share 3, holds 1
    assert sorted(p.claim) == [5, 6, 7, 8]  # neither its own nor the taken ones


def test_shares_cover_every_partition_when_all_follow_their_plans() -> None:
    # a fleet converges: rounds of three instances over free partitions, in turn
    held: dict[str, set[int]] = {m: set() for m in "abc"}
    for _ in range(3):
        for me in held:
            taken = {p for m, s in held.items() if m != me for p in s}
            p = plan(me, list(held), held[me], 64, taken)
            held[me] -= set(p.release)
            held[me] |= set(p.claim[: p.want])
    owned = [p for s in held.values() for p in s]
    assert sorted(owned) == list(range(64))  # every partition, each once
    assert sorted(len(s) for s in held.values()) == [20, 22, 22]


def test_a_dead_member_is_not_counted() -> None:
    p = plan("a", ["a"], range(32), 64)  # b died: a's share is everything
    assert (p.release, p.want, len(p.claim)) == ((), 32, 32)


# -- the locks, epochs and rows (PostgreSQL) ----------------------------------------------
@pytest.fixture
async def sessions(database: str) -> AsyncIterator[list[Ownership]]:
    conns = [await connect(database, f"i{n}") for n in range(2)]
    await ensure_schema(conns[0])
    await ensure_schema(conns[1])  # twice: nothing happens
    yield [Ownership(c, f"i{n}") for n, c in enumerate(conns)]
    for c in conns:
        await c.close()


async def test_one_session_at_a_time_and_every_claim_bumps_the_epoch(
    sessions: list[Ownership],
) -> None:
    a, b = sessions
    first = await a.try_claim(3)
    assert first is not None
    assert await b.try_claim(3) is None  # held by a
    assert await a.confirm(3) and not await b.confirm(3)
    assert await a.locked() == {3} and await b.locked() == set()
    await a.release(3)
    assert not await a.confirm(3)
    second = await b.try_claim(3)
    assert second == first + 1
    assert await b.confirm(3)
    await b.release(3)


async def test_a_dropped_session_frees_its_locks_and_fences_its_owner(
    database: str, sessions: list[Ownership]
) -> None:
    a, b = sessions
    c = Ownership(await connect(database, "crashing"), "crashing")
    assert await c.try_claim(5) is not None
    assert await b.try_claim(5) is None
    await c.conn.close()  # as a SIGKILL leaves it: the server ends the session
    # (the server's backend exits a moment after the socket closes: then the lock is free)
    epoch = await until(lambda: b.try_claim(5), 10.0, "the lock to be freed")
    # an owner that lost its lock is told so before it acts, even if it still believes
    a.held[5] = epoch - 1  # (as a stale owner would remember it)
    assert not await a.confirm(5)
    await b.release(5)


async def test_members_are_live_while_their_session_is(
    database: str, sessions: list[Ownership]
) -> None:
    a, _ = sessions
    gone = await connect(database, "gone")
    await beat(gone, "gone", "h2", [7], lease=60.0)
    seen = await beat(a.conn, "i0", "h1", [1, 2], lease=60.0)
    assert {(m.instance, m.live, m.held) for m in seen} >= {
        ("gone", True, (7,)),
        ("i0", True, (1, 2)),
    }
    await gone.close()  # its row is fresh, but its session ended: gone at once

    async def gone_is_gone() -> dict[str, Member] | None:
        after = {m.instance: m for m in await members(a.conn, lease=60.0)}
        return after if not after["gone"].live else None

    after = await until(gone_is_gone, 10.0, "the closed session's member to be gone")
    assert after["i0"].live is True
    stale = {m.instance: m for m in await members(a.conn, lease=0.0)}
    assert stale["i0"].live is False  # not seen within the lease


# -- fencing: the pipeline asks before a run starts -----------------------------------------
class OwnershipFence:
    """What ``fleet.central.Central.refuses`` asks, for host ``a``'s partition."""

    def __init__(self, own: Ownership, partition: int) -> None:
        self.own, self.partition = own, partition

    async def refuses(self, decision: Decision) -> str | None:
        return None if await self.own.confirm(self.partition) else "taken over"


async def test_a_stale_owner_records_not_owner_and_starts_no_run(
    tmp_path: Path, sessions: list[Ownership]
) -> None:
    a, b = sessions
    partition = partition_of("a", 4)
    epoch = await a.try_claim(partition)
    assert epoch is not None
    parts = Parts(tmp_path, fence=OwnershipFence(a, partition))
    ended = Ended(parts.pipeline)
    parts.runner.listen(ended)
    try:
        now = time.time()
        await parts.pipeline.observe(nginx_exited(now), now)
        async with asyncio.timeout(30.0):
            await ended.event.wait()  # the owner's run ran to its end
        await parts.after_run.drain(10.0)
        assert (
            parts.registry.get_sample_value(
                "batond_decisions_total", {"rule": "down", "result": "run"}
            )
            == 1
        )
        await a.release(partition)
        assert await b.try_claim(partition) == epoch + 1  # another instance took over
        a.held[partition] = epoch  # ... while a still believes it owns the partition
        await parts.pipeline.observe(nginx_exited(now + 1), now + 1)
        await parts.journal.flush()
        decisions = (await parts.journal.list_decisions(10))["decisions"]
        newest = decisions[0]
        assert (newest["suppressed"], newest["reason"]) == ("not_owner", "taken over")
        assert (
            parts.registry.get_sample_value(
                "batond_decisions_total", {"rule": "down", "result": "not_owner"}
            )
            == 1
        )
        await parts.runner.shutdown(5.0)
        runs = (await parts.journal.list_runs(10))["runs"]
        assert len(runs) == 1  # only the owner's
    finally:
        await parts.close()
        await b.release(partition)

"""A central instance: joins the members, claims its share, takes its partitions' batches.

Every ``fleet.heartbeat`` one round on the instance's PostgreSQL session
(``fleet.ownership``): write its member row and read the others'
(``fleet.membership``), plan (``fleet.assignment``), release the excess, claim
free partitions up to its share. Each owned partition has an MQTT session of
its own, ``batond-fleet-<partition>`` (the same client id on every instance,
``clean_session=False``, QoS 1, subscribed to ``<prefix>/<p>/+``): the broker
keeps that session and queues its messages while nobody holds the partition,
and hands the queue to whichever instance connects next, so a batch the
broker accepted during a handover waits for the new owner instead of being
lost. A stale owner that still connected would be kicked by the broker when
the new owner connects (one client per id), and does not reconnect unless it
still holds the partition.

Order matters for "never owned by two": a partition is released by closing its
MQTT session, then writing the member row without it, then unlocking; it is
claimed by locking (bumping the epoch), then connecting. A broken database
session means every lock is gone: every partition session is closed at once.

Batches are unpacked (``fleet.wire``) into the bus, each item one input, by the
partition session's :class:`MqttSource` (``Central.take`` hands it the items): a
full bus pauses that session's reading instead of dropping, and a batch is
acknowledged once its items are queued and decided, as for ``mqtt.subscribe``. A
batch for a partition this instance does not hold (in flight while it was
released), on a topic that does not match its host, or malformed, is refused,
counted and logged (``batond_events_rejected_total{source="fleet"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import replace
from typing import Any, Protocol

import orjson
import psycopg

from batond.engine.fleet import AgentSeen
from batond.engine.governor import Governor
from batond.engine.keys import split_key
from batond.engine.partial import drop_keys, merge_keys, take_keys
from batond.engine.types import Decision
from batond.errors import InputError
from batond.events import Input
from batond.fleet import checkpoint, membership
from batond.fleet.agents import SeenAgents, host_labels
from batond.fleet.assignment import plan
from batond.fleet.membership import Member
from batond.fleet.ownership import Ownership, connect
from batond.fleet.partition import partition_filter, partition_of, partition_topic_host
from batond.fleet.wire import decode_batch
from batond.intake import Rejections
from batond.intake.bus import Bus
from batond.intake.mqtt import MqttSource, oversized
from batond.journal.pg import public_url
from batond.load.config import FleetConfig, MqttConfig
from batond.metrics import Metrics

__all__ = ["FLEET_PARTITION", "Central", "partition_client_id"]

log = logging.getLogger("batond.fleet")

#: Decisions that name no host are fenced on this partition (its owner decides them).
FLEET_PARTITION = 0
#: Least and most seconds between attempts while the database is unreachable.
_RETRY_MIN_S, _RETRY_MAX_S = 0.5, 10.0


class RuleStates(Protocol):
    """The engine, as far as checkpoints go (batond.engine.engine.Engine)."""

    governor: Governor

    def export_state(self, *, hosts_seen: bool = True) -> dict[str, Any]: ...

    def import_rule_states(self, state: Mapping[str, Any], only: Collection[str] = ()) -> None: ...


def key_partition(key: str, partitions: int, labels: Mapping[str, str] | None = None) -> int:
    """The partition an incident key belongs to: its ``host``'s (then the labels'), else
    :data:`FLEET_PARTITION`. Fencing and checkpoints both go by it."""
    host = split_key(key).get("host") or (labels or {}).get("host")
    return partition_of(host, partitions) if host else FLEET_PARTITION


def partition_client_id(prefix: str, partition: int) -> str:
    """The MQTT client id of a partition's session: the same on every instance."""
    return f"batond-{prefix.replace('/', '-')}-{partition}"


class Central:
    """The central role of one instance (a source of the daemon: ``run``, ``state``)."""

    def __init__(
        self,
        cfg: FleetConfig,
        mqtt: MqttConfig,
        bus: Bus,
        metrics: Metrics,
        database: str,
        engine: RuleStates | None = None,
    ) -> None:
        self.cfg = cfg
        self._engine = engine
        self._saved: dict[int, bytes] = {}  # partition -> its last checkpoint written
        self._on_claim: Callable[[int, frozenset[str]], Awaitable[None]] | None = None
        self._mqtt = mqtt
        self._bus = bus
        self._metrics = metrics
        self._database = database
        self._rejections = Rejections(metrics, "fleet")
        self._own: Ownership | None = None
        self._feeds: dict[int, asyncio.Task[None]] = {}
        self.members: tuple[Member, ...] = ()
        self.seen_at = 0.0  # when the members were last read (epoch seconds)
        self._state = "connecting"
        self._agents = SeenAgents(cfg.batch_interval)
        self._agent_log: Callable[[list[AgentSeen]], Awaitable[None]] | None = None

    def agents_to(self, write: Callable[[list[AgentSeen]], Awaitable[None]]) -> None:
        """Where the agents last seen are written (the journal's ``note_agents``), at
        most once per ``batch_interval`` per host, at each heartbeat."""
        self._agent_log = write

    def anomalies_from(self, anomalous: Callable[[str], Mapping[str, float]]) -> None:
        """Where a host's anomalous metrics come from (the models' ``anomalous``): each
        agent row written carries them, for fleet rules with ``anomalous:``."""
        self._agents.anomalous = anomalous

    def on_claim(self, hook: Callable[[int, frozenset[str]], Awaitable[None]]) -> None:
        """``hook(partition, gone)`` runs when a partition is claimed, before its first
        batch: the daemon recovers the runs that the instances ``gone`` left unfinished
        there. Set by the composition root before :meth:`run`."""
        self._on_claim = hook

    # -- what the daemon and the API see -----------------------------------------------
    @property
    def state(self) -> str:
        return self._state

    @property
    def held(self) -> dict[int, int]:
        """Partition -> epoch of what this instance holds now."""
        return dict(self._own.held) if self._own is not None else {}

    def view(self) -> dict[str, Any]:
        """``GET /api/v1/fleet``: who owns what (as the members last said), members."""
        owners = {p: m.instance for m in self.members if m.live for p in m.held}
        return {
            "instance": self.cfg.instance,
            "state": self._state,
            "partitions": self.cfg.partitions,
            "held": [{"partition": p, "epoch": e} for p, e in sorted(self.held.items())],
            "owners": {str(p): owners[p] for p in sorted(owners)},
            "unowned": [p for p in range(self.cfg.partitions) if p not in owners],
            "members": [_member_json(m) for m in self.members],
            "as_of": self.seen_at,
        }

    # -- fencing (the pipeline asks before a run starts) --------------------------------
    def partition_of(self, decision: Decision) -> int:
        return key_partition(decision.key, self.cfg.partitions, decision.labels)

    async def refuses(self, decision: Decision) -> str | None:
        """Why this instance may not act on ``decision`` (None: it may): it must hold
        the decision's partition at the epoch it claimed, as the database says now."""
        partition = self.partition_of(decision)
        own = self._own
        if own is None or partition not in own.held:
            return f"partition {partition} is not held by instance {self.cfg.instance}"
        try:
            confirmed = await own.confirm(partition)
        except psycopg.Error as exc:
            return f"partition {partition}: ownership cannot be confirmed: {_line(exc)}"
        if not confirmed:
            return f"partition {partition} was taken over (epoch {own.held.get(partition)})"
        return None

    # -- the loop ------------------------------------------------------------------------
    async def run(self, started: asyncio.Event) -> None:
        failures = 0
        while True:
            try:
                await self._session(started)
            except (psycopg.Error, OSError) as exc:
                log.warning("fleet database %s: %s", self._where, _line(exc))
            except asyncio.CancelledError:  # stopping: the session's end frees the locks
                await self._drop_all("stopping")
                raise
            # the backoff grows over failed attempts in a row, not over a long life
            failures = 0 if self._state == "connected" else failures + 1
            self._state = "disconnected"
            await self._drop_all("database session lost")
            started.set()  # (READY with no partition: the API says why)
            await asyncio.sleep(min(_RETRY_MAX_S, _RETRY_MIN_S * 2.0 ** min(failures, 8)))

    @property
    def _where(self) -> str:
        return public_url(self._database)

    async def _session(self, started: asyncio.Event) -> None:
        conn = await connect(self._database, self.cfg.instance)
        try:
            await membership.ensure_schema(conn)
            self._own = Ownership(conn, self.cfg.instance)
            # what the engine holds for any partition is not ours until claimed again
            # (a restart's saved state, a session lost meanwhile): checkpoints bring it
            self._forget(lambda key: True)
            self._saved.clear()
            log.info("fleet: instance %s joined (%s)", self.cfg.instance, self._where)
            while True:
                await self._round()
                self._state = "connected"
                started.set()
                await asyncio.sleep(self.cfg.heartbeat)
        finally:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def _beat(self) -> list[Member]:
        assert self._own is not None
        seen = await membership.beat(
            self._own.conn, self.cfg.instance, self.cfg.host, list(self._own.held),
            self.cfg.lease,
        )  # fmt: skip
        self.members, self.seen_at = tuple(seen), time.time()
        self._metrics.fleet_members_live.set(sum(1 for m in seen if m.live))
        self._metrics.fleet_partitions_owned.set(len(self._own.held))
        return seen

    async def _round(self) -> None:
        own = self._own
        assert own is not None
        me = self.cfg.instance
        seen = await self._beat()
        live = [m.instance for m in seen if m.live]
        taken = {p for m in seen if m.live and m.instance != me for p in m.held}
        todo = plan(me, live, own.held, self.cfg.partitions, taken)
        if todo.release:
            for p in todo.release:
                await self._stop_feed(p)
                await self._checkpoint(own, p, self._engine_state())  # the freshest, last
                self._forget(self._of(p))
                self._agents.forget(p)
                own.held.pop(p, None)
                self._saved.pop(p, None)
            await self._beat()  # the row says it no longer holds them before they unlock
            for p in todo.release:
                await own.release(p)
            log.info("fleet: released partitions %s (rebalancing)", list(todo.release))
            self._metrics.fleet_ownership.labels("released").inc(len(todo.release))
        claimed = await self._claim(own, todo.claim, todo.want)
        if claimed:
            await self._beat()
            log.info("fleet: claimed partitions %s", claimed)
            self._metrics.fleet_ownership.labels("claimed").inc(len(claimed))
        state = self._engine_state()
        for p in sorted(own.held):
            await self._checkpoint(own, p, state)
        await self._write_agents()

    async def _write_agents(self) -> None:
        rows = self._agents.due(time.time())
        if not rows or self._agent_log is None:
            return
        try:
            await self._agent_log(rows)
        except Exception as exc:  # the journal's trouble is its own to report: retry next beat
            self._agents.failed(rows)
            log.warning("fleet: agents last seen not written (%d hosts): %s", len(rows), exc)

    async def _claim(self, own: Ownership, candidates: tuple[int, ...], want: int) -> list[int]:
        claimed: list[int] = []
        for p in candidates:
            if len(claimed) >= want:
                break
            if await own.try_claim(p) is not None:
                claimed.append(p)
                await self._resume(own, p)
                await self._claimed(p)
                self._start_feed(p)
        return claimed

    async def _claimed(self, partition: int) -> None:
        if self._on_claim is None:
            return
        gone = frozenset(m.instance for m in self.members if not m.live)
        try:
            await self._on_claim(partition, gone)
        except Exception:  # the partition is ours all the same: its input must flow
            log.exception("fleet: recovering the runs of partition %d failed", partition)

    # -- checkpoints of the partitions' rule state (fleet.checkpoint) ---------------------
    def _of(self, partition: int) -> Callable[[str], bool]:
        parts = self.cfg.partitions
        return lambda key: key_partition(key, parts) == partition

    def _engine_state(self) -> dict[str, Any] | None:
        return self._engine.export_state(hosts_seen=False) if self._engine is not None else None

    async def _checkpoint(self, own: Ownership, partition: int, state: Any) -> None:
        """Write the partition's part of ``state`` when it changed since the last write."""
        epoch = own.held.get(partition)
        if state is None or epoch is None:
            return
        part = take_keys(state, self._of(partition))
        if self._engine is not None:  # the governor's circuits, budgets, streaks of those keys
            part["scopes"] = self._engine.governor.export_scopes(self._of(partition))
        blob = orjson.dumps(part, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS)
        if self._saved.get(partition) == blob:
            return
        if await checkpoint.save(own.conn, partition, epoch, part):
            self._saved[partition] = blob
        else:  # fenced: the partition has a newer epoch than ours
            log.warning("fleet: checkpoint of partition %d refused (epoch %d is stale)",
                        partition, epoch)  # fmt: skip

    async def _resume(self, own: Ownership, partition: int) -> None:
        """Merge the partition's last checkpoint into the engine (before its first batch)."""
        if self._engine is None:
            return
        part = await checkpoint.load(own.conn, partition)
        if not part:
            return
        scopes = part.get("scopes") or {}
        self._engine.governor.merge_scopes(scopes)
        rules = part.get("rules") or {}
        if rules:
            merged = merge_keys(self._engine.export_state(hosts_seen=False), part)
            self._engine.import_rule_states(merged, only=tuple(rules))
        keys = sum(len(r.get("open", {})) + len(r.get("pending", {})) for r in rules.values())
        circuits = len(scopes.get("circuits", ()))
        if keys or circuits:
            log.info("fleet: partition %d resumed from its checkpoint"
                     " (%d open or pending keys, %d open circuits)",
                     partition, keys, circuits)  # fmt: skip

    def _forget(self, select: Callable[[str], bool]) -> None:
        """Drop the engine's state of the keys ``select`` takes (no longer ours)."""
        if self._engine is None:
            return
        self._engine.governor.drop_scopes(select)
        state = self._engine.export_state(hosts_seen=False)
        names = tuple(take_keys(state, select)["rules"])
        if names:
            self._engine.import_rule_states(drop_keys(state, select), only=names)

    # -- a partition's MQTT session -------------------------------------------------------
    def _start_feed(self, partition: int) -> None:
        cfg = replace(
            self._mqtt, client_id=partition_client_id(self.cfg.prefix, partition), subscribe=()
        )

        async def still_mine() -> bool:
            own = self._own
            return own is not None and partition in own.held

        # the daemon's metrics: its pauses and redeliveries count (not its connection)
        source = MqttSource(
            cfg, self._bus, self._metrics, keep_going=still_mine, counts_connection=False
        )
        topic = partition_filter(self.cfg.prefix, partition)
        source.route(topic, 1, functools.partial(self.take, partition), source="fleet")
        task = asyncio.create_task(source.run(asyncio.Event()), name=f"fleet-p{partition}")
        self._feeds[partition] = task

    async def _stop_feed(self, partition: int) -> None:
        task = self._feeds.pop(partition, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _drop_all(self, why: str) -> None:
        """The database session is gone, and its locks with it: stop taking input."""
        held = sorted(self._feeds)
        self._own = None
        for p in held:
            await self._stop_feed(p)
        self.members = ()
        self._metrics.fleet_partitions_owned.set(0)
        if held and why != "stopping":
            self._metrics.fleet_ownership.labels("dropped").inc(len(held))
        if held:
            (log.info if why == "stopping" else log.warning)(
                "fleet: dropped partitions %s (%s)", held, why
            )

    def take(self, partition: int, topic: str, payload: bytes) -> list[Input]:
        """One batch off partition ``partition``'s session: the items for its session to
        queue (which holds them and pauses reading while the bus is full)."""
        where = f"topic {topic}"
        own = self._own
        if own is None or partition not in own.held:
            self._rejections.reject(InputError("not_owner", f"partition {partition}"), where)
            return []
        parsed = partition_topic_host(self.cfg.prefix, topic)
        refused = oversized(payload, self._mqtt.max_payload)
        if refused is not None or parsed is None or parsed[0] != partition:
            error = refused or InputError("bad_topic", f"not a topic of partition {partition}")
            self._rejections.reject(error, where)
            return []
        try:
            batch = decode_batch(payload, time.time(), "fleet")
        except InputError as exc:
            self._rejections.reject(exc, where)
            return []
        if batch.host != parsed[1]:
            error = InputError("host_mismatch", f"a batch of {batch.host!r} on {parsed[1]!r}")
            self._rejections.reject(error, where)
            return []
        self._agents.note(batch.host, partition, batch.seq, time.time(), host_labels(batch.items))
        if batch.errors:
            self._rejections.reject_all(batch.errors, where)
        return batch.items


def _member_json(m: Member) -> dict[str, Any]:
    return {
        "instance": m.instance,
        "host": m.host,
        "live": m.live,
        "last_seen": m.last_seen,
        "held": list(m.held),
    }


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

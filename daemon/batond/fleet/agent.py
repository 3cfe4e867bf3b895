"""A fleet agent's batches: this host's inputs, one message per interval, to central.

The agent keeps deciding and acting for its host as a single batond does; the
pipeline's tap hands every input it evaluated (host metrics, the process watch,
local MQTT and HTTP inputs) to :meth:`Batcher.take`. Every ``batch_interval``
the inputs taken since the last one become one batch (:mod:`batond.fleet.wire`)
with the next ``seq``, published at QoS 1 to ``<prefix>/<partition>/<host>``.

Nothing is dropped in silence, and memory is bounded:

- an input that names another host is not this host's to publish
  (``other_host``: central would refuse the whole item as ``host_mismatch``);
- one batch holds at most ``max_batch`` inputs (``batch_full`` past that);
- batches the broker has not acknowledged (it is away, or the connection
  dropped) wait in the outbox and go out, in order, once it is back; the outbox
  holds at most ``max_pending`` inputs, and a batch that does not fit pushes
  out the oldest (``outbox_full``: a ``seq`` gap tells central a batch is lost);
- what is left unsent at stop is counted too (``stopping``).

Each reason counts in ``batond_fleet_batch_dropped_total{reason}`` and is
logged once per interval at most. The next ``seq`` is kept in the journal
before the batch is published, so a restart never reuses one.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from batond.errors import BatondError
from batond.events import Event, Input, Sample
from batond.fleet.wire import encode_batch
from batond.metrics import Metrics

__all__ = ["MAX_BATCH_ITEMS", "MAX_PENDING_ITEMS", "SEQ_STATE", "Batcher", "Dropped"]

log = logging.getLogger("batond.fleet")

#: Inputs in one batch at most: ~100 bytes each keeps a batch within a broker's and a
#: central instance's message size limits (``mqtt.max_payload`` is 256 KiB by default).
MAX_BATCH_ITEMS = 2000
#: Inputs waiting in unacknowledged batches at most (a broker outage of a few minutes
#: for a host with a hundred series per interval).
MAX_PENDING_ITEMS = 100_000
#: Batches in flight at once when a backlog goes out (the MQTT connection allows 100).
SEND_WINDOW = 16
#: The journal's state document that keeps the last ``seq`` given out.
SEQ_STATE = "fleet_agent"

Publish = Callable[[str, bytes, int, bool], Awaitable[None]]


class Dropped(StrEnum):
    """Why an input taken by the agent was not published (the metric's ``reason``)."""

    OTHER_HOST = "other_host"
    BATCH_FULL = "batch_full"
    OUTBOX_FULL = "outbox_full"
    STOPPING = "stopping"


class SeqStore(Protocol):
    """Where the last ``seq`` is kept (the journal's named state)."""

    async def save_state(self, name: str, state: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True, eq=False)  # (compared by identity in the outbox)
class _Pending:
    seq: int
    payload: bytes
    items: int


class Batcher:
    """Takes this host's inputs; publishes them in batches, one per interval."""

    def __init__(
        self,
        *,
        host: str,
        node: str,
        topic: str,
        interval: float,
        publish: Publish,
        seqs: SeqStore,
        metrics: Metrics,
        last_seq: int = 0,
        clock: Callable[[], float] = time.time,
        max_batch: int = MAX_BATCH_ITEMS,
        max_pending: int = MAX_PENDING_ITEMS,
    ) -> None:
        self.host = host
        self.topic = topic
        self.interval = interval
        self._node = node  # host metrics carry the node name; the fleet may call it otherwise
        self._publish = publish
        self._seqs = seqs
        self._metrics = metrics
        self._clock = clock
        self._max_batch = max_batch
        self._max_pending = max_pending
        self.seq = last_seq  # the last seq given out
        self._samples: list[Sample] = []
        self._events: list[Event] = []
        self._outbox: deque[_Pending] = deque()
        self._pending_items = 0
        self._unlogged: dict[Dropped, int] = {}
        self._failing = False  # the last publish failed (logged once until it works again)
        self._stopped = False
        for reason in Dropped:
            metrics.fleet_batch_dropped.labels(reason)
        metrics.fleet_batch_buffered.set_function(self.buffered)

    def buffered(self) -> int:
        """Inputs waiting: in the batch being filled and in unacknowledged batches."""
        return len(self._samples) + len(self._events) + self._pending_items

    # -- the tap (on the engine loop, per input) ----------------------------------------
    def take(self, item: Input) -> None:
        if self._stopped:  # (an input evaluated while the daemon stops)
            self._drop(Dropped.STOPPING)
            return
        named = item.labels.get("host")
        if named is not None and named != self.host:
            if named != self._node:
                self._drop(Dropped.OTHER_HOST)
                return
            item = _as_host(item, self.host)
        if len(self._samples) + len(self._events) >= self._max_batch:
            self._drop(Dropped.BATCH_FULL)
            return
        if isinstance(item, Sample):
            self._samples.append(item)
        else:
            self._events.append(item)

    def _drop(self, reason: Dropped, n: int = 1) -> None:
        self._metrics.fleet_batch_dropped.labels(reason).inc(n)
        self._unlogged[reason] = self._unlogged.get(reason, 0) + n

    # -- one interval ------------------------------------------------------------------
    async def run(self, started: asyncio.Event) -> None:
        """Close and publish a batch every interval, until cancelled."""
        loop = asyncio.get_running_loop()
        started.set()
        log.info("fleet agent %s: a batch every %gs to %s", self.host, self.interval, self.topic)
        due = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = max(due + self.interval, loop.time())  # on schedule; no burst after a stall
            await self.close_batch()
            await self.send_pending()
            self.log_dropped()

    async def close_batch(self) -> None:
        """The inputs taken so far become the next batch in the outbox (an empty interval
        is a batch too: central sees the agent alive)."""
        samples, events = self._samples, self._events
        self._samples, self._events = [], []
        self.seq += 1
        payload = encode_batch(self.host, self.seq, self._clock(), samples, events)
        batch = _Pending(self.seq, payload, len(samples) + len(events))
        while self._outbox and self._pending_items + batch.items > self._max_pending:
            oldest = self._outbox.popleft()
            self._pending_items -= oldest.items
            self._drop(Dropped.OUTBOX_FULL, oldest.items)
        self._outbox.append(batch)
        self._pending_items += batch.items
        # kept before the batch can go out (send_pending comes after): never reused
        await self._seqs.save_state(SEQ_STATE, {"seq": self.seq})

    async def send_pending(self) -> int:
        """Publish the outbox in order, :data:`SEND_WINDOW` batches in flight at once (a
        backlog after an outage does not wait one round trip per batch), until the broker
        fails to take one; how many went."""
        sent = 0
        while self._outbox:
            window = list(itertools.islice(self._outbox, SEND_WINDOW))
            results = await asyncio.gather(
                *(self._publish(self.topic, b.payload, 1, False) for b in window),
                return_exceptions=True,
            )
            failed: tuple[_Pending, BatondError] | None = None
            for batch, result in zip(window, results, strict=True):
                if isinstance(result, BatondError):
                    failed = failed or (batch, result)
                elif isinstance(result, BaseException):
                    raise result  # a bug, not the broker: it must not pass for an outage
                else:
                    self._outbox.remove(batch)  # (QoS 1: the broker has it)
                    self._pending_items -= batch.items
                    self._metrics.fleet_batches.inc()
                    sent += 1
            if failed is not None:
                if not self._failing:  # once per outage, not once per interval
                    log.warning(
                        "fleet batch %d not published, kept for later: %s", failed[0].seq, failed[1]
                    )
                self._failing = True
                break
        if self._failing and not self._outbox:
            self._failing = False
            log.info("fleet agent %s: the broker took the batches kept meanwhile", self.host)
        return sent

    def log_dropped(self) -> None:
        if not self._unlogged:
            return
        what = ", ".join(f"{n} {reason}" for reason, n in sorted(self._unlogged.items()))
        self._unlogged = {}
        log.warning("fleet agent %s: inputs not published: %s", self.host, what)

    async def stop(self, grace: float) -> None:
        """At stop: the last batch, and what still waits, published within ``grace``
        seconds; what is left is counted and logged."""
        await self.close_batch()
        self._stopped = True
        try:
            async with asyncio.timeout(grace):
                await self.send_pending()
        except TimeoutError:
            pass
        if self._outbox:
            self._drop(Dropped.STOPPING, self._pending_items)
            log.warning("fleet agent %s: %d batches not published at stop", self.host,
                        len(self._outbox))  # fmt: skip
        else:
            log.info("fleet agent %s: last batch %d published at stop", self.host, self.seq)
        self.log_dropped()


def _as_host(item: Input, host: str) -> Input:
    """``item`` with its ``host`` label (and raw key) saying the fleet's name of this host."""
    labels = {**item.labels, "host": host}
    raw = {**item.raw, "host": host} if "host" in item.raw else item.raw
    if isinstance(item, Sample):
        return Sample(item.metric, item.value, item.ts, labels, raw, item.source)
    return Event(item.name, item.ts, labels, raw, item.source)

"""The bounded queue between the sources and the engine.

Sources never block on it: ``offer`` returns False when it is full, and the
source decides (HTTP answers 503, host input drops and counts). MQTT on its
buffered path takes what fits (:meth:`Bus.offer_upto`), holds the rest, stops
reading its socket and asks :meth:`Bus.when_room` to be told once the queue
has drained to half (:data:`ROOM_AT`): backpressure to the broker, nothing dropped.

A source that acknowledges input only once it is decided (MQTT QoS 1, HTTP with
``http.ack: decided``) asks :meth:`Bus.when_decided`: the engine loop says how
far it has evaluated (:meth:`Bus.evaluated`), and the journal (``settle``, set
by the composition root) says when the writes that evaluation made have
committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from batond.events import Input
from batond.metrics import Metrics

log = logging.getLogger("batond.bus")

#: A full queue logs what it dropped at most this often (every drop is counted at once).
DROP_LOG_S = 10.0
#: :meth:`Bus.when_room` calls back once the queue holds at most this share of its
#: capacity: a paused reader resumes with room for a burst, not one slot at a time.
ROOM_AT = 0.5

__all__ = ["Bus", "Settle"]

#: Calls its argument once every journal write submitted so far has committed.
Settle = Callable[[Callable[[], None]], None]


def _at_once(callback: Callable[[], None]) -> None:
    callback()


class Bus:
    def __init__(self, metrics: Metrics, maxsize: int = 10_000) -> None:
        # arrival time (monotonic) travels with each item for event_to_action_seconds
        self._queue: asyncio.Queue[tuple[Input, float]] = asyncio.Queue(maxsize)
        self._metrics = metrics
        self.closed = False
        #: The journal's ``settled`` (the daemon); without a journal nothing waits.
        self.settle: Settle = _at_once
        self._queued = 0  # items ever queued
        self._evaluated = 0  # items ever taken and evaluated (the engine loop says)
        self._waiting: deque[tuple[int, Callable[[], None]]] = deque()
        self._flushing = False
        self._unlogged: dict[str, int] = {}  # dropped by source since the last log line
        self._logged_at = float("-inf")
        # who waits for room (a paused MQTT reader); the getters look only while there is
        self._room_waiters: list[Callable[[], None]] = []
        self._room_depth = int(maxsize * ROOM_AT)

    def when_decided(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop) once every item queued so far is evaluated and
        the journal has committed what its evaluation wrote (decisions, incidents, the
        intents of the runs it started). Callbacks may come out of order: who needs an
        order (MQTT's acknowledgements) keeps it."""
        if self._evaluated >= self._queued and not self._flushing:
            self.settle(callback)
        else:
            self._waiting.append((self._queued, callback))

    def evaluated(self) -> None:
        """The engine loop has evaluated (and acted on) one more item it took."""
        self._evaluated += 1
        waiting = self._waiting
        if waiting and waiting[0][0] <= self._evaluated and not self._flushing:
            # on the next loop iteration: the runs the evaluation started write their
            # intent in their first step, scheduled before this
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        waiting, done = self._waiting, self._evaluated
        ready = []
        while waiting and waiting[0][0] <= done:
            ready.append(waiting.popleft()[1])
        if ready:
            self.settle(lambda: _call_all(ready))

    def close(self) -> None:
        """Stop intake (shutdown): every further offer is refused and counted dropped."""
        self.closed = True
        self._room_now()  # who holds items offers them again: they are dropped and counted

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once, soon, on the loop) when the queue has drained to
        :data:`ROOM_AT` of its capacity, or is closed. Costs the getters one test of an
        empty list while nobody waits."""
        self._room_waiters.append(callback)
        if self.closed or self._queue.qsize() <= self._room_depth:
            self._room_now()

    def _room_now(self) -> None:
        waiters, self._room_waiters = self._room_waiters, []
        loop = asyncio.get_running_loop() if waiters else None
        for callback in waiters:
            assert loop is not None
            loop.call_soon(callback)  # not inside the getter: the engine takes its item first

    @property
    def capacity(self) -> int:
        """The most items the queue holds (0: no bound)."""
        return self._queue.maxsize

    def free(self) -> int:
        return self._queue.maxsize - self._queue.qsize()

    def depth(self) -> int:
        return self._queue.qsize()

    def offer(self, item: Input) -> bool:
        """Queue one accepted item; False (and counted as dropped) when full."""
        if self.closed:
            self._dropped(item.source or "unknown", 1)
            return False
        try:
            self._queue.put_nowait((item, time.monotonic()))
        except asyncio.QueueFull:
            self._dropped(item.source or "unknown", 1)
            return False
        self._queued += 1
        self._metrics.events_received.labels(item.source or "unknown").inc()
        return True

    def offer_all(self, items: list[Input]) -> bool:
        """All or nothing: False (nothing queued, all counted dropped) when they do not fit."""
        if self.closed or (self._queue.maxsize > 0 and len(items) > self.free()):
            for source, n in _by_source(items).items():  # one update per source, not per item
                self._dropped(source, n)
            return False
        now = time.monotonic()
        for item in items:
            self._queue.put_nowait((item, now))
        self._queued += len(items)
        for source, n in _by_source(items).items():
            self._metrics.events_received.labels(source).inc(n)
        return True

    def offer_upto(self, items: list[Input], source: str) -> int:
        """Queue as many of ``items`` (all from ``source``) as fit and say how many; the rest
        stays with the caller, nothing is dropped. A closed bus (shutdown) takes them all:
        dropped and counted, nothing left to hold."""
        if self.closed:
            self._dropped(source, len(items))
            return len(items)
        return self._put_upto(items, source)

    def offer_many(self, items: list[Input], source: str) -> int:
        """Queue as many of ``items`` (all from ``source``) as fit, drop and count the rest.

        The MQTT hot path: one arrival time and one metric update per message
        instead of per item. Returns how many were queued.
        """
        queued = 0 if self.closed else self._put_upto(items, source)
        if queued < len(items):
            self._dropped(source, len(items) - queued)
        return queued

    def _put_upto(self, items: list[Input], source: str) -> int:
        room = self.free() if self._queue.maxsize > 0 else len(items)
        queued = min(len(items), max(0, room))
        if queued:
            now = time.monotonic()
            put = self._queue.put_nowait
            for item in items if queued == len(items) else items[:queued]:
                put((item, now))
            self._queued += queued
            self._metrics.events_received.labels(source).inc(queued)
        return queued

    def _dropped(self, source: str, n: int) -> None:
        """Counted at once; logged at most once per DROP_LOG_S, with what it summarises."""
        self._metrics.events_dropped.labels(source).inc(n)
        self._unlogged[source] = self._unlogged.get(source, 0) + n
        now = time.monotonic()
        if now - self._logged_at < DROP_LOG_S:
            return
        what = ", ".join(f"{k} {v}" for k, v in sorted(self._unlogged.items()))
        state = "stopping" if self.closed else f"input queue full ({self.capacity} items)"
        log.warning("%s: dropped %s (batond_events_dropped_total)", state, what)
        self._unlogged.clear()
        self._logged_at = now

    async def get(self) -> tuple[Input, float]:
        got = await self._queue.get()
        if self._room_waiters and self._queue.qsize() <= self._room_depth:
            self._room_now()
        return got

    def get_nowait(self) -> tuple[Input, float] | None:
        try:
            got = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if self._room_waiters and self._queue.qsize() <= self._room_depth:
            self._room_now()
        return got


def _call_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


def _by_source(items: list[Input]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        source = item.source or "unknown"
        counts[source] = counts.get(source, 0) + 1
    return counts

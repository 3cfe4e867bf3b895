"""Notifications to the configured ``notify: {url}`` (a Slack-compatible webhook).

Sent for what needs a human and has no playbook of its own: a circuit that opened, a
suppression that left an incident without a run nobody asked for, a run that ended
unresolved with no ``escalate:``. The body is ``{"text": ...}`` plus the fields
(``kind``, ``rule``, ``key``, ``reason``, ``incident``, ``node``).

Bounded in every way: one notification per (kind, rule, reason) per
``COALESCE_S`` at most (what came in between is counted and told in one follow-up), a
queue of ``QUEUE_MAX`` (beyond it they are dropped, counted), ``TIMEOUT_S`` per POST.
Sending never holds up the engine: it happens on a task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from batond.metrics import Metrics

__all__ = ["COALESCE_S", "Notifier"]

log = logging.getLogger("batond")

COALESCE_S = 60.0
QUEUE_MAX = 100
TIMEOUT_S = 5.0

Topic = tuple[str, str, str]  # (kind, rule, reason)


class Notifier:
    def __init__(
        self,
        url: str,
        node: str,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._node = node
        self._metrics = metrics
        self._clock = clock
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_MAX)
        self._last: dict[Topic, float] = {}  # topic -> when its latest one was sent
        self._held: dict[Topic, int] = {}  # topic -> how many came since, not sent
        self._task: asyncio.Task[None] | None = None

    def send(
        self, text: str, *, kind: str, rule: str = "", reason: str = "", **fields: Any
    ) -> None:
        """Queue a notification (or count it, when its topic was told within COALESCE_S)."""
        topic = (kind, rule, reason)
        now = self._clock()
        last = self._last.get(topic)
        if last is not None and now - last < COALESCE_S:
            self._held[topic] = self._held.get(topic, 0) + 1
            return
        self._last[topic] = now
        held = self._held.pop(topic, 0)
        if held:
            text += f" ({held} more like it in the last {int(COALESCE_S)}s)"
        body = {"text": text, "kind": kind, "rule": rule, "reason": reason, "node": self._node}
        self._put({**body, **fields})

    def _put(self, body: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            self._metrics.notifications.labels("dropped").inc()
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._sender(), name="notify")

    def flush_held(self) -> None:
        """Tell what was held back once its topic's window passed (housekeeping)."""
        now = self._clock()
        for topic, count in list(self._held.items()):
            if now - self._last.get(topic, now) < COALESCE_S:
                continue
            del self._held[topic]
            self._last[topic] = now
            kind, rule, reason = topic
            text = f"batond on {self._node}: {count} more {kind} notifications: {rule} {reason}"
            self._put(
                {"text": text, "kind": kind, "rule": rule, "reason": reason, "node": self._node,
                 "count": count}
            )  # fmt: skip

    async def _sender(self) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not self._queue.empty():
                body = self._queue.get_nowait()
                try:
                    async with session.post(self._url, json=body) as response:
                        ok = response.status < 300
                except (aiohttp.ClientError, TimeoutError) as exc:
                    ok = False
                    log.warning("notification to %s failed: %s", self._url, exc)
                self._metrics.notifications.labels("sent" if ok else "failed").inc()

    async def close(self, grace: float = TIMEOUT_S) -> None:
        """Let what is queued go out (within ``grace``), then stop."""
        task = self._task
        if task is None:
            return
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), grace)
        task.cancel()

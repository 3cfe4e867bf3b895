"""The daemon's side of the pipeline's ports, and the small owners of shared state.

- :class:`JournalLedger`: decisions and resolutions into the journal, counted.
- :class:`MqttPublisher`: incidents and ended runs below ``mqtt.publish_prefix``.
- :class:`RuleStateSaver`: owns "the rule state changed since it was saved".
- :class:`PauseSwitch`: owns whether the governor is paused (API or kill switch file).
- :class:`TaskSet`: the after-run work of ended runs, awaited at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from batond.anomaly import ModelSet
from batond.engine.engine import Engine
from batond.engine.governor import Governor
from batond.engine.types import Decision, Resolved
from batond.errors import BatondError
from batond.journal.facade import Journal
from batond.journal.model_state import write_state
from batond.metrics import Metrics

if TYPE_CHECKING:  # imported only where MQTT is configured (root.py): aiomqtt is heavy
    from batond.intake.mqtt import MqttSource

__all__ = [
    "JournalLedger",
    "MqttPublisher",
    "PauseSwitch",
    "RuleStateSaver",
    "TaskSet",
    "save_models",
]

log = logging.getLogger("batond")

#: How often an input re-reads the kill switch file: it acts within 0.1 s, not a second.
KILL_SWITCH_CHECK_S = 0.1
#: How often the governor's hosts seen are saved while inputs arrive (RuleStateSaver).
HOSTS_SEEN_SAVE_S = 30.0


class JournalLedger:
    """The pipeline's ledger in the daemon: the journal, with the decision metrics."""

    def __init__(self, journal: Journal, metrics: Metrics) -> None:
        self._journal = journal
        self._metrics = metrics
        self._counted: dict[tuple[str, str], Any] = {}  # (rule, result) -> its counter

    async def record_decision(self, decision: Decision) -> tuple[int, int | None]:
        labels = (decision.rule, decision.result)
        counter = self._counted.get(labels)
        if counter is None:  # (labels() costs more than the whole rest of the counting)
            if len(self._counted) > 10_000:
                self._counted.clear()
            counter = self._counted[labels] = self._metrics.decisions.labels(*labels)
        counter.inc()
        if not decision.opens_incident:  # a schedule came due: the schedule source's input
            self._metrics.events_received.labels("schedule").inc()
        return await self._journal.record_decision(decision)

    async def resolve_incident(self, resolved: Resolved) -> int | None:
        return await self._journal.resolve_incident(
            resolved.rule, resolved.key, resolved.ts, resolved.by
        )


class MqttPublisher:
    """Publishes the journal's view of incidents and ended runs (as the API shows them)."""

    def __init__(self, mqtt: MqttSource, prefix: str, journal: Journal) -> None:
        self._mqtt = mqtt
        self._prefix = prefix
        self._journal = journal

    async def incident(self, incident_id: int) -> None:
        await self._send("incidents", incident_id, await self._journal.get_incident(incident_id))

    async def run(self, run_id: int) -> None:
        # the full view (steps, outputs) is the journal's: the runner keeps no copy of it
        await self._send("runs", run_id, await self._journal.get_run(run_id))

    async def _send(self, kind: str, obj_id: int, obj: dict[str, Any] | None) -> None:
        if obj is None:
            return
        try:
            await self._mqtt.publish(f"{self._prefix}/{kind}/{obj_id}", orjson.dumps(obj), 1)
        except BatondError as exc:
            log.warning("publishing %s/%s failed: %s", kind, obj_id, exc)


class RuleStateSaver:
    """Keeps the engine's rule state saved in the journal.

    Outputs and feedback save soon (coalesced: a storm of changes costs a few
    exports, not one each). Inputs only mark it touched: timers, count windows and
    ``absent:`` groups change without an output, and housekeeping saves those each
    second, so they survive a SIGKILL with a second's loss at most.

    The governor's hosts seen (every host of the last hour: nearly all of the bytes,
    changed by every sample) are left out of those saves and saved apart every
    ``HOSTS_SEEN_SAVE_S`` while inputs arrive, and at stop: they only size the blast
    radius, which a restart may see up to that much behind (docs/governor.md).
    """

    def __init__(
        self, journal: Journal, engine: Engine, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._journal = journal
        self._engine = engine
        self._clock = clock
        self._touched = False
        self._hosts_touched = False
        self._hosts_saved = float("-inf")  # clock() of the last hosts seen save

    def touched(self) -> None:
        self._touched = self._hosts_touched = True

    def changed(self) -> None:
        self._journal.save_rule_state_soon(self._export)

    def _export(self) -> dict[str, Any]:
        return self._engine.export_state(hosts_seen=False)

    async def save_if_touched(self) -> None:
        """Housekeeping's: the rule state when touched, the hosts seen when due."""
        if self._touched:
            self._touched = False
            self.changed()
        if self._hosts_touched and self._clock() - self._hosts_saved >= HOSTS_SEEN_SAVE_S:
            await self._save_hosts()

    async def _save_hosts(self) -> None:
        self._hosts_touched = False
        self._hosts_saved = self._clock()
        await self._journal.save_hosts_seen(self._engine.governor.export_hosts_seen())

    async def save(self) -> None:
        """Both, now (at stop)."""
        await self._journal.save_rule_state(self._export())
        await self._save_hosts()


class PauseSwitch:
    """Whether the governor is paused: by an operator (kept in the journal) or while the
    kill switch file exists."""

    def __init__(
        self, governor: Governor, journal: Journal, kill_file: Path | None, by_operator: bool
    ) -> None:
        self._governor = governor
        self._journal = journal
        self._kill_file = kill_file
        self._by_operator = by_operator
        self._checked = float("-inf")  # monotonic time of the last kill switch file check

    def refresh(self) -> None:
        by_file = self._kill_file is not None and self._kill_file.exists()
        self._governor.set_paused(self._by_operator or by_file)
        self._checked = time.monotonic()

    def refresh_if_stale(self, now_monotonic: float) -> None:
        """Called per input: a check at most every KILL_SWITCH_CHECK_S."""
        if now_monotonic - self._checked >= KILL_SWITCH_CHECK_S:
            self.refresh()

    def use_kill_file(self, path: Path | None) -> None:
        """A reload named another kill switch file (or none)."""
        self._kill_file = path
        self.refresh()

    async def set_by_operator(self, paused: bool) -> None:
        await self._journal.set_paused(paused)
        self._by_operator = paused
        self.refresh()


class TaskSet:
    """Tasks that must not be lost: tracked until done, awaited (bounded) at shutdown."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=self._what)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", self._what, exc_info=task.exception())

    async def drain(self, grace: float) -> None:
        """Wait for what is running; cancel what is left after ``grace`` seconds."""
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in late:
                log.warning("%s still running at stop; cancelled", self._what)
                task.cancel()


async def save_models(models: ModelSet, state_dir: Path) -> None:
    """Export on the loop (it reads live series), write in a thread."""
    try:
        await asyncio.to_thread(write_state, models.export_state(), state_dir)
    except (OSError, BatondError) as exc:
        log.warning("anomaly model state not saved: %s", exc)

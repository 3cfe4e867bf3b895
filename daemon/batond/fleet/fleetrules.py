"""Fleet rules on a central instance: count across hosts, once for the fleet.

The instance that holds partition 0 (:data:`batond.fleet.central.FLEET_PARTITION`, as
for schedules) counts, every ``heartbeat``, for each fleet rule the agents seen within
its window (the journal's ``fleet_agents``) and which of them have an open incident of
the counted rule (the journal's ``incidents``, the whole fleet's) or, for ``anomalous:``,
a series of the metric anomalous within the window (the agents' rows carry when each
metric last scored anomalous, noted by the partitions' owners); the engine decides
(:mod:`batond.engine.fleet`, pure) and the pipeline records and acts as for any decision
(fenced on partition 0). The other instances count nothing: exactly one decision for the
fleet. Its incident (key ``fleet``) moves with partition 0's checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from batond.engine.engine import Engine
from batond.engine.fleet import AgentSeen, count
from batond.engine.types import Decision, Output
from batond.fleet.central import FLEET_PARTITION

__all__ = ["FleetRules", "FleetView"]

log = logging.getLogger("batond.fleet")

#: A rule's default window is this many batch intervals (an agent that missed two
#: batches still counts).
WINDOW_INTERVALS = 3


class FleetView(Protocol):
    """The fleet's journal, as fleet rules read it (batond.journal.facade.Journal)."""

    async def fleet_view(self, rule: str, since: float) -> tuple[list[AgentSeen], set[str]]:
        """The agents seen since ``since`` and the hosts with an open incident of ``rule``
        (``rule`` empty: no incidents are read)."""
        ...


class Holder(Protocol):
    @property
    def held(self) -> dict[int, int]: ...


Act = Callable[[list[Output], float], Awaitable[object]]


class FleetRules:
    """A source of the daemon (``run``, ``state``) that evaluates the fleet rules."""

    def __init__(
        self, central: Holder, engine: Engine, journal: FleetView, act: Act,
        interval: float, batch_interval: float,
    ) -> None:  # fmt: skip
        self._central, self._engine, self._journal, self._act = central, engine, journal, act
        self._interval = interval
        self._default_window = WINDOW_INTERVALS * batch_interval
        self._state = "idle"
        self._trouble = ""

    @property
    def state(self) -> str:
        return self._state

    async def run(self, started: asyncio.Event) -> None:
        started.set()
        while True:
            await asyncio.sleep(self._interval)
            await self.round(time.time())

    async def round(self, now: float) -> int:
        """Evaluate every fleet rule once when this instance holds partition 0; how many
        outputs (decisions, resolutions) that gave."""
        rules = self._engine.fleet_rules()
        if not rules or FLEET_PARTITION not in self._central.held:
            self._state = "idle" if rules else "no fleet rules"
            return 0
        self._state = "evaluating"
        outputs: list[Output] = []
        for rule in rules:
            spec = rule.fleet
            assert spec is not None
            since = now - (spec.within or self._default_window)
            try:
                agents, hosts = await self._journal.fleet_view(spec.rule, since)
            except Exception as exc:  # the journal's trouble: counted again next round
                self._noted(f"fleet rule {rule.name}: the journal cannot be read: {exc}")
                continue
            outputs += self._engine.fleet_count(rule.name, count(spec, agents, hosts, since), now)
        self._noted("")
        for out in outputs:
            _log(out)
        if outputs:
            await self._act(outputs, now)
        return len(outputs)

    def _noted(self, trouble: str) -> None:
        """One warning when trouble starts or changes, one line when it ends."""
        if trouble and trouble != self._trouble:
            log.warning("%s", trouble)
        elif not trouble and self._trouble:
            log.info("fleet rules: the journal answers again")
        self._trouble = trouble


def _log(out: Output) -> None:
    if isinstance(out, Decision):
        result = out.playbook or f"suppressed {out.suppressed}"
        log.info("fleet rule %s fired: %s; %s", out.rule, out.cause, result)
    else:
        log.info("fleet rule %s resolved: below its threshold", out.rule)

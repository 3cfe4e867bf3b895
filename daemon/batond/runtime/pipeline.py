"""The one pipeline: input -> anomaly score -> engine decision -> record -> run start ->
run outcome -> engine feedback -> publish.

``batond run`` and ``batond replay`` drive this same class and differ only in the
ports they plug in: the daemon gives it the journal, the runner and the MQTT
publisher (:mod:`batond.runtime.ports`); replay gives it a ledger that prints
each decision and :class:`NoRuns`, a runner that executes nothing.

The clock is the caller's: every step takes ``now`` (the wall clock in the
daemon, the inputs' ``ts`` in replay). Timers that came due fire, and their
outputs are acted on, before the next input is evaluated.

This module imports neither asyncio nor logging: replay runs the pipeline
without an event loop (nothing it plugs in ever waits, see :func:`run_now`),
and their imports would cost a replay more time than its rules do on a small
file. The daemon says what a failed evaluation does (``on_error``: it logs).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from batond.engine.engine import NO_RUN, Engine
from batond.engine.types import Decision, Output, Resolved, Suppression
from batond.events import Input, Sample

if TYPE_CHECKING:
    from batond.engine.governor import CircuitEvent
    from batond.engine.model import RuleSet
    from batond.remedy.runner import RunEnded

__all__ = ["NoRuns", "Pipeline", "Reporter", "Scorer", "run_now"]

T = TypeVar("T")
Spawn = Callable[[Coroutine[Any, Any, None]], None]


class Ledger(Protocol):
    """Where decisions and resolutions are recorded: the journal, or replay's stdout."""

    async def record_decision(self, decision: Decision) -> tuple[int | None, int | None]:
        """(decision id, incident id); None where nothing is kept."""

    async def resolve_incident(self, resolved: Resolved) -> int | None:
        """The incident resolved, if one is kept."""


class Runs(Protocol):
    """What starts runs: the remedy runner, or :class:`NoRuns`."""

    def start(
        self,
        decision: Decision,
        *,
        decision_id: int | None,
        incident_id: int | None,
        arrived: float | None,
        verify_by_run: bool,
    ) -> bool:
        """Start the decision's chain; False when no run starts (it never ends either)."""

    def escalate_only(
        self, decision: Decision, *, decision_id: int | None, incident_id: int | None
    ) -> bool:
        """Only the escalation playbook (an open circuit's decision)."""

    def incident_resolved(self, rule: str, key: str) -> None:
        """Runs waiting for the incident to resolve (``verify:``) may end."""


class Scorer(Protocol):
    """What scores samples: the anomaly ModelSet (replay: one that trains at event time;
    ``replay --diff``: one shared by both lanes)."""

    @property
    def synthetic(self) -> Collection[Sample]:
        """Samples the host models made from the last samples (``host_anomaly``), if any."""

    def observe(self, sample: Sample) -> float:
        """The sample's anomaly score; the model learns from it too."""

    def take_synthetic(self) -> list[Sample]:
        """The :attr:`synthetic` samples, handed over once."""


class Publisher(Protocol):
    """Tells the outside about incidents and ended runs (MQTT ``publish_prefix``)."""

    async def incident(self, incident_id: int) -> None: ...
    async def run(self, run_id: int) -> None: ...


class StateKeeper(Protocol):
    """Keeps the engine's rule state saved (the daemon's journal) or nowhere (replay)."""

    def touched(self) -> None:
        """An input went in: timers and windows may have changed without an output."""

    def changed(self) -> None:
        """Outputs or feedback changed the state: save it soon (coalesced)."""


class Reporter(Protocol):
    """Who tells people what was decided and done: the daemon's log, metrics and
    notifications (replay prints decisions through its ledger and has none)."""

    def decided(self, decision: Decision, incident_id: int | None, started: bool) -> None:
        """A decision was recorded; ``started``: its run started."""

    def resolved(self, resolved: Resolved, incident_id: int | None) -> None: ...

    def run_ended(self, ended: RunEnded) -> None: ...

    def circuits(self, events: list[CircuitEvent]) -> None:
        """Circuits that opened or closed, in order."""


class Fence(Protocol):
    """Whether this process may act on a decision now (a fleet's central instance: it
    must still own the decision's partition, see ``fleet.central``)."""

    async def refuses(self, decision: Decision) -> str | None:
        """Why not (the decision is recorded suppressed ``not_owner``), or None."""


class NoRuns:
    """A runner that executes nothing (replay): every run is refused, so the pipeline
    records each decision's run as one that started and ended at once with no outcome
    (``none``): it takes its place in the cooldown, per-target and rate windows, and an
    incident only its run could resolve resolves at the decision."""

    def start(self, decision: Decision, **_: Any) -> bool:
        return False

    def escalate_only(self, decision: Decision, **_: Any) -> bool:
        return False

    def incident_resolved(self, rule: str, key: str) -> None:
        pass


class _NoPublisher:
    async def incident(self, incident_id: int) -> None:
        pass

    async def run(self, run_id: int) -> None:
        pass


def run_now(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits to its end, without an event loop.

    Replay's ports (stdout, :class:`NoRuns`) never wait, so its whole loop over a
    file completes in one step. RuntimeError if something waited after all.
    """
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("the pipeline waited where nothing may wait (no event loop)")


class Pipeline:
    """Inputs and a clock in; decisions recorded, runs started, outcomes fed back.

    ``spawn`` takes the after-run work of an ended run (resolutions, state, publishing)
    off the run's task: the daemon gives its tracked task set; the default runs it at
    once, for callers where nothing waits.
    """

    def __init__(
        self,
        engine: Engine,
        ledger: Ledger,
        runs: Runs,
        *,
        models: Scorer | None = None,
        publisher: Publisher | None = None,
        state: StateKeeper | None = None,
        tap: Callable[[Input], None] | None = None,
        spawn: Spawn = run_now,
        on_error: Callable[[Input, Exception], None] | None = None,
        reporter: Reporter | None = None,
        fence: Fence | None = None,
    ) -> None:
        self._engine = engine
        self._fence = fence
        self._reporter = reporter
        self._ledger = ledger
        self._runs = runs
        self._models = models
        self._publisher: Publisher = publisher if publisher is not None else _NoPublisher()
        self._state = state
        self._tap = tap  # the traffic recorder, when the journal records inputs
        self._spawn = spawn
        self._on_error = on_error  # None: an evaluation that raises stops the caller
        self._due = float("-inf")  # when timers must next fire (the first input ticks)
        # The hot path is chosen once: with nothing to score, save, record or report,
        # evaluating is the engine's own evaluate (replay's fast path).
        plain = models is None and state is None and tap is None and on_error is None
        self.evaluate: Callable[[Input, float], list[Output]] = (
            engine.evaluate if plain else self._evaluate
        )
        self.prefilter = self._choose_prefilter()
        #: When :meth:`tick` must next run (None: only when an input comes).
        self.next_deadline: Callable[[], float | None] = engine.next_deadline

    def _choose_prefilter(self) -> Callable[[Mapping[str, Any], float], bool]:
        """The hot path of raw inputs (see :attr:`Engine.prefilter`, made per rule set);
        with models every sample matters, since each one trains and scores its series."""
        return self._engine.prefilter if self._models is None else self._prefilter_scored

    def _prefilter_scored(self, obj: Mapping[str, Any], now: float) -> bool:
        self._engine.prefilter(obj, now)
        return True

    def replace_rules(self, rules: RuleSet) -> None:
        """A reload: the engine swaps its rules; timers are looked at again at once (and
        what the reload decides again or closes comes out of the next tick)."""
        self._engine.replace_rules(rules)
        self._due = float("-inf")
        self.prefilter = self._choose_prefilter()

    # -- the walk of one input ---------------------------------------------------------
    async def tick(self, now: float) -> float:
        """Fire what came due by ``now`` and act on it; returns when to tick next."""
        outputs = self._engine.tick(now)
        if outputs:
            await self.act(outputs, now, None)
        else:
            self._report_circuits()
        return self._next_due()

    async def observe(self, item: Input, now: float, arrived: float | None = None) -> float:
        """One input, due timers first; returns when to tick next.

        ``arrived`` is the ``time.monotonic()`` of its arrival (the event-to-action
        latency is measured from it).
        """
        if now >= self._due:
            await self.tick(now)
        outputs = self.evaluate(item, now)
        if outputs:
            await self.act(outputs, now, arrived)
        return self._next_due()

    def _evaluate(self, item: Input, now: float) -> list[Output]:
        """Score and decide; a bug in one evaluation goes to ``on_error`` (the daemon logs
        it and goes on: one bad input must not stop it)."""
        if self._state is not None:
            self._state.touched()
        try:
            models = self._models
            score = models.observe(item) if models is not None and type(item) is Sample else 0.0
            outputs = self._engine.evaluate(item, now, score)
            if models is not None and models.synthetic:  # host models scored a vector
                for extra in models.take_synthetic():
                    outputs += self._engine.evaluate(extra, now, extra.value)
        except Exception as exc:
            if self._on_error is None:
                raise
            self._on_error(item, exc)
            return []
        if self._tap is not None:
            self._tap(item)
        return outputs

    def _next_due(self) -> float:
        due = self._engine.next_deadline()
        self._due = float("inf") if due is None else due
        return self._due

    async def act(
        self, outputs: list[Output], now: float, arrived: float | None
    ) -> list[int | None]:
        """Act on what the engine said, in order. A decision whose run does not start
        feeds its (absent) outcome back at once; what that resolves is acted on next,
        before the outputs that followed the decision. The ids the decisions were
        recorded under, in the order acted on (a run carries its decision's id)."""
        work = list(outputs)
        ids: list[int | None] = []
        i = 0
        while i < len(work):
            out = work[i]
            i += 1
            if isinstance(out, Decision):
                decision_id, work[i:i] = await self._decided(out, now, arrived)
                ids.append(decision_id)
            else:
                incident_id = await self._ledger.resolve_incident(out)
                self._runs.incident_resolved(out.rule, out.key)
                if self._reporter is not None:
                    self._reporter.resolved(out, incident_id)
                if incident_id is not None:
                    await self._publisher.incident(incident_id)
                after = self._engine.on_resolve(out.rule, out.key, now)
                if after is not None:  # the rule's on_resolve: playbook, for that incident
                    decision_id, work[i:i] = await self._decided(after, now, None, incident_id)
                    ids.append(decision_id)
        self._report_circuits()
        if self._state is not None:
            self._state.changed()
        return ids

    def _report_circuits(self) -> None:
        events = self._engine.governor.take_events()
        if events and self._reporter is not None:
            self._reporter.circuits(events)

    async def _decided(
        self, decision: Decision, now: float, arrived: float | None, resolved: int | None = None
    ) -> tuple[int | None, list[Output]]:
        """Record the decision and start its run; its id, and the outputs of a run that
        did not start. ``resolved``: the incident an ``on_resolve:`` decision is about."""
        fed_back: list[Output] = []
        if decision.playbook is not None and self._fence is not None:
            decision, fed_back = await self._fenced(decision, now)
        decision_id, incident_id = await self._ledger.record_decision(decision)
        if resolved is not None:
            incident_id = resolved
        engine = self._engine
        started = False
        if decision.playbook is not None:
            started = self._runs.start(
                decision,
                decision_id=decision_id,
                incident_id=incident_id,
                arrived=arrived,
                verify_by_run=engine.resolves_by_run(decision.rule) or resolved is not None,
            )
            if not started:  # refused (its mode, stopping, replay): no run will end
                fed_back += engine.record_outcome(
                    decision.rule, decision.playbook, decision.key, NO_RUN, now
                )
        elif decision.suppressed == Suppression.CIRCUIT_OPEN and engine.governor.take_escalation(
            decision.rule, decision.key
        ):  # an escalation instead, once per opening of the circuit
            self._runs.escalate_only(decision, decision_id=decision_id, incident_id=incident_id)
        if self._reporter is not None:
            self._reporter.decided(decision, incident_id, started)
        if incident_id is not None:
            await self._publisher.incident(incident_id)
        return decision_id, fed_back

    async def _fenced(self, decision: Decision, now: float) -> tuple[Decision, list[Output]]:
        """The decision as this process may act on it: suppressed ``not_owner`` when the
        fence refuses (the engine hears that its run never started)."""
        assert self._fence is not None and decision.playbook is not None
        why = await self._fence.refuses(decision)
        if why is None:
            return decision, []
        fed_back = self._engine.record_outcome(
            decision.rule, decision.playbook, decision.key, NO_RUN, now
        )
        fenced = replace(decision, playbook=None, suppressed=Suppression.NOT_OWNER, reason=why)
        return fenced, fed_back

    # -- what runs report (remedy.runner.RunListener) ----------------------------------
    def candidate_started(self, rule: str, playbook: str, key: str, at: float) -> None:
        """A later candidate of a chain started: the governor counts it running."""
        self._engine.run_started(rule, playbook, key, at)

    def run_ended(self, ended: RunEnded) -> None:
        """Outcome feedback: statistics, circuits, incidents only a run can resolve.

        The engine learns at once (the next decision sees it); acting on what that
        resolves, saving and publishing is spawned. An escalation (paging someone)
        says nothing about whether remediation works: it feeds no statistics back, only
        that the decision's runs are over when it is the last.
        """
        rule = self._engine.rules.rule(ended.rule)
        after_resolve = rule is not None and rule.on_resolve == ended.playbook
        # a refused run (its intent could not be journaled) is like no run at all: it frees
        # the governor's count and resolves what only a run could resolve; an on_resolve:
        # run comes after the incident: it says nothing about remediation
        outcome = NO_RUN if ended.refused else ended.outcome
        outputs = self._engine.record_outcome(
            ended.rule, ended.playbook, ended.key, outcome, ended.ended_at,
            final=ended.final, escalation=ended.escalation, after_resolve=after_resolve,
        )  # fmt: skip
        if self._reporter is not None and not ended.refused:
            self._reporter.run_ended(ended)
        self._spawn(self._after_run(ended.run_id, outputs, ended.ended_at))

    async def _after_run(self, run_id: int, outputs: list[Output], now: float) -> None:
        if outputs:
            await self.act(outputs, now, None)
        if self._engine.next_deadline() == float("-inf"):  # the run's end pulled a lever
            await self.tick(now)
        self._report_circuits()
        if self._state is not None:
            self._state.changed()  # statistics and circuits changed even without outputs
        if run_id:  # (0: refused, never journaled)
            await self._publisher.run(run_id)

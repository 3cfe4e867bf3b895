"""Executes playbook runs: modes, steps, retries, timeouts, verify, on_failure, approval.

A decision becomes a *chain*: its candidate playbooks are run in order until
one resolves; when none does, the ``escalate:`` playbook runs. Each run is
written to the journal before its first action and each step attempt before
it acts (write-ahead), so a crash loses nothing.

The runner adds no thread hop and no polling between :meth:`Runner.start` and
the first action: ``start`` admits the run synchronously (so a second decision
in the same loop iteration already sees it) and creates its task; the task
awaits the journal's two write-ahead records (committed on the loop's own
thread when the journal's writer is free: no hop there either, see
``journal.writer.Database.write_ahead``) and starts the action. Step execution
itself lives in :mod:`batond.remedy.steps`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from batond.engine.types import NOT_RESOLVED, Decision, Outcome
from batond.load.playbooks import Playbook
from batond.metrics import Metrics
from batond.remedy.actions import ActionContext
from batond.remedy.records import InterruptedRun, RunStore
from batond.remedy.run import Origin, Run, RunState, origin_of
from batond.remedy.steps import StepExecutor, uncancel

__all__ = ["JOURNAL_UNAVAILABLE", "RunEnded", "RunListener", "Runner"]

#: Why a run was refused when its intent could not be written to the journal.
JOURNAL_UNAVAILABLE = "journal_unavailable"

log = logging.getLogger("batond.remedy.runner")


@dataclass(frozen=True, slots=True)
class RunEnded:
    """One run ended; the service feeds it back to the engine and the journal's stats."""

    run_id: int
    rule: str
    playbook: str
    key: str
    target: str
    outcome: Outcome
    started_at: float
    ended_at: float
    final: bool  # no further run of this decision follows (no next candidate, no escalation)
    escalation: bool  # this run was an escalate: playbook
    refused: str = ""  # it never ran (run_id 0): journal_unavailable
    labels: Mapping[str, str] = field(default_factory=dict)  # its decision's (who asked)


class RunListener(Protocol):
    """Who hears what runs do: the daemon's pipeline, which feeds it back to the engine.

    Both are called synchronously from the run's task, so the engine's bookkeeping
    is current before anything else is decided.
    """

    def candidate_started(self, rule: str, playbook: str, key: str, at: float) -> None:
        """A later candidate of a chain started (the first is counted at the decision)."""

    def run_ended(self, ended: RunEnded) -> None:
        """A run ended (each candidate and escalation of a chain, one by one)."""


class _Nobody:
    def candidate_started(self, rule: str, playbook: str, key: str, at: float) -> None:
        pass

    def run_ended(self, ended: RunEnded) -> None:
        pass


@dataclass(eq=False)
class _Slots:
    """Run slots: the governor's ``max_concurrent_runs``, or a rule's own
    (``limits.max_concurrent_runs``). Runs beyond wait ``queued``, first come first."""

    limit: int
    running: int = 0
    waiters: deque[tuple[Run, asyncio.Future[None]]] = field(default_factory=deque)

    def take_now(self) -> bool:
        if self.running < self.limit and not self.waiters:
            self.running += 1
            return True
        return False

    def wake(self) -> None:
        while self.waiters and self.running < self.limit:
            run, fut = self.waiters.popleft()
            if fut.done():
                continue
            self.running += 1
            run.has_slot = True
            fut.set_result(None)


@dataclass(eq=False)
class _KeyRuns:
    active: list[Run] = field(default_factory=list)
    waiting: deque[Run] = field(default_factory=deque)


class Runner:
    def __init__(
        self,
        *,
        playbooks: Mapping[str, Playbook],
        store: RunStore,
        metrics: Metrics,
        actions: ActionContext,
        max_concurrent: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._playbooks = dict(playbooks)
        self._store = store
        self._metrics = metrics
        self._ctx = actions
        self._listener: RunListener = _Nobody()
        self._slots = _Slots(max(1, max_concurrent))
        self._rule_slots: dict[str, _Slots] = {}  # rules with their own max_concurrent_runs
        self._clock = clock
        self._keys: dict[tuple[str, str], _KeyRuns] = {}
        self._watch: dict[tuple[str, str], set[Run]] = {}
        self._by_id: dict[int, Run] = {}
        self._runs: set[Run] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._refused_logged_at = float("-inf")
        self._refused_unlogged = 0
        self._exec = StepExecutor(
            store=store, metrics=metrics, ctx=actions, clock=clock, closing=lambda: self._closing
        )

    # -- control ---------------------------------------------------------------
    def listen(self, listener: RunListener) -> None:
        """Who hears of started candidates and ended runs (one listener)."""
        self._listener = listener

    async def serve(self) -> None:
        """Runs until cancelled; then whatever still runs is recorded ``interrupted``."""
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(self.shutdown(0.0))

    def start(
        self,
        decision: Decision,
        *,
        decision_id: int | None = None,
        incident_id: int | None = None,
        arrived: float | None = None,
        verify_by_run: bool = False,
    ) -> bool:
        """Start the decision's chain; False when nothing starts (shutdown, or its mode says no).

        ``arrived`` is the ``time.monotonic()`` of the deciding input's arrival.
        """
        if self._closing or decision.playbook is None:
            return False
        names = [decision.playbook, *(c for c in decision.candidates if c != decision.playbook)]
        origin = origin_of(decision, decision_id, incident_id, verify_by_run)
        pb = self._playbooks.get(names[0])
        if pb is None:
            log.error("rule %s: no playbook %r", decision.rule, names[0])
            return False
        run = Run(origin, pb, self._playbooks, arrived=arrived)
        if not self._admit(run):
            return False
        self._spawn(self._chain(origin, names, first=run))
        return True

    def escalate_only(
        self, decision: Decision, *, decision_id: int | None = None, incident_id: int | None = None
    ) -> bool:
        """Run only the ``escalate:`` playbook of the first candidate naming one (an
        escalation run): what a target whose circuit is open gets instead of a run."""
        if self._closing:
            return False
        pbs = self._playbooks
        for name in decision.candidates:
            pb = pbs.get(name)
            if pb is not None and pb.escalate and pb.escalate in pbs:
                origin = origin_of(decision, decision_id, incident_id, False)
                why = {"playbook": name, "outcome": None, "failed_step": None, "run_id": None,
                       "reason": decision.suppressed}  # fmt: skip
                run = Run(origin, pbs[pb.escalate], pbs, escalation=True, previous=why)
                if not self._admit(run):
                    return False
                self._spawn(self._single(run))
                return True
        return False

    def incident_resolved(self, rule: str, key: str) -> None:
        """The incident resolved: ``verify:`` waits of its runs end ``resolved``."""
        for run in self._watch.get((rule, key), ()):
            run.resolved.set()

    def approve(self, run_id: int) -> bool:
        return self._ctx.approvals.settle(run_id, True)

    def deny(self, run_id: int) -> bool:
        return self._ctx.approvals.settle(run_id, False)

    def cancel(self, run_id: int) -> bool:
        """Cancel a queued or running run (its processes are killed); False if not active."""
        run = self._by_id.get(run_id)
        if run is None or run.done.is_set() or run.stop_reason is not None:
            return False
        self._stop(run, Outcome.CANCELLED)
        return True

    def active_count(self) -> int:
        """Runs admitted and not ended (queued ones included)."""
        return len(self._runs)

    def set_max_concurrent(self, limit: int) -> None:
        """A reload changed ``governor.max_concurrent_runs`` (waiting runs may start)."""
        self._slots.limit = max(1, limit)
        self._slots.wake()

    def replace_playbooks(self, playbooks: Mapping[str, Playbook]) -> None:
        """A reload: new runs use these; running runs keep the version they started with."""
        self._playbooks = dict(playbooks)

    async def resume(self, interrupted: InterruptedRun, *, verify_by_run: bool = False) -> bool:
        """Act on a run the journal found interrupted at start, per ``on_interrupt:``.

        ``resume``: a new run (naming the old one) from the step that was in
        flight when that step is ``idempotent: true`` (from the next step when
        none was); otherwise, and for ``escalate``, the ``escalate:``
        playbook runs. True when a run started.
        """
        pb = self._playbooks.get(interrupted.playbook)
        if pb is None or self._closing:
            log.warning(
                "interrupted run %s: no playbook %r", interrupted.run_id, interrupted.playbook
            )
            return False
        origin = Origin(
            rule=interrupted.rule,
            key=interrupted.key,
            target=interrupted.key,
            labels=dict(interrupted.labels),
            params=dict(interrupted.params),
            incident_id=interrupted.incident_id,
            verify_by_run=verify_by_run,  # its rule's incidents only a run resolves
        )
        index = _resume_index(pb, interrupted)
        if pb.on_interrupt == "resume" and index is not None:
            run = Run(
                origin, pb, self._playbooks, resumes=interrupted.run_id, start_at=index,
                restored=interrupted.results,
            )  # fmt: skip
            if not self._admit(run):
                return False
            self._spawn(self._chain(origin, [pb.name], first=run))
            return True
        target = self._playbooks.get(pb.escalate) if pb.escalate else None
        if target is None:
            log.warning(
                "interrupted run %s of %s: nothing to escalate to", interrupted.run_id, pb.name
            )
            return False
        previous = {
            "playbook": pb.name, "outcome": str(Outcome.INTERRUPTED),
            "failed_step": interrupted.in_flight[0] if interrupted.in_flight else None,
            "run_id": interrupted.run_id,
        }  # fmt: skip
        run = Run(
            origin, target, self._playbooks, escalation=True, resumes=interrupted.run_id,
            previous=previous,
        )  # fmt: skip
        if not self._admit(run):
            return False
        self._spawn(self._single(run))
        return True

    async def shutdown(self, grace: float) -> None:
        """No new runs; running steps may finish within ``grace``; the rest end ``interrupted``."""
        self._closing = True
        for run in list(self._runs):
            # nobody will approve during a stop: waiting would only hold it up
            if run.state in (RunState.QUEUED, RunState.WAITING_APPROVAL):
                self._stop(run, Outcome.INTERRUPTED)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for run in list(self._runs):
            self._stop(run, Outcome.INTERRUPTED)
        if self._tasks:
            # process groups get SIGTERM, then SIGKILL after the kill grace
            await asyncio.wait(list(self._tasks), timeout=self._ctx.kill_grace + 5.0)

    # -- admission (synchronous: a second start in the same tick sees the first) --
    def _admit(self, run: Run) -> bool:
        pb = run.playbook
        slot = self._keys.setdefault(run.slot, _KeyRuns())
        busy = slot.active or slot.waiting
        if pb.mode == "single" and busy:
            log.warning("%s for %s is already running; not started", pb.name, run.origin.key)
            return False
        if pb.mode == "parallel" and len(slot.active) >= pb.max:
            log.warning("%s for %s: %d runs at once; not started", pb.name, run.origin.key, pb.max)
            return False
        if pb.mode == "queued" and busy:
            if len(slot.waiting) >= pb.max:
                log.warning("%s for %s: queue full; not started", pb.name, run.origin.key)
                return False
            run.key_ready = asyncio.get_running_loop().create_future()
            slot.waiting.append(run)
        else:
            if pb.mode == "restart":
                for old in [*slot.active, *slot.waiting]:
                    self._stop(old, Outcome.CANCELLED)
                    run.after.append(old.done)
            slot.active.append(run)
            run.has_slot = self._slots_of(run).take_now()
        self._runs.add(run)
        self._watch.setdefault((run.origin.rule, run.origin.key), set()).add(run)
        self._metrics.runs_active.inc()
        return True

    def _release(self, run: Run) -> None:
        slot = self._keys.get(run.slot)
        if slot is not None:
            if run in slot.active:
                slot.active.remove(run)
            if run in slot.waiting:
                slot.waiting.remove(run)
            if not slot.active and slot.waiting:
                nxt = slot.waiting.popleft()
                slot.active.append(nxt)
                if nxt.key_ready is not None and not nxt.key_ready.done():
                    nxt.key_ready.set_result(None)
            if not slot.active and not slot.waiting:
                del self._keys[run.slot]
        if run.has_slot:
            run.has_slot = False
            slots = self._slots_of(run)
            slots.running -= 1
            slots.wake()
            if slots is not self._slots and not slots.running and not slots.waiters:
                self._rule_slots.pop(run.origin.rule, None)
        watchers = self._watch.get((run.origin.rule, run.origin.key))
        if watchers is not None:
            watchers.discard(run)
            if not watchers:
                del self._watch[(run.origin.rule, run.origin.key)]
        if run in self._runs:
            self._runs.discard(run)
            self._metrics.runs_active.dec()
        self._by_id.pop(run.id, None)
        run.done.set()

    def _slots_of(self, run: Run) -> _Slots:
        """The slots a run takes: its rule's own, or the shared ones."""
        own = run.origin.max_concurrent
        if own is None:
            return self._slots
        slots = self._rule_slots.get(run.origin.rule)
        if slots is None:
            slots = self._rule_slots[run.origin.rule] = _Slots(own)
        slots.limit = own  # a reload may have changed it
        return slots

    async def _global_slot(self, run: Run) -> None:
        if run.has_slot:
            return
        slots = self._slots_of(run)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        slots.waiters.append((run, fut))
        slots.wake()
        await fut

    def _stop(self, run: Run, reason: Outcome) -> None:
        if run.done.is_set() or run.stop_reason is not None:
            return
        run.stop_reason = reason
        if run.task is not None:
            run.task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("run task failed", exc_info=task.exception())

    # -- chains -----------------------------------------------------------------
    async def _chain(self, origin: Origin, names: Sequence[str], first: Run) -> None:
        """Candidates in order until one resolves; then escalate when none did."""
        tried: list[Playbook] = []
        run: Run | None = first
        previous: Mapping[str, Any] | None = first.previous
        for i, name in enumerate(names):
            if run is None:
                pb = first.playbooks.get(name)
                if pb is None or self._closing:
                    continue
                run = Run(origin, pb, first.playbooks, previous=previous)
                if not self._admit(run):
                    break
                self._listener.candidate_started(origin.rule, pb.name, origin.key, self._clock())
            outcome = await self._go(run)
            previous = _how_it_ended(run, outcome)
            tried.append(run.playbook)
            more = outcome in NOT_RESOLVED and not self._closing
            escalate = _escalation(tried, first.playbooks) if more else None
            last = i == len(names) - 1 or not more
            self._ended(run, outcome, final=last and escalate is None)
            run = None
            if not more:
                return
        if escalate := _escalation(tried, first.playbooks):
            esc = Run(origin, escalate, first.playbooks, escalation=True, previous=previous)
            if not self._closing and self._admit(esc):
                self._ended(esc, await self._go(esc), final=True)

    async def _single(self, run: Run) -> None:
        self._ended(run, await self._go(run), final=True)

    def _ended(self, run: Run, outcome: Outcome, *, final: bool) -> None:
        if not run.id and not run.refused:
            return
        ended = RunEnded(
            run.id, run.origin.rule, run.playbook.name, run.origin.key, run.origin.target,
            outcome, run.started_at, self._clock(), final, run.escalation, run.refused,
            run.origin.labels,
        )  # fmt: skip
        try:
            self._listener.run_ended(ended)
        except Exception:
            log.exception("outcome listener failed for run %s", run.id)

    # -- one run ----------------------------------------------------------------
    async def _go(self, run: Run) -> Outcome:
        """Record, wait for its turn, execute, record the outcome."""
        run.task = asyncio.current_task()
        o = run.origin
        ready = run.key_ready is None and not run.after and run.has_slot
        outcome = Outcome.INTERRUPTED
        try:
            run.started_at = self._clock()
            try:
                run.id = await self._store.run_created(
                    rule=o.rule, playbook=run.playbook.name, key=o.key, params=o.params,
                    labels=o.labels, created_at=run.started_at, decision_id=o.decision_id,
                    incident_id=o.incident_id, resumes=run.resumes,
                    state=RunState.RUNNING if ready else RunState.QUEUED,
                    escalation=run.escalation, escalates=run.escalates,
                )  # fmt: skip
            except Exception as exc:  # disk full, a broken journal: nothing acts unrecorded
                self._refuse(run, exc)
                return Outcome.INTERRUPTED
            self._by_id[run.id] = run
            log.info(
                "run %d started: %s %s -> %s%s", run.id, o.rule, o.key, run.playbook.name,
                " (escalation)" if run.escalation else "",
            )  # fmt: skip
            if run.stop_reason is not None:  # stopped while the intent was being written
                outcome = run.stop_reason
            else:
                outcome = await self._queued_then_execute(run, ready)
        except asyncio.CancelledError:
            if run.stop_reason is None and not self._closing:
                raise
            uncancel()
            outcome = run.stop_reason or Outcome.INTERRUPTED
        finally:
            self._release(run)
        if run.id:
            await self._store.run_finished(run.id, outcome, self._clock())
            counted = self._metrics.escalations if run.escalation else self._metrics.runs
            counted.labels(run.playbook.name, outcome).inc()
        return outcome

    def _refuse(self, run: Run, exc: Exception) -> None:
        """A run whose intent cannot be written ahead never acts: counted, logged once a minute."""
        run.refused = JOURNAL_UNAVAILABLE
        self._metrics.runs_refused.labels(JOURNAL_UNAVAILABLE).inc()
        now = time.monotonic()
        self._refused_unlogged += 1
        if now - self._refused_logged_at >= 60.0:
            log.error(
                "run of %s for %s refused (%s): the journal cannot record it: %s: %s%s",
                run.playbook.name, run.origin.key, JOURNAL_UNAVAILABLE, type(exc).__name__,
                exc, f" ({self._refused_unlogged} in all since the last report)"
                if self._refused_unlogged > 1 else "",
            )  # fmt: skip
            self._refused_logged_at, self._refused_unlogged = now, 0

    async def _queued_then_execute(self, run: Run, ready: bool) -> Outcome:
        if not ready:
            if run.key_ready is not None:
                await run.key_ready
            for ev in run.after:
                await ev.wait()
            await self._global_slot(run)
            run.state = RunState.RUNNING
            await self._store.run_state(run.id, RunState.RUNNING, self._clock())
        run.state = RunState.RUNNING
        return await self._exec.execute(run)


def _how_it_ended(run: Run, outcome: Outcome) -> dict[str, Any]:
    """``previous`` of the next candidate or the escalation: why this run ended."""
    return {
        "playbook": run.playbook.name,
        "outcome": str(outcome),
        "failed_step": run.failed_step,
        "run_id": run.id,
    }


def _escalation(tried: Sequence[Playbook], playbooks: Mapping[str, Playbook]) -> Playbook | None:
    """The ``escalate:`` of the last tried playbook that names one."""
    for pb in reversed(tried):
        if pb.escalate and pb.escalate in playbooks:
            return playbooks[pb.escalate]
    return None


def _resume_index(pb: Playbook, run: InterruptedRun) -> int | None:
    """Where a resumption starts, or None when it may not (a non-idempotent step was cut)."""
    if run.in_flight:
        top = run.in_flight[0].split("/")[0]
        index = pb.step_index(top)
        return index if index is not None and pb.steps[index].idempotent else None
    done = {path.split("/")[0] for path in run.completed}
    for i, step in enumerate(pb.steps):
        if step.name not in done:
            return i
    return len(pb.steps)

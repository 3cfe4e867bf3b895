"""Executes playbook runs: modes, steps, retries, timeouts, verify, on_failure, approval.

A decision becomes a *chain*: its candidate playbooks are run in order until
one resolves; when none does, the ``escalate:`` playbook runs. Each run is
written to the journal before its first action and each step attempt before
it acts (write-ahead), so a crash loses nothing.

The path from :meth:`Runner.start` to the first action has no thread hop and
no polling: ``start`` admits the run synchronously and creates its task; the
task writes the intent and starts the action in the same loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batond.actions import ACTIONS, ActionContext, ActionResult, Denied, StepCall
from batond.engine.expr import EvalError
from batond.engine.types import Decision
from batond.errors import ActionError
from batond.events import Sample
from batond.metrics import Metrics
from batond.playbooks import Playbook, Step, render_args
from batond.records import InterruptedRun, RunStore
from batond.yamlfile import format_duration

__all__ = ["MAX_NESTING", "RunEnded", "Runner"]

log = logging.getLogger("batond.runner")

MAX_NESTING = 8  # nested playbook steps deeper than this fail (a loop check at run time)
_NOT_RESOLVED = ("unresolved", "failed", "timed_out")  # outcomes that try the next candidate
_COMPENSATE = ("failed", "timed_out")  # outcomes that run on_failure


@dataclass(frozen=True, slots=True)
class RunEnded:
    """One run ended; the service feeds it back to the engine and the journal's stats."""

    run_id: int
    rule: str
    playbook: str
    key: str
    target: str
    outcome: str
    started_at: float
    ended_at: float
    final: bool  # no further run of this decision follows (no next candidate, no escalation)
    escalation: bool  # this run was an escalate: playbook


@dataclass(frozen=True, slots=True)
class _Origin:
    """What a decision (or an interrupted run) gives every run of its chain."""

    rule: str
    key: str
    target: str
    labels: Mapping[str, str]
    params: Mapping[str, Any]
    severity: str = "warning"
    event: Any = None
    value: float | None = None
    metric: str | None = None
    decision_id: int | None = None
    incident_id: int | None = None
    verify_by_run: bool = False


@dataclass(eq=False)
class _Run:
    origin: _Origin
    playbook: Playbook
    playbooks: Mapping[str, Playbook]  # the version the run started with
    escalation: bool = False
    resumes: int | None = None
    start_at: int = 0  # first step index (a resumption)
    id: int = 0
    state: str = "queued"
    started_at: float = 0.0
    arrived: float | None = None  # monotonic arrival of the deciding input (first run only)
    stop_reason: str | None = None  # cancelled | interrupted, set before cancelling the task
    task: asyncio.Task[Any] | None = None
    deadline: float = 0.0  # loop time of the run timeout
    key_ready: asyncio.Future[None] | None = None  # set while waiting for its key (queued)
    after: list[asyncio.Event] = field(default_factory=list)  # restart: predecessors' ends
    has_slot: bool = False
    resolved: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def slot(self) -> tuple[str, str]:
        return (self.playbook.name, self.origin.key)

    def cancel_status(self) -> str:
        """Why the task was cancelled: an operator, shutdown, or the run deadline."""
        if self.stop_reason is not None:
            return self.stop_reason
        if asyncio.get_running_loop().time() >= self.deadline > 0:
            return "timed_out"
        return "cancelled"  # e.g. a sibling branch of a parallel step was denied


class _Stopped(Exception):
    """Ends a run's steps with ``outcome`` (denied; interrupted at a step boundary)."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


@dataclass(eq=False)
class _KeyRuns:
    active: list[_Run] = field(default_factory=list)
    waiting: deque[_Run] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class _Scope:
    """What templates of one step list see besides the run: its params and step results."""

    params: Mapping[str, Any]
    results: dict[str, dict[str, Any]]
    depth: int = 0


_SKIPPED = ActionResult(ok=False, detail="skipped: when: was false").view()
_EARLIER = ActionResult(ok=True, detail="done before the interruption").view()


class Runner:
    def __init__(
        self,
        *,
        playbooks: Mapping[str, Playbook],
        store: RunStore,
        metrics: Metrics,
        actions: ActionContext,
        on_outcome: Callable[[RunEnded], None] | None = None,
        max_concurrent: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._playbooks = dict(playbooks)
        self._store = store
        self._metrics = metrics
        self._ctx = actions
        self._on_outcome = on_outcome
        self._max_concurrent = max(1, max_concurrent)
        self._clock = clock
        self._keys: dict[tuple[str, str], _KeyRuns] = {}
        self._watch: dict[tuple[str, str], set[_Run]] = {}
        self._by_id: dict[int, _Run] = {}
        self._runs: set[_Run] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running = 0  # runs holding one of max_concurrent slots
        self._slot_waiters: deque[tuple[_Run, asyncio.Future[None]]] = deque()
        self._closing = False

    # -- control ---------------------------------------------------------------
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
        origin = _origin_of(decision, decision_id, incident_id, verify_by_run)
        pb = self._playbooks.get(names[0])
        if pb is None:
            log.error("rule %s: no playbook %r", decision.rule, names[0])
            return False
        run = _Run(origin, pb, self._playbooks, arrived=arrived)
        if not self._admit(run):
            return False
        self._spawn(self._chain(origin, names, first=run))
        return True

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
        self._stop(run, "cancelled")
        return True

    def active_count(self) -> int:
        """Runs admitted and not ended (queued ones included)."""
        return len(self._runs)

    def replace_playbooks(self, playbooks: Mapping[str, Playbook]) -> None:
        """A reload: new runs use these; running runs keep the version they started with."""
        self._playbooks = dict(playbooks)

    async def resume(self, interrupted: InterruptedRun) -> bool:
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
        origin = _Origin(
            rule=interrupted.rule,
            key=interrupted.key,
            target=interrupted.key,
            labels=dict(interrupted.labels),
            params=dict(interrupted.params),
            incident_id=interrupted.incident_id,
        )
        index = _resume_index(pb, interrupted)
        if pb.on_interrupt == "resume" and index is not None:
            run = _Run(origin, pb, self._playbooks, resumes=interrupted.run_id, start_at=index)
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
        run = _Run(origin, target, self._playbooks, escalation=True, resumes=interrupted.run_id)
        if not self._admit(run):
            return False
        self._spawn(self._single(run))
        return True

    async def shutdown(self, grace: float) -> None:
        """No new runs; running steps may finish within ``grace``; the rest end ``interrupted``."""
        self._closing = True
        for run in list(self._runs):
            if run.state == "queued":
                self._stop(run, "interrupted")
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for run in list(self._runs):
            self._stop(run, "interrupted")
        if self._tasks:
            # process groups get SIGTERM, then SIGKILL after the kill grace
            await asyncio.wait(list(self._tasks), timeout=self._ctx.kill_grace + 5.0)

    # -- admission (synchronous: a second start in the same tick sees the first) --
    def _admit(self, run: _Run) -> bool:
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
                    self._stop(old, "cancelled")
                    run.after.append(old.done)
            slot.active.append(run)
            if self._running < self._max_concurrent and not self._slot_waiters:
                self._running += 1
                run.has_slot = True
        self._runs.add(run)
        self._watch.setdefault((run.origin.rule, run.origin.key), set()).add(run)
        self._metrics.runs_active.inc()
        return True

    def _release(self, run: _Run) -> None:
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
            self._running -= 1
            self._wake_slot_waiter()
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

    def _wake_slot_waiter(self) -> None:
        while self._slot_waiters and self._running < self._max_concurrent:
            run, fut = self._slot_waiters.popleft()
            if fut.done():
                continue
            self._running += 1
            run.has_slot = True
            fut.set_result(None)

    async def _global_slot(self, run: _Run) -> None:
        if run.has_slot:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_waiters.append((run, fut))
        self._wake_slot_waiter()
        await fut

    def _stop(self, run: _Run, reason: str) -> None:
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
    async def _chain(self, origin: _Origin, names: Sequence[str], first: _Run) -> None:
        """Candidates in order until one resolves; then escalate when none did."""
        tried: list[Playbook] = []
        run: _Run | None = first
        for i, name in enumerate(names):
            if run is None:
                pb = first.playbooks.get(name)
                if pb is None or self._closing:
                    continue
                run = _Run(origin, pb, first.playbooks)
                if not self._admit(run):
                    break
            outcome = await self._go(run)
            tried.append(run.playbook)
            more = outcome in _NOT_RESOLVED and not self._closing
            escalate = _escalation(tried, first.playbooks) if more else None
            last = i == len(names) - 1 or not more
            self._ended(run, outcome, final=last and escalate is None)
            run = None
            if not more:
                return
        if escalate := _escalation(tried, first.playbooks):
            esc = _Run(origin, escalate, first.playbooks, escalation=True)
            if not self._closing and self._admit(esc):
                self._ended(esc, await self._go(esc), final=True)

    async def _single(self, run: _Run) -> None:
        self._ended(run, await self._go(run), final=True)

    def _ended(self, run: _Run, outcome: str, *, final: bool) -> None:
        if self._on_outcome is None or not run.id:
            return
        ended = RunEnded(
            run.id, run.origin.rule, run.playbook.name, run.origin.key, run.origin.target,
            outcome, run.started_at, self._clock(), final, run.escalation,
        )  # fmt: skip
        try:
            self._on_outcome(ended)
        except Exception:
            log.exception("outcome callback failed for run %s", run.id)

    # -- one run ----------------------------------------------------------------
    async def _go(self, run: _Run) -> str:
        """Record, wait for its turn, execute, record the outcome."""
        run.task = asyncio.current_task()
        o = run.origin
        ready = run.key_ready is None and not run.after and run.has_slot
        outcome = "interrupted"
        try:
            run.started_at = self._clock()
            run.id = await self._store.run_created(
                rule=o.rule, playbook=run.playbook.name, key=o.key, params=o.params,
                labels=o.labels, created_at=run.started_at, decision_id=o.decision_id,
                incident_id=o.incident_id, resumes=run.resumes,
                state="running" if ready else "queued",
            )  # fmt: skip
            self._by_id[run.id] = run
            if run.stop_reason is not None:  # stopped while the intent was being written
                outcome = run.stop_reason
            else:
                outcome = await self._queued_then_execute(run, ready)
        except asyncio.CancelledError:
            if run.stop_reason is None and not self._closing:
                raise
            _uncancel()
            outcome = run.stop_reason or "interrupted"
        finally:
            self._release(run)
        if run.id:
            await self._store.run_finished(run.id, outcome, self._clock())
            self._metrics.runs.labels(run.playbook.name, outcome).inc()
        return outcome

    async def _queued_then_execute(self, run: _Run, ready: bool) -> str:
        if not ready:
            if run.key_ready is not None:
                await run.key_ready
            for ev in run.after:
                await ev.wait()
            await self._global_slot(run)
            run.state = "running"
            await self._store.run_state(run.id, "running", self._clock())
        run.state = "running"
        return await self._execute(run)

    async def _execute(self, run: _Run) -> str:
        pb = run.playbook
        scope = _Scope(run.origin.params, {})
        loop = asyncio.get_running_loop()
        run.deadline = loop.time() + pb.timeout
        try:
            try:
                async with asyncio.timeout_at(run.deadline):
                    ok = await self._steps(run, pb.steps, "", scope, start_at=run.start_at)
                    outcome = await self._verify(run) if ok else "failed"
            except TimeoutError:
                outcome = "timed_out"
        except _Stopped as stop:
            outcome = stop.outcome
        except asyncio.CancelledError:
            if run.stop_reason is None and not self._closing:
                raise
            _uncancel()
            outcome = run.stop_reason or "interrupted"
        if outcome in _COMPENSATE and pb.on_failure and not self._closing:
            await self._compensate(run, scope)
        return outcome

    async def _compensate(self, run: _Run, scope: _Scope) -> None:
        """on_failure steps; they have their own timeouts, not the run's spent one."""
        try:
            await self._steps(run, run.playbook.on_failure, "on_failure/", scope)
        except _Stopped:
            pass
        except asyncio.CancelledError:
            if run.stop_reason is None and not self._closing:
                raise
            _uncancel()

    async def _verify(self, run: _Run) -> str:
        within = run.playbook.verify_within
        if run.origin.verify_by_run or within is None or run.resolved.is_set():
            return "resolved"
        try:
            async with asyncio.timeout(within):
                await run.resolved.wait()
        except TimeoutError:
            return "unresolved"
        return "resolved"

    # -- steps ------------------------------------------------------------------
    async def _steps(
        self, run: _Run, steps: Sequence[Step], prefix: str, scope: _Scope, start_at: int = 0
    ) -> bool:
        """Run ``steps`` in order; False when one failed without ``continue_on_error``."""
        for i, step in enumerate(steps):
            if i < start_at:
                scope.results[step.name] = dict(_EARLIER)
                continue
            if self._closing:
                raise _Stopped("interrupted")
            path = prefix + step.name
            if step.when is not None and not self._when(run, step, scope):
                await self._record_skip(run, step, path)
                scope.results[step.name] = dict(_SKIPPED)
                continue
            result = await self._step(run, step, path, scope)
            if not result.ok and not step.continue_on_error:
                return False
        return True

    def _when(self, run: _Run, step: Step, scope: _Scope) -> bool:
        assert step.when is not None
        try:
            return bool(step.when.evaluate(self._env(run, scope)))
        except EvalError as exc:
            log.warning("run %s step %s: when: %s (counted as false)", run.id, step.name, exc)
            return False

    async def _record_skip(self, run: _Run, step: Step, path: str) -> None:
        now = self._clock()
        step_id = await self._store.step_started(run.id, path, step.action, 1, now)
        await self._store.step_finished(
            step_id, status="skipped", ended_at=now, detail={"detail": "when: was false"}
        )

    async def _step(self, run: _Run, step: Step, path: str, scope: _Scope) -> ActionResult:
        """All attempts of one step (retry with doubling backoff); the last result."""
        result = ActionResult(ok=False)
        for attempt in range(1, step.retry.attempts + 1):
            if attempt > 1:
                if self._closing:
                    raise _Stopped("interrupted")
                await asyncio.sleep(step.retry.delay(attempt - 1))
            result = await self._attempt(run, step, path, attempt, scope)
            if result.ok:
                break
        scope.results[step.name] = result.view()
        return result

    async def _attempt(
        self, run: _Run, step: Step, path: str, attempt: int, scope: _Scope
    ) -> ActionResult:
        failure: ActionResult | None = None
        try:
            args = render_args(step, self._env(run, scope))
        except (EvalError, TypeError, ValueError, AttributeError) as exc:
            args, failure = {}, ActionResult(ok=False, detail=f"template: {exc}")
        step_id = await self._store.step_started(run.id, path, step.action, attempt, self._clock())
        if run.arrived is not None:
            self._metrics.event_to_action.observe(max(0.0, time.monotonic() - run.arrived))
            run.arrived = None
        t0 = time.perf_counter()
        status = "failed"
        try:
            if failure is not None:
                result = failure
            else:
                async with asyncio.timeout(step.timeout):
                    result = await self._act(run, step, path, args, scope)
            status = "ok" if result.ok else "failed"
        except TimeoutError:
            result = ActionResult(
                ok=False, detail=f"timed out after {format_duration(step.timeout)}"
            )
            status = "timed_out"
        except ActionError as exc:
            result = ActionResult(ok=False, detail=str(exc))
        except Denied as exc:
            await self._finish_step(
                run, step, step_id, "denied", ActionResult(False, detail=str(exc)), t0
            )
            raise _Stopped("denied") from None
        except asyncio.CancelledError:
            reason = run.cancel_status()
            await self._finish_step(
                run, step, step_id, reason, ActionResult(False, detail=reason), t0
            )
            raise
        except _Stopped as stop:  # a nested playbook or branch was denied / interrupted
            await self._finish_step(run, step, step_id, stop.outcome, ActionResult(False), t0)
            raise
        except Exception as exc:  # an action bug must fail the step, not kill the runner
            log.exception("run %s step %s: action %s crashed", run.id, path, step.action)
            result = ActionResult(ok=False, detail=f"{type(exc).__name__}: {exc}")
        await self._finish_step(run, step, step_id, status, result, t0)
        return result

    async def _finish_step(
        self, run: _Run, step: Step, step_id: int, status: str, result: ActionResult, t0: float
    ) -> None:
        self._metrics.step_duration.labels(run.playbook.name, step.action).observe(
            time.perf_counter() - t0
        )
        detail: dict[str, Any] = {}
        if result.detail:
            detail["detail"] = result.detail
        if result.status is not None:
            detail["status"] = result.status
        await self._store.step_finished(
            step_id, status=status, ended_at=self._clock(), exit_code=result.exit_code,
            stdout=result.stdout, stderr=result.stderr, detail=detail or None,
        )  # fmt: skip

    async def _act(
        self, run: _Run, step: Step, path: str, args: dict[str, Any], scope: _Scope
    ) -> ActionResult:
        if step.action == "parallel":
            return await self._parallel(run, step, path, scope)
        if step.action == "playbook":
            return await self._nested(run, path, args, scope)
        call = StepCall(run.id, path, args, self._ctx, lambda state: self._set_state(run, state))
        return await ACTIONS[step.action](call)

    async def _parallel(self, run: _Run, step: Step, path: str, scope: _Scope) -> ActionResult:
        """Every branch runs to its end; ok when all succeeded."""
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(self._steps(run, branch, f"{path}/{i}/", scope))
                    for i, branch in enumerate(step.branches, 1)
                ]
        except BaseExceptionGroup as group:  # a branch was denied or interrupted
            raise _first_of(group) from None
        failed = [i for i, t in enumerate(tasks, 1) if not t.result()]
        return ActionResult(ok=not failed, detail=f"failed branches: {failed}" if failed else "")

    async def _nested(
        self, run: _Run, path: str, args: Mapping[str, Any], scope: _Scope
    ) -> ActionResult:
        """A nested playbook's steps (and its on_failure) inside this run."""
        name = str(args.get("name"))
        target = run.playbooks.get(name)
        if target is None:
            raise ActionError(f"no playbook named {name!r}")
        if scope.depth >= MAX_NESTING:
            raise ActionError(f"playbooks nested deeper than {MAX_NESTING}")
        extra = args.get("params")
        params = {**scope.params, **(extra if isinstance(extra, Mapping) else {})}
        inner = _Scope(params, {}, scope.depth + 1)
        ok = await self._steps(run, target.steps, path + "/", inner)
        if not ok and target.on_failure:
            await self._steps(run, target.on_failure, path + "/on_failure/", inner)
        return ActionResult(ok=ok, detail="" if ok else f"playbook {name} failed")

    async def _set_state(self, run: _Run, state: str) -> None:
        run.state = state
        await self._store.run_state(run.id, state, self._clock())

    def _env(self, run: _Run, scope: _Scope) -> dict[str, Any]:
        o = run.origin
        return {
            "value": o.value, "metric": o.metric, "labels": o.labels, "event": o.event,
            "anomaly": None, "now": self._clock(), "steps": scope.results,
            "params": scope.params, "rule": o.rule, "key": o.key, "severity": o.severity,
        }  # fmt: skip


def _origin_of(
    decision: Decision, decision_id: int | None, incident_id: int | None, verify_by_run: bool
) -> _Origin:
    item = decision.item
    return _Origin(
        rule=decision.rule,
        key=decision.key,
        target=decision.target,
        labels=dict(decision.labels),
        params=dict(decision.params),
        severity=decision.severity,
        event=item.raw if item is not None else {},
        value=item.value if isinstance(item, Sample) else None,
        metric=item.metric if isinstance(item, Sample) else None,
        decision_id=decision_id,
        incident_id=incident_id,
        verify_by_run=verify_by_run,
    )


def _escalation(tried: Sequence[Playbook], playbooks: Mapping[str, Playbook]) -> Playbook | None:
    """The ``escalate:`` of the last tried playbook that names one."""
    for pb in reversed(tried):
        if pb.escalate and pb.escalate in playbooks:
            return playbooks[pb.escalate]
    return None


def _first_of(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that ends a parallel step: a stop first, else the first one."""
    stops = group.subgroup(_Stopped)
    found: BaseException = stops if stops is not None else group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


def _uncancel() -> None:
    """A stop we asked for was handled: the task goes on (to record the outcome)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()


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

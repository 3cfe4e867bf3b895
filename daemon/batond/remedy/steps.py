"""Executing one run's steps: when, retries with backoff, timeouts, actions,
nested playbooks, parallel branches, verify and on_failure.

Each step attempt is journaled before it acts (write-ahead) and after it ends.
The run itself (:class:`~batond.remedy.run.Run`) is the runner's; this module
only reads it and moves its state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from batond.engine.expr import EvalError
from batond.engine.types import Outcome
from batond.engine.window import Window
from batond.errors import ActionError
from batond.load.playbooks import Step
from batond.metrics import Metrics
from batond.remedy.actions import ACTIONS, ActionContext, ActionResult, Denied, StepCall
from batond.remedy.flow import CONTROL, MAX_NESTING, PURE
from batond.remedy.records import RunStore
from batond.remedy.render import RENDER_ERRORS, render_args
from batond.remedy.run import (
    Run,
    RunState,
    Scope,
    StepStatus,
    initial_scope,
    template_context,
)
from batond.remedy.shown import shown_args
from batond.units import format_duration

__all__ = ["MAX_NESTING", "Scope", "StepExecutor", "Stopped", "uncancel"]

log = logging.getLogger("batond.remedy.runner")

_COMPENSATE = frozenset({Outcome.FAILED, Outcome.TIMED_OUT})  # outcomes that run on_failure


class Stopped(Exception):
    """Ends a run's steps with ``outcome`` (denied; interrupted at a step boundary)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome)
        self.outcome = outcome


_SKIPPED = ActionResult(ok=False, detail="skipped: when: was false").view()
_EARLIER = ActionResult(ok=True, detail="done before the interruption").view()


class StepExecutor:
    """Runs a run's steps; shared by all runs of one Runner."""

    def __init__(
        self,
        *,
        store: RunStore,
        metrics: Metrics,
        ctx: ActionContext,
        clock: Callable[[], float],
        closing: Callable[[], bool],
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._ctx = ctx
        self._clock = clock
        self._is_closing = closing

    @property
    def _closing(self) -> bool:
        """Shutdown began: no further step starts."""
        return self._is_closing()

    async def execute(self, run: Run) -> Outcome:
        """Steps, then verify; on_failure after a failure or timeout; the outcome."""
        pb = run.playbook
        if pb.only_within is not None:  # before the run's timeout starts: queued till then
            await self._playbook_window(run, pb.only_within)
        scope = initial_scope(pb, run.origin, run.restored)
        loop = asyncio.get_running_loop()
        run.deadline = loop.time() + pb.timeout
        try:
            try:
                async with asyncio.timeout_at(run.deadline):
                    ok = await self.run_steps(run, pb.steps, "", scope, start_at=run.start_at)
                    outcome = await self._verify(run) if ok else Outcome.FAILED
            except TimeoutError:
                outcome = Outcome.TIMED_OUT
        except Stopped as stop:
            outcome = stop.outcome
        except asyncio.CancelledError:
            if run.stop_reason is None and not self._closing:
                raise
            uncancel()
            outcome = run.stop_reason or Outcome.INTERRUPTED
        if outcome in _COMPENSATE and pb.on_failure and not self._closing:
            await self._compensate(run, scope)
        return outcome

    async def _playbook_window(self, run: Run, window: Window) -> None:
        if window.contains(self._clock()):
            return
        await self._store.run_state(run.id, RunState.QUEUED, self._clock())
        run.state = RunState.QUEUED
        try:
            await self._window(run, window, f"playbook {run.playbook.name}")
        finally:
            run.state = RunState.RUNNING
        await self._store.run_state(run.id, RunState.RUNNING, self._clock())

    async def _compensate(self, run: Run, scope: Scope) -> None:
        """on_failure steps; they have their own timeouts, not the run's spent one."""
        try:
            await self._undo(run, run.playbook.on_failure, "on_failure/", scope)
        except Stopped:
            pass
        except asyncio.CancelledError:
            if run.stop_reason is None and not self._closing:
                raise
            uncancel()

    async def _undo(self, run: Run, steps: Sequence[Step], prefix: str, scope: Scope) -> bool:
        """Compensation: every step runs though an earlier one failed (each failure is
        recorded with its step)."""
        return await self.run_steps(run, steps, prefix, scope, keep_going=True)

    async def _window(self, run: Run, window: Window, what: str) -> None:
        """Wait until ``window`` is open (a step: inside the run's timeout)."""
        now = self._clock()
        opens = window.next_open(now)
        if opens is None:
            raise ActionError(f"{what}: the window {window.text} never opens")
        if opens > now:
            until = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(opens))
            log.info(
                "run %s: %s waits for its window (%s) until %s", run.id, what, window.text, until
            )
            await asyncio.sleep(opens - now)

    async def _verify(self, run: Run) -> Outcome:
        """How a run whose steps succeeded ends: ``skipped`` when no action step ran;
        an escalation ``succeeded`` (paging resolves nothing); ``resolved`` when the
        incident went away (or only the run can resolve it); without ``verify:``,
        ``succeeded``; else whether it resolves within ``verify.within``."""
        within = run.playbook.verify_within
        if not run.acted and run.start_at == 0:
            return Outcome.SKIPPED
        if run.escalation:
            return Outcome.SUCCEEDED
        if run.origin.verify_by_run or run.resolved.is_set():
            return Outcome.RESOLVED
        if within is None:
            return Outcome.SUCCEEDED
        try:
            async with asyncio.timeout(within):
                await run.resolved.wait()
        except TimeoutError:
            return Outcome.UNRESOLVED
        return Outcome.RESOLVED

    # -- steps ------------------------------------------------------------------
    async def run_steps(
        self,
        run: Run,
        steps: Sequence[Step],
        prefix: str,
        scope: Scope,
        start_at: int = 0,
        keep_going: bool = False,
    ) -> bool:
        """Run ``steps`` in order; False when one failed without ``continue_on_error``
        (``keep_going``, as compensation does: a failure goes on to the next step unless
        it says ``continue_on_error: false``; the result is False when any failed)."""
        all_ok = True
        env = self.env(run, scope)  # scope's results and vars change in place: one per list
        for i, step in enumerate(steps):
            if i < start_at:  # done before an interruption (results restored from the journal)
                scope.results.setdefault(step.name, dict(_EARLIER))
                continue
            if self._closing:
                raise Stopped(Outcome.INTERRUPTED)
            path = prefix + step.name
            if step.when is not None and not self._when(run, step, env):
                await self._record_skip(run, step, path, keep=scope.top)
                scope.results[step.name] = dict(_SKIPPED)
                continue
            if step.only_within is not None:
                await self._window(run, step.only_within, path)
            if step.action in PURE:
                result = await self._pure(run, step, path, scope, env)
            else:
                result = await self._step(run, step, path, scope)
            if result.ok or step.continue_on_error:
                continue
            all_ok = False
            if run.failed_step is None:
                run.failed_step = path
            if not keep_going or step.continue_on_error is False:
                return False
            log.warning("run %s: step %s failed; the next one runs", run.id, path)
        return all_ok

    def _when(self, run: Run, step: Step, env: Mapping[str, Any]) -> bool:
        assert step.when is not None
        try:
            return bool(step.when.evaluate(env))
        except EvalError as exc:
            log.warning("run %s step %s: when: %s (counted as false)", run.id, step.name, exc)
            return False

    async def _record_skip(self, run: Run, step: Step, path: str, keep: bool) -> None:
        now = self._clock()
        step_id = await self._store.step_started(run.id, path, step.action, 1, now)
        detail: dict[str, Any] = {"detail": "when: was false"}
        if keep:
            detail["result"] = {"ok": False, "status": None, "json": None}
        await self._store.step_finished(
            step_id, status=StepStatus.SKIPPED, ended_at=now, detail=detail
        )

    async def _pure(
        self, run: Run, step: Step, path: str, scope: Scope, env: Mapping[str, Any]
    ) -> ActionResult:
        """``set`` and ``assert`` compute and touch nothing outside the run: no timeout,
        no retry, no action; recorded like any step (started, then how it ended)."""
        step_id = await self._store.step_started(run.id, path, step.action, 1, self._clock())
        try:
            result = PURE[step.action](step, env, scope)
        except RENDER_ERRORS as exc:
            result = ActionResult(ok=False, detail=f"template: {exc}")
        status = StepStatus.OK if result.ok else StepStatus.FAILED
        await self._store.step_finished(
            step_id, status=status, ended_at=self._clock(), detail=_detail(result, scope.top)
        )
        scope.results[step.name] = result.view()
        return result

    async def _step(self, run: Run, step: Step, path: str, scope: Scope) -> ActionResult:
        """All attempts of one step (retry with doubling backoff); the last result."""
        result = ActionResult(ok=False)
        for attempt in range(1, step.retry.attempts + 1):
            if attempt > 1:
                if self._closing:
                    raise Stopped(Outcome.INTERRUPTED)
                await asyncio.sleep(step.retry.delay(attempt - 1))
            result = await self._attempt(run, step, path, attempt, scope)
            if result.ok:
                break
        scope.results[step.name] = result.view()
        return result

    async def _attempt(
        self, run: Run, step: Step, path: str, attempt: int, scope: Scope
    ) -> ActionResult:
        failure: ActionResult | None = None
        try:
            args = render_args(step, self.env(run, scope))
        except RENDER_ERRORS as exc:
            args, failure = {}, ActionResult(ok=False, detail=f"template: {exc}")
        shown = None if failure is not None else shown_args(step.action, args)
        step_id = await self._store.step_started(
            run.id, path, step.action, attempt, self._clock(), args=shown
        )
        if step.action not in CONTROL:  # (the steps inside say whether anything acted)
            run.acted = True
        if run.arrived is not None:
            self._metrics.event_to_action.observe(max(0.0, time.monotonic() - run.arrived))
            run.arrived = None
        t0 = time.perf_counter()
        status = StepStatus.FAILED
        try:
            if failure is not None:
                result = failure
            else:
                async with asyncio.timeout(step.timeout):
                    result = await self._act(run, step, path, args, scope)
            status = StepStatus.OK if result.ok else StepStatus.FAILED
        except TimeoutError:
            result = ActionResult(
                ok=False, detail=f"timed out after {format_duration(step.timeout)}"
            )
            status = StepStatus.TIMED_OUT
        except ActionError as exc:
            result = ActionResult(ok=False, detail=str(exc))
        except Denied as exc:
            await self._finish_step(
                run, step, step_id, StepStatus.DENIED, ActionResult(False, detail=str(exc)), t0
            )
            raise Stopped(Outcome.DENIED) from None
        except asyncio.CancelledError:
            reason = run.cancel_status()
            if run.failed_step is None and reason == Outcome.TIMED_OUT:
                run.failed_step = path  # the run's timeout struck here
            await self._finish_step(
                run, step, step_id, StepStatus(reason), ActionResult(False, detail=reason), t0
            )
            raise
        except Stopped as stop:  # a nested playbook or branch was denied / interrupted
            status = StepStatus(stop.outcome)
            await self._finish_step(run, step, step_id, status, ActionResult(False), t0)
            raise
        except Exception as exc:  # an action bug must fail the step, not kill the runner
            log.exception("run %s step %s: action %s crashed", run.id, path, step.action)
            result = ActionResult(ok=False, detail=f"{type(exc).__name__}: {exc}")
        await self._finish_step(run, step, step_id, status, result, t0, keep=scope.top)
        return result

    async def _finish_step(
        self,
        run: Run,
        step: Step,
        step_id: int,
        status: StepStatus,
        result: ActionResult,
        t0: float,
        keep: bool = False,
    ) -> None:
        """Record how the attempt ended; ``keep``: with what later steps read of it."""
        self._metrics.step_duration.labels(run.playbook.name, step.action).observe(
            time.perf_counter() - t0
        )
        await self._store.step_finished(
            step_id, status=status, ended_at=self._clock(), exit_code=result.exit_code,
            stdout=result.stdout, stderr=result.stderr, detail=_detail(result, keep),
        )  # fmt: skip
        if status in (StepStatus.FAILED, StepStatus.TIMED_OUT):
            _log_failure(run, step, status, result)

    async def _act(
        self, run: Run, step: Step, path: str, args: dict[str, Any], scope: Scope
    ) -> ActionResult:
        control = CONTROL.get(step.action)
        if control is not None:
            return await control(self, run, step, path, args, scope)
        call = StepCall(run.id, path, args, self._ctx, lambda on: self._awaiting(run, on))
        return await ACTIONS[step.action](call)

    async def _awaiting(self, run: Run, approval: bool) -> None:
        run.state = RunState.WAITING_APPROVAL if approval else RunState.RUNNING
        await self._store.run_state(run.id, run.state, self._clock())

    def env(self, run: Run, scope: Scope) -> dict[str, Any]:
        """What templates and expressions of a step in ``scope`` see."""
        return template_context(
            run.origin, scope, now=run.started_at, clock=self._clock, previous=run.previous
        )


_COLUMNS = ("stdout", "stderr", "exit_code")  # kept in their own journal columns


def _detail(result: ActionResult, keep: bool) -> dict[str, Any] | None:
    """A step record's detail; ``keep``: with what later steps read of it (a resumption
    restores it)."""
    detail: dict[str, Any] = {}
    if result.detail:
        detail["detail"] = result.detail
    if result.status is not None:
        detail["status"] = result.status
    if keep:
        detail["result"] = {k: v for k, v in result.view().items() if k not in _COLUMNS}
    return detail or None


def _log_failure(run: Run, step: Step, status: StepStatus, result: ActionResult) -> None:
    """One WARNING per failed step attempt: its exit code and the last line it wrote."""
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    code = "" if result.exit_code is None else f" (exit {result.exit_code})"
    last = f": {lines[-1][:300]}" if lines else ""
    why = f": {result.detail}" if result.detail and not lines and result.exit_code is None else ""
    log.warning("run %d step %s %s%s%s%s", run.id, step.name, status, code, last, why)


def uncancel() -> None:
    """A stop we asked for was handled: the task goes on (to record the outcome)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        task.uncancel()

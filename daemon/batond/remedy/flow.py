"""The steps the executor runs itself, carrying data between the others.

``parallel`` (branches at once), ``playbook`` (a nested playbook and its
``outputs:``), ``foreach`` (a block of steps per item, one at a time or a
bounded number at once), ``wait_until`` (check steps and a condition, every
interval, up to the step's timeout), ``assert`` (a condition and a message)
and ``set`` (named values, ``vars.NAME`` of later steps). Each gets the
executor, the run, the step, its journal path, its rendered ``with:`` values
and the scope it runs in, and returns the step's :class:`ActionResult`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from batond.engine.expr import EvalError, Expression
from batond.engine.functions import MAX_ITEMS, text_of
from batond.engine.templates import render_value
from batond.errors import ActionError
from batond.remedy.actions import ActionResult
from batond.remedy.run import Run, Scope

if TYPE_CHECKING:
    from batond.load.playbooks import Step
    from batond.remedy.steps import StepExecutor

__all__ = ["CONTROL", "MAX_NESTING", "PURE"]

MAX_NESTING = 8  # nested playbook steps deeper than this fail (a loop check at run time)

Control = Callable[
    ["StepExecutor", Run, "Step", str, Mapping[str, Any], "Scope"], Awaitable[ActionResult]
]


async def parallel(
    ex: StepExecutor, run: Run, step: Step, path: str, args: Mapping[str, Any], scope: Scope
) -> ActionResult:
    """Every branch runs to its end; ok when all succeeded."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(ex.run_steps(run, branch, f"{path}/{i}/", scope))
                for i, branch in enumerate(step.branches, 1)
            ]
    except BaseExceptionGroup as group:  # a branch was denied or interrupted
        raise first_of(group) from None
    failed = [i for i, t in enumerate(tasks, 1) if not t.result()]
    return ActionResult(ok=not failed, detail=f"failed branches: {failed}" if failed else "")


async def nested(
    ex: StepExecutor, run: Run, step: Step, path: str, args: Mapping[str, Any], scope: Scope
) -> ActionResult:
    """A nested playbook's steps (and its on_failure) inside this run; its ``outputs:``
    rendered over its own steps become ``steps.NAME.outputs``."""
    name = text_of(args.get("name"))
    target = run.playbooks.get(name)
    if target is None:
        raise ActionError(f"no playbook named {name!r}")
    if scope.depth >= MAX_NESTING:
        raise ActionError(f"playbooks nested deeper than {MAX_NESTING}")
    extra = args.get("params")
    params = {**scope.params, **(extra if isinstance(extra, Mapping) else {})}
    inner = scope.child(params=params, results={}, depth=scope.depth + 1, variables={})
    ok = await ex.run_steps(run, target.steps, path + "/", inner)
    if not ok and target.on_failure:
        await ex.run_steps(run, target.on_failure, path + "/on_failure/", inner, keep_going=True)
    outputs: dict[str, Any] = {}
    detail = "" if ok else f"playbook {name} failed"
    try:
        outputs = render_value(dict(target.outputs), ex.env(run, inner))
    except (EvalError, TypeError, ValueError) as exc:
        ok, detail = False, f"outputs of playbook {name}: {exc}"
    return ActionResult(ok=ok, detail=detail, extra={"outputs": outputs})


def assert_(step: Step, env: Mapping[str, Any], scope: Scope) -> ActionResult:
    """``that`` must be true; when it is not, the step fails with ``message``."""
    that = step.args["that"]
    assert isinstance(that, Expression)
    try:
        holds = bool(that.evaluate(env))
    except EvalError as exc:
        return ActionResult(ok=False, detail=f"assert: {exc}", extra={"message": str(exc)})
    if holds:
        return ActionResult(ok=True, extra=_NO_MESSAGE)
    message = step.args.get("message")  # rendered only when it is needed
    text = text_of(render_value(message, env)) if message is not None else ""
    text = text or f"assertion failed: {that.text.strip()}"
    return ActionResult(ok=False, detail=text, extra={"message": text})


_NO_MESSAGE: Mapping[str, Any] = {"message": ""}


def set_(step: Step, env: Mapping[str, Any], scope: Scope) -> ActionResult:
    """Named values computed once: ``vars.NAME`` for every later step of the scope."""
    values = {name: render_value(value, env) for name, value in step.args.items()}
    scope.variables.update(values)
    return ActionResult(ok=True, extra={"vars": values})


async def foreach(
    ex: StepExecutor, run: Run, step: Step, path: str, args: Mapping[str, Any], scope: Scope
) -> ActionResult:
    """The block once per item (``item``), at most ``concurrency`` at a time.

    After a failed item no further item starts (those running finish), unless
    the block's own steps say ``continue_on_error``. ``steps.NAME.items`` lists
    each item that ran with its ``ok`` and its steps' results.
    """
    items = args.get("items")
    if items is None:
        items = []
    if isinstance(items, Mapping):
        items = [{"key": k, "value": v} for k, v in items.items()]
    if not isinstance(items, list | tuple):
        raise ActionError(f"foreach: items must be a list, got {type(items).__name__}")
    if len(items) > MAX_ITEMS:
        raise ActionError(f"foreach: {len(items)} items is more than {MAX_ITEMS}")
    body = step.branches[0] if step.branches else ()
    limit = max(1, int(args.get("concurrency") or 1))
    done: list[dict[str, Any] | None] = [None] * len(items)
    failed = asyncio.Event()

    async def one(i: int, item: Any) -> None:
        inner = Scope(
            scope.params, dict(scope.results), scope.depth, False, dict(scope.variables), item
        )
        ok = await ex.run_steps(run, body, f"{path}/{i}/", inner)
        own = {s.name: inner.results[s.name] for s in body if s.name in inner.results}
        done[i] = {"item": item, "ok": ok, "steps": own}
        if not ok:
            failed.set()

    await _bounded(items, limit, one, failed)
    ran = [d for d in done if d is not None]
    bad = [i for i, d in enumerate(done) if d is not None and not d["ok"]]
    detail = f"failed items: {bad}" if bad else ""
    if len(ran) < len(items):
        detail += f"; {len(items) - len(ran)} items not started"
    return ActionResult(ok=not bad and len(ran) == len(items), detail=detail, extra={"items": ran})


async def _bounded(
    items: Sequence[Any],
    limit: int,
    one: Callable[[int, Any], Coroutine[Any, Any, None]],
    failed: asyncio.Event,
) -> None:
    """``one(i, item)`` for each item in order, ``limit`` at a time; none starts after
    ``failed`` is set."""
    if limit == 1:  # sequential: no tasks at all
        for i, item in enumerate(items):
            if failed.is_set():
                return
            await one(i, item)
        return
    gate = asyncio.Semaphore(limit)
    try:
        async with asyncio.TaskGroup() as tg:
            for i, item in enumerate(items):
                await gate.acquire()
                if failed.is_set():
                    gate.release()
                    break
                task = tg.create_task(one(i, item))
                task.add_done_callback(lambda _t: gate.release())
    except BaseExceptionGroup as group:  # an item was denied or interrupted
        raise first_of(group) from None


async def wait_until(
    ex: StepExecutor, run: Run, step: Step, path: str, args: Mapping[str, Any], scope: Scope
) -> ActionResult:
    """Check steps then ``that``, every ``every``, until ``that`` is true; the step's
    ``timeout:`` bounds the whole wait (a check that fails counts as not yet)."""
    that = step.args["that"]
    assert isinstance(that, Expression)
    every = float(args.get("every") or 5.0)
    checks = step.branches[0] if step.branches else ()
    polls = 0
    while True:
        polls += 1
        await ex.run_steps(run, checks, f"{path}/{polls}/", scope, keep_going=True)
        try:
            if that.evaluate(ex.env(run, scope)):
                return ActionResult(ok=True, extra={"polls": polls})
        except EvalError:
            pass  # e.g. the check's JSON is not there yet: not yet true
        await asyncio.sleep(every)


def first_of(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that ends a parallel step: a stop first, else the first one."""
    from batond.remedy.steps import Stopped

    stops = group.subgroup(Stopped)
    found: BaseException = stops if stops is not None else group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


Pure = Callable[["Step", Mapping[str, Any], "Scope"], ActionResult]
#: Steps that only compute (no I/O, no await): no timeout or retry applies to them.
PURE: Mapping[str, Pure] = {"assert": assert_, "set": set_}

#: The steps the executor runs itself, by action name.
CONTROL: Mapping[str, Control] = {
    "parallel": parallel,
    "playbook": nested,
    "foreach": foreach,
    "wait_until": wait_until,
}

"""The run model: what one playbook run is while the runner drives it.

A :class:`Run` is created by the runner for each playbook of a decision's
chain (an escalation or a resumption included) and carries the
:class:`Origin` its chain shares. The runner owns every run's lifecycle
(admission, its key slot, the global slot, cancellation); the step executor
(:mod:`batond.remedy.steps`) reads it and moves its :attr:`Run.state`.

States and step statuses are stored in the journal and shown by the API, so
their values are the names users see. How a run ends is an
:class:`~batond.engine.types.Outcome`, which the engine learns from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from batond.engine.types import Decision, Outcome
from batond.events import Sample
from batond.load.playbooks import Playbook

__all__ = [
    "Origin",
    "Run",
    "RunState",
    "Scope",
    "StepStatus",
    "initial_scope",
    "origin_of",
    "template_context",
]


class RunState(StrEnum):
    """Where a run is: ``queued`` -> ``running`` <-> ``waiting_approval`` -> ``done``."""

    QUEUED = "queued"
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    DONE = "done"


class StepStatus(StrEnum):
    """How one step attempt ended (``running`` while it acts)."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    DENIED = "denied"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class Origin:
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
    max_concurrent: int | None = None  # the rule's own limits.max_concurrent_runs


@dataclass(eq=False)
class Run:
    origin: Origin
    playbook: Playbook
    playbooks: Mapping[str, Playbook]  # the version the run started with
    escalation: bool = False
    resumes: int | None = None
    start_at: int = 0  # first step index (a resumption)
    # a resumption: what the interrupted run's earlier steps gave (steps.NAME)
    restored: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # a later candidate or an escalation: how the run before it ended (``previous``)
    previous: Mapping[str, Any] | None = None
    failed_step: str | None = None  # the path of the first step that failed
    id: int = 0
    state: RunState = RunState.QUEUED
    started_at: float = 0.0
    arrived: float | None = None  # monotonic arrival of the deciding input (first run only)
    stop_reason: Outcome | None = None  # cancelled | interrupted, set before cancelling the task
    task: asyncio.Task[Any] | None = None
    deadline: float = 0.0  # loop time of the run timeout
    key_ready: asyncio.Future[None] | None = None  # set while waiting for its key (queued)
    after: list[asyncio.Event] = field(default_factory=list)  # restart: predecessors' ends
    has_slot: bool = False
    refused: str = ""  # why it never ran: journal_unavailable (its intent could not be written)
    acted: bool = False  # an action step ran (not only steps skipped by when:)
    resolved: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def slot(self) -> tuple[str, str]:
        return (self.playbook.name, self.origin.key)

    @property
    def escalates(self) -> int | None:
        """The run an escalation run escalates: the last of its chain, or the interrupted
        one; None for any other run and for a circuit-open escalation (no run ran)."""
        if not self.escalation or self.previous is None:
            return None
        run_id = self.previous.get("run_id")
        return run_id if isinstance(run_id, int) and run_id > 0 else None

    def cancel_status(self) -> Outcome:
        """Why the task was cancelled: an operator, shutdown, or the run deadline."""
        if self.stop_reason is not None:
            return self.stop_reason
        if asyncio.get_running_loop().time() >= self.deadline > 0:
            return Outcome.TIMED_OUT
        return Outcome.CANCELLED  # e.g. a sibling branch of a parallel step was denied


@dataclass(frozen=True, slots=True)
class Scope:
    """What templates of one step list see besides the run: params, step results
    (``steps``), values of ``set`` steps (``vars``) and a ``foreach`` block's ``item``.

    ``top`` is the run's own scope (not a nested playbook's or a foreach item's):
    its step results are journaled with each step, so that a resumption after a
    crash sees them again.
    """

    params: Mapping[str, Any]
    results: dict[str, dict[str, Any]]
    depth: int = 0
    top: bool = False
    variables: dict[str, Any] = field(default_factory=dict)
    item: Any = None

    def child(self, **changes: Any) -> Scope:
        """A scope inside this one (a nested playbook, a foreach item): never ``top``."""
        return replace(self, top=False, **changes)


def origin_of(
    decision: Decision,
    decision_id: int | None = None,
    incident_id: int | None = None,
    verify_by_run: bool = False,
) -> Origin:
    """What a decision gives the runs of its chain."""
    item = decision.item
    return Origin(
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
        max_concurrent=decision.max_concurrent,
    )


def initial_scope(
    playbook: Playbook, origin: Origin, restored: Mapping[str, Mapping[str, Any]] | None = None
) -> Scope:
    """The scope a run's steps start in: the playbook's declared ``params`` under those the
    decision gives; ``restored``: step results from before an interruption (with the
    values of its ``set`` steps)."""
    params = {**playbook.params, **origin.params}  # declared defaults under what was given
    scope = Scope(params, {k: dict(v) for k, v in (restored or {}).items()}, top=True)
    for result in scope.results.values():  # set steps done before an interruption
        scope.variables.update(result.get("vars") or {})
    return scope


def template_context(
    origin: Origin,
    scope: Scope,
    *,
    now: float,
    clock: Callable[[], float],
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What templates and expressions of a step in ``scope`` see (docs/playbooks.md).

    The one place it is built: the step executor, and ``batond test`` rendering a
    step's arguments without running it, both call this.
    """
    o = origin
    return {
        "value": o.value, "metric": o.metric, "labels": o.labels, "event": o.event,
        "anomaly": None, "now": now, "clock": clock, "steps": scope.results,
        "params": scope.params, "rule": o.rule, "key": o.key, "severity": o.severity,
        "vars": scope.variables, "item": scope.item, "previous": previous,
    }  # fmt: skip

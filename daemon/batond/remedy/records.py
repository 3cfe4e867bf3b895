"""The records that the runner writes and the journal keeps.

``RunStore`` is the part of the journal the runner needs; ``journal.Journal``
implements it on SQLite. Every call returns only once the record is durable
(committed), so "a run's intent is written before its first action" holds by
awaiting ``run_created`` and ``step_started`` before acting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from batond.engine.types import Outcome
from batond.remedy.run import RunState, StepStatus

__all__ = ["InterruptedRun", "RunStore"]


class RunStore(Protocol):
    async def run_created(
        self,
        *,
        rule: str,
        playbook: str,
        key: str,
        params: Mapping[str, Any],
        labels: Mapping[str, str],
        created_at: float,
        decision_id: int | None = None,
        incident_id: int | None = None,
        resumes: int | None = None,
        state: RunState = RunState.QUEUED,
        escalation: bool = False,
        escalates: int | None = None,
    ) -> int:
        """Durably record a run's intent; returns its id. ``escalation``: an
        ``escalate:`` playbook's run (paging someone), counted in no resolve rate;
        ``escalates``: the run it escalates (None: a circuit-open escalation, none ran)."""
        ...

    async def run_state(self, run_id: int, state: RunState, at: float) -> None:
        """queued -> running -> waiting_approval -> running ...

        ``started_at`` is set when the run first becomes running.
        """
        ...

    async def step_started(
        self,
        run_id: int,
        path: str,
        action: str,
        attempt: int,
        started_at: float,
        *,
        args: Mapping[str, Any] | None = None,
    ) -> int:
        """Durably record that a step attempt is about to act; returns the step record id.

        ``path`` names the step inside the run: ``restart``, ``on_failure/tell``,
        ``fanout/1/ping``; ``attempt`` counts from 1; ``args``: its rendered ``with:``
        values as shown (``remedy.shown``: redacted, bounded), None when not rendered.
        """
        ...

    async def step_finished(
        self,
        step_id: int,
        *,
        status: StepStatus,
        ended_at: float,
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Record how a step attempt ended; outputs are tails (the journal truncates further)."""
        ...

    async def run_finished(self, run_id: int, outcome: Outcome, ended_at: float) -> None: ...


@dataclass(frozen=True, slots=True)
class InterruptedRun:
    """A run found unfinished after a crash, already recorded ``interrupted``.

    ``in_flight`` are the step paths that had started and not ended (several
    with parallel branches); ``completed`` the paths that started and ended,
    whatever their status (``failed`` with ``continue_on_error``, ``timed_out``,
    ``skipped``), in this run and in the runs it resumed, in order: none of
    them runs again. ``results`` is what later steps read of the ended ones
    (``steps.NAME``), as the journal kept it. A resumption is a new run with
    ``resumes=run_id``.
    """

    run_id: int
    rule: str
    playbook: str
    key: str
    params: Mapping[str, Any]
    labels: Mapping[str, str]
    created_at: float
    state: RunState  # the state it was in: queued, running or waiting_approval
    decision_id: int | None = None
    incident_id: int | None = None
    resumes: int | None = None
    in_flight: tuple[str, ...] = ()
    completed: tuple[str, ...] = field(default_factory=tuple)
    # steps.NAME of the run's own steps that ended (and of the runs it resumed)
    results: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def last_completed(self) -> str | None:
        return self.completed[-1] if self.completed else None

"""What the daemon tells people: one log line per decision, run end, circuit change;
metrics and notifications for what leaves an incident without a run.

The pipeline calls it (:class:`batond.runtime.pipeline.Reporter`); replay has none.
Levels: a decision that starts a run, a suppression an operator asked for (pause,
shadow, silence) and an input recorded while a run is in progress are INFO; every
other suppression leaves an incident without a run nobody chose: WARNING, the
``batond_incidents_without_run_total`` metric and a notification. Circuit openings
are WARNING (and notified), closings INFO; runs ending ``failed``, ``unresolved`` or
``timed_out`` are WARNING, and notified when nothing escalates them.
"""

from __future__ import annotations

import logging
from typing import Any

from batond.engine.governor import CircuitEvent
from batond.engine.types import (
    HELD_BY_OPERATOR,
    NOT_RESOLVED,
    Decision,
    Resolved,
    ResolvedBy,
    Suppression,
)
from batond.metrics import Metrics
from batond.remedy.runner import RunEnded
from batond.runtime.notify import Notifier
from batond.units import format_duration

__all__ = ["DaemonReporter"]

log = logging.getLogger("batond")

_ACTED_ELSEWHERE = frozenset({Suppression.ALREADY_RUNNING, Suppression.NOT_OWNER})


class DaemonReporter:
    def __init__(self, metrics: Metrics, notifier: Notifier | None) -> None:
        self._metrics = metrics
        self._notifier = notifier
        self._without_run: dict[tuple[str, str], Any] = {}  # (rule, reason) -> its counter

    def decided(self, decision: Decision, incident_id: int | None, started: bool) -> None:
        d = decision
        where = f" (incident {incident_id})" if incident_id is not None else ""
        cause = f"; {d.cause}" if d.cause else ""
        if d.suppressed is None:
            if started:
                log.info("decision %s %s: run %s%s%s", d.rule, d.key, d.playbook, where, cause)
            else:
                log.warning(
                    "decision %s %s: run %s not started (its mode refused it, or batond is"
                    " stopping)%s%s", d.rule, d.key, d.playbook, where, cause,
                )  # fmt: skip
            return
        line = f"decision {d.rule} {d.key}: {d.suppressed}, no run{where}: {d.reason}{cause}"
        # already_running, not_owner: another run, or the partition's new owner, acts on it
        if d.suppressed in HELD_BY_OPERATOR or d.suppressed in _ACTED_ELSEWHERE:
            log.info("%s", line)
            return
        log.warning("%s", line)
        self._count_without_run(d.rule, d.suppressed)
        if self._notifier is not None:
            self._notifier.send(
                f"batond: {d.rule} {d.key}: no run ({d.suppressed}): {d.reason}",
                kind="suppressed", rule=d.rule, reason=str(d.suppressed), key=d.key,
                incident=incident_id,
            )  # fmt: skip

    def _count_without_run(self, rule: str, reason: str) -> None:
        counter = self._without_run.get((rule, reason))
        if counter is None:  # (labels() costs more than the rest of a storm's decision)
            if len(self._without_run) > 10_000:
                self._without_run.clear()
            counter = self._without_run[(rule, reason)] = self._metrics.without_run.labels(
                rule, reason
            )
        counter.inc()

    def resolved(self, resolved: Resolved, incident_id: int | None) -> None:
        level = logging.INFO if resolved.by == ResolvedBy.OPERATOR else logging.DEBUG
        log.log(
            level, "incident %s %s %s resolved by %s",
            incident_id, resolved.rule, resolved.key, resolved.by,
        )  # fmt: skip

    def run_ended(self, ended: RunEnded) -> None:
        e = ended
        took = format_duration(max(0.0, e.ended_at - e.started_at))
        kind = "escalation run" if e.escalation else "run"
        bad = e.outcome in NOT_RESOLVED
        log.log(
            logging.WARNING if bad else logging.INFO,
            "%s %d ended %s after %s: %s %s -> %s", kind, e.run_id, e.outcome, took,
            e.rule, e.key, e.playbook,
        )  # fmt: skip
        if bad and e.final and not e.escalation and self._notifier is not None:
            self._notifier.send(
                f"batond: run {e.run_id} of {e.rule} {e.key} ({e.playbook}) ended {e.outcome};"
                " nothing escalates it",
                kind="run_unresolved", rule=e.rule, reason=str(e.outcome), key=e.key,
                run=e.run_id,
            )  # fmt: skip

    def circuits(self, events: list[CircuitEvent]) -> None:
        for e in events:
            if not e.opened:
                log.info("circuit of %s %s closed (%s)", e.rule, e.key, e.why)
                continue
            until = format_duration(max(0.0, (e.closes_at or e.ts) - e.ts))
            why = "its per_target budget is spent" if e.why == "budget" else "runs kept failing"
            log.warning(
                "circuit of %s %s opened (%s): no runs for %s, or until"
                " `batond circuit reset %s --rule %s`", e.rule, e.key, why, until, e.key, e.rule,
            )  # fmt: skip
            self._metrics.circuits_opened.labels(e.rule).inc()
            if self._notifier is not None:
                self._notifier.send(
                    f"batond: circuit of {e.rule} {e.key} opened ({why}); no runs for {until}",
                    kind="circuit_open", rule=e.rule, reason=e.why, key=e.key,
                )  # fmt: skip

"""What the engine hands to the rest of batond, and the outcomes it learns from.

The values of :class:`Suppression` and :class:`Outcome` are stored in the
journal and shown by the API and the metrics: they are the names users see
(docs/playbooks.md, "Outcomes"; docs/rules.md, "Suppression reasons").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from batond.events import Input

__all__ = [
    "CONCLUDED",
    "HELD_BY_OPERATOR",
    "NOT_RESOLVED",
    "Decision",
    "Outcome",
    "Output",
    "Resolved",
    "ResolvedBy",
    "Suppression",
    "verdict",
]


class Suppression(StrEnum):
    """Why a decision did not start a run, in the order the governor checks them."""

    PAUSED = "paused"
    SHADOW = "shadow"
    SILENCED = "silenced"
    COOLDOWN = "cooldown"
    ALREADY_RUNNING = "already_running"
    CIRCUIT_OPEN = "circuit_open"
    BLAST_RADIUS = "blast_radius"
    RATE_LIMITED = "rate_limited"
    NOT_OWNER = "not_owner"  # a fleet's central instance no longer owns the partition


#: Suppressions an operator asked for (pause, shadow mode, a silence): logged at INFO and
#: notified to nobody. Every other suppression leaves an incident without a run that
#: nobody chose: a WARNING, a metric and a notification.
HELD_BY_OPERATOR = frozenset({Suppression.PAUSED, Suppression.SHADOW, Suppression.SILENCED})


class Outcome(StrEnum):
    """How a playbook run ends.

    It lives here, not in ``remedy``, because the engine learns from it (resolve
    rates, circuits) and the pure core imports no layer above it.
    """

    RESOLVED = "resolved"  # the incident went away, or verification passed
    SUCCEEDED = "succeeded"  # the steps succeeded; nothing verified that it went away
    SKIPPED = "skipped"  # every action step was skipped by when:
    UNRESOLVED = "unresolved"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    DENIED = "denied"
    INTERRUPTED = "interrupted"


#: Outcomes that count against a playbook: the runner tries the next candidate,
#: the governor counts them in resolve rates and circuit streaks. The others
#: (cancelled, denied, interrupted) are no evidence either way.
NOT_RESOLVED = frozenset({Outcome.UNRESOLVED, Outcome.FAILED, Outcome.TIMED_OUT})
#: Outcomes that say how a playbook did: resolve rates count ``resolved`` among these
#: (cancelled, denied and interrupted runs concluded nothing; escalations are not counted).
CONCLUDED = NOT_RESOLVED | {Outcome.RESOLVED, Outcome.SUCCEEDED, Outcome.SKIPPED}


class ResolvedBy(StrEnum):
    """What closed an incident (the journal's ``resolved_by``)."""

    INPUT = "input"  # the rule's condition: a false sample, resolve:, a count or absence
    RUN = "run"  # its run resolved it (rules that only a run can resolve)
    NO_RUN = "no_run"  # a rule only a run can resolve decided without one (suppressed)
    ITEM_DONE = "item_done"  # a work item (each: true) whose runs ended
    RESOLVE_AFTER = "resolve_after"  # quiet for resolve_after:
    OPERATOR = "operator"  # batond incidents resolve ID
    RULE_CHANGED = "rule_changed"  # a reload removed the rule or changed its kind or group_by
    RESTART = "restart"  # after a restart the rule state no longer held it open


@dataclass(frozen=True, slots=True)
class Decision:
    """A rule fired for a group (or a schedule came due): run a playbook, or why not.

    ``playbook`` is the chosen playbook when a run should start; otherwise
    ``suppressed`` names the reason and ``reason`` says it in words. ``candidates``
    is the adapted order of the rule's playbooks (tried in that order until one
    resolves). ``continues``: a decision on the incident already open for the key
    (decided again), not a new one; ``cause`` says what decided it again.
    """

    ts: float
    rule: str
    key: str  # group_by labels as "label=value" joined by "," ("host=web-017")
    target: str  # what the governor limits per target (the incident key)
    labels: Mapping[str, str]  # labels of the triggering input (group labels at least)
    candidates: tuple[str, ...]
    playbook: str | None
    suppressed: Suppression | None
    params: Mapping[str, Any] = field(default_factory=dict)
    severity: str = "warning"
    item: Input | None = None  # the input that made the condition true, if any
    opens_incident: bool = True  # False for schedules
    continues: bool = False  # on the open incident of (rule, key)
    cause: str = ""  # why it was decided again ("circuit reset", "silence 3 ended" ...)
    reason: str = ""  # the suppression in words, for logs and the API
    max_concurrent: int | None = None  # the rule's own limits.max_concurrent_runs

    @property
    def result(self) -> str:
        """The ``result`` label of batond_decisions_total: ``run`` or the reason."""
        return "run" if self.suppressed is None else self.suppressed

    @property
    def verdict(self) -> str:
        """``run=PLAYBOOK`` or ``suppressed=REASON`` (see :func:`verdict`)."""
        return verdict(self.playbook, self.suppressed)


def verdict(playbook: str | None, suppressed: str | None) -> str:
    """A decision as ``batond replay`` prints it, ``replay --diff`` compares it and a rule
    test expects it: ``run=PLAYBOOK`` or ``suppressed=REASON``."""
    return f"run={playbook}" if suppressed is None else f"suppressed={suppressed}"


@dataclass(frozen=True, slots=True)
class Resolved:
    """The incident of ``rule`` for ``key`` resolved at ``ts``, closed ``by``."""

    ts: float
    rule: str
    key: str
    by: ResolvedBy = ResolvedBy.INPUT


Output = Decision | Resolved

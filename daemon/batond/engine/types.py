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

__all__ = ["NOT_RESOLVED", "Decision", "Outcome", "Output", "Resolved", "Suppression"]


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


class Outcome(StrEnum):
    """How a playbook run ends.

    It lives here, not in ``remedy``, because the engine learns from it (resolve
    rates, circuits) and the pure core imports no layer above it.
    """

    RESOLVED = "resolved"
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


@dataclass(frozen=True, slots=True)
class Decision:
    """A rule fired for a group (or a schedule came due): run a playbook, or why not.

    ``playbook`` is the chosen playbook when a run should start; otherwise
    ``suppressed`` names the reason. ``candidates`` is the adapted order of
    the rule's playbooks (tried in that order until one resolves).
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

    @property
    def result(self) -> str:
        """The ``result`` label of batond_decisions_total: ``run`` or the reason."""
        return "run" if self.suppressed is None else self.suppressed


@dataclass(frozen=True, slots=True)
class Resolved:
    """The incident of ``rule`` for ``key`` resolved at ``ts``."""

    ts: float
    rule: str
    key: str


Output = Decision | Resolved

"""What the engine hands to the rest of batond."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batond.events import Input

__all__ = ["SUPPRESSION_REASONS", "Decision", "Output", "Resolved"]

#: Why a decision did not start a run (SPEC section 6), in the order they are checked.
SUPPRESSION_REASONS = (
    "paused",
    "shadow",
    "silenced",
    "cooldown",
    "already_running",
    "circuit_open",
    "blast_radius",
    "rate_limited",
)


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
    suppressed: str | None
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

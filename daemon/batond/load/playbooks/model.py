"""The playbook model: the frozen types that ``playbooks:`` lists are read into.

It lives with the reader (``load/``) because the reader builds it; the
runner (``remedy/``) imports it, which is the direction the layers allow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batond.engine.expr import Expression
from batond.engine.window import Window
from batond.errors import Mark

__all__ = [
    "BACKOFFS",
    "DEFAULT_MAX",
    "DEFAULT_RUN_TIMEOUT",
    "DEFAULT_STEP_TIMEOUT",
    "MODES",
    "ON_INTERRUPT",
    "Playbook",
    "Retry",
    "Step",
]

MODES = ("single", "queued", "restart", "parallel")
ON_INTERRUPT = ("escalate", "resume")
DEFAULT_STEP_TIMEOUT = 300.0  # a step without timeout: gets 5m
DEFAULT_RUN_TIMEOUT = 3600.0
DEFAULT_MAX = 10  # queued: runs waiting; parallel: runs at once (per incident key)
BACKOFFS = ("fixed", "exponential")


@dataclass(frozen=True, slots=True)
class Retry:
    """``retry: {attempts, delay, backoff: fixed|exponential, max_backoff}``; the older
    ``backoff: 2s`` is ``delay: 2s`` with ``backoff: exponential``."""

    attempts: int = 1  # in all, the first included
    first: float = 0.0  # before the 2nd attempt (delay:)
    backoff: str = "exponential"  # exponential: doubles before each further attempt
    max_backoff: float | None = None  # no wait is longer than this

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed ``attempt`` (1-based) before the next."""
        wait = self.first if self.backoff == "fixed" else self.first * 2 ** (attempt - 1)
        return float(wait if self.max_backoff is None else min(wait, self.max_backoff))


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    action: str
    mark: Mark
    args: Mapping[str, Any] = field(default_factory=dict)  # compiled with: values
    timeout: float = DEFAULT_STEP_TIMEOUT
    retry: Retry = Retry()
    when: Expression | None = None
    # None: not said (compensation goes on after a failed step; steps stop)
    continue_on_error: bool | None = None
    idempotent: bool = False
    branches: tuple[tuple[Step, ...], ...] = ()  # parallel; foreach and wait_until: one block
    only_within: Window | None = None  # the step waits for this window


@dataclass(frozen=True, slots=True)
class Playbook:
    name: str
    mark: Mark
    steps: tuple[Step, ...] = ()
    mode: str = "single"
    max: int = DEFAULT_MAX
    timeout: float = DEFAULT_RUN_TIMEOUT
    on_interrupt: str = "escalate"
    escalate: str | None = None
    verify_within: float | None = None
    on_failure: tuple[Step, ...] = ()
    description: str = ""
    outputs: Mapping[str, Any] = field(default_factory=dict)  # compiled values
    params: Mapping[str, Any] = field(default_factory=dict)  # declared, with defaults
    only_within: Window | None = None  # a run waits (queued) for this window

    def step_index(self, name: str) -> int | None:
        """Position of the top-level step ``name``."""
        for i, step in enumerate(self.steps):
            if step.name == name:
                return i
        return None

"""The one exception tree of batond.

::

    BatondError                  anything batond raises on purpose
    ├── ConfigError              bad configuration, rule, playbook or model files;
    │                            carries every Problem found (FILE:LINE:COL: message)
    ├── InputError               one rejected input item; carries a short reason
    │                            (the `reason` label of batond_events_rejected_total)
    ├── StateError               the journal or learned state is unreadable or of
    │                            another version; nothing is overwritten
    ├── ActionError              an action could not run as asked (bad arguments at
    │                            run time, missing tool); a step failure, not a crash
    └── ConflictError            an operator's request that the current state does not
                                 allow (resolving an incident that is not open)

Errors are translated into these at the boundary (YAML, sqlite3, aiomqtt,
aiohttp), so callers catch one small set.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One finding in an input file; 1-based line and column."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


@dataclass(frozen=True, slots=True)
class Mark:
    """Where a value was written (1-based)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class BatondError(Exception):
    """Base of every error batond raises on purpose."""


class ConfigError(BatondError):
    """One or more problems in configuration files; nothing was applied."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class InputError(BatondError):
    """An input item that is dropped; `reason` is a short, bounded token."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class StateError(BatondError):
    """Persistent state (journal, model state) cannot be used as it is."""


class ActionError(BatondError):
    """An action cannot do what its step asks."""


class ConflictError(BatondError):
    """A request that the current state does not allow (the API answers 409)."""

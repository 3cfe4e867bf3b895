"""The governor: whether a decision may start a run, and in which playbook order.

Checks, in the order of ``SUPPRESSION_REASONS``: pause, shadow mode,
silences, the rule's cooldown (given by the engine), a run already active for
the key (playbooks with ``mode: single``), the target's circuit, the blast
radius and the global rate limit. A target's circuit opens when it exceeds
``per_target`` runs per window or when ``CIRCUIT_STREAK`` runs in a row end
without resolving; it closes after a cool-off of ``per_target.per`` or by
:meth:`Governor.reset_circuit`.

The blast radius counts distinct targets that had runs within ``max_runs.per``:
a run for a new target is refused when it would exceed
``max_targets_fraction`` of the hosts seen within ``HOSTS_SEEN_S`` (once at
least ``min_fleet`` are known).

Adaptive order: Thompson sampling of Beta(1 + resolved, 1 + not resolved)
per (rule, playbook, target class); a playbook without any outcome yet keeps
its configured place. The random generator is seeded, so replays repeat.
"""

from __future__ import annotations

import random
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CIRCUIT_STREAK",
    "HOSTS_SEEN_S",
    "Governor",
    "GovernorSettings",
    "Silence",
    "target_class",
]

CIRCUIT_STREAK = 3  # unresolved outcomes in a row that open a target's circuit
HOSTS_SEEN_S = 3600.0  # "hosts seen lately"
_NOT_RESOLVED = ("unresolved", "failed", "timed_out")
_CLASS_TAIL = re.compile(r"[-_.]?\d+$")


@dataclass(frozen=True, slots=True)
class GovernorSettings:
    """The ``governor:`` settings (a ``config.GovernorConfig`` is read into this)."""

    max_runs_count: int = 30
    max_runs_per: float = 3600.0
    per_target_count: int = 3
    per_target_per: float = 3600.0
    max_targets_fraction: float = 0.2
    min_fleet: int = 10

    @classmethod
    def of(cls, config: Any) -> GovernorSettings:
        """From a GovernorConfig-like object (duck-typed: the core never imports config)."""
        if config is None or isinstance(config, GovernorSettings):
            return config or cls()
        return cls(
            max_runs_count=config.max_runs.count,
            max_runs_per=config.max_runs.per,
            per_target_count=config.per_target.count,
            per_target_per=config.per_target.per,
            max_targets_fraction=config.max_targets_fraction,
            min_fleet=config.min_fleet,
        )


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    matchers: Mapping[str, str]
    starts_at: float
    ends_at: float
    reason: str = ""

    def covers(self, labels: Mapping[str, str], now: float) -> bool:
        return self.starts_at <= now < self.ends_at and all(
            labels.get(k, "") == v for k, v in self.matchers.items()
        )

    @classmethod
    def of(cls, obj: Any) -> Silence:
        if isinstance(obj, Silence):
            return obj
        return cls(
            int(obj["id"]),
            dict(obj["matchers"]),
            float(obj.get("starts_at") or 0.0),
            float(obj["ends_at"]),
            str(obj.get("reason") or ""),
        )


def target_class(labels: Mapping[str, str]) -> str:
    """Hosts named alike share a class: ``web-017`` -> ``web``; no host -> ``""``."""
    return _CLASS_TAIL.sub("", labels.get("host", ""))


class Governor:
    def __init__(self, config: Any = None, *, shadow: bool = False, seed: int = 0) -> None:
        self.settings = GovernorSettings.of(config)
        self.shadow = shadow
        self.paused = False
        self.silences: tuple[Silence, ...] = ()
        self.hosts_seen: dict[str, float] = {}  # host -> last ts; the engine writes it
        self._runs: deque[float] = deque()  # start times of runs (global rate)
        self._target_runs: dict[str, deque[float]] = {}
        self._circuits: dict[str, float] = {}  # target -> opened at
        self._streaks: dict[str, int] = {}
        self._active: dict[tuple[str, str], int] = {}  # (playbook, key) -> runs
        self._stats: dict[tuple[str, str, str], list[int]] = {}  # -> [resolved, total]
        self._rng = random.Random(seed)
        self._clock = float("-inf")  # the latest time the governor was told about

    # -- settings from the daemon -------------------------------------------
    def set_paused(self, paused: bool) -> None:
        self.paused = paused

    def set_silences(self, silences: Iterable[Any]) -> None:
        self.silences = tuple(Silence.of(s) for s in silences)

    # -- the decision ----------------------------------------------------------
    def check(
        self,
        labels: Mapping[str, str],
        target: str,
        playbook: str,
        now: float,
        *,
        in_cooldown: bool = False,
        single: bool = True,
        fleet: bool = True,
    ) -> str | None:
        """The suppression reason, or None when a run may start (then call :meth:`admit`)."""
        self._clock = max(self._clock, now)
        if self.paused:
            return "paused"
        if self.shadow:
            return "shadow"
        if any(s.covers(labels, now) for s in self.silences):
            return "silenced"
        if in_cooldown:
            return "cooldown"
        if single and self._active.get((playbook, target), 0) > 0:
            return "already_running"
        if self._circuit_open(target, now):
            return "circuit_open"
        if self._per_target_exceeded(target, now):
            self._circuits[target] = now
            return "circuit_open"
        if fleet and self._beyond_blast_radius(target, now):
            return "blast_radius"
        if self._rate_exceeded(now):
            return "rate_limited"
        return None

    def admit(self, playbook: str, target: str, now: float) -> None:
        """A run starts for ``target`` now."""
        self._runs.append(now)
        self._target_runs.setdefault(target, deque()).append(now)
        key = (playbook, target)
        self._active[key] = self._active.get(key, 0) + 1

    def mark_running(self, playbook: str, target: str) -> None:
        """A later candidate of a decision's list started (the first was admitted)."""
        key = (playbook, target)
        self._active[key] = self._active.get(key, 0) + 1

    def run_ended(self, playbook: str, target: str) -> None:
        key = (playbook, target)
        left = self._active.get(key, 0) - 1
        if left > 0:
            self._active[key] = left
        else:
            self._active.pop(key, None)

    def _circuit_open(self, target: str, now: float) -> bool:
        opened = self._circuits.get(target)
        if opened is None:
            return False
        if now - opened >= self.settings.per_target_per:  # cool-off passed
            del self._circuits[target]
            self._streaks.pop(target, None)
            return False
        return True

    def _per_target_exceeded(self, target: str, now: float) -> bool:
        runs = self._target_runs.get(target)
        if not runs:
            return False
        _prune(runs, now - self.settings.per_target_per)
        return len(runs) >= self.settings.per_target_count

    def _rate_exceeded(self, now: float) -> bool:
        _prune(self._runs, now - self.settings.max_runs_per)
        return len(self._runs) >= self.settings.max_runs_count

    def _beyond_blast_radius(self, target: str, now: float) -> bool:
        since = now - HOSTS_SEEN_S
        known = sum(1 for ts in self.hosts_seen.values() if ts >= since)
        if known < self.settings.min_fleet:
            return False
        window = now - self.settings.max_runs_per
        acted = {
            t
            for t, runs in self._target_runs.items()
            if runs and runs[-1] >= window and t != target
        }
        return len(acted) + 1 > self.settings.max_targets_fraction * known

    # -- feedback ----------------------------------------------------------------
    def record_outcome(
        self, rule: str, playbook: str, target: str, cls: str, outcome: str, now: float
    ) -> None:
        self._clock = max(self._clock, now)
        self.run_ended(playbook, target)
        if outcome not in ("resolved", *_NOT_RESOLVED):
            return  # cancelled, denied, interrupted, unknown: no evidence either way
        stats = self._stats.setdefault((rule, playbook, cls), [0, 0])
        stats[1] += 1
        if outcome == "resolved":
            stats[0] += 1
            self._streaks.pop(target, None)
            return
        streak = self._streaks.get(target, 0) + 1
        self._streaks[target] = streak
        if streak >= CIRCUIT_STREAK:
            self._circuits.setdefault(target, now)

    def order(self, rule: str, playbooks: Sequence[str], cls: str) -> tuple[str, ...]:
        """Thompson sampling over the outcome history; untried keep their place."""
        if len(playbooks) < 2:
            return tuple(playbooks)
        scored = []
        for pos, name in enumerate(playbooks):
            resolved, total = self._stats.get((rule, name, cls), (0, 0))
            # untried playbooks keep their configured place (a neutral, fixed score)
            score = self._rng.betavariate(1 + resolved, 1 + total - resolved) if total else 0.5
            scored.append((-score, pos, name))
        return tuple(name for _, _, name in sorted(scored))

    def resolve_rates(self, rule: str) -> dict[str, dict[str, float | int]]:
        out: dict[str, dict[str, float | int]] = {}
        for (r, playbook, _cls), (resolved, total) in self._stats.items():
            if r != rule:
                continue
            agg = out.setdefault(playbook, {"resolved": 0, "runs": 0, "rate": 0.0})
            agg["resolved"] = int(agg["resolved"]) + resolved
            agg["runs"] = int(agg["runs"]) + total
            agg["rate"] = int(agg["resolved"]) / int(agg["runs"]) if agg["runs"] else 0.0
        return out

    # -- circuits for the API ------------------------------------------------------
    def open_circuits(self, now: float | None = None) -> list[dict[str, Any]]:
        """Circuits open at ``now`` (default: the latest time of a check or outcome)."""
        at = self._clock if now is None else now
        for target in list(self._circuits):
            self._circuit_open(target, at)
        per = self.settings.per_target_per
        return [
            {"target": t, "opened_at": at, "closes_at": at + per}
            for t, at in sorted(self._circuits.items())
        ]

    def reset_circuit(self, target: str) -> bool:
        self._streaks.pop(target, None)
        self._target_runs.pop(target, None)
        return self._circuits.pop(target, None) is not None

    # -- persistence -----------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        return {
            "runs": list(self._runs),
            "target_runs": {t: list(r) for t, r in self._target_runs.items() if r},
            "circuits": dict(self._circuits),
            "streaks": dict(self._streaks),
            "stats": [[r, p, c, s[0], s[1]] for (r, p, c), s in self._stats.items()],
            "hosts_seen": dict(self.hosts_seen),
        }

    def import_state(self, state: Mapping[str, Any]) -> None:
        self._runs = deque(float(t) for t in state.get("runs", ()))
        self._target_runs = {
            str(t): deque(float(x) for x in r) for t, r in state.get("target_runs", {}).items()
        }
        self._circuits = {str(t): float(at) for t, at in state.get("circuits", {}).items()}
        self._streaks = {str(t): int(n) for t, n in state.get("streaks", {}).items()}
        self._stats = {
            (str(r), str(p), str(c)): [int(a), int(b)] for r, p, c, a, b in state.get("stats", ())
        }
        self.hosts_seen.update({str(h): float(t) for h, t in state.get("hosts_seen", {}).items()})


def _prune(times: deque[float], before: float) -> None:
    while times and times[0] <= before:
        times.popleft()

"""The governor: whether a decision may start a run, and in which playbook order.

Checks, in the order of :class:`~batond.engine.types.Suppression`: pause, shadow mode,
silences, the rule's cooldown (given by the engine), a run already active for
the key (playbooks with ``mode: single``), the target's circuit, the blast
radius and the global rate limit. A target's circuit opens when it exceeds
``per_target`` runs per window or when ``CIRCUIT_STREAK`` runs in a row end
without resolving; it closes after a cool-off of ``per_target.per`` or by
:meth:`Governor.reset_circuit`.

The blast radius counts distinct *hosts* acted on within ``max_runs.per``
(the ``host`` label of a decision; its key when it has none): a run on a new
host is refused when it would exceed ``max_targets_fraction`` of the hosts
seen within ``HOSTS_SEEN_S`` (once at least ``min_fleet`` are known); more
runs on a host already acted on (another service of it) do not widen it.

A circuit-open decision may escalate (page someone) once per opening of the
target's circuit (:meth:`Governor.take_escalation`), not once per input.

Every per-key table is bounded: :meth:`Governor.prune` (the engine calls it
every ``SWEEP_S`` of its clock) drops what no longer matters — hosts not seen
for ``HOSTS_SEEN_S`` (and beyond ``HOSTS_SEEN_MAX``, the oldest), empty rate
windows, closed circuits, streaks without an outcome for a cool-off.

Adaptive order: Thompson sampling of Beta(1 + resolved, 1 + not resolved)
per (rule, playbook, target class); a playbook without any outcome yet keeps
its configured place. The random generator is seeded, so replays repeat.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batond.engine.keys import split_key
from batond.engine.types import NOT_RESOLVED, Outcome, Suppression

__all__ = [
    "CIRCUIT_STREAK",
    "HOSTS_SEEN_MAX",
    "HOSTS_SEEN_S",
    "Governor",
    "GovernorSettings",
    "Silence",
    "target_class",
]

CIRCUIT_STREAK = 3  # unresolved outcomes in a row that open a target's circuit
HOSTS_SEEN_S = 3600.0  # "hosts seen lately"
HOSTS_SEEN_MAX = 100_000  # beyond this many, the least recently seen are forgotten
HOST_RESOLUTION_S = 30.0  # last-seen times move in steps of this (cheap per input; 1% of the hour)
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
        # host -> last seen, least recently seen first (see note_host)
        self.hosts_seen: dict[str, float] = {}
        self._runs: deque[float] = deque()  # start times of runs (global rate)
        self._target_runs: dict[str, deque[float]] = {}
        self._acted: dict[str, float] = {}  # host -> start of the latest run on it
        self._circuits: dict[str, float] = {}  # target -> opened at
        self._escalated: dict[str, float] = {}  # target -> opening (opened at) escalated
        self._streaks: dict[str, int] = {}
        self._streak_at: dict[str, float] = {}  # target -> its latest unresolved outcome
        self._active: dict[tuple[str, str], int] = {}  # (playbook, key) -> runs
        self._stats: dict[tuple[str, str, str], list[int]] = {}  # -> [resolved, total]
        self._rng = random.Random(seed)
        self._clock = float("-inf")  # the latest time the governor was told about

    # -- settings from the daemon -------------------------------------------
    def set_paused(self, paused: bool) -> None:
        self.paused = paused

    def set_silences(self, silences: Iterable[Any]) -> None:
        self.silences = tuple(Silence.of(s) for s in silences)

    # -- hosts seen lately -----------------------------------------------------
    def note_host(self, host: str, now: float) -> None:
        """``host`` was seen at ``now``; hot callers skip it within HOST_RESOLUTION_S."""
        if now > self._clock:
            self._clock = now
        seen = self.hosts_seen
        last = seen.pop(host, None)  # re-inserted: the dict stays least recent first
        seen[host] = now if last is None or now > last else last
        if last is None and len(seen) > HOSTS_SEEN_MAX:
            self._prune_hosts(now)

    def _prune_hosts(self, now: float) -> None:
        seen = self.hosts_seen
        since = now - HOSTS_SEEN_S
        stale = list(itertools.takewhile(lambda h: seen[h] < since, seen))
        excess = len(seen) - len(stale) - HOSTS_SEEN_MAX
        if excess > 0:
            stale = list(itertools.islice(seen, len(stale) + excess))
        for host in stale:
            del seen[host]

    def prune(self, now: float) -> None:
        """Forget what can no longer matter at ``now`` (amortised housekeeping)."""
        self._clock = max(self._clock, now)
        self._prune_hosts(now)
        s = self.settings
        for target in list(self._target_runs):
            runs = self._target_runs[target]
            _prune(runs, now - s.per_target_per)
            if not runs:
                del self._target_runs[target]
        window = now - s.max_runs_per
        self._acted = {h: at for h, at in self._acted.items() if at >= window}
        for target in list(self._circuits):
            self._circuit_open(target, now)
        for target, at in list(self._streak_at.items()):
            if now - at >= s.per_target_per and target not in self._circuits:
                self._streaks.pop(target, None)
                del self._streak_at[target]
        for target in [t for t in self._escalated if t not in self._circuits]:
            del self._escalated[target]

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
    ) -> Suppression | None:
        """The suppression reason, or None when a run may start (then call :meth:`admit`)."""
        self._clock = max(self._clock, now)
        if self.paused:
            return Suppression.PAUSED
        if self.shadow:
            return Suppression.SHADOW
        if any(s.covers(labels, now) for s in self.silences):
            return Suppression.SILENCED
        if in_cooldown:
            return Suppression.COOLDOWN
        if single and self._active.get((playbook, target), 0) > 0:
            return Suppression.ALREADY_RUNNING
        if self._circuit_open(target, now):
            return Suppression.CIRCUIT_OPEN
        if self._per_target_exceeded(target, now):
            self._circuits[target] = now
            return Suppression.CIRCUIT_OPEN
        if fleet and self._beyond_blast_radius(labels.get("host") or target, now):
            return Suppression.BLAST_RADIUS
        if self._rate_exceeded(now):
            return Suppression.RATE_LIMITED
        return None

    def admit(self, playbook: str, target: str, now: float, host: str | None = None) -> None:
        """A run starts for ``target`` now, on ``host`` (None: the key's host label, else
        the key; ``""``: on no host, as for schedules, outside the blast radius)."""
        self._runs.append(now)
        self._target_runs.setdefault(target, deque()).append(now)
        if host != "":
            self._acted[host or _host_of(target)] = now
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
            self._streak_at.pop(target, None)
            self._escalated.pop(target, None)
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

    def _beyond_blast_radius(self, host: str, now: float) -> bool:
        self._prune_hosts(now)
        known = len(self.hosts_seen)
        if known < self.settings.min_fleet:
            return False
        window = now - self.settings.max_runs_per
        if self._acted.get(host, float("-inf")) >= window:
            return False  # already acted on: this run does not widen the blast radius
        acted = sum(1 for at in self._acted.values() if at >= window)
        return acted + 1 > self.settings.max_targets_fraction * known

    # -- feedback ----------------------------------------------------------------
    def record_outcome(
        self, rule: str, playbook: str, target: str, cls: str, outcome: str, now: float
    ) -> None:
        self._clock = max(self._clock, now)
        self.run_ended(playbook, target)
        if outcome != Outcome.RESOLVED and outcome not in NOT_RESOLVED:
            return  # cancelled, denied, interrupted, unknown: no evidence either way
        stats = self._stats.setdefault((rule, playbook, cls), [0, 0])
        stats[1] += 1
        if outcome == Outcome.RESOLVED:
            stats[0] += 1
            self._streaks.pop(target, None)
            self._streak_at.pop(target, None)
            return
        streak = self._streaks.get(target, 0) + 1
        self._streaks[target] = streak
        self._streak_at[target] = now
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
        """An operator closes ``target``'s circuit; False when it was not open."""
        self._streaks.pop(target, None)
        self._streak_at.pop(target, None)
        self._escalated.pop(target, None)
        self._target_runs.pop(target, None)
        return self._circuits.pop(target, None) is not None

    def take_escalation(self, target: str) -> bool:
        """Whether a circuit-open decision on ``target`` should escalate: once per opening."""
        opened = self._circuits.get(target)
        if opened is None or self._escalated.get(target) == opened:
            return False
        self._escalated[target] = opened
        return True

    # -- persistence -----------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        since = self._clock - HOSTS_SEEN_S
        return {
            "runs": list(self._runs),
            "target_runs": {t: list(r) for t, r in self._target_runs.items() if r},
            "acted": dict(self._acted),
            "circuits": dict(self._circuits),
            "escalated": dict(self._escalated),
            "streaks": dict(self._streaks),
            "streak_at": dict(self._streak_at),
            "stats": [[r, p, c, s[0], s[1]] for (r, p, c), s in self._stats.items()],
            "hosts_seen": {h: ts for h, ts in self.hosts_seen.items() if ts >= since},
        }

    def import_state(self, state: Mapping[str, Any]) -> None:
        self._runs = deque(float(t) for t in state.get("runs", ()))
        self._target_runs = {
            str(t): deque(float(x) for x in r) for t, r in state.get("target_runs", {}).items()
        }
        self._acted = {str(h): float(at) for h, at in state.get("acted", {}).items()}
        if "acted" not in state:  # state of an older version: hosts of the run windows
            for target, runs in self._target_runs.items():
                if runs:
                    host = _host_of(target)
                    self._acted[host] = max(runs[-1], self._acted.get(host, runs[-1]))
        self._circuits = {str(t): float(at) for t, at in state.get("circuits", {}).items()}
        self._escalated = {str(t): float(at) for t, at in state.get("escalated", {}).items()}
        self._streaks = {str(t): int(n) for t, n in state.get("streaks", {}).items()}
        self._streak_at = {str(t): float(at) for t, at in state.get("streak_at", {}).items()}
        self._stats = {
            (str(r), str(p), str(c)): [int(a), int(b)] for r, p, c, a, b in state.get("stats", ())
        }
        saved = sorted((float(t), str(h)) for h, t in state.get("hosts_seen", {}).items())
        for ts, host in saved[-HOSTS_SEEN_MAX:]:
            self.note_host(host, ts)


def _host_of(target: str) -> str:
    """The host a target (an incident key) is on: its ``host`` label, else the key."""
    return split_key(target).get("host") or target


def _prune(times: deque[float], before: float) -> None:
    while times and times[0] <= before:
        times.popleft()

"""The governor: whether a decision may start a run, and in which playbook order.

Checks, in the order of :class:`~batond.engine.types.Suppression`: pause, shadow mode,
silences, the rule's cooldown (given by the engine), a run already active for
the key (playbooks with ``mode: single``), the scope's circuit, the blast
radius and the rate limit.

A *scope* is a rule and an incident key: the per-target budget, the unresolved
streak and the circuit count per scope, so that one busy rule never blocks another
rule on the same host. A scope's circuit opens when it would exceed its
``per_target`` runs per window (the rule's ``limits.per_target``, else the
governor's) or when ``CIRCUIT_STREAK`` runs in a row end without resolving; it
closes after a cool-off of that window, by :meth:`Governor.reset_circuit`, or when
a reload changes the rule so that its budget is no longer spent.
:meth:`Governor.take_events` hands the openings and closings to whoever reports them.

The rate limit (``max_runs``) is one window shared by every rule without
``limits.max_runs``; a rule with its own has its own window, and its runs are not
counted in the shared one.

The blast radius counts distinct *hosts* acted on within ``max_runs.per``
(the ``host`` label of a decision; its key when it has none) by rules that act on
hosts (:attr:`Rule.in_blast_radius`): a run on a new host is refused when it would
exceed ``max_targets_fraction`` of the hosts seen within ``HOSTS_SEEN_S`` (once at
least ``min_fleet`` are known); more runs on a host already acted on do not widen it.

A circuit-open decision may escalate (page someone) once per opening of the
scope's circuit (:meth:`Governor.take_escalation`), not once per input.

Every per-key table is bounded: :meth:`Governor.prune` (the engine calls it
every ``SWEEP_S`` of its clock) drops what no longer matters — hosts not seen
for ``HOSTS_SEEN_S`` (and beyond ``HOSTS_SEEN_MAX``, the oldest), empty rate
windows, closed circuits, streaks without an outcome for a cool-off.

Adaptive order: Thompson sampling of Beta(1 + resolved, 1 + concluded - resolved)
per (rule, playbook, target class); a playbook without any outcome yet keeps
its configured place. The random generator is seeded, so replays repeat.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from batond.engine.keys import split_key
from batond.engine.model import NO_LIMITS, Limits, Rate
from batond.engine.silences import Silence
from batond.engine.types import CONCLUDED, NOT_RESOLVED, Outcome, Suppression
from batond.units import format_duration

__all__ = [
    "CIRCUIT_STREAK",
    "HOSTS_SEEN_MAX",
    "HOSTS_SEEN_S",
    "CircuitEvent",
    "Governor",
    "GovernorSettings",
    "Scope",
    "Silence",
    "target_class",
]

CIRCUIT_STREAK = 3  # unresolved outcomes in a row that open a scope's circuit
HOSTS_SEEN_S = 3600.0  # "hosts seen lately"
HOSTS_SEEN_MAX = 100_000  # beyond this many, the least recently seen are forgotten
HOST_RESOLUTION_S = 30.0  # last-seen times move in steps of this (cheap per input; 1% of the hour)
_CLASS_TAIL = re.compile(r"[-_.]?\d+$")

#: (rule, incident key): what budgets, streaks and circuits count for.
Scope = tuple[str, str]


@dataclass(frozen=True, slots=True)
class GovernorSettings:
    """The ``governor:`` settings (a ``config.GovernorConfig`` is read into this)."""

    max_runs_count: int = 30
    max_runs_per: float = 3600.0
    per_target_count: int = 3
    per_target_per: float = 3600.0
    max_targets_fraction: float = 0.2
    min_fleet: int = 10
    max_concurrent_runs: int = 4

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
            max_concurrent_runs=config.max_concurrent_runs,
        )

    def per_target(self, limits: Limits) -> Rate:
        return limits.per_target or Rate(self.per_target_count, self.per_target_per)

    def max_runs(self, limits: Limits) -> Rate:
        return limits.max_runs or Rate(self.max_runs_count, self.max_runs_per)


@dataclass(slots=True)
class _Circuit:
    opened_at: float
    per: float  # its cool-off
    why: str  # "budget" (per_target spent) | "streak" (runs in a row unresolved)


@dataclass(frozen=True, slots=True)
class CircuitEvent:
    """A scope's circuit opened or closed (for the log, metrics and notifications)."""

    ts: float
    rule: str
    key: str
    opened: bool
    why: str  # opened: budget | streak; closed: cool-off | reset | rule changed
    closes_at: float | None = None


def target_class(labels: Mapping[str, str]) -> str:
    """Hosts named alike share a class: ``web-017`` -> ``web``; no host -> ``""``."""
    return _CLASS_TAIL.sub("", labels.get("host", ""))


class Governor:
    def __init__(self, config: Any = None, *, shadow: bool = False, seed: int = 0) -> None:
        self.settings = GovernorSettings.of(config)
        self.shadow = shadow
        self.paused = False
        self.silences: tuple[Silence, ...] = ()
        self._silence_end: float | None = None
        # host -> last seen, least recently seen first (see note_host)
        self.hosts_seen: dict[str, float] = {}
        self._runs: deque[float] = deque()  # start times of runs (the shared rate window)
        self._rule_runs: dict[str, deque[float]] = {}  # rules with their own max_runs
        self._target_runs: dict[Scope, deque[float]] = {}
        self._acted: dict[str, float] = {}  # host -> start of the latest run on it
        self._circuits: dict[Scope, _Circuit] = {}
        self._next_close: float | None = None  # the soonest circuit's cool-off end
        self._escalated: dict[Scope, float] = {}  # scope -> opening (opened at) escalated
        self._streaks: dict[Scope, int] = {}
        self._streak_at: dict[Scope, float] = {}  # scope -> its latest unresolved outcome
        self._active: dict[tuple[str, str], int] = {}  # (playbook, key) -> runs
        self._stats: dict[tuple[str, str, str], list[int]] = {}  # -> [resolved, concluded, ended]
        self._events: list[CircuitEvent] = []
        #: the rules' own limits (the engine sets them per rule set): what prune keeps
        self.limits: Mapping[str, Limits] = {}
        #: rules whose every event is a work item of its own key (each: true): no per-key
        #: budget or streak (one run per key could never spend one), only max_runs
        self.work_items: frozenset[str] = frozenset()
        self._rng = random.Random(seed)
        self._clock = float("-inf")  # the latest time the governor was told about

    @property
    def clock(self) -> float:
        """The latest time the governor was told about (a check, an outcome, a host)."""
        return self._clock

    # -- settings from the daemon -------------------------------------------
    def set_paused(self, paused: bool) -> None:
        self.paused = paused

    def set_silences(self, silences: Iterable[Any]) -> None:
        self.silences = tuple(Silence.of(s) for s in silences)
        # kept rather than computed per call: the engine asks after every input
        self._silence_end = min((s.ends_at for s in self.silences), default=None)

    def silence_ends(self) -> float | None:
        """When the soonest silence in force ends (its decisions are then taken again)."""
        return self._silence_end

    def drop_ended_silences(self, now: float) -> None:
        self.set_silences(s for s in self.silences if s.ends_at > now)

    def next_change(self) -> float | None:
        """The soonest end of a silence or of a circuit's cool-off (None: neither)."""
        close, end = self._next_close, self._silence_end
        if close is None:
            return end
        return close if end is None or close < end else end

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
        for scope in list(self._target_runs):
            runs = self._target_runs[scope]
            _prune(runs, now - self._per_target_of(scope[0]).per)
            if not runs:
                del self._target_runs[scope]
        for rule in list(self._rule_runs):
            runs = self._rule_runs[rule]
            _prune(runs, now - s.max_runs(self.limits.get(rule, NO_LIMITS)).per)
            if not runs:
                del self._rule_runs[rule]
        window = now - s.max_runs_per
        self._acted = {h: at for h, at in self._acted.items() if at >= window}
        self.expire_circuits(now)
        for scope, at in list(self._streak_at.items()):
            if now - at >= self._per_target_of(scope[0]).per and scope not in self._circuits:
                self._streaks.pop(scope, None)
                del self._streak_at[scope]
        for scope in [t for t in self._escalated if t not in self._circuits]:
            del self._escalated[scope]

    def _per_target_of(self, rule: str) -> Rate:
        return self.settings.per_target(self.limits.get(rule, NO_LIMITS))

    # -- the decision ----------------------------------------------------------
    def check(
        self,
        labels: Mapping[str, str],
        rule: str,
        key: str,
        playbook: str,
        now: float,
        *,
        in_cooldown: bool = False,
        single: bool = True,
        fleet: bool = True,
        limits: Limits = NO_LIMITS,
        severity: str = "",
    ) -> Suppression | None:
        """The suppression reason, or None when a run may start (then call :meth:`admit`).

        ``fleet``: the decision acts on a host (inside the blast radius).
        """
        self._clock = max(self._clock, now)
        if self.paused:
            return Suppression.PAUSED
        if self.shadow:
            return Suppression.SHADOW
        if self.silences and self.silenced(labels, rule, severity, playbook, now):
            return Suppression.SILENCED
        if in_cooldown:
            return Suppression.COOLDOWN
        if single and self._active.get((playbook, key), 0) > 0:
            return Suppression.ALREADY_RUNNING
        scope = (rule, key)
        if rule not in self.work_items:
            if self._circuit_open(scope, now):
                return Suppression.CIRCUIT_OPEN
            budget = self.settings.per_target(limits)
            if self._per_target_exceeded(scope, budget, now):
                self._open(scope, now, budget.per, "budget")
                return Suppression.CIRCUIT_OPEN
        if fleet and self._beyond_blast_radius(labels.get("host") or key, now):
            return Suppression.BLAST_RADIUS
        if self._rate_exceeded(rule, limits, now):
            return Suppression.RATE_LIMITED
        return None

    def silenced(
        self, labels: Mapping[str, str], rule: str, severity: str, playbook: str, now: float
    ) -> bool:
        fields = {"rule": rule, "severity": severity, "playbook": playbook}
        return any(s.covers(labels, fields, now) for s in self.silences)

    def silenced_by(
        self, labels: Mapping[str, str], rule: str, severity: str, playbook: str, now: float
    ) -> str:
        """Which silence holds a decision back, in words (the first that covers it): what
        it matches, for how long still, and the operator's reason."""
        fields = {"rule": rule, "severity": severity, "playbook": playbook}
        for s in self.silences:
            if s.covers(labels, fields, now):
                matchers = ", ".join(f"{m.name}{m.op}{m.value}" for m in s.matchers)
                left = format_duration(60 * max(1, math.ceil((s.ends_at - now) / 60)))
                why = f": {s.reason}" if s.reason else ""
                return f"silence #{s.id} ({matchers}) for {left} more{why}"
        return _REASONS[Suppression.SILENCED]

    def admit(
        self,
        playbook: str,
        rule: str,
        key: str,
        now: float,
        host: str | None = None,
        limits: Limits = NO_LIMITS,
    ) -> None:
        """A run starts for ``key`` now, on ``host`` (None: the key's host label, else
        the key; ``""``: on no host, as for schedules and work items, outside the blast
        radius)."""
        window = self._runs if limits.max_runs is None else self._rule_window(rule)
        window.append(now)
        if rule not in self.work_items:
            self._target_runs.setdefault((rule, key), deque()).append(now)
        if host != "":
            self._acted[host or _host_of(key)] = now
        self.mark_running(playbook, key)

    def _rule_window(self, rule: str) -> deque[float]:
        window = self._rule_runs.get(rule)
        if window is None:
            window = self._rule_runs[rule] = deque()
        return window

    def mark_running(self, playbook: str, key: str) -> None:
        """A run of ``playbook`` for ``key`` is active (a decision's, or a later candidate)."""
        slot = (playbook, key)
        self._active[slot] = self._active.get(slot, 0) + 1

    def run_ended(self, playbook: str, key: str) -> None:
        slot = (playbook, key)
        left = self._active.get(slot, 0) - 1
        if left > 0:
            self._active[slot] = left
        else:
            self._active.pop(slot, None)

    # -- circuits -----------------------------------------------------------------
    def _open(self, scope: Scope, now: float, per: float, why: str) -> None:
        if scope in self._circuits:
            return
        self._circuits[scope] = _Circuit(now, per, why)
        if self._next_close is None or now + per < self._next_close:
            self._next_close = now + per
        self._events.append(CircuitEvent(now, scope[0], scope[1], True, why, now + per))

    def _close(self, scope: Scope, now: float, why: str) -> bool:
        if self._circuits.pop(scope, None) is None:
            return False
        self._reckon_next_close()
        self._streaks.pop(scope, None)
        self._streak_at.pop(scope, None)
        self._escalated.pop(scope, None)
        self._events.append(CircuitEvent(now, scope[0], scope[1], False, why))
        return True

    def _circuit_open(self, scope: Scope, now: float) -> bool:
        circuit = self._circuits.get(scope)
        if circuit is None:
            return False
        if now - circuit.opened_at >= circuit.per:  # cool-off passed
            self._close(scope, now, "cool-off")
            return False
        return True

    def expire_circuits(self, now: float) -> list[Scope]:
        """Close the circuits whose cool-off has passed by ``now``; the scopes closed."""
        closed = [scope for scope, c in list(self._circuits.items()) if now - c.opened_at >= c.per]
        for scope in closed:
            self._close(scope, now, "cool-off")
        return closed

    def next_circuit_close(self) -> float | None:
        return self._next_close

    def _reckon_next_close(self) -> None:
        # kept rather than computed per call: the engine asks after every input
        self._next_close = min((c.opened_at + c.per for c in self._circuits.values()), default=None)

    def take_events(self) -> list[CircuitEvent]:
        """Circuit openings and closings since the last call, in order."""
        events, self._events = self._events, []
        return events

    def _per_target_exceeded(self, scope: Scope, budget: Rate, now: float) -> bool:
        runs = self._target_runs.get(scope)
        if not runs:
            return False
        _prune(runs, now - budget.per)
        return len(runs) >= budget.count

    def _rate_exceeded(self, rule: str, limits: Limits, now: float) -> bool:
        rate = self.settings.max_runs(limits)
        window = self._runs if limits.max_runs is None else self._rule_window(rule)
        _prune(window, now - rate.per)
        return len(window) >= rate.count

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
        self, rule: str, playbook: str, key: str, cls: str, outcome: str, now: float
    ) -> None:
        self._clock = max(self._clock, now)
        self.run_ended(playbook, key)
        if outcome not in _OUTCOMES:
            return  # no run happened (the engine's NO_RUN)
        stats = self._stats.setdefault((rule, playbook, cls), [0, 0, 0])
        stats[2] += 1
        if outcome not in CONCLUDED:
            return  # cancelled, denied, interrupted, unknown: no evidence either way
        stats[1] += 1
        scope = (rule, key)
        if rule in self.work_items:
            stats[0] += outcome == Outcome.RESOLVED
            return
        if outcome not in NOT_RESOLVED:
            stats[0] += outcome == Outcome.RESOLVED
            self._streaks.pop(scope, None)
            self._streak_at.pop(scope, None)
            return
        streak = self._streaks.get(scope, 0) + 1
        self._streaks[scope] = streak
        self._streak_at[scope] = now
        if streak >= CIRCUIT_STREAK:
            self._open(scope, now, self._per_target_of(rule).per, "streak")

    def order(self, rule: str, playbooks: Sequence[str], cls: str) -> tuple[str, ...]:
        """Thompson sampling over the outcome history; untried keep their place."""
        if len(playbooks) < 2:
            return tuple(playbooks)
        scored = []
        for pos, name in enumerate(playbooks):
            resolved, concluded, _ = self._stats.get((rule, name, cls), (0, 0, 0))
            # untried playbooks keep their configured place (a neutral, fixed score)
            score = (
                self._rng.betavariate(1 + resolved, 1 + concluded - resolved) if concluded else 0.5
            )
            scored.append((-score, pos, name))
        return tuple(name for _, _, name in sorted(scored))

    def resolve_rates(self, rule: str) -> dict[str, dict[str, float | int]]:
        """Per playbook: runs that ``resolved`` among all its ended runs (escalations are
        never counted: they are not fed back)."""
        out: dict[str, dict[str, float | int]] = {}
        for (r, playbook, _cls), (resolved, _, ended) in self._stats.items():
            if r != rule:
                continue
            agg = out.setdefault(playbook, {"resolved": 0, "runs": 0, "rate": 0.0})
            agg["resolved"] = int(agg["resolved"]) + resolved
            agg["runs"] = int(agg["runs"]) + ended
            agg["rate"] = int(agg["resolved"]) / int(agg["runs"]) if agg["runs"] else 0.0
        return out

    # -- circuits for the API and the operator -------------------------------------
    def open_circuits(self, now: float | None = None) -> list[dict[str, Any]]:
        """Circuits open at ``now`` (default: the latest time of a check or outcome)."""
        self.expire_circuits(self._clock if now is None else now)
        return [
            {
                "rule": rule, "key": key, "target": key, "why": c.why,
                "opened_at": c.opened_at, "closes_at": c.opened_at + c.per,
            }
            for (rule, key), c in sorted(self._circuits.items())
        ]  # fmt: skip

    def reset_circuit(
        self, key: str, rule: str | None = None, now: float | None = None
    ) -> list[Scope]:
        """An operator closes the circuits of ``key`` (of every rule, or of ``rule``);
        the scopes closed (empty when none was open). Their budgets start afresh."""
        at = self._clock if now is None else now
        scopes = [s for s in self._circuits if s[1] == key and (rule is None or s[0] == rule)]
        for scope in scopes:
            self._close(scope, at, "reset")
            self._target_runs.pop(scope, None)
        return scopes

    def rule_changed(self, rule: str, limits: Limits, now: float) -> list[Scope]:
        """A reload changed ``rule``: circuits opened by a spent budget that the new
        limits no longer count as spent close. The scopes closed."""
        budget = self.settings.per_target(limits)
        closed = []
        for scope, circuit in list(self._circuits.items()):
            if scope[0] != rule or circuit.why != "budget":
                continue
            if not self._per_target_exceeded(scope, budget, now):
                self._close(scope, now, "rule changed")
                closed.append(scope)
        return closed

    def take_escalation(self, rule: str, key: str) -> bool:
        """Whether a circuit-open decision should escalate: once per opening."""
        scope = (rule, key)
        circuit = self._circuits.get(scope)
        if circuit is None or self._escalated.get(scope) == circuit.opened_at:
            return False
        self._escalated[scope] = circuit.opened_at
        return True

    def explain(self, reason: Suppression, rule: str, key: str, limits: Limits, now: float) -> str:
        """A suppression in words, with the limit that applied (for logs and the API)."""
        if reason == Suppression.CIRCUIT_OPEN:
            circuit = self._circuits.get((rule, key))
            if circuit is None:
                return "circuit open"
            left = format_duration(max(0.0, circuit.opened_at + circuit.per - now))
            if circuit.why == "streak":
                spent = f"{CIRCUIT_STREAK} runs in a row ended without resolving"
            else:
                budget = self.settings.per_target(limits)
                spent = f"per_target {budget.count} per {format_duration(budget.per)} spent"
            return f"circuit of {rule} {key} open ({spent}); closes in {left} or on reset"
        if reason == Suppression.RATE_LIMITED:
            rate = self.settings.max_runs(limits)
            whose = "limits.max_runs" if limits.max_runs else "governor.max_runs"
            return _rate_text(whose, rate.count, rate.per)
        if reason == Suppression.BLAST_RADIUS:
            s = self.settings
            within = format_duration(s.max_runs_per)
            return (
                f"blast radius: runs on at most {s.max_targets_fraction:.0%} of the"
                f" {len(self.hosts_seen)} hosts seen lately within {within}"
            )
        return _REASONS.get(reason, str(reason))

    # -- persistence -----------------------------------------------------------------
    def export_state(self, *, hosts_seen: bool = True) -> dict[str, Any]:
        """The governor's state; without ``hosts_seen`` (``hosts_seen=False``) when the
        caller saves that on its own cadence (:meth:`export_hosts_seen`): it is nearly
        all of the bytes and changes with every sample, not with decisions."""
        state: dict[str, Any] = {
            "runs": list(self._runs),
            "rule_runs": {r: list(w) for r, w in self._rule_runs.items() if w},
            "scopes": self.export_scopes(_every_key),
            "acted": dict(self._acted),
            "stats": [[r, p, c, *s] for (r, p, c), s in self._stats.items()],
        }
        if hosts_seen:
            state["hosts_seen"] = self.export_hosts_seen()
        return state

    def export_scopes(self, select: Callable[[str], bool]) -> dict[str, Any]:
        """The scope state (per-target run windows, open circuits, escalations, unresolved
        streaks) of the keys ``select`` takes: :meth:`export_state`'s ``scopes`` for every
        key, and a fleet partition's checkpoint for its hosts' (:meth:`merge_scopes`)."""
        return {
            "target_runs": [
                [r, k, list(w)] for (r, k), w in self._target_runs.items() if w and select(k)
            ],
            "circuits": [
                [r, k, c.opened_at, c.per, c.why]
                for (r, k), c in self._circuits.items()
                if select(k)
            ],
            "escalated": [[r, k, at] for (r, k), at in self._escalated.items() if select(k)],
            "streaks": [
                [r, k, n, self._streak_at.get((r, k), 0.0)]
                for (r, k), n in self._streaks.items()
                if select(k)
            ],
        }

    def merge_scopes(self, scopes: Mapping[str, Any]) -> None:
        """Merge :meth:`export_scopes` into this governor. For a scope both hold, the later
        state wins: the later circuit opening, escalation and streak; run windows join."""
        for r, k, w in scopes.get("target_runs", ()):
            mine = self._target_runs.get((str(r), str(k)), ())
            times = sorted({*mine, *(float(t) for t in w)})
            self._target_runs[(str(r), str(k))] = deque(times)
        for r, k, at, per, why in scopes.get("circuits", ()):
            held = self._circuits.get((str(r), str(k)))
            if held is None or held.opened_at < float(at):
                self._circuits[(str(r), str(k))] = _Circuit(float(at), float(per), str(why))
        self._reckon_next_close()
        for r, k, at in scopes.get("escalated", ()):
            scope = (str(r), str(k))
            self._escalated[scope] = max(float(at), self._escalated.get(scope, float("-inf")))
        for r, k, n, at in scopes.get("streaks", ()):
            scope = (str(r), str(k))
            if float(at) >= self._streak_at.get(scope, float("-inf")):
                self._streaks[scope], self._streak_at[scope] = int(n), float(at)

    def drop_scopes(self, select: Callable[[str], bool]) -> None:
        """Forget the scope state of the keys ``select`` takes (a partition given up)."""
        maps: tuple[dict[Scope, Any], ...] = (
            self._target_runs, self._circuits, self._escalated, self._streaks, self._streak_at,
        )  # fmt: skip
        for held in maps:
            for scope in [s for s in held if select(s[1])]:
                del held[scope]
        self._reckon_next_close()

    def export_hosts_seen(self) -> dict[str, float]:
        """Hosts seen within the last hour (by the governor's clock), with their time."""
        since = self._clock - HOSTS_SEEN_S
        return {h: ts for h, ts in self.hosts_seen.items() if ts >= since}

    def import_state(
        self, state: Mapping[str, Any], hosts_seen: Mapping[str, Any] | None = None
    ) -> None:
        """Restore :meth:`export_state`, and :meth:`export_hosts_seen` when saved apart
        (merged with any in ``state``: the later time of a host wins). State of a batond
        before scopes (per key only) keeps its rate window, hosts and statistics; its
        circuits and budgets, which belonged to no rule, start afresh."""
        self._runs = deque(float(t) for t in state.get("runs", ()))
        self._rule_runs = {
            str(r): deque(float(t) for t in w) for r, w in state.get("rule_runs", {}).items()
        }
        scopes = state.get("scopes", {})
        self._target_runs = {
            (str(r), str(k)): deque(float(t) for t in w)
            for r, k, w in scopes.get("target_runs", ())
        }
        self._circuits = {
            (str(r), str(k)): _Circuit(float(at), float(per), str(why))
            for r, k, at, per, why in scopes.get("circuits", ())
        }
        self._reckon_next_close()
        self._escalated = {(str(r), str(k)): float(at) for r, k, at in scopes.get("escalated", ())}
        self._streaks = {(str(r), str(k)): int(n) for r, k, n, _ in scopes.get("streaks", ())}
        self._streak_at = {(str(r), str(k)): float(at) for r, k, _, at in scopes.get("streaks", ())}
        self._acted = {str(h): float(at) for h, at in state.get("acted", {}).items()}
        self._stats = {}
        for row in state.get("stats", ()):
            r, p, c, resolved, concluded, *ended = row
            self._stats[(str(r), str(p), str(c))] = [
                int(resolved), int(concluded), int(ended[0] if ended else concluded),
            ]  # fmt: skip
        self.import_hosts_seen(state.get("hosts_seen", {}), hosts_seen or {})

    def import_hosts_seen(self, *docs: Mapping[str, Any]) -> None:
        """Note the hosts of :meth:`export_hosts_seen` documents, least recent first."""
        latest: dict[str, float] = {}
        for doc in docs:
            for host, ts in doc.items():
                latest[str(host)] = max(float(ts), latest.get(str(host), float("-inf")))
        saved = sorted((ts, host) for host, ts in latest.items())
        for ts, host in saved[-HOSTS_SEEN_MAX:]:
            self.note_host(host, ts)


_OUTCOMES = frozenset(str(o) for o in Outcome)


@functools.lru_cache(maxsize=256)
def _rate_text(whose: str, count: int, per: float) -> str:
    """(Cached: a storm of rate_limited decisions explains itself with the same words.)"""
    return f"{whose} {count} per {format_duration(per)} reached"


_REASONS = {
    Suppression.PAUSED: "paused by an operator or the kill switch file",
    Suppression.SHADOW: "shadow mode: decisions are recorded, nothing is executed",
    Suppression.SILENCED: "silenced",
    Suppression.COOLDOWN: "cooldown after the last run",
    Suppression.ALREADY_RUNNING: "a run for this incident is in progress",
}


def _host_of(target: str) -> str:
    """The host a target (an incident key) is on: its ``host`` label, else the key."""
    return split_key(target).get("host") or target


def _prune(times: deque[float], before: float) -> None:
    while times and times[0] <= before:
        times.popleft()


def _every_key(key: str) -> bool:
    return True  # export_scopes for all of them

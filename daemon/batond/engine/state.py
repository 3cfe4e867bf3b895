"""Per-rule state: open incidents, ``for:`` timers, count windows, last-seen times.

One class per rule kind (see :mod:`batond.engine.model`). Each reacts to a
matching input (``on_input``) and to its timers (``on_timer``) by calling
back into the engine (:class:`EngineCallbacks`) to decide, resolve and schedule. The
state is plain data so that it can be exported as JSON and survive a reload
or a restart. Every per-key table is bounded: ``prune`` (the engine's
housekeeping) drops what can no longer matter, and groups remembered for
``absent:`` are capped at ``MAX_GROUPS`` per rule.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from batond.engine.expr import Expression
from batond.engine.keys import escape, incident_key
from batond.engine.model import Rule
from batond.engine.types import Output
from batond.events import Input, Sample

__all__ = ["RESOLVE", "EngineCallbacks", "RuleState", "state_for"]

RESOLVE = -1  # the role of a rule's resolve: part in the index
MAX_GROUPS = 100_000  # groups an absent: rule remembers (the least recently seen go first)
_KEY_CACHE = 10_000  # keys of one-label rules kept ready (cleared when full: bounded)


class EngineCallbacks(Protocol):
    """What a rule state needs from the engine."""

    def decide(
        self, state: RuleState, key: str, labels: Mapping[str, str], item: Input | None,
        now: float, out: list[Output],
    ) -> None: ...  # fmt: skip

    def resolve(self, state: RuleState, key: str, now: float, out: list[Output]) -> None: ...

    def schedule(self, state: RuleState, key: str, at: float) -> None: ...


class RuleState:
    """Common to every kind: open incidents, cooldown starts, counters."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.open: dict[str, float] = {}  # key -> opened at
        self.last_run: dict[str, float] = {}  # key -> decision that started a run
        self.due: dict[str, float] = {}  # key -> the timer pending in the engine's heap
        self.fires = 0
        self.last_fire: float | None = None
        self.eval_errors = 0
        self.last_error = ""
        self.new_errors: list[str] = []  # not yet reported (Engine.take_errors)
        if len(rule.group_by) == 1:
            self._prefix: str | None = f"{escape(rule.group_by[0])}="
            self._label = rule.group_by[0]
        else:
            self._prefix = None
        self._keys: dict[str, str] = {}  # value -> key of a one-label group_by (a cache)

    def key(self, labels: Mapping[str, str]) -> str:
        """The incident key (:mod:`batond.engine.keys`; values escaped)."""
        if self._prefix is not None:
            value = labels.get(self._label, "")
            key = self._keys.get(value)
            if key is None:
                if len(self._keys) >= _KEY_CACHE:
                    self._keys.clear()
                key = self._keys[value] = self._prefix + escape(value)
            return key
        return incident_key(self.rule.group_by, labels)

    def prune(self, now: float) -> None:
        """Forget cooldown starts whose cooldown has passed (kinds add their own)."""
        cooldown = self.rule.cooldown
        if self.last_run:
            self.last_run = {k: t for k, t in self.last_run.items() if now - t < cooldown}

    def test(self, when: Expression | None, item: Input, now: float, anomaly: float) -> bool:
        """``when:`` for this input; an evaluation error counts as false and is recorded."""
        if when is None:
            return True
        try:
            if type(item) is Sample:
                return bool(when.fn(item.value, item.metric, item.labels, item.raw, anomaly, now))
            return bool(when.fn(None, None, item.labels, item.raw, anomaly, now))
        except Exception as exc:
            self._eval_failed(when, exc)
            return False

    def _eval_failed(self, when: Expression, exc: Exception) -> None:
        """Counted and kept for the API; the engine hands new messages to the daemon to log."""
        message = f"{when.mark}: {when.text!r}: {type(exc).__name__}: {exc}"
        self.eval_errors += 1
        if message != self.last_error and len(self.new_errors) < 100:  # bounded if never taken
            self.new_errors.append(message)
        self.last_error = message

    def on_input(
        self, engine: EngineCallbacks, item: Input, role: int, now: float, anomaly: float,
        out: list[Output],
    ) -> None:  # fmt: skip
        raise NotImplementedError

    def on_timer(
        self, engine: EngineCallbacks, key: str, at: float, now: float, out: list[Output]
    ) -> None:
        """A timer set with ``engine.schedule`` came due (``at`` <= ``now``)."""

    def resolve_part(
        self, engine: EngineCallbacks, item: Input, now: float, anomaly: float, out: list[Output]
    ) -> None:
        resolve = self.rule.resolve
        if resolve is not None and self.test(resolve.when, item, now, anomaly):
            key = self.key(item.labels)
            if key in self.open:
                engine.resolve(self, key, now, out)

    # -- persistence --------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "last_run": self.last_run,
            "fires": self.fires,
            "last_fire": self.last_fire,
        }

    def load(self, data: Mapping[str, Any]) -> list[tuple[str, float]]:
        """Restore; returns the timers to schedule again."""
        self.open = {str(k): float(v) for k, v in data.get("open", {}).items()}
        self.last_run = {str(k): float(v) for k, v in data.get("last_run", {}).items()}
        self.fires = int(data.get("fires", 0))
        last = data.get("last_fire")
        self.last_fire = None if last is None else float(last)
        return []


class LevelState(RuleState):
    """True while matching samples pass ``when:``; ``for:`` delays the firing."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(rule)
        self.pending: dict[str, tuple[float, Mapping[str, str]]] = {}  # key -> first true

    def on_input(
        self, engine: EngineCallbacks, item: Input, role: int, now: float, anomaly: float,
        out: list[Output],
    ) -> None:  # fmt: skip
        if role == RESOLVE:
            self.resolve_part(engine, item, now, anomaly, out)
            return
        rule = self.rule
        key = self.key(item.labels)
        if self.test(rule.parts[0].when, item, now, anomaly):
            if key in self.open:
                return
            if rule.for_s <= 0:
                engine.decide(self, key, item.labels, item, now, out)
            elif key not in self.pending:
                self.pending[key] = (item.ts, item.labels)
                engine.schedule(self, key, item.ts + rule.for_s)
            return
        if self.pending:
            self.pending.pop(key, None)
        if key in self.open and rule.resolve is None:
            engine.resolve(self, key, now, out)

    def on_timer(
        self, engine: EngineCallbacks, key: str, at: float, now: float, out: list[Output]
    ) -> None:
        first = self.pending.get(key)
        if first is None or key in self.open:
            return
        deadline = first[0] + self.rule.for_s
        if deadline > at:
            engine.schedule(self, key, deadline)
            return
        del self.pending[key]
        engine.decide(self, key, first[1], None, max(at, deadline), out)

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["pending"] = _dump_stamped(self.pending)
        return data

    def load(self, data: Mapping[str, Any]) -> list[tuple[str, float]]:
        super().load(data)
        self.pending = _load_stamped(data.get("pending", {}))
        return [(k, ts + self.rule.for_s) for k, (ts, _) in self.pending.items()]


class EdgeState(RuleState):
    """Each matching input that passes ``when:`` fires (while no incident is open)."""

    def on_input(
        self, engine: EngineCallbacks, item: Input, role: int, now: float, anomaly: float,
        out: list[Output],
    ) -> None:  # fmt: skip
        if role == RESOLVE:
            self.resolve_part(engine, item, now, anomaly, out)
            return
        key = self.key(item.labels)
        if key not in self.open and self.test(self.rule.parts[0].when, item, now, anomaly):
            engine.decide(self, key, item.labels, item, now, out)


class CountState(RuleState):
    """``count: {at_least, within}``: a sliding window of passing inputs per group."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(rule)
        assert rule.count is not None
        self.at_least = rule.count.at_least
        self.within = rule.count.within
        self.windows: dict[str, deque[float]] = {}

    def _prune(self, key: str, now: float) -> deque[float]:
        window = self.windows.setdefault(key, deque())
        while window and window[0] + self.within <= now:
            window.popleft()
        return window

    def prune(self, now: float) -> None:
        super().prune(now)
        stale = [
            k
            for k, w in self.windows.items()
            if k not in self.open and (not w or w[-1] + self.within <= now)
        ]
        for key in stale:
            del self.windows[key]

    def _falls_below_at(self, window: deque[float]) -> float:
        return window[len(window) - self.at_least] + self.within

    def on_input(
        self, engine: EngineCallbacks, item: Input, role: int, now: float, anomaly: float,
        out: list[Output],
    ) -> None:  # fmt: skip
        if not self.test(self.rule.parts[0].when, item, now, anomaly):
            return
        key = self.key(item.labels)
        window = self._prune(key, now)
        window.append(item.ts)
        if key in self.open or len(window) < self.at_least:
            return  # an open incident's timer follows the window by itself
        engine.decide(self, key, item.labels, item, now, out)
        engine.schedule(self, key, self._falls_below_at(window))

    def on_timer(
        self, engine: EngineCallbacks, key: str, at: float, now: float, out: list[Output]
    ) -> None:
        if key not in self.open:
            return
        window = self._prune(key, at)
        if len(window) >= self.at_least:
            engine.schedule(self, key, self._falls_below_at(window))
            return
        if not window:
            del self.windows[key]
        engine.resolve(self, key, at, out)

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["windows"] = {k: list(w) for k, w in self.windows.items() if w}
        return data

    def load(self, data: Mapping[str, Any]) -> list[tuple[str, float]]:
        super().load(data)
        self.windows = {
            str(k): deque(float(t) for t in w) for k, w in data.get("windows", {}).items()
        }
        return [(k, self._resolve_due(k)) for k in self.open]

    def _resolve_due(self, key: str) -> float:
        """When an open incident's count falls (or fell) below ``at_least``."""
        window = self.windows.get(key)
        if window is not None and len(window) >= self.at_least:
            return self._falls_below_at(window)
        return window[-1] + self.within if window else self.open[key]


class AbsentState(RuleState):
    """Fires for a group seen before once ``absent:`` passes without a matching input."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(rule)
        assert rule.absent is not None
        self.absent = rule.absent
        self.seen: dict[str, tuple[float, Mapping[str, str]]] = {}

    def on_input(
        self, engine: EngineCallbacks, item: Input, role: int, now: float, anomaly: float,
        out: list[Output],
    ) -> None:  # fmt: skip
        if not self.test(self.rule.parts[0].when, item, now, anomaly):
            return
        key = self.key(item.labels)
        if key in self.open:
            engine.resolve(self, key, now, out)
        last = self.seen.pop(key, None)  # re-inserted: least recently seen first
        ts = item.ts if last is None else max(item.ts, last[0])
        self.seen[key] = (ts, item.labels)
        engine.schedule(self, key, ts + self.absent)

    def prune(self, now: float) -> None:
        super().prune(now)
        excess = len(self.seen) - MAX_GROUPS
        if excess > 0:
            oldest = [k for k in self.seen if k not in self.open][:excess]
            for key in oldest:
                del self.seen[key]

    def on_timer(
        self, engine: EngineCallbacks, key: str, at: float, now: float, out: list[Output]
    ) -> None:
        seen = self.seen.get(key)
        if seen is None or key in self.open:
            return
        deadline = seen[0] + self.absent
        if deadline > at:
            engine.schedule(self, key, deadline)
            return
        engine.decide(self, key, seen[1], None, deadline, out)

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["seen"] = _dump_stamped(self.seen)
        return data

    def load(self, data: Mapping[str, Any]) -> list[tuple[str, float]]:
        super().load(data)
        self.seen = _load_stamped(data.get("seen", {}))
        return [(k, ts + self.absent) for k, (ts, _) in self.seen.items() if k not in self.open]


class AllState(RuleState):
    """Correlation: every part of ``all:`` seen for the same key within ``within:``."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(rule)
        self.slots: dict[str, list[float | None]] = {}

    def on_input(
        self, engine: EngineCallbacks, item: Input, role: int, now: float, anomaly: float,
        out: list[Output],
    ) -> None:  # fmt: skip
        if role == RESOLVE:
            self.resolve_part(engine, item, now, anomaly, out)
            return
        key = self.key(item.labels)
        if not self.test(self.rule.parts[role].when, item, now, anomaly):
            slots = self.slots.get(key)
            if slots is not None:  # a false sample: that part no longer holds
                slots[role] = None
            return
        slots = self.slots.setdefault(key, [None] * len(self.rule.parts))
        slots[role] = item.ts
        if key in self.open:
            return
        oldest = now - self.rule.within
        if all(ts is not None and ts >= oldest for ts in slots):
            del self.slots[key]  # the correlation is used up by this firing
            engine.decide(self, key, item.labels, item, now, out)

    def prune(self, now: float) -> None:
        super().prune(now)
        oldest = now - self.rule.within
        stale = [
            k for k, slots in self.slots.items() if all(t is None or t < oldest for t in slots)
        ]
        for key in stale:
            del self.slots[key]

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["slots"] = self.slots
        return data

    def load(self, data: Mapping[str, Any]) -> list[tuple[str, float]]:
        super().load(data)
        self.slots = {
            str(k): [None if t is None else float(t) for t in v]
            for k, v in data.get("slots", {}).items()
        }
        return []


class AlertState(RuleState):
    """Alertmanager's habits: each alert's firing state, by its fingerprint.

    A firing notification starts the alert's clock at its ``startsAt`` (not at
    the notification's arrival: Alertmanager may have held it for ``group_wait``
    or batond may have been down); ``for:`` fires the rule once the alert has
    been firing that long. Repeat notifications of a firing alert change
    nothing. Without ``resolve:``, the alert's ``resolved`` notification (same
    fingerprint) resolves the incident, once no other alert of its key fires;
    a resolved notification before ``for:`` ran out cancels the firing.
    """

    def __init__(self, rule: Rule) -> None:
        super().__init__(rule)
        # fingerprint -> (firing since, incident key, labels), oldest first
        self.firing: dict[str, tuple[float, str, Mapping[str, str]]] = {}

    def on_input(
        self, engine: EngineCallbacks, item: Input, role: int, now: float, anomaly: float,
        out: list[Output],
    ) -> None:  # fmt: skip
        if role == RESOLVE:
            self.resolve_part(engine, item, now, anomaly, out)
            return
        labels = item.labels
        key = self.key(labels)
        fingerprint = labels.get("fingerprint") or key  # hand-made alerts may lack one
        if labels.get("status") == "resolved":
            self._resolved(engine, fingerprint, key, now, out)
            return
        if fingerprint in self.firing or not self.test(self.rule.when, item, now, anomaly):
            return
        since = min(item.ts, parse_rfc3339(labels.get("startsAt", "")) or item.ts)
        self.firing[fingerprint] = (since, key, labels)
        if key in self.open:
            return
        if since + self.rule.for_s <= now:
            engine.decide(self, key, labels, item, now, out)
        else:
            engine.schedule(self, key, since + self.rule.for_s)

    def _resolved(
        self, engine: EngineCallbacks, fingerprint: str, key: str, now: float, out: list[Output]
    ) -> None:
        self.firing.pop(fingerprint, None)
        if self.rule.resolve is not None or key not in self.open:
            return  # resolve: decides; or it never fired (for: not reached): nothing to do
        if all(k != key for _, k, _ in self.firing.values()):
            engine.resolve(self, key, now, out)

    def on_timer(
        self, engine: EngineCallbacks, key: str, at: float, now: float, out: list[Output]
    ) -> None:
        if key in self.open:
            return
        firing = [(since, labels) for since, k, labels in self.firing.values() if k == key]
        if not firing:
            return  # resolved before for: ran out
        since, labels = min(firing, key=lambda f: f[0])
        due = since + self.rule.for_s
        if due > at:
            engine.schedule(self, key, due)
            return
        engine.decide(self, key, labels, None, max(at, due), out)

    def prune(self, now: float) -> None:
        super().prune(now)
        excess = len(self.firing) - MAX_GROUPS  # alerts whose resolved never came
        if excess > 0:
            for fingerprint in list(self.firing)[:excess]:
                del self.firing[fingerprint]

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["firing"] = {fp: [t, k, dict(lb)] for fp, (t, k, lb) in self.firing.items()}
        return data

    def load(self, data: Mapping[str, Any]) -> list[tuple[str, float]]:
        super().load(data)
        self.firing = {
            str(fp): (float(v[0]), str(v[1]), {str(a): str(b) for a, b in v[2].items()})
            for fp, v in data.get("firing", {}).items()
        }
        keys = {k: t for t, k, _ in reversed(self.firing.values()) if k not in self.open}
        return [(k, t + self.rule.for_s) for k, t in keys.items()]


def parse_rfc3339(text: str) -> float | None:
    """Alertmanager's ``startsAt`` (``2024-05-01T12:00:00.123456789Z``) as epoch seconds."""
    if not text or text.startswith("0001-"):
        return None
    head, dot, rest = text.partition(".")
    zone = ""
    if dot:  # Python parses at most 6 fraction digits; Go writes up to 9
        digits = len(rest) - len(rest.lstrip("0123456789"))
        zone = rest[digits:]
        head += "." + rest[:digits][:6] if digits else ""
    try:
        return datetime.fromisoformat(head + (zone if dot else "")).timestamp()
    except ValueError:
        return None


_KINDS: dict[str, type[RuleState]] = {
    "alert": AlertState,
    "level": LevelState,
    "edge": EdgeState,
    "count": CountState,
    "absent": AbsentState,
    "all": AllState,
}


def state_for(rule: Rule) -> RuleState:
    return _KINDS[rule.kind](rule)


def _dump_stamped(stamped: Mapping[str, tuple[float, Mapping[str, str]]]) -> dict[str, Any]:
    """key -> (ts, labels) as JSON-ready lists."""
    return {k: [ts, dict(labels)] for k, (ts, labels) in stamped.items()}


def _load_stamped(data: Mapping[str, Any]) -> dict[str, tuple[float, Mapping[str, str]]]:
    return {
        str(k): (float(v[0]), {str(a): str(b) for a, b in v[1].items()}) for k, v in data.items()
    }

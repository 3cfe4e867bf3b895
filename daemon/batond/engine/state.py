"""Per-rule state: open incidents, ``for:`` timers, count windows, last-seen times.

One class per rule kind (see :mod:`batond.engine.model`). Each reacts to a
matching input (``on_input``; the engine hands an input of a rule's ``resolve:`` to
``resolve_part``) and to its timers (``on_timer``) by calling
back into the engine (:class:`EngineCallbacks`) to decide, resolve and schedule. The
state is plain data so that it can be exported as JSON and survive a reload
or a restart. Every per-key table is bounded: ``prune`` (the engine's
housekeeping) drops what can no longer matter, and groups remembered for
``absent:`` are capped at ``MAX_GROUPS`` per rule.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Mapping
from datetime import datetime
from typing import Any, Protocol

from batond.engine.expr import Expression
from batond.engine.keys import escape, incident_key
from batond.engine.model import ITEM_LABEL, Rule
from batond.engine.types import Output, ResolvedBy
from batond.events import Event, Input, Sample

__all__ = ["RESOLVE", "EngineCallbacks", "RuleState", "dump_item", "load_item", "state_for"]

RESOLVE = -1  # the role of a rule's resolve: part in the index
MAX_GROUPS = 100_000  # groups an absent: rule remembers (the least recently seen go first)
_KEY_CACHE = 10_000  # keys of one- and two-label rules kept ready (cleared when full: bounded)


class EngineCallbacks(Protocol):
    """What a rule state needs from the engine."""

    def decide(
        self, state: RuleState, key: str, labels: Mapping[str, str], item: Input | None,
        now: float, out: list[Output], *, continues: bool = False, cause: str = "",
    ) -> None: ...  # fmt: skip

    def in_flight(
        self, state: RuleState, key: str, labels: Mapping[str, str], item: Input | None,
        now: float, out: list[Output],
    ) -> None: ...  # fmt: skip

    def resolve(
        self, state: RuleState, key: str, now: float, out: list[Output],
        by: ResolvedBy = ResolvedBy.INPUT,
    ) -> None: ...  # fmt: skip

    def schedule(self, state: RuleState, key: str, at: float) -> None: ...


#: The cause of a decision taken again on an open event incident by a further input.
AGAIN = "decided again: the incident is still open and no run is active"


class RuleState:
    """Common to every kind: open incidents, cooldown starts, counters.

    An open incident is *held* while no run works on it: its decision was suppressed
    (``held[key]`` = (since, the reason)) or its runs ended without resolving it
    (reason ``""``). Held incidents are what further input, an operator's lever or a
    reload decide again. ``context`` keeps the labels and the input of each open
    incident's latest decision, for those decisions.
    """

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.open: dict[str, float] = {}  # key -> opened at
        self.context: dict[str, tuple[Mapping[str, str], Input | None]] = {}
        self.held: dict[str, tuple[float, str]] = {}  # key -> (since, suppression or "")
        self.quiet: dict[str, float] = {}  # key -> latest matching input (resolve_after:)
        self.items = 0  # work items numbered so far (each: true)
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
        # two labels ([host, mount]) are common enough to cache their keys as well
        self._pair = (rule.group_by[0], rule.group_by[1]) if len(rule.group_by) == 2 else None
        self._keys: dict[str, str] = {}  # value -> key of a one-label group_by (a cache)
        self._pair_keys: dict[tuple[str, str], str] = {}  # the same for two labels

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
        pair = self._pair
        if pair is not None:
            values = (labels.get(pair[0], ""), labels.get(pair[1], ""))
            key = self._pair_keys.get(values)
            if key is None:
                if len(self._pair_keys) >= _KEY_CACHE:
                    self._pair_keys.clear()
                key = self._pair_keys[values] = incident_key(pair, labels)
            return key
        return incident_key(self.rule.group_by, labels)

    def item_key(self, labels: Mapping[str, str]) -> str:
        """A new work item's key: the group_by labels plus its number (``item=17``)."""
        self.items += 1
        base = incident_key(self.rule.group_by, labels) if self.rule.group_by else ""
        return f"{base},{ITEM_LABEL}={self.items}" if base else f"{ITEM_LABEL}={self.items}"

    def forget(self, key: str) -> None:
        """The incident of ``key`` closed: what was kept for it goes."""
        self.context.pop(key, None)
        self.held.pop(key, None)
        self.quiet.pop(key, None)

    def heard(self, engine: EngineCallbacks, key: str, now: float) -> None:
        """A matching input for the open incident of ``key``: its quiet time starts again."""
        after = self.rule.resolve_after
        if after is not None:
            self.quiet[key] = now
            engine.schedule(self, key, now + after)

    def on_quiet(self, engine: EngineCallbacks, key: str, at: float, out: list[Output]) -> bool:
        """A timer of ``resolve_after:``; True when it was one (handled)."""
        last = self.quiet.get(key)
        after = self.rule.resolve_after
        if last is None or after is None or key not in self.open:
            return False
        if last + after > at:
            engine.schedule(self, key, last + after)
        else:
            engine.resolve(self, key, last + after, out, ResolvedBy.RESOLVE_AFTER)
        return True

    def passed(self, engine: EngineCallbacks, key: str, deadline: float, at: float) -> float | None:
        """``deadline`` when it passed by the timer's ``at``; else the timer moves on to
        it (a later input pushed it back) and None."""
        if deadline > at:
            engine.schedule(self, key, deadline)
            return None
        return deadline

    def again(
        self, engine: EngineCallbacks, key: str, item: Input, now: float, out: list[Output]
    ) -> None:
        """A further matching input for the open event incident of ``key``: decided
        again when no run works on it, else recorded as one that is in progress."""
        self.heard(engine, key, now)
        if key in self.held:
            engine.decide(self, key, item.labels, item, now, out, continues=True, cause=AGAIN)
        else:
            engine.in_flight(self, key, item.labels, item, now, out)

    def carry(self, old: RuleState) -> list[tuple[str, float]]:
        """Take over the open incidents of the rule's previous definition (a reload);
        the timers to schedule again."""
        self.open, self.context, self.held = old.open, old.context, old.held
        self.quiet, self.last_run, self.items = old.quiet, old.last_run, old.items
        after = self.rule.resolve_after
        if after is None:
            self.quiet = {}
            return []
        return [(k, t + after) for k, t in self.quiet.items()]

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
        """An input that matches part ``role`` of the rule (``parts[role]``); the engine
        hands an input of the ``resolve:`` part (role RESOLVE) to :meth:`resolve_part`."""
        raise NotImplementedError

    def on_timer(
        self, engine: EngineCallbacks, key: str, at: float, now: float, out: list[Output]
    ) -> None:
        """A timer set with ``engine.schedule`` came due (``at`` <= ``now``)."""

    def resolve_part(
        self, engine: EngineCallbacks, item: Input, now: float, anomaly: float, out: list[Output]
    ) -> None:  # (no resolve_after timers to look at here: resolve: inputs are not quiet)
        resolve = self.rule.resolve
        if resolve is not None and self.test(resolve.when, item, now, anomaly):
            key = self.key(item.labels)
            if key in self.open:
                engine.resolve(self, key, now, out)

    # -- persistence --------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "context": {k: [dict(lb), dump_item(it)] for k, (lb, it) in self.context.items()},
            "held": {k: list(v) for k, v in self.held.items()},
            "quiet": self.quiet,
            "items": self.items,
            "last_run": self.last_run,
            "fires": self.fires,
            "last_fire": self.last_fire,
        }

    def load(self, data: Mapping[str, Any]) -> list[tuple[str, float]]:
        """Restore; returns the timers to schedule again."""
        self.open = {str(k): float(v) for k, v in data.get("open", {}).items()}
        self.context = {
            str(k): ({str(a): str(b) for a, b in v[0].items()}, load_item(v[1]))
            for k, v in data.get("context", {}).items()
        }
        self.held = {str(k): (float(v[0]), str(v[1])) for k, v in data.get("held", {}).items()}
        self.quiet = {str(k): float(v) for k, v in data.get("quiet", {}).items()}
        self.items = int(data.get("items", 0))
        self.last_run = {str(k): float(v) for k, v in data.get("last_run", {}).items()}
        self.fires = int(data.get("fires", 0))
        last = data.get("last_fire")
        self.last_fire = None if last is None else float(last)
        after = self.rule.resolve_after
        return [] if after is None else [(k, t + after) for k, t in self.quiet.items()]


class LevelState(RuleState):
    """True while matching samples pass ``when:``; ``for:`` delays the firing."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(rule)
        self.pending: dict[str, tuple[float, Mapping[str, str]]] = {}  # key -> first true
        self.latest: dict[str, Input] = {}  # key -> the latest true sample while pending

    def on_input(
        self, engine: EngineCallbacks, item: Input, role: int, now: float, anomaly: float,
        out: list[Output],
    ) -> None:  # fmt: skip
        rule = self.rule
        key = self.key(item.labels)
        if self.test(rule.parts[0].when, item, now, anomaly):
            if key in self.open:
                return
            if rule.for_s <= 0:
                engine.decide(self, key, item.labels, item, now, out)
                return
            if key not in self.pending:
                self.pending[key] = (item.ts, item.labels)
                engine.schedule(self, key, item.ts + rule.for_s)
            self.latest[key] = item  # what completes the condition, when for: passes
            return
        if self.pending:
            self.pending.pop(key, None)
            self.latest.pop(key, None)
        if key in self.open and rule.resolve is None:
            engine.resolve(self, key, now, out)

    def on_timer(
        self, engine: EngineCallbacks, key: str, at: float, now: float, out: list[Output]
    ) -> None:
        first = self.pending.get(key)
        if first is None or key in self.open:
            return
        deadline = self.passed(engine, key, first[0] + self.rule.for_s, at)
        if deadline is None:
            return
        del self.pending[key]
        item = self.latest.pop(key, None)
        labels = item.labels if item is not None else first[1]
        engine.decide(self, key, labels, item, max(at, deadline), out)

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["pending"] = _dump_stamped(self.pending)
        data["latest"] = _dump_inputs(self.latest)
        return data

    def load(self, data: Mapping[str, Any]) -> list[tuple[str, float]]:
        timers = super().load(data)
        self.pending = _load_stamped(data.get("pending", {}))
        self.latest = _load_inputs(data.get("latest", {}), self.pending)
        return timers + [(k, ts + self.rule.for_s) for k, (ts, _) in self.pending.items()]


class _EventState(RuleState):
    """An event rule (edge, all): its condition is met by one input at a time, and an
    open incident closes by ``resolve:`` or ``resolve_after:`` quiet."""

    def fire(
        self, engine: EngineCallbacks, key: str, item: Input, now: float, out: list[Output]
    ) -> None:
        """The condition is met for ``key``: a new incident, or the open one decided again."""
        if key in self.open:
            self.again(engine, key, item, now, out)
        else:
            engine.decide(self, key, item.labels, item, now, out)
            self.heard(engine, key, now)

    def on_timer(
        self, engine: EngineCallbacks, key: str, at: float, now: float, out: list[Output]
    ) -> None:
        self.on_quiet(engine, key, at, out)


class EdgeState(_EventState):
    """Each matching input that passes ``when:`` fires: it opens an incident, or it is
    decided again on the open one (:meth:`RuleState.again`). With ``each: true`` every
    one is a new work item of its own."""

    def on_input(
        self, engine: EngineCallbacks, item: Input, role: int, now: float, anomaly: float,
        out: list[Output],
    ) -> None:  # fmt: skip
        if not self.test(self.rule.parts[0].when, item, now, anomaly):
            return
        if self.rule.each:
            engine.decide(self, self.item_key(item.labels), item.labels, item, now, out)
            return
        self.fire(engine, self.key(item.labels), item, now, out)


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
        self.last: dict[str, Input] = {}  # key -> the last input seen (handed to the run)

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
        if last is None or item.ts >= last[0]:
            self.last[key] = item
        engine.schedule(self, key, ts + self.absent)

    def prune(self, now: float) -> None:
        super().prune(now)
        excess = len(self.seen) - MAX_GROUPS
        if excess > 0:
            oldest = [k for k in self.seen if k not in self.open][:excess]
            for key in oldest:
                del self.seen[key]
                self.last.pop(key, None)

    def on_timer(
        self, engine: EngineCallbacks, key: str, at: float, now: float, out: list[Output]
    ) -> None:
        seen = self.seen.get(key)
        if seen is None or key in self.open:
            return
        deadline = self.passed(engine, key, seen[0] + self.absent, at)
        if deadline is not None:
            engine.decide(self, key, seen[1], self.last.get(key), deadline, out)

    def dump(self) -> dict[str, Any]:
        data = super().dump()
        data["seen"] = _dump_stamped(self.seen)
        data["last"] = _dump_inputs(self.last)
        return data

    def load(self, data: Mapping[str, Any]) -> list[tuple[str, float]]:
        timers = super().load(data)
        self.seen = _load_stamped(data.get("seen", {}))
        self.last = _load_inputs(data.get("last", {}), self.seen)
        return timers + [
            (k, ts + self.absent) for k, (ts, _) in self.seen.items() if k not in self.open
        ]


class AllState(_EventState):
    """Correlation: every part of ``all:`` seen for the same key within ``within:``."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(rule)
        self.slots: dict[str, list[float | None]] = {}

    def on_input(
        self, engine: EngineCallbacks, item: Input, role: int, now: float, anomaly: float,
        out: list[Output],
    ) -> None:  # fmt: skip
        key = self.key(item.labels)
        if not self.test(self.rule.parts[role].when, item, now, anomaly):
            slots = self.slots.get(key)
            if slots is not None:  # a false sample: that part no longer holds
                slots[role] = None
            return
        slots = self.slots.setdefault(key, [None] * len(self.rule.parts))
        slots[role] = item.ts
        if key in self.open:
            self.heard(engine, key, now)
        oldest = now - self.rule.within
        if all(ts is not None and ts >= oldest for ts in slots):
            del self.slots[key]  # the correlation is used up by this firing
            self.fire(engine, key, item, now, out)

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
        timers = super().load(data)
        self.slots = {
            str(k): [None if t is None else float(t) for t in v]
            for k, v in data.get("slots", {}).items()
        }
        return timers


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
        due = self.passed(engine, key, since + self.rule.for_s, at)
        if due is not None:
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


class FleetState(RuleState):
    """A fleet rule: no input reaches it; ``Engine.fleet_count`` opens and resolves its
    one incident (:data:`batond.engine.fleet.FLEET_KEY`)."""

    def on_input(
        self, engine: EngineCallbacks, item: Input, role: int, now: float, anomaly: float,
        out: list[Output],
    ) -> None:  # fmt: skip
        return  # (it has no parts: the index never hands it an input)


_KINDS: dict[str, type[RuleState]] = {
    "alert": AlertState,
    "level": LevelState,
    "edge": EdgeState,
    "count": CountState,
    "absent": AbsentState,
    "all": AllState,
    "fleet": FleetState,
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


def _dump_inputs(items: Mapping[str, Input]) -> dict[str, Any]:
    """key -> the input kept for it, as JSON-ready lists."""
    return {k: dump_item(v) for k, v in items.items()}


def _load_inputs(data: Mapping[str, Any], keys: Container[str]) -> dict[str, Input]:
    """The inverse of :func:`_dump_inputs`, for the keys still in ``keys`` only."""
    items = {str(k): load_item(v) for k, v in data.items()}
    return {k: v for k, v in items.items() if v is not None and k in keys}


def dump_item(item: Input | None) -> list[Any] | None:
    """An input as JSON-ready data (the state of rules keeps the inputs it hands on)."""
    if item is None:
        return None
    if type(item) is Sample:
        return ["metric", item.metric, item.value, item.ts, item.labels, item.raw, item.source]
    return ["event", item.name, None, item.ts, item.labels, item.raw, item.source]  # type: ignore[union-attr]


def load_item(data: Any) -> Input | None:
    """The inverse of :func:`dump_item` (None for anything it cannot read)."""
    if not isinstance(data, list) or len(data) != 7:
        return None
    kind, name, value, ts, labels, raw, source = data
    labels = {str(a): str(b) for a, b in (labels or {}).items()}
    raw = raw if isinstance(raw, dict) else {}
    if kind == "metric":
        return Sample(str(name), float(value), float(ts), labels, raw, str(source))
    return Event(str(name), float(ts), labels, raw, str(source))

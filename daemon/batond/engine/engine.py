"""The engine: inputs and a clock in, decisions and resolutions out.

Incident semantics (docs/rules.md): a rule *fires* for a group (its
``group_by`` key) when its condition becomes true; that opens an incident and
makes one :class:`Decision`. It does not fire again for that key until the
incident resolves (:class:`Resolved`). The governor then says whether the
decision may start a run; a suppressed decision on a rule that only a run can
resolve (events without ``resolve:``/``count:``, and ``all:``) resolves at
once. Timers (``for:``, count windows, ``absent:``, schedules) fire from
:meth:`Engine.tick` at their exact due time, whatever the input rate.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping
from typing import Any

from batond.engine.governor import HOST_RESOLUTION_S, Governor, target_class
from batond.engine.index import MatchIndex
from batond.engine.keys import split_key
from batond.engine.model import Rule, RuleSet, Schedule
from batond.engine.state import RESOLVE, RuleState, state_for
from batond.engine.types import Decision, Outcome, Output, Resolved
from batond.events import Input, Sample

__all__ = ["MANUAL_RULE", "Engine", "RuleSet"]

STATE_VERSION = 1
NO_RUN = "none"  # record_outcome: the decision's run never happened (replay)
CATCH_UP_SLACK_S = 60.0  # a due time older than this was missed (batond was not running)
MANUAL_RULE = "run-playbook"  # the rule of a decision an operator made (batond run-playbook)
SWEEP_S = 60.0  # housekeeping of per-key state, at most this often (engine clock)


class Engine:
    def __init__(self, rules: RuleSet, governor: Governor | None = None) -> None:
        self.governor = governor if governor is not None else Governor()
        self.rules = rules
        self.states: dict[str, RuleState] = {}
        self._timers: list[tuple[float, int, RuleState, str]] = []
        self._seq = itertools.count()
        self._schedule_next: dict[str, float | None] = {}
        self._schedule_fp: dict[str, str] = {}
        self._schedule_due: float | None = None  # soonest schedule (-inf: not yet placed)
        self._sweep_at = float("-inf")  # next housekeeping (see _sweep)
        self._wake_at = float("-inf")  # the sooner of the two: one test per input
        self.index: MatchIndex[tuple[RuleState, int]] = MatchIndex(())
        #: Whether any rule could match a raw input object, not yet parsed (the fast path
        #: of ``batond replay``); its host counts for the fleet either way, as in
        #: :meth:`evaluate`. False: evaluating it would only fire timers, as :meth:`tick`
        #: does. A function made per rule set (replace_rules), bound to its index.
        self.prefilter: Callable[[Mapping[str, Any], float], bool]
        self.replace_rules(rules)

    # -- rules ---------------------------------------------------------------------
    def replace_rules(self, rules: RuleSet) -> None:
        """Swap the whole set; the state of rules whose definition did not change survives."""
        old = self.states
        self.states = {}
        for rule in rules.rules:
            kept = old.get(rule.name)
            if kept is not None and kept.rule.fingerprint == rule.fingerprint:
                kept.rule = rule
                self.states[rule.name] = kept
            else:
                self.states[rule.name] = state_for(rule)
        self._schedule_next = {
            s.name: self._schedule_next.get(s.name)
            if self._schedule_fp.get(s.name) == s.fingerprint
            else None
            for s in rules.schedules
        }
        self._schedule_fp = {s.name: s.fingerprint for s in rules.schedules}
        self._schedule_due = float("-inf") if rules.schedules else None
        self._wake_at = float("-inf")
        self.rules = rules
        self.index = MatchIndex(_index_entries(self.states.values()))
        gov = self.governor
        self.prefilter = self.index.prefilter(gov.hosts_seen, gov.note_host, HOST_RESOLUTION_S)

    def resolves_by_run(self, rule: str) -> bool:
        state = self.states.get(rule)
        return state is not None and state.rule.resolves_by_run

    # -- input -----------------------------------------------------------------------
    def evaluate(self, item: Input, now: float, anomaly: float = 0.0) -> list[Output]:
        """Decisions and resolutions that this input causes.

        Timers that came due by ``now`` fire first (so a busy input stream never
        delays a ``for:`` decision), as :meth:`tick` would.
        """
        host = item.labels.get("host")
        if host is not None:
            last = self.governor.hosts_seen.get(host)
            if last is None or now - last >= HOST_RESOLUTION_S:
                self.governor.note_host(host, now)
        if type(item) is Sample:
            hits = self.index.lookup("metric", item.metric, item.labels)
        else:
            hits = self.index.lookup("event", item.name, item.labels)  # type: ignore[union-attr]
        timers = self._timers
        due = (timers and timers[0][0] <= now) or self._wake_at <= now
        out = self.tick(now) if due else []
        for state, role in hits:
            state.on_input(self, item, role, now, anomaly, out)
        return out

    def tick(self, now: float) -> list[Output]:
        """Timers due at or before ``now``, in due order, then schedules."""
        out: list[Output] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            at, _, state, key = heapq.heappop(timers)
            if self.states.get(state.rule.name) is not state or state.due.get(key) != at:
                continue  # replaced rule, or a timer superseded by an earlier one
            del state.due[key]
            state.on_timer(self, key, at, now, out)
        if self.rules.schedules:
            for schedule in self.rules.schedules:
                self._tick_schedule(schedule, now, out)
            times = [t for t in self._schedule_next.values() if t is not None]
            self._schedule_due = min(times) if times else None
        if now >= self._sweep_at:
            self._sweep(now)
        due = self._schedule_due
        self._wake_at = self._sweep_at if due is None else min(due, self._sweep_at)
        return out

    def _sweep(self, now: float) -> None:
        """Drop per-key state that can no longer matter, so that it stays bounded
        however many hosts and groups come and go (amortised: every SWEEP_S)."""
        self._sweep_at = now + SWEEP_S
        self.governor.prune(now)
        for state in self.states.values():
            state.prune(now)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next run (None: only when an input comes)."""
        times = [t for t in self._schedule_next.values() if t is not None]
        if self._timers:
            times.append(self._timers[0][0])
        return min(times) if times else None

    # -- callbacks for rule states (state.EngineCallbacks) ------------------------------
    def schedule(self, state: RuleState, key: str, at: float) -> None:
        current = state.due.get(key)
        if current is not None and current <= at:
            return  # the earlier timer re-checks and moves itself on
        state.due[key] = at
        heapq.heappush(self._timers, (at, next(self._seq), state, key))

    def decide(
        self,
        state: RuleState,
        key: str,
        labels: Mapping[str, str],
        item: Input | None,
        now: float,
        out: list[Output],
    ) -> None:
        rule = state.rule
        state.open[key] = now
        state.fires += 1
        state.last_fire = now
        in_cooldown = key in state.last_run and now - state.last_run[key] < rule.cooldown
        decision = self._decision(rule, key, labels, item, now, in_cooldown=in_cooldown)
        if decision.suppressed is None and rule.cooldown > 0:
            state.last_run[key] = now
        out.append(decision)
        if decision.suppressed is not None and rule.resolves_by_run:
            self.resolve(state, key, now, out)

    def resolve(self, state: RuleState, key: str, now: float, out: list[Output]) -> None:
        if state.open.pop(key, None) is not None:
            out.append(Resolved(now, state.rule.name, key))

    def _decision(
        self,
        rule: Rule | Schedule,
        key: str,
        labels: Mapping[str, str],
        item: Input | None,
        now: float,
        *,
        in_cooldown: bool,
    ) -> Decision:
        gov = self.governor
        is_rule = isinstance(rule, Rule)
        if is_rule and rule.order == "adaptive" and len(rule.run) > 1:  # type: ignore[union-attr]
            candidates = gov.order(rule.name, rule.run, target_class(labels))
        else:
            candidates = rule.run
        first = candidates[0]
        mode = getattr(self.rules.playbooks.get(first), "mode", "single")
        reason = gov.check(
            labels, key, first, now, in_cooldown=in_cooldown, single=mode == "single", fleet=is_rule
        )
        if reason is None:
            gov.admit(first, key, now, (labels.get("host") or key) if is_rule else "")
        return Decision(
            ts=now,
            rule=rule.name,
            key=key,
            target=key,
            labels=labels,
            candidates=candidates,
            playbook=first if reason is None else None,
            suppressed=reason,
            params=rule.params,
            severity=rule.severity,
            item=item,
            opens_incident=is_rule,
        )

    def _tick_schedule(self, schedule: Schedule, now: float, out: list[Output]) -> None:
        due = self._schedule_next.get(schedule.name)
        if due is None:
            self._schedule_next[schedule.name] = schedule.cron.next_after(now, schedule.tz)
            return
        if due > now:
            return
        if not schedule.catch_up and now - due > CATCH_UP_SLACK_S:
            # it came due while batond was down (or stopped): catch_up: false skips it
            self._schedule_next[schedule.name] = schedule.cron.next_after(now, schedule.tz)
            return
        labels = {"schedule": schedule.name}
        out.append(self._decision(schedule, schedule.key, labels, None, due, in_cooldown=False))
        self._schedule_next[schedule.name] = schedule.cron.next_after(now, schedule.tz)

    # -- by hand -----------------------------------------------------------------------
    def trigger_schedule(self, name: str, now: float) -> Decision | None:
        """An operator runs a schedule now (``batond trigger``): a decision through the
        governor like its timer's; when it is next due stays as it was. None: no such
        schedule."""
        for schedule in self.rules.schedules:
            if schedule.name == name:
                labels = {"schedule": name, "trigger": "manual"}
                return self._decision(schedule, schedule.key, labels, None, now, in_cooldown=False)
        return None

    def on_resolve(self, rule_name: str, key: str, now: float) -> Decision | None:
        """The rule's ``on_resolve:`` playbook for an incident that resolved (through the
        governor, opening no incident); None when the rule names none."""
        rule = self.rules.rule(rule_name)
        if rule is None or rule.on_resolve is None:
            return None
        labels = split_key(key)
        playbook = rule.on_resolve
        mode = getattr(self.rules.playbooks.get(playbook), "mode", "single")
        reason = self.governor.check(
            labels, key, playbook, now, in_cooldown=False, single=mode == "single", fleet=False
        )
        if reason is None:
            self.governor.admit(playbook, key, now, "")
        return Decision(
            ts=now, rule=rule.name, key=key, target=key, labels=labels, candidates=(playbook,),
            playbook=playbook if reason is None else None, suppressed=reason,
            params=rule.params, severity=rule.severity, item=None, opens_incident=False,
        )  # fmt: skip

    def run_by_hand(self, playbook: str, params: Mapping[str, Any], now: float) -> Decision:
        """An operator runs a playbook (``batond run-playbook``): a decision of rule
        :data:`MANUAL_RULE` for key ``playbook=NAME``, through the governor."""
        key = f"playbook={playbook}"
        labels = {"playbook": playbook}
        mode = getattr(self.rules.playbooks.get(playbook), "mode", "single")
        gov = self.governor
        reason = gov.check(
            labels, key, playbook, now, in_cooldown=False, single=mode == "single", fleet=False
        )
        if reason is None:
            gov.admit(playbook, key, now, "")
        return Decision(
            ts=now, rule=MANUAL_RULE, key=key, target=key, labels=labels, candidates=(playbook,),
            playbook=playbook if reason is None else None, suppressed=reason,
            params=dict(params), severity="info", item=None, opens_incident=False,
        )  # fmt: skip

    # -- feedback --------------------------------------------------------------------
    def run_started(self, rule: str, playbook: str, key: str, now: float) -> None:
        """A run of a later candidate started (the decision's own playbook is counted at
        the decision). Only its ``already_running`` bookkeeping; ended by record_outcome."""
        self.governor.mark_running(playbook, key)

    def record_outcome(
        self, rule: str, playbook: str, key: str, outcome: str, now: float
    ) -> list[Output]:
        """A run ended (an :class:`Outcome`, or ``NO_RUN``: no run happened).

        Feeds the statistics and circuits; resolves an incident that only its
        run can resolve when the run resolved it (or never ran).
        """
        labels = split_key(key)
        self.governor.record_outcome(rule, playbook, key, target_class(labels), outcome, now)
        out: list[Output] = []
        state = self.states.get(rule)
        resolved = outcome in (Outcome.RESOLVED, NO_RUN)
        if state is not None and state.rule.resolves_by_run and resolved:
            self.resolve(state, key, now, out)
        return out

    def take_errors(self) -> list[tuple[str, str]]:
        """(rule, message) of expression failures not yet taken, for the daemon's log.

        A failing ``when:`` counts as false; the same message repeated is reported once.
        """
        out: list[tuple[str, str]] = []
        for name, state in self.states.items():
            if state.new_errors:
                out.extend((name, m) for m in state.new_errors)
                state.new_errors.clear()
        return out

    # -- views for the API -----------------------------------------------------------
    def open_incident_count(self) -> int:
        return sum(len(s.open) for s in self.states.values())

    def describe_rules(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for rule in self.rules.rules:
            state = self.states[rule.name]
            out.append(
                {
                    "name": rule.name,
                    "kind": rule.kind,
                    "metric": rule.match.name if rule.match.kind == "metric" else None,
                    "when": rule.when.text if rule.when is not None else None,
                    "description": rule.description,
                    "severity": rule.severity,
                    "run": list(rule.run),
                    "fires": state.fires,
                    "last_fire": state.last_fire,
                    "open_incidents": sorted(state.open),
                    "eval_errors": state.eval_errors,
                    "last_error": state.last_error or None,
                    "resolve_rates": self.governor.resolve_rates(rule.name),
                }
            )
        for schedule in self.rules.schedules:
            out.append(
                {
                    "name": schedule.name,
                    "kind": "schedule",
                    "cron": schedule.cron.text,
                    "run": list(schedule.run),
                    "next": self._schedule_next.get(schedule.name),
                    "resolve_rates": self.governor.resolve_rates(schedule.name),
                }
            )
        return out

    # -- persistence -----------------------------------------------------------------
    def export_state(self) -> dict[str, Any]:
        """JSON-serialisable state: incidents, timers, windows, cooldowns, governor."""
        return {
            "version": STATE_VERSION,
            "rules": {
                name: {"fingerprint": s.rule.fingerprint, **s.dump()}
                for name, s in self.states.items()
            },
            "schedules": {
                name: {"fingerprint": self._schedule_fp.get(name), "next": nxt}
                for name, nxt in self._schedule_next.items()
            },
            "governor": self.governor.export_state(),
        }

    def import_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`export_state` gave; rules that changed since start afresh."""
        if state.get("version") != STATE_VERSION:
            return
        for name, data in state.get("rules", {}).items():
            rs = self.states.get(name)
            if rs is None or data.get("fingerprint") != rs.rule.fingerprint:
                continue
            for key, at in rs.load(data):
                self.schedule(rs, key, at)
        for name, data in state.get("schedules", {}).items():
            if self._schedule_fp.get(name) == data.get("fingerprint") and data.get("next"):
                self._schedule_next[name] = float(data["next"])
        self.governor.import_state(state.get("governor", {}))


def _index_entries(states: Any) -> list[tuple[Any, tuple[RuleState, int]]]:
    entries = []
    for state in states:
        for role, part in enumerate(state.rule.parts):
            entries.append((part.match, (state, role)))
        if state.rule.resolve is not None:
            entries.append((state.rule.resolve.match, (state, RESOLVE)))
    return entries

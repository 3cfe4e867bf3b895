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
from collections.abc import Callable, Collection, Mapping
from typing import Any

from batond.engine.fleet import FLEET_KEY, FleetCount, FleetVerdict, fleet_cause, fleet_labels
from batond.engine.fleet import verdict as fleet_verdict
from batond.engine.governor import HOST_RESOLUTION_S, Governor, Scope, target_class
from batond.engine.index import MatchIndex
from batond.engine.keys import split_key
from batond.engine.model import NO_LIMITS, Limits, Rule, RuleSet, Schedule
from batond.engine.state import RESOLVE, RuleState, state_for
from batond.engine.types import (
    Decision,
    Outcome,
    Output,
    Resolved,
    ResolvedBy,
    Suppression,
)
from batond.events import Input, Sample

__all__ = ["MANUAL_RULE", "REMOTE_RULE", "Engine", "RuleSet"]

STATE_VERSION = 1
NO_RUN = "none"  # record_outcome: the decision's run never happened (replay)
CATCH_UP_SLACK_S = 60.0  # a due time older than this was missed (batond was not running)
MANUAL_RULE = "run-playbook"  # the rule of a decision an operator made (batond run-playbook)
REMOTE_RULE = "remote-request"  # the rule of a fleet agent's decision on a signed request
#: The governor scope of a rule's on_resolve: runs (their budget is not the rule's own).
ON_RESOLVE_SCOPE = "{}:on_resolve"
SWEEP_S = 60.0  # housekeeping of per-key state, at most this often (engine clock)

#: A lever: which held incidents to decide again (state, key, the reason it is held).
Lever = Callable[[RuleState, str, str], bool]


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
        self._levers: list[tuple[Lever, str]] = []  # pulled at the next tick
        self._pending: list[Output] = []  # outputs of levers and reloads, for the next tick
        self._paused = False
        #: Whether any rule could match a raw input object, not yet parsed (the fast path
        #: of ``batond replay``); its host counts for the fleet either way, as in
        #: :meth:`evaluate`. False: evaluating it would only fire timers, as :meth:`tick`
        #: does. A function made per rule set (replace_rules), bound to its index.
        self.prefilter: Callable[[Mapping[str, Any], float], bool]
        self.replace_rules(rules)

    # -- rules ---------------------------------------------------------------------
    def replace_rules(self, rules: RuleSet) -> None:
        """Swap the whole set; the state of rules whose definition did not change survives.

        A changed rule keeps its open incidents when its kind, ``group_by`` and ``each``
        stay (its held ones are decided again, with the new definition); otherwise they
        close (``rule_changed``). Either way the outputs come from the next tick.
        """
        old = self.states
        self.states = {}
        changed: list[Rule] = []
        for rule in rules.rules:
            kept = old.get(rule.name)
            if kept is not None and kept.rule.fingerprint == rule.fingerprint:
                kept.rule = rule
                self.states[rule.name] = kept
                continue
            self.states[rule.name] = state_for(rule)
            if kept is not None:
                self._carry(kept, self.states[rule.name])
                changed.append(rule)
        for name, gone in old.items():
            if name not in self.states:
                self._close_all(gone, ResolvedBy.RULE_CHANGED)
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
        gov.limits = {r.name: r.limits for r in rules.rules if r.limits != NO_LIMITS}
        gov.work_items = frozenset(r.name for r in rules.rules if r.each)
        self.prefilter = self.index.prefilter(gov.hosts_seen, gov.note_host, HOST_RESOLUTION_S)
        names = {rule.name for rule in changed}
        for rule in changed:
            gov.rule_changed(rule.name, rule.limits, self._now())
        if names:
            self.pull(lambda st, _k, _r: st.rule.name in names, "the rule was changed by a reload")

    def _now(self) -> float:
        """The engine's latest time (0 before any input: nothing is open then)."""
        clock = self.governor.clock
        return clock if clock > float("-inf") else 0.0

    def _carry(self, old: RuleState, new: RuleState) -> None:
        a, b = old.rule, new.rule
        if (a.kind, a.group_by, a.each) != (b.kind, b.group_by, b.each):
            self._close_all(old, ResolvedBy.RULE_CHANGED)
            return
        for key, at in new.carry(old):
            self.schedule(new, key, at)

    def _close_all(self, state: RuleState, by: ResolvedBy) -> None:
        at = self._now()
        for key in list(state.open):
            self.resolve(state, key, at, self._pending, by)

    def resolves_by_run(self, rule: str) -> bool:
        state = self.states.get(rule)
        return state is not None and state.rule.resolves_by_run

    def rule_of(self, name: str) -> Rule | None:
        state = self.states.get(name)
        return state.rule if state is not None else None

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
            if role == RESOLVE:
                state.resolve_part(self, item, now, anomaly, out)
            else:
                state.on_input(self, item, role, now, anomaly, out)
        return out

    def tick(self, now: float) -> list[Output]:
        """Levers and reload outputs, then timers due at or before ``now`` in due order,
        then schedules."""
        out: list[Output] = []
        self._watch_governor(now)
        if self._pending or self._levers:
            out.extend(self._pending)
            self._pending = []
            self._pull_levers(now, out)
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
        self._wake_at = min(
            t
            for t in (
                self._sweep_at, self._schedule_due, self.governor.next_circuit_close(),
                self.governor.silence_ends(),
            )
            if t is not None
        )  # fmt: skip
        return out

    def _watch_governor(self, now: float) -> None:
        """Circuits whose cool-off passed, silences that ended, a pause that ended (the
        kill switch file went away): the incidents they held back are decided again."""
        gov = self.governor
        closed = gov.expire_circuits(now) if gov.next_circuit_close() is not None else []
        if closed:
            self._reopened(set(closed), "its circuit closed after the cool-off")
        ends = gov.silence_ends()
        if ends is not None and ends <= now:
            gov.drop_ended_silences(now)
            self.silences_changed("a silence ended")
        if self._paused and not gov.paused:
            self.pull(lambda _s, _k, why: why == Suppression.PAUSED, "the pause ended (resume)")
        self._paused = gov.paused

    def _sweep(self, now: float) -> None:
        """Drop per-key state that can no longer matter, so that it stays bounded
        however many hosts and groups come and go (amortised: every SWEEP_S)."""
        self._sweep_at = now + SWEEP_S
        self.governor.prune(now)
        for state in self.states.values():
            state.prune(now)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` must next run (None: only when an input comes)."""
        gov = self.governor
        if self._pending or self._levers or self._paused != gov.paused:
            return float("-inf")
        # runs after every input that could match: no list or generator on this path
        due = self._timers[0][0] if self._timers else None
        if self._schedule_next:
            for t in self._schedule_next.values():
                if t is not None and (due is None or t < due):
                    due = t
        change = gov.next_change()
        if change is not None and (due is None or change < due):
            due = change
        return due

    # -- levers: held incidents decided again ---------------------------------------
    def pull(self, lever: Lever, cause: str) -> None:
        """Decide again, at the next tick, the held incidents ``lever`` picks."""
        self._levers.append((lever, cause))

    def _pull_levers(self, now: float, out: list[Output]) -> None:
        levers, self._levers = self._levers, []
        for state in list(self.states.values()):
            for key, (_, why) in list(state.held.items()):
                cause = next((c for lever, c in levers if lever(state, key, why)), None)
                if cause is None or key not in state.held:
                    continue
                labels, item = state.context.get(key, (split_key(key), None))
                self.decide(state, key, labels, item, now, out, continues=True, cause=cause)

    def _reopened(self, scopes: set[Scope], cause: str) -> None:
        self.pull(
            lambda st, key, why: why == Suppression.CIRCUIT_OPEN and (st.rule.name, key) in scopes,
            cause,
        )

    def reset_circuit(self, key: str, rule: str | None = None) -> list[Scope]:
        """An operator closes circuits of ``key`` (of ``rule``, or of every rule); the
        incidents they held back are decided again. The scopes closed."""
        scopes = self.governor.reset_circuit(key, rule)
        if scopes:
            self._reopened(set(scopes), "circuit reset by an operator")
        return scopes

    def silences_changed(self, cause: str = "a silence ended") -> None:
        """The silences changed: held-back incidents that none covers now are decided again."""
        gov = self.governor

        def lever(state: RuleState, key: str, why: str) -> bool:
            if why != Suppression.SILENCED:
                return False
            rule = state.rule
            labels = state.context.get(key, ({}, None))[0]
            return not gov.silenced(labels, rule.name, rule.severity, rule.run[0], self._now())

        self.pull(lever, cause)

    def close_incident(self, rule: str, key: str, now: float, by: ResolvedBy) -> bool:
        """Close the open incident of ``rule`` for ``key`` (an operator); False if none.
        The resolution comes out of the next tick."""
        state = self.states.get(rule)
        if state is None or key not in state.open:
            return False
        self.resolve(state, key, now, self._pending, by)
        return True

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
        *,
        continues: bool = False,
        cause: str = "",
    ) -> None:
        rule = state.rule
        if not continues or key not in state.open:
            state.open[key] = now
            continues = False
        state.context[key] = (labels, item)
        state.fires += 1
        state.last_fire = now
        in_cooldown = key in state.last_run and now - state.last_run[key] < rule.cooldown
        decision = self._decision(
            rule, key, labels, item, now, in_cooldown=in_cooldown, continues=continues, cause=cause
        )
        if decision.suppressed is None:
            state.held.pop(key, None)  # a run works on it
            if rule.cooldown > 0:
                state.last_run[key] = now
        else:
            state.held[key] = (now, decision.suppressed)
        out.append(decision)
        if decision.suppressed is not None and rule.resolves_by_run:
            self.resolve(state, key, now, out, ResolvedBy.NO_RUN)

    def in_flight(
        self,
        state: RuleState,
        key: str,
        labels: Mapping[str, str],
        item: Input | None,
        now: float,
        out: list[Output],
    ) -> None:
        """An input for an open incident that a run works on: recorded, nothing starts."""
        rule = state.rule
        out.append(
            Decision(
                ts=now, rule=rule.name, key=key, target=key, labels=labels,
                candidates=rule.run, playbook=None, suppressed=Suppression.ALREADY_RUNNING,
                params=rule.params, severity=rule.severity, item=item, continues=True,
                reason=self.governor.explain(
                    Suppression.ALREADY_RUNNING, rule.name, key, rule.limits, now
                ),
            )
        )  # fmt: skip

    def resolve(
        self,
        state: RuleState,
        key: str,
        now: float,
        out: list[Output],
        by: ResolvedBy = ResolvedBy.INPUT,
    ) -> None:
        if state.open.pop(key, None) is not None:
            state.forget(key)
            out.append(Resolved(now, state.rule.name, key, by))

    def _decision(
        self,
        rule: Rule | Schedule,
        key: str,
        labels: Mapping[str, str],
        item: Input | None,
        now: float,
        *,
        in_cooldown: bool,
        continues: bool = False,
        cause: str = "",
    ) -> Decision:
        gov = self.governor
        is_rule = isinstance(rule, Rule)
        limits = rule.limits if is_rule else NO_LIMITS  # type: ignore[union-attr]
        if is_rule and rule.order == "adaptive" and len(rule.run) > 1:  # type: ignore[union-attr]
            candidates = gov.order(rule.name, rule.run, target_class(labels))
        else:
            candidates = rule.run
        first = candidates[0]
        mode = getattr(self.rules.playbooks.get(first), "mode", "single")
        fleet = is_rule and rule.in_blast_radius  # type: ignore[union-attr]
        reason = gov.check(
            labels, rule.name, key, first, now, in_cooldown=in_cooldown, single=mode == "single",
            fleet=fleet, limits=limits, severity=rule.severity,
        )  # fmt: skip
        if reason is None:
            gov.admit(
                first, rule.name, key, now, (labels.get("host") or key) if fleet else "", limits
            )
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
            continues=continues,
            cause=cause,
            reason=self._why(reason, rule.name, key, labels, first, rule.severity, limits, now),
            max_concurrent=limits.max_concurrent_runs,
        )

    def _why(
        self,
        reason: Suppression | None,
        rule: str,
        key: str,
        labels: Mapping[str, str],
        playbook: str,
        severity: str,
        limits: Limits,
        now: float,
    ) -> str:
        """A suppression in words ("" for a run); a silence says which one it was."""
        gov = self.governor
        if reason is None:
            return ""
        if reason == Suppression.SILENCED:
            return gov.silenced_by(labels, rule, severity, playbook, now)
        return gov.explain(reason, rule, key, limits, now)

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

    # -- fleet rules (a central instance counts, batond.engine.fleet decides) -----------
    def fleet_rules(self) -> list[Rule]:
        return [r for r in self.rules.rules if r.fleet is not None]

    def fleet_count(self, rule_name: str, counted: FleetCount, now: float) -> list[Output]:
        """What this count does to the fleet rule's incident: a decision through the
        governor when it reaches the threshold, a resolution when it falls below."""
        state = self.states.get(rule_name)
        spec = state.rule.fleet if state is not None else None
        if state is None or spec is None:
            return []
        out: list[Output] = []
        found = fleet_verdict(spec, counted, FLEET_KEY in state.open)
        if found is FleetVerdict.OPEN:
            labels = fleet_labels(spec, counted)
            self.decide(state, FLEET_KEY, labels, None, now, out, cause=fleet_cause(spec, counted))
        elif found is FleetVerdict.RESOLVE:
            self.resolve(state, FLEET_KEY, now, out)
        return out

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
        scope = ON_RESOLVE_SCOPE.format(rule.name)  # its own budget: not the remediation's
        reason = self.governor.check(
            labels, scope, key, playbook, now, in_cooldown=False, single=mode == "single",
            fleet=False, severity=rule.severity,
        )  # fmt: skip
        if reason is None:
            self.governor.admit(playbook, scope, key, now, "")
        return Decision(
            ts=now, rule=rule.name, key=key, target=key, labels=labels, candidates=(playbook,),
            playbook=playbook if reason is None else None, suppressed=reason,
            params=rule.params, severity=rule.severity, item=None, opens_incident=False,
        )  # fmt: skip

    def run_by_hand(
        self,
        playbook: str,
        params: Mapping[str, Any],
        now: float,
        *,
        rule: str = MANUAL_RULE,
        labels: Mapping[str, str] | None = None,
    ) -> Decision:
        """An operator runs a playbook (``batond run-playbook``): a decision of rule
        :data:`MANUAL_RULE` for key ``playbook=NAME``, through the governor. A fleet
        agent's remote request is one of :data:`REMOTE_RULE`, whose ``labels`` say who
        asked (silences can match them)."""
        key = f"playbook={playbook}"
        labels = {**(labels or {}), "playbook": playbook}
        mode = getattr(self.rules.playbooks.get(playbook), "mode", "single")
        gov = self.governor
        reason = gov.check(
            labels, rule, key, playbook, now, in_cooldown=False, single=mode == "single",
            fleet=False, severity="info",
        )  # fmt: skip
        if reason is None:
            gov.admit(playbook, rule, key, now, "")
        return Decision(
            ts=now, rule=rule, key=key, target=key, labels=labels, candidates=(playbook,),
            playbook=playbook if reason is None else None, suppressed=reason,
            params=dict(params), severity="info", item=None, opens_incident=False,
        )  # fmt: skip

    # -- feedback --------------------------------------------------------------------
    def run_started(self, rule: str, playbook: str, key: str, now: float) -> None:
        """A run of a later candidate started (the decision's own playbook is counted at
        the decision). Only its ``already_running`` bookkeeping; ended by record_outcome."""
        self.governor.mark_running(playbook, key)

    def record_outcome(
        self,
        rule: str,
        playbook: str,
        key: str,
        outcome: str,
        now: float,
        *,
        final: bool = True,
        escalation: bool = False,
        after_resolve: bool = False,
    ) -> list[Output]:
        """A run ended (an :class:`Outcome`, or ``NO_RUN``: no run happened).

        Feeds the statistics and circuits (not for an escalation); resolves an
        incident that only its run can resolve when the run resolved it (or never
        ran, or every action step was skipped), a work item when its runs ended. When
        the last run of a decision (``final``) leaves its incident open, the incident
        is held: further input decides it again. An ``on_resolve:`` run (``after_resolve``)
        only frees its place: it came after the incident and says nothing about it.
        """
        if after_resolve:
            self.governor.run_ended(playbook, key)
            return []
        if not escalation:
            self.governor.record_outcome(
                rule, playbook, key, target_class(split_key(key)), outcome, now
            )
        out: list[Output] = []
        if final:  # incidents of any rule held back by this run (already_running) go again
            self.pull(
                lambda _s, k, why: k == key and why == Suppression.ALREADY_RUNNING,
                f"the run of {playbook} for {key} that held it back ended",
            )
        state = self.states.get(rule)
        if state is None or key not in state.open:
            return out
        if state.rule.resolves_by_run and outcome in (Outcome.RESOLVED, Outcome.SKIPPED, NO_RUN):
            self.resolve(state, key, now, out, ResolvedBy.RUN)
        elif final and state.rule.each:
            self.resolve(state, key, now, out, ResolvedBy.ITEM_DONE)
        elif final:
            state.held.setdefault(key, (now, ""))
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
                    "metric": rule.match.name
                    if rule.parts and rule.match.kind == "metric"
                    else None,
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
    def export_state(self, *, hosts_seen: bool = True) -> dict[str, Any]:
        """JSON-serialisable state: incidents, timers, windows, cooldowns, governor
        (without its hosts seen when ``hosts_seen=False``: see Governor.export_state)."""
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
            "governor": self.governor.export_state(hosts_seen=hosts_seen),
        }

    def import_state(
        self, state: Mapping[str, Any], hosts_seen: Mapping[str, Any] | None = None
    ) -> None:
        """Restore what :meth:`export_state` gave, with the governor's hosts seen when
        saved apart; rules that changed since start afresh."""
        if state.get("version") != STATE_VERSION:
            self.governor.import_hosts_seen(hosts_seen or {})
            return
        self.import_rule_states(state)
        for name, data in state.get("schedules", {}).items():
            if self._schedule_fp.get(name) == data.get("fingerprint") and data.get("next"):
                self._schedule_next[name] = float(data["next"])
        self.governor.import_state(state.get("governor", {}), hosts_seen)

    def import_rule_states(self, state: Mapping[str, Any], only: Collection[str] = ()) -> None:
        """The rule states of an :meth:`export_state` document (of ``only`` those rules,
        when given), replacing those rules' states; schedules and governor untouched."""
        if state.get("version") != STATE_VERSION:
            return
        for name, data in state.get("rules", {}).items():
            rs = self.states.get(name)
            if rs is None or data.get("fingerprint") != rs.rule.fingerprint:
                continue
            if only and name not in only:
                continue
            for key, at in rs.load(data):
                self.schedule(rs, key, at)


def _index_entries(states: Any) -> list[tuple[Any, tuple[RuleState, int]]]:
    entries = []
    for state in states:
        for role, part in enumerate(state.rule.parts):
            entries.append((part.match, (state, role)))
        if state.rule.resolve is not None:
            entries.append((state.rule.resolve.match, (state, RESOLVE)))
    return entries

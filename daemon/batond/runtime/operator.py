"""What an operator can ask and do: the state and levers behind the HTTP API.

:class:`Operator` implements :class:`batond.runtime.api.Control`: status,
incidents, runs, silences, approval gates, circuit reset, pause, reload and
false-positive feedback. It holds the components it answers from; it starts
nothing and runs no loop (that is :mod:`batond.runtime.daemon`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from batond.anomaly import ModelSet
from batond.engine.engine import Engine
from batond.engine.governor import GovernorSettings
from batond.engine.silences import MatcherError, check_matchers, matchers_of
from batond.engine.types import Decision, ResolvedBy
from batond.errors import BatondError, ConfigError, ConflictError
from batond.journal.facade import Journal
from batond.journal.queries import DecisionFilter
from batond.load.config import Config, load_config
from batond.metrics import Metrics
from batond.remedy.plan import not_reached
from batond.remedy.runner import Runner
from batond.runtime.definitions import Definitions, load_definitions
from batond.runtime.pipeline import Pipeline
from batond.runtime.ports import PauseSwitch, RuleStateSaver, save_models
from batond.units import parse_duration

__all__ = ["Operator", "Source"]

log = logging.getLogger("batond")

#: Config sections a running daemon cannot adopt: a reload names them, a restart applies them.
#: How many agents ``GET /api/v1/fleet`` lists (the most recently seen; ``agent_count``
#: says how many the fleet has).
AGENTS_SHOWN = 1000
RESTART_ONLY = ("node", "state_dir", "http", "mqtt", "host", "log", "notify", "fleet")


class Source(Protocol):
    """A long-running input source (host metrics, MQTT)."""

    @property
    def state(self) -> str: ...
    async def run(self, started: asyncio.Event) -> None: ...


class FleetView(Protocol):
    """A central instance's view of the fleet (fleet.central.Central)."""

    def view(self) -> dict[str, Any]: ...


class Operator:
    def __init__(
        self,
        *,
        config: Config,
        metrics: Metrics,
        journal: Journal,
        engine: Engine,
        models: ModelSet,
        runner: Runner,
        pipeline: Pipeline,
        sources: Mapping[str, Source],
        pause: PauseSwitch,
        state: RuleStateSaver,
        fleet: FleetView | None = None,
    ) -> None:
        self._config = config
        self._fleet = fleet
        self._metrics = metrics
        self._journal = journal
        self._engine = engine
        self._models = models
        self._runner = runner
        self._pipeline = pipeline
        self._sources = sources
        self._pause = pause
        self._state = state
        self._ready = False

    @property
    def config(self) -> Config:
        """The configuration in force (a reload may have replaced the one started with)."""
        return self._config

    def set_ready(self, ready: bool) -> None:
        """The daemon's lifecycle says whether it serves (``/readyz``)."""
        self._ready = ready

    # -- views ---------------------------------------------------------------------
    def is_ready(self) -> bool:
        return self._ready and not self._journal.trouble

    def not_ready_reason(self) -> str:
        """Why ``/readyz`` says 503 ("" when ready)."""
        if not self._ready:
            return "starting or stopping"
        return self._journal.trouble

    async def fleet(self, agents: int = AGENTS_SHOWN) -> dict[str, Any] | None:
        """Who owns which partition, the members and when each was last seen, the agents
        most recently seen (from the fleet's journal); None when this is not a central
        instance."""
        if self._fleet is None:
            return None
        return {**self._fleet.view(), **await self._journal.list_agents(agents)}

    def status(self) -> dict[str, Any]:
        engine, governor = self._engine, self._engine.governor
        return {
            "node": self._config.node,
            "mode": self._config.mode,
            "paused": governor.paused,
            "ready": self.is_ready(),
            "journal": {"ok": not self._journal.trouble, "error": self._journal.trouble or None},
            "sources": {name: s.state for name, s in self._sources.items()},
            "rules_loaded": engine.rules.rule_count,
            "playbooks_loaded": len(engine.rules.playbooks),
            "open_incidents": engine.open_incident_count(),
            "open_circuits": governor.open_circuits(),
            "runs_active": self._runner.active_count(),
        }

    async def incidents(self, limit: int) -> dict[str, Any]:
        return await self._journal.list_incidents(limit)

    async def incident(self, incident_id: int) -> dict[str, Any] | None:
        return await self._journal.get_incident(incident_id)

    async def decisions(self, limit: int, filters: DecisionFilter) -> dict[str, Any]:
        return await self._journal.list_decisions(limit, filters)

    async def resolve_incident(self, incident_id: int) -> dict[str, Any] | None:
        """An operator closes an open incident (None: no such incident; Conflict: it is
        not open). What held it is forgotten; the next matching input opens a new one."""
        found = await self._journal.get_incident(incident_id)
        if found is None:
            return None
        if found["state"] != "open":
            raise ConflictError(f"incident {incident_id} is {found['state']}, not open")
        now = time.time()
        rule, key = found["rule"], found["key"]
        if not self._engine.close_incident(rule, key, now, ResolvedBy.OPERATOR):
            # open in the journal only (the engine lost track of it): close it there
            await self._journal.resolve_incident(rule, key, now, ResolvedBy.OPERATOR)
        await self._pipeline.tick(now)
        log.info("incident %d (%s %s) resolved by an operator", incident_id, rule, key)
        return {"incident": incident_id, "resolved": True, "resolved_at": now}

    async def runs(self, limit: int) -> dict[str, Any]:
        found = await self._journal.list_runs(limit)
        for run in found["runs"]:
            run["not_reached"] = self._not_reached(run)
        return found

    async def run(self, run_id: int) -> dict[str, Any] | None:
        """One run, with the steps of its playbook it never reached (``not_reached``)."""
        found = await self._journal.get_run(run_id)
        if found is not None:
            found["not_reached"] = self._not_reached(found)
        return found

    def _not_reached(self, run: Mapping[str, Any]) -> list[str]:
        """For an ended run, by the playbook loaded now (a reload may have changed it
        since); nothing for a run still going or whose playbook is gone."""
        playbooks = self._engine.rules.playbooks
        pb = playbooks.get(run["playbook"])
        if pb is None or run["state"] != "done":
            return []
        return not_reached(
            pb,
            playbooks,
            outcome=run["outcome"],
            recorded=((s["path"], s["status"]) for s in run["steps"]),
            args={s["path"]: s["args"] for s in run["steps"] if s.get("args")},
            resumption=run["resumes"] is not None and not run["escalation"],
        )

    def rules(self) -> dict[str, Any]:
        playbooks = self._engine.rules.playbooks
        return {
            "rules": self._engine.describe_rules(),
            # what a run by hand may be given: each playbook's declared params, with defaults
            "playbooks": [
                {
                    "name": name,
                    "description": getattr(pb, "description", ""),
                    "params": dict(getattr(pb, "params", {})),
                }
                for name, pb in sorted(playbooks.items())
            ],
        }

    def series(self, metric: str | None, host: str | None) -> dict[str, Any]:
        return {"series": self._models.series(metric, host)}

    # -- feedback, silences, gates, circuits, pause -----------------------------------
    async def feedback(self, incident_id: int, kind: str) -> dict[str, Any]:
        incident = await self._journal.get_incident(incident_id)
        if incident is None:
            raise BatondError(f"no incident {incident_id}")
        await self._journal.feedback(incident_id, kind)
        labels = incident.get("labels") or {}
        metric = incident.get("metric") or labels.get("metric", "")
        adjusted = self._models.feedback_false_positive(metric, labels)
        if adjusted:
            await save_models(self._models, self._config.state_dir)  # must survive a crash
        return {"incident": incident_id, "feedback": kind, "model_adjusted": adjusted}

    async def silences(self) -> dict[str, Any]:
        return {"silences": await self._journal.list_silences(time.time())}

    async def add_silence(self, body: dict[str, Any]) -> dict[str, Any]:
        """A silence of matchers (Alertmanager's ``=``, ``!=``, ``=~``, ``!~`` over rule,
        severity, playbook and labels); refused when they name nothing any loaded rule
        can produce."""
        reason = body.get("reason")
        try:
            parsed = matchers_of(body.get("matchers"))
        except MatcherError as exc:
            raise BatondError(str(exc)) from None
        problems = check_matchers(parsed, self._engine.rules)
        if problems:
            raise BatondError("; ".join(problems))
        matchers = [m.as_json() for m in parsed]
        if not isinstance(reason, str) or not reason.strip():
            raise BatondError('"reason" is required')
        now = time.time()
        try:
            ends_at = now + parse_duration(str(body.get("duration", "")))
        except ValueError as exc:
            raise BatondError(f'"duration": {exc}') from None
        silence_id = await self._journal.add_silence(matchers, now, ends_at, reason)
        await self.refresh_silences()
        return {"id": silence_id, "matchers": matchers, "starts_at": now, "ends_at": ends_at}

    async def expire_silence(self, silence_id: int) -> bool:
        found = await self._journal.expire_silence(silence_id, time.time())
        await self.refresh_silences()
        if found:
            self._engine.silences_changed(f"silence {silence_id} was expired by an operator")
            await self._pipeline.tick(time.time())
        return bool(found)

    async def refresh_silences(self) -> None:
        """The governor suppresses by the journal's active silences."""
        self._engine.governor.set_silences(await self._journal.list_silences(time.time()))

    async def gate(self, run_id: int, verb: str) -> bool:
        runner = self._runner
        method = {"approve": runner.approve, "deny": runner.deny}.get(verb, runner.cancel)
        if not method(run_id):
            return False
        await self._journal.record_approval(run_id, verb)
        return True

    async def reset_circuit(self, key: str, rule: str | None = None) -> list[dict[str, str]]:
        """An operator closes the circuits of ``key`` (of ``rule``, or of every rule); the
        incidents they held back are decided again at once. The circuits reset."""
        scopes = self._engine.reset_circuit(key, rule)
        if not scopes:
            return []
        self._state.changed()
        for name, _ in scopes:
            log.info("circuit of %s %s reset by an operator", name, key)
        await self._pipeline.tick(time.time())
        return [{"rule": name, "key": k} for name, k in scopes]

    # -- by hand -------------------------------------------------------------------------
    async def trigger_schedule(self, name: str) -> dict[str, Any] | None:
        """Run schedule ``name`` now, through the governor; None when there is none."""
        now = time.time()
        decision = self._engine.trigger_schedule(name, now)
        if decision is None:
            return None
        ids = await self._pipeline.act([decision], now, None)
        log.info("schedule %s triggered by an operator: %s", name, _verdict(decision))
        return _decided(decision, ids[0])

    async def run_playbook(self, name: str, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Run playbook ``name`` now with ``params``, through the governor and recorded
        like any run; None when there is none. Params the playbook does not declare
        (when it declares any) are refused."""
        pb = self._engine.rules.playbooks.get(name)
        if pb is None:
            return None
        declared = getattr(pb, "params", {})
        unknown = sorted(set(params) - set(declared)) if declared else []
        if unknown:
            known = ", ".join(sorted(declared))
            raise BatondError(
                f"playbook {name!r} takes no param {unknown[0]!r} (it takes: {known})"
            )
        now = time.time()
        decision = self._engine.run_by_hand(name, params, now)
        ids = await self._pipeline.act([decision], now, None)
        log.info("playbook %s run by an operator: %s", name, _verdict(decision))
        return _decided(decision, ids[0])

    async def set_paused(self, paused: bool) -> dict[str, Any]:
        await self._pause.set_by_operator(paused)
        await self._pipeline.tick(time.time())  # a resume decides what the pause held back
        return {"paused": self._engine.governor.paused}

    # -- reload ------------------------------------------------------------------------
    async def reload(self) -> dict[str, Any]:
        """Validate the new config, rules, playbooks and models; swap whole or keep the old."""
        try:
            config = self._config
            if config.path is not None:
                config = await asyncio.to_thread(load_config, config.path)
            new = await asyncio.to_thread(load_definitions, config)
        except ConfigError as exc:
            self._metrics.reloads.labels("error").inc()
            log.error("reload rejected, old configuration and rules kept:\n%s", exc)
            return {"ok": False, "errors": [str(p) for p in exc.problems]}
        restart_needed = self._adopt_config(config)
        self._adopt(new)
        await self._pipeline.tick(time.time())  # what the changed rules decide again
        rules = new.rules
        log.info("reloaded: %d rules, %d playbooks", rules.rule_count, len(rules.playbooks))
        return {
            "ok": True,
            "rules": rules.rule_count,
            "playbooks": len(rules.playbooks),
            "restart_needed": restart_needed,
        }

    def _adopt(self, new: Definitions) -> None:
        self._pipeline.replace_rules(new.rules)
        self._runner.replace_playbooks(new.rules.playbooks)
        self._models.replace_specs(new.models)
        self._metrics.rules_loaded.set(new.rules.rule_count)
        self._metrics.reloads.labels("ok").inc()

    def _adopt_config(self, new: Config) -> list[str]:
        """Adopt what can change while running; name what needs a restart."""
        old = self._config
        restart_needed = [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
        for name in restart_needed:
            log.warning("config: %s changed; it takes effect after a restart", name)
        governor = self._engine.governor
        governor.settings = GovernorSettings.of(new.governor)
        governor.shadow = new.mode == "shadow"
        self._runner.set_max_concurrent(new.governor.max_concurrent_runs)
        self._config = new
        self._pause.use_kill_file(new.governor.kill_switch_file)
        return restart_needed


def _verdict(decision: Decision) -> str:
    return f"suppressed ({decision.suppressed})" if decision.suppressed else "run started"


def _decided(decision: Decision, decision_id: int | None) -> dict[str, Any]:
    """The answer to a run by hand: what was decided, and under which id (the run it
    starts carries it as ``decision_id``: GET /api/v1/runs finds the run)."""
    return {
        "decision": decision_id,
        "rule": decision.rule,
        "key": decision.key,
        "playbook": decision.playbook or decision.candidates[0],
        "started": decision.playbook is not None,
        "suppressed": decision.suppressed,
        "params": dict(decision.params),
    }

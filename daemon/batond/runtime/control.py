"""What the running daemon knows and can be asked: the state behind the API.

``DaemonControl`` holds the components (engine, runner, journal, models,
sources) and implements the API's ``Control`` protocol; ``service.Daemon``
adds the lifecycle on top.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from batond.engine.engine import NO_RUN
from batond.engine.types import Decision, Output, Resolved
from batond.errors import BatondError, ConfigError
from batond.events import Input, Sample
from batond.load.config import Config, load_config
from batond.metrics import Metrics
from batond.units import parse_duration

if TYPE_CHECKING:
    from aiohttp import web

    from batond.anomaly import ModelSet
    from batond.engine.engine import Engine, RuleSet
    from batond.intake.bus import Bus
    from batond.intake.mqtt import MqttSource
    from batond.intake.recorder import Recorder
    from batond.journal.facade import Journal
    from batond.remedy.records import InterruptedRun
    from batond.remedy.runner import RunEnded, Runner

__all__ = ["DaemonControl"]

log = logging.getLogger("batond")


class DaemonControl:
    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.ready = False
        self.exit_code = 0
        self.paused_by_journal = False
        self.journal: Journal | None = None
        self.recorder: Recorder | None = None
        self.mqtt: MqttSource | None = None
        self.sources: dict[str, Any] = {}
        self.bus: Bus
        self.engine: Engine
        self.runner: Runner
        self.rules_set: RuleSet
        self.models: ModelSet
        self._interrupted: list[InterruptedRun] = []
        self.pause_checked = 0.0  # monotonic time of the last kill switch file check
        self.state_dirty = False  # inputs changed rule state since it was last saved

    # -- building ----------------------------------------------------------
    def load_definitions(self) -> None:
        """Rules, playbooks and models from the config; raises ConfigError."""
        from batond.load.rulefiles import load_rules

        # with built-in defaults (no config file) the /etc paths may not exist yet
        self.rules_set = load_rules(list(self.config.rules), missing_ok=self.config.path is None)
        self.models = self._load_models()

    def _load_models(self, config: Config | None = None) -> ModelSet:
        from batond.anomaly import ModelSet
        from batond.load.modelfile import load_models

        paths = (config or self.config).models
        specs = load_models([p for p in paths if p.exists()])
        return ModelSet(specs, notify=lambda note: log.warning("anomaly model: %s", note))

    async def open_journal(self) -> None:
        from batond.journal.facade import Journal

        self.journal = await asyncio.to_thread(Journal.open, self.config.state_dir)
        self.paused_by_journal = await self.journal.is_paused()
        # before anything can start a run: in-flight runs of the last life become interrupted
        self._interrupted = await self.journal.recover_interrupted(time.time())
        state = await self.journal.load_rule_state()
        self._saved_rule_state = state
        if self.config.journal.record is not None:
            from batond.intake.recorder import Recorder

            self.recorder = Recorder(self.config.state_dir / "record", self.config.journal.record)
        from batond.journal.model_state import load_state

        try:
            load_state(self.models, self.config.state_dir)
        except BatondError as exc:
            log.warning("anomaly model state not loaded: %s", exc)
        for note in self.models.state_notes:
            log.info("anomaly model: %s", note)

    async def reconcile(self) -> None:
        """Close journal incidents the restored engine does not hold open (a kill in between)."""
        assert self.journal is not None
        open_keys = {(name, key) for name, st in self.engine.states.items() for key in st.open}
        await self.journal.reconcile_incidents(open_keys, time.time())
        await self._refresh_silences()

    def build_runtime(self) -> None:
        from batond.engine.engine import Engine
        from batond.engine.governor import Governor
        from batond.remedy.actions import ActionContext
        from batond.remedy.runner import Runner

        assert self.journal is not None
        governor = Governor(self.config.governor, shadow=self.config.mode == "shadow")
        self.engine = Engine(self.rules_set, governor)
        if self._saved_rule_state:
            self.engine.import_state(self._saved_rule_state)
        self.metrics.rules_loaded.set(self.rules_set.rule_count)
        self._build_sources()
        publish = self.mqtt.publish if self.mqtt is not None else None
        self.runner = Runner(
            playbooks=self.rules_set.playbooks,
            store=self.journal,
            metrics=self.metrics,
            actions=ActionContext(mqtt_publish=publish),
            on_outcome=self.on_run_ended,
            on_candidate=lambda rule, pb, key: self.engine.run_started(rule, pb, key, time.time()),
            max_concurrent=self.config.governor.max_concurrent_runs,
        )
        self.metrics.bind_gauges(
            queue_depth=self.bus.depth,
            anomaly_series=self.models.series_count,
            circuits_open=lambda: len(self.engine.governor.open_circuits()),
            runs_active=self.runner.active_count,
        )

    def _build_sources(self) -> None:
        from batond.intake.host import HostSource

        self.sources["host"] = HostSource(
            self.config.host, self.config.node, self.bus, self.metrics
        )
        if self.config.mqtt is not None:
            from batond.intake.mqtt import MqttSource

            self.mqtt = MqttSource(self.config.mqtt, self.bus, self.metrics)
            self.sources["mqtt"] = self.mqtt

    def add_input_routes(self, app: web.Application) -> None:
        from batond.intake.http import add_input_routes

        add_input_routes(app, self.bus, self.metrics)

    async def resume_interrupted(self) -> None:
        """Resume or escalate what the last life left interrupted (per on_interrupt:)."""
        for record in self._interrupted:
            await self.runner.resume(record)
        self._interrupted = []

    # -- the decision path ---------------------------------------------------
    def evaluate(self, item: Input, now: float) -> list[Output]:
        score = self.models.observe(item) if isinstance(item, Sample) else 0.0
        outputs = self.engine.evaluate(item, now, score)
        for rule, message in self.engine.take_errors():
            log.warning("rule %s: expression failed (counted false): %s", rule, message)
        return outputs

    async def on_decision(self, decision: Decision, arrived: float | None) -> None:
        assert self.journal is not None
        self.metrics.decisions.labels(decision.rule, decision.result).inc()
        if not decision.opens_incident:  # a schedule came due: the schedule source's input
            self.metrics.events_received.labels("schedule").inc()
        decision_id, incident_id = await self.journal.record_decision(decision)
        if decision.playbook is not None:
            started = self.runner.start(
                decision,
                decision_id=decision_id,
                incident_id=incident_id,
                arrived=arrived,
                verify_by_run=self.engine.resolves_by_run(decision.rule),
            )
            if not started:  # the runner refused (its mode, or stopping): no run will end
                await self.handle(
                    self.engine.record_outcome(
                        decision.rule, decision.playbook, decision.key, NO_RUN, time.time()
                    )
                )
        elif decision.suppressed == "circuit_open" and self.engine.governor.take_escalation(
            decision.target
        ):  # SPEC section 7: escalation instead, once per opening of the circuit
            self.runner.escalate_only(decision, decision_id=decision_id, incident_id=incident_id)
        if incident_id is not None:
            await self._publish_incident(incident_id)

    async def handle(self, outputs: list[Output], arrived: float | None = None) -> None:
        """Act on what the engine said: decisions, resolved incidents."""
        for out in outputs:
            if isinstance(out, Decision):
                await self.on_decision(out, arrived)
            elif isinstance(out, Resolved):
                await self.on_resolved(out)
        if outputs:
            self.save_state_soon()

    async def on_resolved(self, resolved: Resolved) -> None:
        assert self.journal is not None
        incident_id = await self.journal.resolve_incident(resolved.rule, resolved.key, resolved.ts)
        self.runner.incident_resolved(resolved.rule, resolved.key)
        if incident_id is not None:
            await self._publish_incident(incident_id)

    def on_run_ended(self, ended: RunEnded) -> None:
        """Outcome feedback: stats, circuits, incidents only a run can resolve.

        An escalation (paging someone) says nothing about whether remediation
        works, so it feeds no statistics and resolves nothing.
        """
        outputs: list[Output] = []
        if not ended.escalation:
            outputs = self.engine.record_outcome(
                ended.rule, ended.playbook, ended.key, ended.outcome, time.time()
            )
        task = asyncio.ensure_future(self._after_run(ended, outputs))
        task.add_done_callback(_log_failure)

    async def _after_run(self, ended: RunEnded, outputs: list[Output]) -> None:
        await self.handle(outputs)
        self.save_state_soon()  # statistics and circuits changed even without outputs
        await self._publish("runs", ended.run_id, await self.run(ended.run_id))

    async def _publish_incident(self, incident_id: int) -> None:
        if self.mqtt is None or self.config.mqtt is None or not self.config.mqtt.publish_prefix:
            return
        assert self.journal is not None
        await self._publish("incidents", incident_id, await self.journal.get_incident(incident_id))

    async def _publish(self, kind: str, obj_id: int, obj: dict[str, Any] | None) -> None:
        cfg = self.config.mqtt
        if self.mqtt is None or cfg is None or not cfg.publish_prefix or obj is None:
            return
        try:
            await self.mqtt.publish(f"{cfg.publish_prefix}/{kind}/{obj_id}", orjson.dumps(obj), 1)
        except BatondError as exc:
            log.warning("publishing %s/%s failed: %s", kind, obj_id, exc)

    def save_state_soon(self) -> None:
        """Coalesced: a storm of changes costs a few state exports, not one each."""
        if self.journal is not None:
            self.journal.save_rule_state_soon(self.engine.export_state)

    async def save_state(self) -> None:
        if self.journal is not None:
            await self.journal.save_rule_state(self.engine.export_state())

    # -- housekeeping --------------------------------------------------------
    def refresh_pause(self) -> None:
        kill_file = self.config.governor.kill_switch_file
        by_file = kill_file is not None and kill_file.exists()
        self.engine.governor.set_paused(self.paused_by_journal or by_file)
        self.pause_checked = time.monotonic()

    async def train_models(self, now: float) -> None:
        for job in self.models.training_jobs(now):
            apply = await asyncio.to_thread(job)
            apply()

    async def prune(self, now: float) -> None:
        if self.journal is not None:
            await self.journal.prune(self.config.journal.retention, now)

    async def save_models(self) -> None:
        """Export on the loop (it reads live series), write in a thread."""
        from batond.journal.model_state import write_state

        try:
            await asyncio.to_thread(write_state, self.models.export_state(), self.config.state_dir)
        except (OSError, BatondError) as exc:
            log.warning("anomaly model state not saved: %s", exc)

    async def close(self) -> None:
        if self.journal is not None:
            await self.save_models()
            await self.journal.close()
            self.journal = None
        if self.recorder is not None:
            self.recorder.close()

    # -- Control (the API) ---------------------------------------------------
    def is_ready(self) -> bool:
        return self.ready

    def status(self) -> dict[str, Any]:
        governor = self.engine.governor
        return {
            "node": self.config.node,
            "mode": self.config.mode,
            "paused": governor.paused,
            "ready": self.ready,
            "sources": {name: getattr(s, "state", "running") for name, s in self.sources.items()},
            "rules_loaded": self.rules_set.rule_count,
            "playbooks_loaded": len(self.rules_set.playbooks),
            "open_incidents": self.engine.open_incident_count(),
            "open_circuits": governor.open_circuits(),
            "runs_active": self.runner.active_count(),
        }

    async def incidents(self, limit: int) -> dict[str, Any]:
        assert self.journal is not None
        return await self.journal.list_incidents(limit)

    async def runs(self, limit: int) -> dict[str, Any]:
        assert self.journal is not None
        return await self.journal.list_runs(limit)

    async def run(self, run_id: int) -> dict[str, Any] | None:
        assert self.journal is not None
        return await self.journal.get_run(run_id)

    async def incident(self, incident_id: int) -> dict[str, Any] | None:
        assert self.journal is not None
        return await self.journal.get_incident(incident_id)

    async def feedback(self, incident_id: int, kind: str) -> dict[str, Any]:
        assert self.journal is not None
        incident = await self.journal.get_incident(incident_id)
        if incident is None:
            raise BatondError(f"no incident {incident_id}")
        await self.journal.feedback(incident_id, kind)
        labels = incident.get("labels") or {}
        metric = incident.get("metric") or labels.get("metric", "")
        adjusted = self.models.feedback_false_positive(metric, labels)
        if adjusted:
            await self.save_models()  # feedback must survive a crash
        return {"incident": incident_id, "feedback": kind, "model_adjusted": adjusted}

    def rules(self) -> dict[str, Any]:
        return {"rules": self.engine.describe_rules()}

    def series(self, metric: str | None, host: str | None) -> dict[str, Any]:
        return {"series": self.models.series(metric, host)}

    async def silences(self) -> dict[str, Any]:
        assert self.journal is not None
        return {"silences": await self.journal.list_silences(time.time())}

    async def add_silence(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.journal is not None
        matchers = body.get("matchers")
        reason = body.get("reason")
        if (
            not isinstance(matchers, dict)
            or not matchers
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in matchers.items())
        ):
            raise BatondError('"matchers" must be a non-empty object of strings')
        if not isinstance(reason, str) or not reason.strip():
            raise BatondError('"reason" is required')
        now = time.time()
        try:
            ends_at = now + parse_duration(str(body.get("duration", "")))
        except ValueError as exc:
            raise BatondError(f'"duration": {exc}') from None
        silence_id = await self.journal.add_silence(matchers, now, ends_at, reason)
        await self._refresh_silences()
        return {"id": silence_id, "matchers": matchers, "starts_at": now, "ends_at": ends_at}

    async def expire_silence(self, silence_id: int) -> bool:
        assert self.journal is not None
        found = await self.journal.expire_silence(silence_id, time.time())
        await self._refresh_silences()
        return bool(found)

    async def _refresh_silences(self) -> None:
        assert self.journal is not None
        self.engine.governor.set_silences(await self.journal.list_silences(time.time()))

    async def gate(self, run_id: int, verb: str) -> bool:
        assert self.journal is not None
        method = {"approve": self.runner.approve, "deny": self.runner.deny}.get(
            verb, self.runner.cancel
        )
        if not method(run_id):
            return False
        await self.journal.record_approval(run_id, verb)
        return True

    async def reset_circuit(self, target: str) -> bool:
        """An operator closes ``target``'s circuit; False when it was not open."""
        if not self.engine.governor.reset_circuit(target):
            return False
        self.save_state_soon()
        log.info("circuit of %s reset by an operator", target)
        return True

    async def set_paused(self, paused: bool) -> dict[str, Any]:
        assert self.journal is not None
        await self.journal.set_paused(paused)
        self.paused_by_journal = paused
        self.refresh_pause()
        return {"paused": self.engine.governor.paused}

    async def reload(self) -> dict[str, Any]:
        """Validate the new config, rules, playbooks and models; swap whole or keep the old."""
        from batond.load.rulefiles import load_rules

        try:
            config = self.config
            if config.path is not None:
                config = await asyncio.to_thread(load_config, config.path)
            new_rules = await asyncio.to_thread(load_rules, list(config.rules), config.path is None)
            new_models = await asyncio.to_thread(self._load_models, config)
        except ConfigError as exc:
            self.metrics.reloads.labels("error").inc()
            log.error("reload rejected, old configuration and rules kept:\n%s", exc)
            return {"ok": False, "errors": [str(p) for p in exc.problems]}
        restart_needed = self._apply_config(config)
        self.rules_set = new_rules
        self.engine.replace_rules(new_rules)
        self.runner.replace_playbooks(new_rules.playbooks)
        self.models.replace_specs(new_models)
        self.metrics.rules_loaded.set(new_rules.rule_count)
        self.metrics.reloads.labels("ok").inc()
        log.info("reloaded: %d rules, %d playbooks", new_rules.rule_count, len(new_rules.playbooks))
        return {
            "ok": True,
            "rules": new_rules.rule_count,
            "playbooks": len(new_rules.playbooks),
            "restart_needed": restart_needed,
        }

    def _apply_config(self, new: Config) -> list[str]:
        """Adopt what can change while running; name what needs a restart."""
        from batond.engine.governor import GovernorSettings

        old = self.config
        fixed = ("node", "state_dir", "http", "mqtt", "host")
        restart_needed = [name for name in fixed if getattr(old, name) != getattr(new, name)]
        for name in restart_needed:
            log.warning("config: %s changed; it takes effect after a restart", name)
        governor = self.engine.governor
        governor.settings = GovernorSettings.of(new.governor)
        governor.shadow = new.mode == "shadow"
        self.config = new
        self.refresh_pause()
        return restart_needed


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("after-run bookkeeping failed", exc_info=task.exception())

"""The composition root: builds every component of a daemon, fully formed, in order.

:func:`build` loads the definitions (a ConfigError before anything opens),
opens the journal, turns the runs the last life left in flight into
``interrupted``, restores rule and model state, and wires engine, governor,
models, runner, sources, pipeline and operator together. What it returns is
one frozen :class:`Components`; nothing in it is filled in later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batond.anomaly import ModelSet
from batond.engine.engine import Engine
from batond.engine.governor import Governor
from batond.errors import BatondError
from batond.events import Input
from batond.intake.bus import Bus
from batond.intake.host import HostSource
from batond.intake.recorder import Recorder, record_dir
from batond.journal.facade import Journal
from batond.journal.model_state import load_state
from batond.load.config import Config
from batond.metrics import Metrics
from batond.remedy.actions import ActionContext
from batond.remedy.records import InterruptedRun
from batond.remedy.runner import Runner
from batond.runtime.definitions import Definitions, load_definitions
from batond.runtime.notify import Notifier as Notify
from batond.runtime.operator import Operator, Source
from batond.runtime.pipeline import Pipeline, Publisher
from batond.runtime.ports import (
    JournalLedger,
    MqttPublisher,
    PauseSwitch,
    RuleStateSaver,
    TaskSet,
    save_models,
)
from batond.runtime.reporter import DaemonReporter
from batond.runtime.sdnotify import Notifier

__all__ = ["Components", "build"]

log = logging.getLogger("batond")


@dataclass(frozen=True, slots=True)
class Components:
    """A daemon's parts, wired; :mod:`batond.runtime.daemon` runs them."""

    config: Config  # as started with (the operator holds the one a reload brought)
    metrics: Metrics
    journal: Journal
    bus: Bus
    sources: Mapping[str, Source]
    engine: Engine
    models: ModelSet
    actions: ActionContext
    runner: Runner
    pipeline: Pipeline
    operator: Operator
    pause: PauseSwitch
    state: RuleStateSaver
    after_run: TaskSet  # the after-run work of ended runs (resolutions, publishing)
    recorder: Recorder | None  # only when journal.record is configured
    interrupted: tuple[InterruptedRun, ...]  # found at start, resumed once READY
    notify: Notify | None  # only when notify: {url} is configured

    async def close(self) -> None:
        """Release what the components hold (after serving, or a start that failed)."""
        if self.notify is not None:
            await self.notify.close()
        await save_models(self.models, self.config.state_dir)
        await self.actions.close()
        await self.journal.close()
        if self.recorder is not None:
            self.recorder.close()


@dataclass(frozen=True, slots=True)
class _Restored:
    """What the journal and state folder hold from the last life."""

    paused: bool
    interrupted: tuple[InterruptedRun, ...]
    rule_state: dict[str, Any] | None


async def build(config: Config, notifier: Notifier, metrics: Metrics | None = None) -> Components:
    """Every component, or an exception with nothing left open (ConfigError, BatondError)."""
    if config.fleet is not None:
        # parsed and checked already, so that files written for the fleet stay valid, but
        # not served: a daemon that pretended to be an agent would drop its batches in silence
        raise BatondError(
            f"{config.path}: fleet role {config.fleet.role.value} is not served by this "
            "batond yet; remove the fleet: section (docs/fleet.md)"
        )
    notifier.status("loading rules and models")
    definitions = load_definitions(config)  # ConfigError before anything opens
    notifier.status("opening journal")
    journal = await asyncio.to_thread(Journal.open, config.state_dir)
    try:
        return await _wire(config, metrics or Metrics(), journal, definitions)
    except BaseException:
        await journal.close()
        raise


async def _wire(
    config: Config, metrics: Metrics, journal: Journal, definitions: Definitions
) -> Components:
    restored = await _restore(journal)
    recorder = _recorder(config)
    models = _models(config, definitions)
    engine = Engine(definitions.rules, Governor(config.governor, shadow=config.mode == "shadow"))
    if restored.rule_state:
        engine.import_state(restored.rule_state)
    metrics.rules_loaded.set(definitions.rules.rule_count)
    bus = Bus(metrics)
    bus.settle = journal.settled  # input is acknowledged once its decisions are journaled
    sources, publisher, actions = _sources(config, bus, metrics, journal)
    runner = Runner(
        playbooks=definitions.rules.playbooks,
        store=journal,
        metrics=metrics,
        actions=actions,
        max_concurrent=config.governor.max_concurrent_runs,
    )
    state = RuleStateSaver(journal, engine)
    pause = PauseSwitch(
        engine.governor, journal, config.governor.kill_switch_file, by_operator=restored.paused
    )
    after_run = TaskSet("after-run bookkeeping")
    notify = Notify(config.notify.url, config.node, metrics) if config.notify else None
    pipeline = Pipeline(
        engine,
        JournalLedger(journal, metrics),
        runner,
        models=models,
        publisher=publisher,
        state=state,
        tap=recorder.append if recorder is not None else None,
        spawn=after_run.spawn,
        on_error=_evaluation_failed,
        reporter=DaemonReporter(metrics, notify),
    )
    runner.listen(pipeline)  # outcomes feed back through the pipeline
    operator = Operator(
        config=config, metrics=metrics, journal=journal, engine=engine, models=models,
        runner=runner, pipeline=pipeline, sources=sources, pause=pause, state=state,
    )  # fmt: skip
    await _reconcile(journal, engine)
    await operator.refresh_silences()
    _bind_gauges(metrics, bus, models, engine)
    metrics.journal_writable.set_function(lambda: 0.0 if journal.trouble else 1.0)
    return Components(
        config=config, metrics=metrics, journal=journal, bus=bus, sources=sources,
        engine=engine, models=models, actions=actions, runner=runner, pipeline=pipeline,
        operator=operator, pause=pause, state=state, after_run=after_run, recorder=recorder,
        interrupted=restored.interrupted, notify=notify,
    )  # fmt: skip


async def _restore(journal: Journal) -> _Restored:
    paused = await journal.is_paused()
    # before anything can start a run: in-flight runs of the last life become interrupted
    interrupted = await journal.recover_interrupted(time.time())
    return _Restored(paused, tuple(interrupted), await journal.load_rule_state())


def _recorder(config: Config) -> Recorder | None:
    if config.journal.record is None:
        return None
    return Recorder(record_dir(config.state_dir), config.journal.record)


def _models(config: Config, definitions: Definitions) -> ModelSet:
    """The anomaly models, with what their series learned before the restart."""
    models = ModelSet(definitions.models, notify=_model_note)
    try:
        load_state(models, config.state_dir)
    except BatondError as exc:
        log.warning("anomaly model state not loaded: %s", exc)
    for note in models.state_notes:
        log.info("anomaly model: %s", note)
    return models


def _evaluation_failed(item: Input, exc: Exception) -> None:
    log.error("evaluating %r failed", item, exc_info=exc)


def _model_note(note: str) -> None:
    log.warning("anomaly model: %s", note)


def _sources(
    config: Config, bus: Bus, metrics: Metrics, journal: Journal
) -> tuple[dict[str, Source], Publisher | None, ActionContext]:
    """The input sources, the publisher of incidents and runs, the actions' resources."""
    sources: dict[str, Source] = {
        "host": HostSource(config.host, config.node, bus, metrics),
    }
    if config.mqtt is None:
        return sources, None, ActionContext()
    # imported only when MQTT is configured: aiomqtt and paho cost start-up time otherwise
    from batond.intake.mqtt import MqttSource

    mqtt = MqttSource(config.mqtt, bus, metrics)
    sources["mqtt"] = mqtt
    prefix = config.mqtt.publish_prefix
    publisher = MqttPublisher(mqtt, prefix, journal) if prefix else None
    return sources, publisher, ActionContext(mqtt_publish=mqtt.publish)


async def _reconcile(journal: Journal, engine: Engine) -> None:
    """Close journal incidents the restored engine does not hold open (a kill in between)."""
    open_keys = {(name, key) for name, st in engine.states.items() for key in st.open}
    await journal.reconcile_incidents(open_keys, time.time())


def _bind_gauges(metrics: Metrics, bus: Bus, models: ModelSet, engine: Engine) -> None:
    governor = engine.governor
    metrics.bind_gauges(
        queue_depth=bus.depth,
        anomaly_series=models.series_count,
        anomaly_refused_series=models.refused_series_count,
        anomaly_refused_samples=models.refused_count,
        circuits_open=lambda: len(governor.open_circuits()),
    )

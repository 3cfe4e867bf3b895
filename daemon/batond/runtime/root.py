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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batond.anomaly import ModelSet
from batond.engine.engine import Engine
from batond.engine.governor import Governor
from batond.errors import BatondError
from batond.events import Input
from batond.fleet.agent import SEQ_STATE, Batcher
from batond.fleet.partition import batch_topic
from batond.fleet.remote import RemoteRequests
from batond.fleet.requests import OutcomeReports, RemoteReporter, RequestDesk
from batond.fleet.signing import read_key
from batond.intake.bus import Bus
from batond.intake.host import HostSource
from batond.intake.recorder import Recorder, record_dir
from batond.journal.facade import Journal
from batond.journal.model_state import load_state
from batond.load.config import Config
from batond.metrics import Metrics
from batond.remedy.actions import ActionContext
from batond.remedy.actions.core import RemoteAsk
from batond.remedy.records import InterruptedRun
from batond.remedy.runner import Runner
from batond.runtime.definitions import Definitions, load_definitions
from batond.runtime.notify import Notifier as Notify
from batond.runtime.operator import Operator, Source
from batond.runtime.pipeline import Pipeline, Publisher, Reporter
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

if TYPE_CHECKING:
    from batond.engine.types import Output
    from batond.fleet.central import Central
    from batond.intake.mqtt import MqttSource

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
    fleet_agent: Batcher | None = None  # only with fleet: {role: agent}

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
    notifier.status("loading rules and models")
    definitions = load_definitions(config)  # ConfigError before anything opens
    key = _agent_key(config)  # BatondError before anything opens
    notifier.status("opening journal")
    journal = await asyncio.to_thread(_open_journal, config)
    try:
        return await _wire(config, metrics or Metrics(), journal, definitions, key)
    except BaseException:
        await journal.close()
        raise


async def _wire(
    config: Config, metrics: Metrics, journal: Journal, definitions: Definitions, key: bytes | None
) -> Components:
    restored = await _restore(journal, config)
    recorder = _recorder(config)
    models = _models(config, definitions)
    engine = _engine(config, definitions, restored.rule_state, metrics)
    bus = Bus(metrics)
    bus.settle = journal.settled  # input is acknowledged once its decisions are journaled
    intake = _sources(config, bus, metrics, journal)
    central = _central(config, bus, metrics, engine)
    if central is not None:
        intake.sources["fleet"] = central
    runner = Runner(
        playbooks=definitions.rules.playbooks,
        store=journal,
        metrics=metrics,
        actions=intake.actions,
        max_concurrent=config.governor.max_concurrent_runs,
    )
    state = RuleStateSaver(journal, engine)
    pause = PauseSwitch(
        engine.governor, journal, config.governor.kill_switch_file, by_operator=restored.paused
    )
    after_run = TaskSet("after-run bookkeeping")
    notify = Notify(config.notify.url, config.node, metrics) if config.notify else None
    agent = await _agent(config, intake.mqtt, journal, metrics, key)
    reporter: Reporter = DaemonReporter(metrics, notify)
    if agent is not None:  # and the outcome reports of remote requests besides
        reporter = RemoteReporter(reporter, agent.reports, after_run.spawn)
    pipeline = Pipeline(
        engine, JournalLedger(journal, metrics), runner, models=models,
        publisher=intake.publisher, state=state, tap=_tap(recorder, agent),
        spawn=after_run.spawn, on_error=_evaluation_failed, reporter=reporter, fence=central,
    )  # fmt: skip
    runner.listen(pipeline)  # outcomes feed back through the pipeline
    if central is not None:
        central.on_claim(_run_recovery(config, journal, runner, engine))
        central.agents_to(journal.note_agents)
        central.anomalies_from(models.anomalous)
        intake.sources["fleet_rules"] = _fleet_rules(config, central, engine, journal, pipeline)
    if agent is not None:
        _take_requests(agent, config, engine, pipeline, journal, after_run, metrics)
    operator = Operator(
        config=config, metrics=metrics, journal=journal, engine=engine, models=models,
        runner=runner, pipeline=pipeline, sources=intake.sources, pause=pause, state=state,
        fleet=central,
    )  # fmt: skip
    if not _shared(config):  # (the fleet's open incidents are the other instances' too)
        await _reconcile(journal, engine)
    await operator.refresh_silences()
    _bind_gauges(metrics, bus, models, engine, journal)
    return Components(
        config=config, metrics=metrics, journal=journal, bus=bus, sources=intake.sources,
        engine=engine, models=models, actions=intake.actions, runner=runner, pipeline=pipeline,
        operator=operator, pause=pause, state=state, after_run=after_run, recorder=recorder,
        interrupted=restored.interrupted, notify=notify,
        fleet_agent=agent.batcher if agent is not None else None,
    )  # fmt: skip


def _open_journal(config: Config) -> Journal:
    """SQLite in ``state_dir``, or PostgreSQL (``journal.database``; a central instance's
    is the fleet's, shared with the other instances)."""
    fleet = config.fleet
    instance = fleet.instance if fleet is not None and fleet.is_central else None
    return Journal.open(config.state_dir, config.journal.database_url, instance=instance)


def _shared(config: Config) -> bool:
    """Whether other live processes write the same journal (central instances)."""
    return config.fleet is not None and config.fleet.is_central


async def _restore(journal: Journal, config: Config) -> _Restored:
    paused = await journal.is_paused()
    if _shared(config):
        # the unfinished runs in a fleet's journal are the live instances' own: marking
        # them interrupted would lie about runs in progress (docs/fleet.md, limits)
        log.info("fleet central instance: the runs of other instances are left as they are")
        return _Restored(paused, (), await journal.load_rule_state())
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


@dataclass(frozen=True, slots=True)
class _Intake:
    sources: dict[str, Source]
    publisher: Publisher | None  # of incidents and runs (mqtt.publish_prefix)
    actions: ActionContext  # the actions' resources
    mqtt: MqttSource | None  # the one MQTT connection, when configured


def _sources(config: Config, bus: Bus, metrics: Metrics, journal: Journal) -> _Intake:
    """The input sources, the publisher of incidents and runs, the actions' resources."""
    sources: dict[str, Source] = {
        "host": HostSource(config.host, config.node, bus, metrics),
    }
    if config.mqtt is None:
        return _Intake(sources, None, ActionContext(), None)
    # imported only when MQTT is configured: aiomqtt and paho cost start-up time otherwise
    from batond.intake.mqtt import MqttSource

    mqtt = MqttSource(config.mqtt, bus, metrics)
    sources["mqtt"] = mqtt
    prefix = config.mqtt.publish_prefix
    publisher = MqttPublisher(mqtt, prefix, journal) if prefix else None
    actions = ActionContext(mqtt_publish=mqtt.publish, remote=_remote(config, mqtt, metrics))
    return _Intake(sources, publisher, actions, mqtt)


def _remote(config: Config, mqtt: MqttSource, metrics: Metrics) -> RemoteAsk | None:
    """A central instance's ``remote`` steps: requests out, outcome reports routed back."""
    fleet = config.fleet
    if fleet is None or not fleet.is_central:
        return None
    requests = RemoteRequests(
        prefix=fleet.prefix, instance=fleet.instance, keys_dir=fleet.keys_dir,
        publish=mqtt.publish, metrics=metrics,
    )  # fmt: skip
    mqtt.route(requests.outcomes, 1, requests.take)
    return requests.ask


# -- the fleet agent (docs/fleet.md#agent) ----------------------------------------------
@dataclass(frozen=True, slots=True)
class _Agent:
    batcher: Batcher
    reports: OutcomeReports
    mqtt: MqttSource
    key: bytes


def _agent_key(config: Config) -> bytes | None:
    """The agent's HMAC key (BatondError when it cannot be read or is too short)."""
    fleet = config.fleet
    if fleet is None or fleet.is_central:
        return None
    if fleet.key_file is None or config.mqtt is None:  # (load_config refuses both)
        raise BatondError(f"{config.path}: fleet role agent needs fleet.key_file and mqtt:")
    return read_key(fleet.key_file)


async def _agent(
    config: Config, mqtt: MqttSource | None, journal: Journal, metrics: Metrics, key: bytes | None
) -> _Agent | None:
    fleet = config.fleet
    if fleet is None or key is None or mqtt is None:
        return None
    saved = await journal.load_state(SEQ_STATE) or {}
    last = saved.get("seq")
    batcher = Batcher(
        host=fleet.host, node=config.node,
        topic=batch_topic(fleet.prefix, fleet.partitions, fleet.host),
        interval=fleet.batch_interval, publish=mqtt.publish, seqs=journal, metrics=metrics,
        last_seq=last if isinstance(last, int) and not isinstance(last, bool) else 0,
    )  # fmt: skip
    reports = OutcomeReports(host=fleet.host, prefix=fleet.prefix, key=key, publish=mqtt.publish)
    return _Agent(batcher, reports, mqtt, key)


def _take_requests(
    agent: _Agent,
    config: Config,
    engine: Engine,
    pipeline: Pipeline,
    journal: Journal,
    after_run: TaskSet,
    metrics: Metrics,
) -> None:
    """Remediation requests from central: subscribed on every connection, judged, decided."""
    assert config.fleet is not None
    desk = RequestDesk(
        prefix=config.fleet.prefix, key=agent.key, engine=engine, act=pipeline.act,
        nonces=journal, reports=agent.reports, spawn=after_run.spawn, metrics=metrics,
    )  # fmt: skip
    agent.mqtt.route(desk.topic, 1, desk.take)


def _tap(recorder: Recorder | None, agent: _Agent | None) -> Callable[[Input], None] | None:
    """Who sees each input the pipeline evaluated: the recorder, the agent's batches."""
    if agent is None:
        return recorder.append if recorder is not None else None
    if recorder is None:
        return agent.batcher.take
    record, take = recorder.append, agent.batcher.take

    def both(item: Input) -> None:
        record(item)
        take(item)

    return both


def _run_recovery(
    config: Config, journal: Journal, runner: Runner, engine: Engine
) -> Callable[[int, frozenset[str]], Awaitable[None]]:
    """What a central instance does with a partition it claims: the runs there that an
    instance gone (or this one's last life) left unfinished become ``interrupted`` and
    are resumed or escalated here, per ``on_interrupt:``."""
    from batond.fleet.central import key_partition

    assert config.fleet is not None
    me, partitions, started = config.fleet.instance, config.fleet.partitions, time.time()

    async def recover(partition: int, gone: frozenset[str]) -> None:
        def of(instance: str | None, created_at: float, key: str) -> bool:
            left = instance in gone or (instance == me and created_at < started)
            return left and key_partition(key, partitions) == partition

        for record in await journal.recover_interrupted(time.time(), of):
            log.warning(
                "fleet: run %d of %s on partition %d was left unfinished; interrupted",
                record.run_id, record.rule, partition,
            )  # fmt: skip
            await runner.resume(record, verify_by_run=engine.resolves_by_run(record.rule))

    return recover


def _central(config: Config, bus: Bus, metrics: Metrics, engine: Engine) -> Central | None:
    """A central instance's part of the fleet: ownership, partition sessions, fencing."""
    fleet = config.fleet
    if fleet is None or not fleet.is_central:
        return None
    assert config.mqtt is not None and fleet.database is not None  # (load.config checks)
    from batond.fleet.central import Central  # psycopg only for a central instance

    return Central(fleet, config.mqtt, bus, metrics, fleet.database, engine)


async def _reconcile(journal: Journal, engine: Engine) -> None:
    """Close journal incidents the restored engine does not hold open (a kill in between)."""
    open_keys = {(name, key) for name, st in engine.states.items() for key in st.open}
    await journal.reconcile_incidents(open_keys, time.time())


def _engine(
    config: Config, definitions: Definitions, rule_state: dict[str, Any] | None, metrics: Metrics
) -> Engine:
    engine = Engine(definitions.rules, Governor(config.governor, shadow=config.mode == "shadow"))
    if rule_state:
        engine.import_state(rule_state)
    metrics.rules_loaded.set(definitions.rules.rule_count)
    return engine


def _bind_gauges(
    metrics: Metrics, bus: Bus, models: ModelSet, engine: Engine, journal: Journal
) -> None:
    metrics.journal_writable.set_function(lambda: 0.0 if journal.trouble else 1.0)
    governor = engine.governor
    metrics.bind_gauges(
        queue_depth=bus.depth,
        anomaly_series=models.series_count,
        anomaly_refused_series=models.refused_series_count,
        anomaly_refused_samples=models.refused_count,
        circuits_open=lambda: len(governor.open_circuits()),
    )


def _fleet_rules(
    config: Config, central: Central, engine: Engine, journal: Journal, pipeline: Pipeline
) -> Source:
    """Fleet rules, evaluated by the instance that holds partition 0 (docs/fleet.md)."""
    from batond.fleet.fleetrules import FleetRules

    assert config.fleet is not None

    async def act(outputs: list[Output], now: float) -> None:
        await pipeline.act(outputs, now, None)

    fleet = config.fleet
    return FleetRules(central, engine, journal, act, fleet.heartbeat, fleet.batch_interval)

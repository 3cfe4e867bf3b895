"""Every Prometheus metric of batond, in one place, on an injectable registry.

Tests build ``Metrics(CollectorRegistry())`` and read values with
``registry.get_sample_value(...)``. Label values are bounded: rule, playbook,
action, source, reason, result, outcome; never a host or series.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from batond.events import SOURCES

__all__ = ["Metrics"]

_STEP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_received = _counter(
            r, "batond_events_received", "Accepted samples and events, one per item", "source"
        )
        self.events_rejected = _counter(
            r, "batond_events_rejected", "Invalid input items, dropped", "source", "reason"
        )
        self.events_dropped = _counter(
            r, "batond_events_dropped", "Valid items dropped because the queue was full", "source"
        )
        self.queue_depth = _gauge(r, "batond_queue_depth", "Items waiting for the engine")
        self.decisions = _counter(
            r,
            "batond_decisions",
            "Decisions by rule; result is run or the suppression reason",
            "rule",
            "result",
        )
        self.runs = _counter(
            r,
            "batond_runs",
            "Ended playbook runs (escalations not included)",
            "playbook",
            "outcome",
        )
        self._nothing_silent(r)
        # counted by the runner as it admits and releases runs (not read at scrape time)
        self.runs_active = _gauge(r, "batond_runs_active", "Playbook runs in progress")
        self.step_duration = Histogram(
            "batond_step_duration_seconds",
            "Duration of one step attempt",
            ["playbook", "action"],
            buckets=_STEP_BUCKETS,
            registry=r,
        )
        self.event_to_action = Histogram(
            "batond_event_to_action_seconds",
            "From the arrival of the deciding input to the start of the first action",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rules_loaded = _gauge(r, "batond_rules_loaded", "Rules in the active set")
        self.reloads = _counter(r, "batond_reloads", "Rule reloads by result (ok, error)", "result")
        self._mqtt_and_models(r)
        self.circuits_open = _gauge(
            r, "batond_circuits_open", "Circuits (of a rule and key) open now"
        )
        self._health(r)
        self._fleet_agent(r)
        self._fleet_central(r)

        # Known label values start at 0, so rate() and alerts see them before the first change.
        for result in ("ok", "error"):
            self.reloads.labels(result)
        for source in SOURCES:
            self.events_received.labels(source)
            self.events_dropped.labels(source)

    def _mqtt_and_models(self, r: CollectorRegistry) -> None:
        self.mqtt_connected = _gauge(
            r, "batond_mqtt_connected", "1 while connected to the MQTT broker"
        )
        self.mqtt_unacked = _gauge(
            r,
            "batond_mqtt_unacked",
            "QoS 1 messages received whose acknowledgement waits for their decisions",
        )
        self.mqtt_redelivered = _counter(
            r,
            "batond_mqtt_redelivered",
            "QoS 1 messages the broker delivered again after a reconnection, taken once",
        )
        self.mqtt_reconnects = _counter(
            r, "batond_mqtt_reconnects", "MQTT connections made after the first"
        )
        self.mqtt_reading_paused = _gauge(
            r,
            "batond_mqtt_reading_paused",
            "MQTT connections not read because the input queue is full (backpressure)",
        )
        self.mqtt_paused_seconds = _counter(
            r,
            "batond_mqtt_paused_seconds",
            "Seconds MQTT reading was paused because the input queue was full (at each end)",
        )
        self.anomaly_series = _gauge(r, "batond_anomaly_series", "Series the anomaly model scores")
        self.anomaly_refused_series = _gauge(
            r, "batond_anomaly_refused_series", "Series refused (series cap or memory budget)"
        )
        self.anomaly_refused_samples = _gauge(
            r, "batond_anomaly_refused_samples", "Samples not scored: their series was refused"
        )

    def _nothing_silent(self, r: CollectorRegistry) -> None:
        """What was done apart from remediation, and what was left undone, told."""
        self.escalations = _counter(
            r, "batond_escalations", "Ended escalation runs (escalate: playbooks)", "playbook",
            "outcome",
        )  # fmt: skip
        self.circuits_opened = _counter(
            r, "batond_circuits_opened", "Circuits opened, by rule", "rule"
        )
        self.without_run = _counter(
            r, "batond_incidents_without_run",
            "Decisions that left an incident without a run nobody asked for (not paused,"
            " shadow or silenced), by rule and reason",
            "rule", "reason",
        )  # fmt: skip
        self.notifications = _counter(
            r, "batond_notifications",
            "Notifications to the notify: url, by result (sent, failed, dropped)", "result",
        )  # fmt: skip
        for result in ("sent", "failed", "dropped"):
            self.notifications.labels(result)

    def _health(self, r: CollectorRegistry) -> None:
        """What says the daemon itself is in trouble: a held loop, a journal that cannot write."""
        self.runs_refused = _counter(
            r, "batond_runs_refused", "Runs that never ran, by reason", "reason"
        )
        self.runs_refused.labels("journal_unavailable")  # (remedy.runner.JOURNAL_UNAVAILABLE)
        self.journal_writable = _gauge(
            r, "batond_journal_writable", "1 while the journal commits, 0 when it cannot"
        )
        self.loop_lag = _gauge(
            r, "batond_loop_lag_seconds", "Worst event-loop delay of the last 30 s (a late timer)"
        )

    def _fleet_central(self, r: CollectorRegistry) -> None:
        """A fleet's central instance: what it owns, how ownership moved, fencing."""
        self.fleet_partitions_owned = _gauge(
            r, "batond_fleet_partitions_owned", "Partitions this central instance holds now"
        )
        self.fleet_members_live = _gauge(
            r, "batond_fleet_members_live", "Live central instances, as the last heartbeat saw"
        )
        self.fleet_ownership = _counter(
            r, "batond_fleet_ownership_changes",
            "Partitions claimed, released (rebalancing) or dropped (database session lost)",
            "change",
        )  # fmt: skip
        for change in ("claimed", "released", "dropped"):
            self.fleet_ownership.labels(change)

    def _fleet_agent(self, r: CollectorRegistry) -> None:
        """A fleet agent's batches, and the remediation requests it takes from central."""
        self.fleet_batches = _counter(
            r, "batond_fleet_batches_published", "Batches of this host's inputs the broker took"
        )
        self.fleet_batch_dropped = _counter(
            r, "batond_fleet_batch_dropped",
            "Inputs the agent did not publish, by reason (other_host, batch_full, outbox_full,"
            " stopping)", "reason",
        )  # fmt: skip
        self.fleet_batch_buffered = _gauge(
            r, "batond_fleet_batch_buffered", "Inputs waiting to be published in a batch"
        )
        self.fleet_requests_accepted = _counter(
            r, "batond_fleet_requests_accepted",
            "Remediation requests that passed every check and were decided (run or suppressed)",
        )  # fmt: skip
        self.fleet_requests_refused = _counter(
            r, "batond_fleet_requests_refused", "Remediation requests refused, by reason", "reason"
        )
        self.fleet_remote_steps = _counter(
            r, "batond_fleet_remote_steps",
            "remote steps of this instance, by the outcome the agent reported", "outcome",
        )  # fmt: skip
        self.fleet_outcomes_refused = _counter(
            r, "batond_fleet_outcomes_refused",
            "Outcome reports of remote requests refused by this central instance, by reason",
            "reason",
        )  # fmt: skip

    def bind_gauges(
        self,
        *,
        queue_depth: Callable[[], float] | None = None,
        anomaly_series: Callable[[], float] | None = None,
        anomaly_refused_series: Callable[[], float] | None = None,
        anomaly_refused_samples: Callable[[], float] | None = None,
        circuits_open: Callable[[], float] | None = None,
    ) -> None:
        """Read these gauges at scrape time from the components that own the numbers."""
        for gauge, fn in (
            (self.queue_depth, queue_depth),
            (self.anomaly_series, anomaly_series),
            (self.anomaly_refused_series, anomaly_refused_series),
            (self.anomaly_refused_samples, anomaly_refused_samples),
            (self.circuits_open, circuits_open),
        ):
            if fn is not None:
                gauge.set_function(fn)


def _counter(registry: CollectorRegistry, name: str, doc: str, *labels: str) -> Counter:
    return Counter(name, doc, labels, registry=registry)


def _gauge(registry: CollectorRegistry, name: str, doc: str) -> Gauge:
    return Gauge(name, doc, registry=registry)

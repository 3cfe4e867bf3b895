"""The Prometheus metrics of docs/metrics.md: names, types, bounded labels, promtool."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from batond.events import SOURCES
from batond.metrics import Metrics

#: name in the exposition -> (type, label names), exactly as docs/metrics.md lists them
DOCUMENTED_METRICS = {
    "batond_events_received_total": ("counter", {"source"}),
    "batond_events_rejected_total": ("counter", {"source", "reason"}),
    "batond_events_dropped_total": ("counter", {"source"}),
    "batond_queue_depth": ("gauge", set()),
    "batond_decisions_total": ("counter", {"rule", "result"}),
    "batond_runs_total": ("counter", {"playbook", "outcome"}),
    "batond_escalations_total": ("counter", {"playbook", "outcome"}),
    "batond_incidents_without_run_total": ("counter", {"rule", "reason"}),
    "batond_circuits_opened_total": ("counter", {"rule"}),
    "batond_notifications_total": ("counter", {"result"}),
    "batond_runs_active": ("gauge", set()),
    "batond_runs_refused_total": ("counter", {"reason"}),
    "batond_step_duration_seconds": ("histogram", {"playbook", "action"}),
    "batond_event_to_action_seconds": ("histogram", set()),
    "batond_rules_loaded": ("gauge", set()),
    "batond_reloads_total": ("counter", {"result"}),
    "batond_mqtt_connected": ("gauge", set()),
    "batond_mqtt_reconnects_total": ("counter", set()),
    "batond_anomaly_series": ("gauge", set()),
    "batond_circuits_open": ("gauge", set()),
    "batond_loop_lag_seconds": ("gauge", set()),
    "batond_journal_writable": ("gauge", set()),
}
#: Label names whose values come from a small, configured or fixed set. A host, an
#: incident key, a series, a run id or a metric name would grow without bound.
BOUNDED_LABELS = {"source", "reason", "rule", "result", "playbook", "outcome", "action"}


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def declared_types(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            out[name] = kind
    return out


def exercise(m: Metrics) -> None:
    """Give every metric a value with each of its labels."""
    m.events_received.labels("mqtt").inc(3)
    m.events_rejected.labels("http", "not_json").inc()
    m.events_dropped.labels("mqtt").inc()
    m.queue_depth.set(2)
    m.decisions.labels("disk-full", "run").inc()
    m.decisions.labels("disk-full", "cooldown").inc()
    m.runs.labels("clean-tmp", "resolved").inc()
    m.escalations.labels("page-oncall", "succeeded").inc()
    m.without_run.labels("disk-full", "circuit_open").inc()
    m.circuits_opened.labels("disk-full").inc()
    m.notifications.labels("sent").inc()
    m.runs_active.set(1)
    m.step_duration.labels("clean-tmp", "exec").observe(0.02)
    m.event_to_action.observe(0.003)
    m.rules_loaded.set(4)
    m.reloads.labels("ok").inc()
    m.mqtt_connected.set(1)
    m.mqtt_reconnects.inc()
    m.anomaly_series.set(7)
    m.circuits_open.set(0)


def test_every_spec_metric_is_in_a_fresh_exposition() -> None:
    types = declared_types(exposition(Metrics(CollectorRegistry())))
    for name, (kind, _) in DOCUMENTED_METRICS.items():
        # counters are declared without _total in the TYPE line of the text format 0.0.4
        declared = name.removesuffix("_total") if kind == "counter" else name
        assert types.get(name, types.get(declared)) == kind, name


def test_fresh_values_are_zero_and_known_labels_are_present() -> None:
    m = Metrics(CollectorRegistry())
    r = m.registry
    for result in ("ok", "error"):
        assert r.get_sample_value("batond_reloads_total", {"result": result}) == 0.0
    for source in SOURCES:
        assert r.get_sample_value("batond_events_received_total", {"source": source}) == 0.0
        assert r.get_sample_value("batond_events_dropped_total", {"source": source}) == 0.0
    for gauge in ("batond_queue_depth", "batond_rules_loaded", "batond_mqtt_connected"):
        assert r.get_sample_value(gauge) == 0.0
    assert r.get_sample_value("batond_event_to_action_seconds_count") == 0.0


def test_label_names_are_the_specs_and_bounded() -> None:
    m = Metrics(CollectorRegistry())
    exercise(m)
    families = {f.name: f for f in text_string_to_metric_families(exposition(m))}
    for name, (_, labels) in DOCUMENTED_METRICS.items():
        family = families[name.removesuffix("_total")]
        seen = set()
        for sample in family.samples:
            seen |= set(sample.labels) - {"le"}  # histogram buckets
        assert seen == labels, name
        assert seen <= BOUNDED_LABELS, name


def test_only_batond_metrics_on_the_registry() -> None:
    # an injected registry holds ours only: no process/platform collectors sneak in
    names = {f.name for f in Metrics(CollectorRegistry()).registry.collect()}
    assert all(n.startswith("batond_") for n in names), names


def test_two_instances_do_not_collide() -> None:
    a, b = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    a.rules_loaded.set(3)
    assert b.registry.get_sample_value("batond_rules_loaded") == 0.0


def test_bound_gauges_are_read_at_scrape_time() -> None:
    m = Metrics(CollectorRegistry())
    depth = [0]
    m.bind_gauges(queue_depth=lambda: depth[0])
    depth[0] = 42
    assert m.registry.get_sample_value("batond_queue_depth") == 42.0


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip(
            "promtool is missing (Debian package prometheus; scripts/bootstrap installs it)"
        )
    return path


@pytest.mark.parametrize("used", [False, True], ids=["fresh", "exercised"])
def test_promtool_check_metrics_passes(used: bool) -> None:
    m = Metrics(CollectorRegistry())
    if used:
        exercise(m)
    done = subprocess.run(
        [promtool(), "check", "metrics"],
        input=exposition(m),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == ""  # not even a lint warning

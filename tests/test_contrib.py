"""contrib/: the Grafana dashboard and the Prometheus alerting rules for batond itself.

``promtool`` (Debian's prometheus, installed by scripts/bootstrap test) checks
the rules and runs their unit tests; every ``batond_`` metric the dashboard
and the rules name must exist in the ``/metrics`` of a real ``batond run``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon_proc import DaemonProcess, write_config
from support import free_port

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
RULES = CONTRIB / "prometheus" / "batond-alerts.yml"
RULE_TESTS = CONTRIB / "prometheus" / "batond-alerts.test.yml"
DASHBOARD = CONTRIB / "grafana" / "batond-dashboard.json"
METRIC = re.compile(r"\bbatond_[a-z0-9_]+")
#: what each histogram and counter family exposes besides its name
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def promtool(*args: str, cwd: Path) -> str:
    done = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    out = promtool("check", "rules", str(RULES), cwd=RULES.parent)
    assert "SUCCESS: 6 rules found" in out
    assert "SUCCESS" in promtool("test", "rules", RULE_TESTS.name, cwd=RULES.parent)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_the_rules_cover_what_can_go_wrong_with_batond() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names == {
        "BatondDown",
        "BatondReloadFailing",
        "BatondCircuitsOpen",
        "BatondQueueSaturated",
        "BatondEventsDropped",
        "BatondEventsRejected",
    }
    tested = {case["alertname"] for t in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for case in t["alert_rule_test"]}  # fmt: skip
    assert tested == names  # each one has a promtool unit test
    for rule in alert_rules():
        assert rule["annotations"]["summary"] and rule["labels"]["severity"]


def test_the_dashboard_shows_what_an_operator_watches() -> None:
    dash = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dash["panels"]}
    assert {
        "Decisions by result",
        "Runs by outcome",
        "Resolve rate by playbook (1h)",
        "Event to action latency",
        "Queue depth",
        "Circuits open",
        "MQTT connected",
    } <= titles
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    for expr in dashboard_exprs():
        assert 'instance=~"$instance"' in expr, expr  # the instance picker applies everywhere


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("contrib")
    port = free_port()
    d = DaemonProcess(write_config(folder, port), port)
    try:
        d.wait_ready()
        yield d.get("/metrics").text
    finally:
        d.stop()


def exposed_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE batond_"):
            _, _, family, kind = line.split(" ")
            base = family.removesuffix("_total")
            names |= {family, *(base + s for s in SUFFIXES.get(kind, ("",)))}
    return names


def test_every_metric_named_exists_in_a_live_daemon(live_metrics: str) -> None:
    exposed = exposed_names(live_metrics)
    assert {"batond_decisions_total", "batond_event_to_action_seconds_bucket"} <= exposed
    named = {m for e in dashboard_exprs() for m in METRIC.findall(e)}
    named |= {m for rule in alert_rules() for m in METRIC.findall(rule["expr"])}
    assert len(named) >= 12
    assert named - exposed == set()

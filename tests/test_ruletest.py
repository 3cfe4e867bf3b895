"""``batond test``: rule test files as a subprocess (passing, failing side by side, file
mistakes at FILE:LINE:COL), the series notation, and every shipped rule set's tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from batond.load.ruletests import parse_selector, parse_values

ROOT = Path(__file__).resolve().parents[1]

RULES = """
rules:
  - name: hot
    match: {metric: temp}
    when: value > 90
    for: 2m
    cooldown: 10m
    run: cool
    params: {fan: high}
  - name: down
    match: {event: process.exited, name: nginx}
    run: restart
  - name: host-down
    match: {event: alert, alertname: HostDown, status: firing}
    resolve: {match: {event: alert, alertname: HostDown, status: resolved}}
    run: restart
playbooks:
  - name: cool
    steps:
      - {name: fan, action: exec, with: {argv: [fanctl, "{{ labels.host }}", "{{ params.fan }}"]}}
      - name: tell
        action: http
        with: {url: "http://127.0.0.1:1/{{ rule }}", json: {v: "{{ value }}", k: "{{ key }}"}}
  - name: restart
    steps:
      - {name: go, action: exec, with: {argv: [systemctl, restart, "{{ labels.name }}"]}}
"""


def batond_test(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batond", "test", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _write(tmp_path: Path, tests: str, name: str = "t.yaml") -> Path:
    (tmp_path / "rules.yaml").write_text(RULES)
    path = tmp_path / name
    path.write_text("rule_files: [rules.yaml]\n" + textwrap.dedent(tests))
    return path


PASSING = """
tests:
  - name: hot for 2 minutes cools, once per cooldown
    interval: 1m
    series:
      temp{host="a"}: 50 95 96 97 98 50 95x3   # above 90 from 1m to 4m, again 6m to 9m
      temp{host="b"}: 91 _ 91 _x2 50    # a gap does not break the 2 minutes
    decisions:
      - {at: 2m, rule: hot, key: host=b, playbook: cool}
      - {at: 3m, rule: hot, key: host=a, playbook: cool}
      - {at: 8m, rule: hot, key: host=a, suppressed: cooldown}
    incidents:
      - {at: 3m, open: [{rule: hot, key: host=a}, {rule: hot, key: host=b}]}
      - {at: 5m, open: []}
    steps:
      - {at: 3m, rule: hot, key: host=a, step: fan, with: {argv: [fanctl, a, high]}}
      # the timer decides a for: rule at 3m, before the sample of 3m: the latest is 96
      - {at: 3m, rule: hot, key: host=a, step: tell, with: {json: {v: 96.0, k: host=a}}}
  - name: events and alerts at offsets
    events:
      - {at: 10s, event: process.exited, host: a, name: nginx}
      - {at: 20s, event: process.exited, host: a, name: sshd}
    alerts:
      - {at: 30s, status: firing, labels: {alertname: HostDown, instance: b}}
      - {at: 50s, status: resolved, labels: {alertname: HostDown, instance: b}}
    decisions:
      - {at: 10s, rule: down, key: host=a, playbook: restart}
      # an alert rule's incident key is [alertname, instance] unless group_by says
      - {at: 30s, rule: host-down, key: "alertname=HostDown,instance=b", playbook: restart}
    incidents:
      - {at: 40s, open: [{rule: host-down, key: "alertname=HostDown,instance=b"}]}
      - {at: 50s, open: []}
    steps:
      - {at: 10s, rule: down, key: host=a, step: go, with: {argv: [systemctl, restart, nginx]}}
"""


def test_a_passing_file(tmp_path: Path) -> None:
    path = _write(tmp_path, PASSING)
    done = batond_test(path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"PASS {path}: hot for 2 minutes cools, once per cooldown",
        f"PASS {path}: events and alerts at offsets",
        "tests=2 passed=2 failed=0 errors=0",
    ]


FAILING = """
tests:
  - name: expected wrongly
    interval: 1m
    series:
      temp{host="a"}: 95x4 50
      temp{host="b"}: 95x2
    decisions:
      - {at: 2m, rule: hot, key: host=a, playbook: cool}
      - {at: 3m, rule: hot, key: host=b, playbook: cool}
      - {at: 4m, rule: hot, key: host=a, suppressed: cooldown}
    incidents:
      - {at: 5m, open: [{rule: hot, key: host=a}]}
    steps:
      - {at: 2m, rule: hot, key: host=a, step: fan, with: {argv: [fanctl, a, low]}}
      - {at: 3m, rule: hot, key: host=b, step: fan, with: {argv: [fanctl, b, high]}}
  - name: right
    events:
      - {at: 0s, event: process.exited, host: a, name: nginx}
    decisions:
      - {at: 0s, rule: down, key: host=a, playbook: restart}
"""


def test_a_failing_file_shows_expected_and_actual_side_by_side(tmp_path: Path) -> None:
    path = _write(tmp_path, FAILING)
    done = batond_test(path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"FAIL {path}: expected wrongly",
        "  decisions:",
        "      expected                          | actual",
        "      2m hot host=a run=cool            | 2m hot host=a run=cool",
        "    ! 3m hot host=b run=cool            | 2m hot host=b run=cool",
        "    - 4m hot host=a suppressed=cooldown |",
        f"  open incidents at 5m ({path}:14:9):",
        "      expected   | actual",
        "    ! hot host=a | hot host=b",
        f"  step fan of hot host=a at 2m ({path}:16:9):",
        '    expected with: {"argv": ["fanctl", "a", "low"]}',
        '    actual   with: {"argv": ["fanctl", "a", "high"]}',
        f"  step fan of hot host=b at 3m ({path}:17:9):",
        "    no decision: nothing to render",
        f"PASS {path}: right",
        "tests=2 passed=1 failed=1 errors=0",
    ]


MALFORMED = """\
rule_files: [rules.yaml, missing.yaml]
tests:
  - name: bad
    interval: 1m
    series:
      temp{host="a"}: 50 95x3 9y 40
      temp{host="b"}: 1x4
      temp{host=a}: 1
      "temp{host=\\"a\\"} x": 1
    events:
      - {at: 1m, event: process.exited, host: a, name: nginx, ts: 5}
      - {at: 1m, metric: temp, value: hot}
      - {at: 90, event: e}
    alerts:
      - {at: 1m, status: firing, labels: {host: a}}
      - {at: 1m, status: gone, labels: {alertname: X}}
    decisions:
      - {at: 1m, rule: hot, key: host=a, playbook: cool, suppressed: cooldown}
      - {at: 1m, rule: hot, key: host=a, suppressed: tired}
      - {at: 1m, rule: hot, ky: host=a}
    incidents:
      - {at: 1m, open: [{rule: hot}]}
    until: 30s
    stpes: []
  - name: bad
  - {name: other, start: yesterday}
"""


def test_mistakes_in_a_test_file_are_reported_at_file_line_col(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    path = tmp_path / "t.yaml"
    path.write_text(MALFORMED)
    done = batond_test(path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{path}:1:26: missing.yaml: no such file or directory",
        f"{path}:6:31: bad value '9y': expected a, _, axN, a+bxN, a-bxN or _xN",
        f"{path}:8:7: series 'temp{{host=a}}': expected label=\"value\", got 'host=a'",
        f"{path}:9:8: series 'temp{{host=\"a\"}} x': expected labels as "
        '{label="value", ...} after the name',
        f"{path}:11:63: an event's time is its at:, not ts",
        f"{path}:12:9: not an input: bad_value: 'value' must be a finite number, got 'hot'",
        f"{path}:13:14: invalid duration '90': expected <integer><unit>... "
        "with units ms, s, m, h, d",
        f"{path}:15:42: an alert's labels need an alertname",
        f"{path}:16:26: status must be one of firing, resolved; got 'gone'",
        f"{path}:18:9: a decision has either playbook (a run) or suppressed (the reason)",
        f"{path}:19:54: suppressed must be one of already_running, blast_radius, "
        "circuit_open, cooldown, paused, rate_limited, shadow, silenced; got 'tired'",
        f"{path}:20:9: missing required key 'key'",
        f"{path}:20:29: unknown key 'ky' (did you mean 'key'?)",
        f"{path}:22:25: missing required key 'key'",
        f"{path}:23:12: until: is before the last input (at 4m)",
        f"{path}:24:5: unknown key 'stpes' (did you mean 'steps'?)",
        f"{path}:25:5: duplicate test name 'bad'",
        f"{path}:26:26: start: expected epoch seconds or a time such as 2026-01-01T00:00:00Z",
        "tests=0 passed=0 failed=0 errors=18",
    ]


def test_a_problem_in_the_rules_under_test_is_reported_in_the_rule_file(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text("rules:\n  - {name: a, match: {event: e}, run: nope}\n")
    path = tmp_path / "t.yaml"
    path.write_text("rule_files: [rules.yaml]\ntests: []\n")
    done = batond_test(path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        f"{tmp_path / 'rules.yaml'}:2:39: run names unknown playbook 'nope'",
        "tests=0 passed=0 failed=0 errors=1",
    ]


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("50 95x3 40", [50, 95, 95, 95, 95, 40]),  # axN: a, then N more (as in promtool)
        ("1+2x3", [1, 3, 5, 7]),
        ("10-2.5x2", [10, 7.5, 5]),
        ("-1+1x2", [-1, 0, 1]),
        ("_ 1 _x2 2", [None, 1, None, None, 2]),
        ("1e2 .5", [100, 0.5]),
    ],
)
def test_the_series_notation(text: str, values: list[float | None]) -> None:
    assert parse_values(text) == values


def test_series_notation_mistakes_say_where() -> None:
    assert parse_values("1 2 x3") == (4, "bad value 'x3': expected a, _, axN, a+bxN, a-bxN or _xN")
    assert parse_values("   ") == (0, "expected at least one value")


def test_series_selectors() -> None:
    assert parse_selector('cpu_percent{host="web-1", mount="/"}') == (
        "cpu_percent",
        {"host": "web-1", "mount": "/"},
    )
    assert parse_selector("up") == ("up", {})
    assert parse_selector('m{a="x\\"y,z"}') == ("m", {"a": 'x"y,z'})
    assert parse_selector('{a="b"}') == (
        "series '{a=\"b\"}': expected a metric name such as cpu_percent"
    )


def test_the_anomaly_model_of_the_config_scores_the_series(tmp_path: Path) -> None:
    """The config's models score each sample in the test, as in the daemon."""
    (tmp_path / "models.yaml").write_text(
        "models:\n  - {name: m, match: {metric: cpu}, series_by: [host], warmup: 200}\n"
    )
    (tmp_path / "batond.yaml").write_text("models: [models.yaml]\n")
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - {name: odd, match: {metric: cpu}, when: anomaly > 0.99, run: p}\n"
        "playbooks:\n  - {name: p, steps: [{name: s, action: wait, with: {duration: 0s}}]}\n"
    )
    calm = " ".join(["20+1x6"] * 58)  # 406 samples repeating 20..26
    path = tmp_path / "t.yaml"
    path.write_text(
        "rule_files: [rules.yaml]\nconfig: batond.yaml\ntests:\n"
        f"  - name: a spike after calm\n    interval: 5s\n    series:\n"
        f'      cpu{{host="a"}}: {calm} 95\n'
        "    decisions:\n      - {at: 33m50s, rule: odd, key: host=a, playbook: p}\n"
    )
    done = batond_test(path)
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[-1] == "tests=1 passed=1 failed=0 errors=0"


def _rule_sets() -> list[Path]:
    examples = sorted(p for p in (ROOT / "rules" / "examples").iterdir() if p.is_dir())
    return [ROOT / "rules", *examples]


@pytest.mark.parametrize("rule_set", _rule_sets(), ids=lambda p: p.name)
def test_every_shipped_rule_set_has_tests_and_they_pass(rule_set: Path) -> None:
    files = sorted((rule_set / "tests").glob("*.yaml"))
    assert files, f"{rule_set} ships no tests ({rule_set}/tests/*.yaml)"
    done = batond_test(*files)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].endswith("failed=0 errors=0"), lines[-1]
    assert all(line.startswith("PASS ") for line in lines[:-1])
    assert len(lines) > 1

"""``batond replay`` as a subprocess: output formats, the clock, bad lines, and the
threshold workload against its reference evaluator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine_support import PLAYBOOKS

# the shared folder lies beside the checkout (in CI too)
WORKLOAD = Path(__file__).resolve().parents[2] / "shared" / "workload"
SUMMARY = re.compile(r"^events=(\d+) decisions=(\d+) elapsed_s=[0-9.]+ events_per_s=\d+$")

RULES = """
rules:
  - name: hot
    match: {metric: temp}
    when: value > 90
    for: 30s
    run: fix
  - name: down
    match: {event: process.exited, name: nginx}
    cooldown: 1m
    run: [fix, alt]
"""


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batond", "replay", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _files(tmp_path: Path, lines: list[object]) -> tuple[Path, Path]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES + PLAYBOOKS)
    events = tmp_path / "events.jsonl"
    events.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return rules, events


STORY: list[object] = [
    {"metric": "temp", "value": 95, "ts": 1000.0, "host": "a"},
    {"metric": "temp", "value": 96, "ts": 1010.0, "host": "a"},
    {"event": "process.exited", "ts": 1020.0, "host": "a", "name": "nginx", "exit_code": -9},
    {"event": "process.exited", "ts": 1040.0, "host": "a", "name": "nginx", "exit_code": None},
    {"metric": "other", "value": 1, "ts": 1100.0, "host": "a"},  # the clock passes 1030
    {"event": "process.exited", "ts": 1100.0, "host": "a", "name": "nginx"},
]


def test_json_lines_one_per_decision_with_event_time(tmp_path: Path) -> None:
    rules, events = _files(tmp_path, STORY)
    done = replay(str(events), "--rules", str(rules), "--json")
    assert done.returncode == 0, done.stderr
    got = [json.loads(line) for line in done.stdout.splitlines()]
    assert [
        (d["ts"], d["rule"], d["key"], d.get("playbook"), d.get("suppressed")) for d in got
    ] == [
        (1020.0, "down", "host=a", "fix", None),
        (1030.0, "hot", "host=a", "fix", None),  # for: 30s after 1000, seen at the clock 1040
        (1040.0, "down", "host=a", None, "cooldown"),
        (1100.0, "down", "host=a", "fix", None),
    ]
    last = done.stderr.splitlines()[-1]
    assert SUMMARY.match(last) and last.startswith("events=6 decisions=4 ")


def test_human_lines(tmp_path: Path) -> None:
    rules, events = _files(tmp_path, STORY[:3])
    done = replay(str(events), "--rules", str(rules))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1970-01-01T00:17:00.000Z down host=a run=fix"]


def test_bad_lines_are_skipped_and_reported_on_stderr(tmp_path: Path) -> None:
    rules, events = _files(
        tmp_path,
        [
            "not json",
            "[1, 2]",
            {"metric": "temp", "value": "hot", "ts": 1.0, "host": "a"},
            {"metric": "temp", "value": 99, "ts": "yesterday", "host": "a"},
            "",
            {"event": "process.exited", "ts": 5.0, "host": "a", "name": "nginx"},
        ],
    )
    done = replay(str(events), "--rules", str(rules), "--json")
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1
    err = done.stderr.splitlines()
    assert err[0].startswith("line 1: skipped: bad_json")
    assert err[1].startswith("line 2: skipped: not_object")
    assert err[2].startswith("line 3: skipped: bad_value")
    assert err[3].startswith("line 4: skipped: bad_ts")
    assert err[-2] == "rejected=4 (lines skipped)"
    assert err[-1].startswith("events=1 decisions=1 ")


def test_config_errors_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {name: a, match: {event: e}, run: nope}\n")
    events = tmp_path / "e.jsonl"
    events.write_text("")
    done = replay(str(events), "--rules", str(bad))
    assert done.returncode == 1
    assert f"{bad}:2:39: run names unknown playbook 'nope'" in done.stderr
    assert done.stdout == ""


def test_governor_applies_with_a_config(tmp_path: Path) -> None:
    rules, _ = _files(tmp_path, [])
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps(
                {"event": "process.exited", "ts": float(i), "host": f"h{i}", "name": "nginx"}
            )
            + "\n"
            for i in range(4)
        )
    )
    config = tmp_path / "batond.yaml"
    config.write_text(
        f"rules: [{rules}]\nmodels: []\ngovernor: {{max_runs: {{count: 2, per: 1h}}}}\n"
    )
    done = replay(str(events), "-c", str(config), "--json")
    results = [json.loads(x).get("suppressed", "run") for x in done.stdout.splitlines()]
    assert results == ["run", "run", "rate_limited", "rate_limited"]
    shadow = tmp_path / "shadow.yaml"
    shadow.write_text(f"rules: [{rules}]\nmodels: []\nmode: shadow\n")
    done = replay(str(events), "-c", str(shadow), "--json")
    assert {json.loads(x)["suppressed"] for x in done.stdout.splitlines()} == {"shadow"}


@pytest.mark.skipif(not WORKLOAD.is_dir(), reason="the shared workload generators are not here")
@pytest.mark.parametrize(("n", "k"), [(20_000, 100), (5_000, 1)])
def test_workload_decisions_equal_the_reference(tmp_path: Path, n: int, k: int) -> None:
    def gen(*args: str) -> str:
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, check=True, cwd=WORKLOAD
        ).stdout

    events = tmp_path / "events.jsonl"
    events.write_text(gen("gen_events.py", str(n), "7"))
    rules = tmp_path / "rules.yaml"
    rules.write_text(gen("gen_rules.py", str(k), "--format", "batond"))
    spec = tmp_path / "rules.json"
    spec.write_text(gen("gen_rules.py", str(k), "--format", "json"))
    expected = gen("expected_decisions.py", str(events), str(spec), "--seqs").split()
    done = replay(str(events), "--rules", str(rules), "--json")
    assert done.returncode == 0, done.stderr
    seqs = [str(round((json.loads(x)["ts"] - 1767225600.0) * 1000)) for x in done.stdout.split()]
    assert seqs == expected
    assert done.stderr.splitlines()[-1].startswith(f"events={n} decisions={len(expected)} ")


def test_replay_without_models_never_imports_numerics(tmp_path: Path) -> None:
    rules, events = _files(tmp_path, STORY)
    code = (
        "import sys\n"
        "from batond.commands.cli import main\n"
        f"main(['replay', {str(events)!r}, '--rules', {str(rules)!r}])\n"
        "heavy = {'numpy', 'sklearn', 'aiohttp', 'psutil'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr

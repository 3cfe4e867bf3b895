"""``batond check``: one test per error message, each at its exact FILE:LINE:COL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from batond.commands.check import check_paths
from engine_support import PLAYBOOKS

REPO = Path(__file__).resolve().parent.parent

#: (case, lines of a rule file (the test playbooks are appended), LINE:COL, message)
CASES = [
    (
        "yaml_syntax",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x",
        ),
        "5:10",
        "YAML syntax: did not find expected ',' or '}'",
    ),
    (
        "unknown_key",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            "    wen: value > 1",
            "    run: fix",
        ),
        "4:5",
        "unknown key 'wen' (did you mean 'when'?)",
    ),
    (
        "missing_run",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
        ),
        "2:5",
        "missing required key 'run'",
    ),
    (
        "wrong_type",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            "    group_by: host",
            "    run: fix",
        ),
        "4:15",
        "expected a list of labels, got the string 'host'",
    ),
    (
        "bad_duration",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            "    when: value > 1",
            "    for: 5",
            "    run: fix",
        ),
        "5:10",
        "invalid duration '5': expected <integer><unit>... with units ms, s, m, h, d",
    ),
    (
        "bad_duration_unit",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            "    when: value > 1",
            "    for: 5 minutes",
            "    run: fix",
        ),
        "5:10",
        "invalid duration '5 minutes': expected <integer><unit>... with units ms, s, m, h, d",
    ),
    (
        "bad_cron",
        (
            "schedules:",
            '  - {name: s, cron: "61 * * * *", run: fix}',
        ),
        "2:21",
        "cron minute field '61': 61 is out of range 0-59",
    ),
    (
        "cron_fields",
        (
            "schedules:",
            '  - {name: s, cron: "* * *", run: fix}',
        ),
        "2:21",
        "cron needs 5 fields (minute hour day month weekday), got 3",
    ),
    (
        "expr_syntax",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            "    when: value >> > 1",
            "    run: fix",
        ),
        "4:20",
        "expression syntax: invalid syntax",
    ),
    (
        "expr_unsafe_attr",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            '    when: "event.__class__ == 1"',
            "    run: fix",
        ),
        "4:12",
        "attributes starting with '_' are not allowed: '__class__'",
    ),
    (
        "expr_call",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            "    when: open('/etc/shadow')",
            "    run: fix",
        ),
        "4:11",
        "calls are limited to abs, all, any, bool, first, float, int, join, keys, last, len, "
        "lower, matches, max, min, parse_time, round, sorted, split, str, strftime, sum, upper, "
        "values; not 'open'",
    ),
    (
        "dup_rule",
        (
            "rules:",
            "  - {name: a, match: {metric: x}, run: fix}",
            "  - {name: a, match: {metric: y}, run: fix}",
        ),
        "3:12",
        "duplicate rule name 'a' (first at {path}:2:12)",
    ),
    (
        "unknown_playbook",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            "    run: [fix, nothere]",
        ),
        "4:16",
        "run names unknown playbook 'nothere'",
    ),
    (
        "group_by_not_label",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            "    group_by: [host, metric]",
            "    run: fix",
        ),
        "4:22",
        "'metric' is not a label and cannot be in group_by",
    ),
    (
        "group_by_impossible",
        (
            "rules:",
            "  - name: a",
            "    all:",
            "      - {match: {metric: x, host: a}}",
            "      - {match: {event: y, host: b}}",
            "    within: 1m",
            "    group_by: [host]",
            "    run: fix",
        ),
        "7:16",
        "group_by label 'host' can never be equal: the parts match 'a', 'b'",
    ),
    (
        "group_by_twice",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            "    group_by: [host, host]",
            "    run: fix",
        ),
        "4:22",
        "label 'host' is listed twice",
    ),
    (
        "match_kind",
        (
            "rules:",
            "  - name: a",
            "    match: {host: x}",
            "    run: fix",
        ),
        "3:12",
        "match needs exactly one of 'metric' or 'event'",
    ),
    (
        "match_both",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x, event: y}",
            "    run: fix",
        ),
        "3:24",
        "match needs exactly one of 'metric' or 'event'",
    ),
    (
        "for_event",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            "    for: 1m",
            "    run: fix",
        ),
        "4:5",
        "for: needs a metric match or an Alertmanager alert (an event does not hold over time)",
    ),
    (
        "timers",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            "    count: {at_least: 2, within: 1m}",
            "    absent: 1h",
            "    run: fix",
        ),
        "5:5",
        "absent: cannot be combined with count:",
    ),
    (
        "within_alone",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            "    within: 1m",
            "    run: fix",
        ),
        "4:5",
        "within: belongs to all: (count: has its own within)",
    ),
    (
        "all_no_within",
        (
            "rules:",
            "  - name: a",
            "    all:",
            "      - {match: {metric: x}}",
            "      - {match: {event: y}}",
            "    run: fix",
        ),
        "3:5",
        "all: needs within: (the correlation window)",
    ),
    (
        "all_one_part",
        (
            "rules:",
            "  - name: a",
            "    all:",
            "      - {match: {metric: x}}",
            "    within: 1m",
            "    run: fix",
        ),
        "4:7",
        "all: needs at least two parts",
    ),
    (
        "all_with_match",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            "    all:",
            "      - {match: {metric: x}}",
            "      - {match: {event: y}}",
            "    within: 1m",
            "    run: fix",
        ),
        "3:5",
        "match: cannot be combined with all: (put it in a part)",
    ),
    (
        "resolve_count",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            "    count: {at_least: 2, within: 1m}",
            "    resolve: {match: {event: y}}",
            "    run: fix",
        ),
        "5:5",
        "resolve: cannot be combined with count: or absent: (they resolve by themselves)",
    ),
    (
        "no_match",
        (
            "rules:",
            "  - name: a",
            "    when: value > 1",
            "    run: fix",
        ),
        "2:5",
        "a rule needs match: or all:",
    ),
    (
        "severity",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            "    severity: urgent",
            "    run: fix",
        ),
        "4:15",
        "severity must be one of critical, error, info, warning; got 'urgent'",
    ),
    (
        "count_zero",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            "    count: {at_least: 0, within: 0s}",
            "    run: fix",
        ),
        "4:23",
        "must be at least 1, got 0",
    ),
    (
        "dup_key",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            "    run: fix",
            "    run: fix",
        ),
        "5:5",
        "duplicate key 'run'",
    ),
    (
        "top_key",
        (
            "rule:",
            "  - name: a",
        ),
        "1:1",
        "unknown key 'rule' (did you mean 'rules'?)",
    ),
    (
        "order",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            "    order: random",
            "    run: fix",
        ),
        "4:12",
        "order must be one of adaptive, fixed; got 'random'",
    ),
    (
        "run_twice",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            "    run: [fix, fix]",
        ),
        "4:16",
        "playbook 'fix' is listed twice",
    ),
    (
        "expr_not_text",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            "    when: [value]",
            "    run: fix",
        ),
        "4:11",
        "expected an expression (a string)",
    ),
    (
        "expr_empty",
        (
            "rules:",
            "  - name: a",
            "    match: {metric: x}",
            '    when: ""',
            "    run: fix",
        ),
        "4:11",
        "expected an expression, got an empty string",
    ),
    (
        "count_window",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            "    count: {at_least: 2, within: 0s}",
            "    run: fix",
        ),
        "4:34",
        "count window must be longer than 0s",
    ),
    (
        "run_empty",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            "    run: []",
        ),
        "4:10",
        "run needs at least one playbook",
    ),
    (
        "match_empty_name",
        (
            "rules:",
            "  - name: a",
            '    match: {metric: ""}',
            "    run: fix",
        ),
        "3:12",
        "metric name must not be empty",
    ),
    (
        "bad_regex",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            '    when: matches(event.msg, "[")',
            "    run: fix",
        ),
        "4:30",
        "bad regular expression: unterminated character set at position 0",
    ),
    (
        "regex_from_event_data",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            "    when: matches(event.msg, event.pat)",
            "    run: fix",
        ),
        "4:30",
        "matches(): the regex must be a string literal",
    ),
    (
        "regex_nested_repeat",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            '    when: matches(event.msg, "(a+)+$")',
            "    run: fix",
        ),
        "4:30",
        "matches(): nested unbounded repeats ('(a+)+'; '(.*a){12}': an unbounded repeat inside "
        "another repeat) can take exponential time; rewrite it without the inner repeat, or "
        "bound it ('\\d{1,3}')",
    ),
    (
        "regex_overlapping_alternatives",
        (
            "rules:",
            "  - name: a",
            "    match: {event: x}",
            '    when: matches(event.msg, "(a|a?)+$")',
            "    run: fix",
        ),
        "4:30",
        "matches(): an alternative that can match nothing ('(a|a?)+') under a repeat can take "
        "exponential time; make every alternative match something",
    ),
    (
        "dup_schedule",
        (
            "rules:",
            "  - {name: a, match: {event: x}, run: fix}",
            "schedules:",
            '  - {name: a, cron: "* * * * *", run: fix}',
        ),
        "4:12",
        "duplicate schedule name 'a' (first at {path}:2:12)",
    ),
]


@pytest.mark.parametrize(
    ("lines", "where", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_each_error_at_its_place(
    tmp_path: Path, lines: tuple[str, ...], where: str, message: str
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("\n".join(lines) + "\n" + PLAYBOOKS)
    problems, summary = check_paths([path])
    expected = message.replace("{path}", str(path))
    assert [str(p) for p in problems] == [f"{path}:{where}: {expected}"]
    assert summary == ""


def test_duplicate_playbook_reported_at_the_later_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules: []\n" + PLAYBOOKS)
    (tmp_path / "b.yaml").write_text(
        "playbooks:\n  - {name: alt, steps: [{name: s, action: wait, with: {duration: 0s}}]}\n"
    )
    problems, _ = check_paths([tmp_path])
    first = f"{tmp_path / 'a.yaml'}:5:12"
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'b.yaml'}:2:12: duplicate playbook name 'alt' (first at {first})"
    ]


def test_missing_path(tmp_path: Path) -> None:
    problems, _ = check_paths([tmp_path / "nope.yaml"])
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'nope.yaml'}:1:1: no such file or directory"
    ]


def test_every_problem_of_every_file_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("rules:\n  - {name: x, match: {metric: m}, run: nope}\n")
    (tmp_path / "a.yaml").write_text(
        "rules:\n  - {name: y, match: {metric: m}, wen: 1, run: nope}\n"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ignored.yaml").write_text("not: [valid")  # subfolders are not read
    (tmp_path / "notes.txt").write_text("not yaml at all: [")  # only *.yaml
    problems, _ = check_paths([tmp_path])
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'a.yaml'}:2:35: unknown key 'wen' (did you mean 'when'?)",
        f"{tmp_path / 'a.yaml'}:2:48: run names unknown playbook 'nope'",
        f"{tmp_path / 'b.yaml'}:2:40: run names unknown playbook 'nope'",
    ]


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batond", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_exit_codes_and_output(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("rules:\n  - {name: a, match: {event: e}, run: fix}\n" + PLAYBOOKS)
    done = _check(str(good))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "ok: 1 rules, 3 playbooks, 0 schedules\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - {name: a, match: {event: e}, for: 5, run: fix}\n" + PLAYBOOKS)
    done = _check(str(bad))
    assert done.returncode == 1
    duration = "invalid duration '5': expected <integer><unit>... with units ms, s, m, h, d"
    assert done.stdout.splitlines() == [
        f"{bad}:2:34: for: needs a metric match or an Alertmanager alert"
        " (an event does not hold over time)",
        f"{bad}:2:39: {duration}",
    ]


def test_cli_with_config_checks_what_it_names(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text("rules:\n  - {name: a, match: {event: e}, run: nope}\n")
    config = tmp_path / "batond.yaml"
    config.write_text("rules: [rules]\nmodels: []\n")
    done = _check("-c", str(config))
    assert done.returncode == 1
    assert done.stdout == f"{rules / 'r.yaml'}:2:39: run names unknown playbook 'nope'\n"


def test_shipped_default_rules_are_clean() -> None:
    done = _check(str(REPO / "rules"))
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("ok: ")


def test_model_files_among_the_paths_go_to_the_model_checker(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text(
        "models:\n  - name: x\n    match: {metric: cpu}\n    sensitivity: 7\n"
    )
    (tmp_path / "rules.yaml").write_text("rules: []\n")
    problems, _ = check_paths([tmp_path])
    assert [(p.file, p.line, p.col) for p in problems] == [(str(tmp_path / "models.yaml"), 4, 18)]

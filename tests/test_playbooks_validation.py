"""Playbook files: the model of docs/playbooks.md and every error at FILE:LINE:COL."""

from __future__ import annotations

import json

import pytest

from batond.errors import ConfigError
from batond.load.playbooks import ACTION_KEYS, PLAYBOOK_SCHEMA, Retry
from batond.remedy.render import render_args
from runner_support import load_playbooks

DOCS_EXAMPLE = """\
playbooks:
  - name: restart-unit
    mode: single
    timeout: 10m
    on_interrupt: escalate
    escalate: page-oncall
    steps:
      - name: restart
        action: systemd
        with: {unit: "{{ params.unit }}", verb: restart}
        timeout: 30s
        retry: {attempts: 3, backoff: 2s}
      - name: check
        action: http
        with: {url: "http://{{ labels.host }}:8080/health", expect_status: 200}
        when: steps.restart.ok
    verify: {within: 2m}
    on_failure:
      - {name: tell, action: notify, with: {url: "https://hooks.example/ops", text: "failed"}}
  - name: page-oncall
    steps:
      - {name: page, action: notify, with: {url: "https://hooks.example/page", text: "help"}}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_playbooks(text, "f.yaml")
    return [str(p) for p in info.value.problems]


def test_spec_example_loads_into_the_model() -> None:
    pbs = load_playbooks(DOCS_EXAMPLE)
    pb = pbs["restart-unit"]
    assert (pb.mode, pb.timeout, pb.on_interrupt, pb.escalate) == (
        "single", 600.0, "escalate", "page-oncall",
    )  # fmt: skip
    assert pb.verify_within == 120.0
    restart, check = pb.steps
    assert restart.retry == Retry(3, 2.0) and restart.timeout == 30.0
    assert check.timeout == 300.0  # a step without timeout: gets 5m
    assert check.when is not None and check.when.text == "steps.restart.ok"
    assert [s.name for s in pb.on_failure] == ["tell"]
    assert pb.mark.line == 2


def test_retry_backoff_doubles() -> None:
    assert [Retry(4, 2.0).delay(a) for a in (1, 2, 3)] == [2.0, 4.0, 8.0]


@pytest.mark.parametrize(
    ("step", "at", "message"),
    [
        ("{name: a, action: exec, with: {argv: [x], shell: true}}", "shell", "unknown key 'shell'"),
        ("{name: a, action: systemd, with: {unit: x}}", "{unit", "missing required key 'verb'"),
        ("{name: a, action: teleport}", "teleport", "action must be one of"),
        ("{name: a, action: exec, with: {argv: []}}", "[]", "'argv' needs at least one element"),
        ("{name: a, action: wait, with: {duration: 5}}", "5}", "invalid duration '5'"),
        ("{name: a, action: wait, with: {duration: 5h3}}", "5h3", "invalid duration '5h3'"),
        ("{name: a, action: exec, retry: {attempts: 0}, with: {argv: [x]}}", "0}", "must be at least 1"),  # noqa: E501
        ("{name: a, action: mqtt, with: {topic: t, qos: 3}}", "3}", "qos must be 0, 1 or 2"),
        ("{name: a, action: signal, with: {signal: HUP}}", "{signal", "action 'signal' needs exactly one of: name, pid"),  # noqa: E501
        ("{name: a, action: http, with: {url: u, expect_status: 999}}", "999", "HTTP status must be 100..599"),  # noqa: E501
        ("{name: a, action: exec}", "{name", "action 'exec' needs with: argv"),
        ("{name: 'a b', action: wait, with: {duration: 1s}}", "'a b'", "step name 'a b'"),
        ("{name: a, action: exec, timeout: 0s, with: {argv: [x]}}", "0s", "duration must be at least"),  # noqa: E501
        ("{name: a, action: exec, when: 'steps.', with: {argv: [x]}}", "', with", "expression syntax"),  # noqa: E501
    ],
)  # fmt: skip
def test_step_errors_point_at_the_key_or_value(step: str, at: str, message: str) -> None:
    line = "      - " + step
    text = "playbooks:\n  - name: p\n    steps:\n" + line + "\n"
    col = line.index(at) + 1
    found = problems(text)
    assert any(p.startswith(f"f.yaml:4:{col}: {message}") for p in found), (col, found)


def test_template_error_points_inside_the_string() -> None:
    text = (
        "playbooks:\n  - name: p\n    steps:\n"
        '      - {name: a, action: exec, with: {argv: [echo, "x {{ params.a + }} y"]}}\n'
    )
    (found,) = problems(text)
    col = text.splitlines()[3].index("+ }}") + 2  # just after the dangling operator
    assert found.startswith(f"f.yaml:4:{col}: expression syntax"), found


def test_when_names_only_earlier_steps() -> None:
    text = """\
playbooks:
  - name: p
    steps:
      - name: first
        action: wait
        with: {duration: 1s}
        when: steps.later.ok
      - name: later
        action: wait
        with: {duration: 1s}
        when: steps.first.ok and steps.nope.ok
"""
    assert problems(text) == [
        "f.yaml:7:21: no earlier step named 'later'",
        "f.yaml:11:40: no earlier step named 'nope'",
    ]


def test_playbook_level_errors() -> None:
    text = """\
playbooks:
  - name: p
    mode: single
    max: 2
    colour: red
    steps:
      - {name: a, action: wait, with: {duration: 1s}}
      - {name: a, action: wait, with: {duration: 1s}}
    verify: {within: soon}
  - name: p
    mode: sometimes
    steps: []
"""
    assert problems(text) == [
        "f.yaml:4:5: max applies to mode queued or parallel",
        "f.yaml:5:5: unknown key 'colour'",
        "f.yaml:8:16: duplicate step name 'a' (first at f.yaml:7:16)",
        "f.yaml:9:22: invalid duration 'soon': expected <integer><unit>... with units ms, s, m, h, d",  # noqa: E501
        "f.yaml:10:11: duplicate playbook name 'p'",
        "f.yaml:11:11: mode must be one of parallel, queued, restart, single; got 'sometimes'",
        "f.yaml:12:12: needs at least one step",
    ]


def test_references_must_exist_and_not_loop() -> None:
    text = """\
playbooks:
  - name: a
    escalate: nobody
    steps:
      - {name: s, action: playbook, with: {name: b}}
  - name: b
    steps:
      - {name: t, action: playbook, with: {name: a}}
      - {name: u, action: playbook, with: {name: ghost}}
"""
    assert problems(text) == [
        "f.yaml:2:11: playbook 'a' runs itself through nested playbook steps",
        "f.yaml:2:11: playbook 'a': escalate names unknown playbook 'nobody'",
        "f.yaml:6:11: playbook 'b' runs itself through nested playbook steps",
        "f.yaml:9:16: step 'u': unknown playbook 'ghost'",
    ]


def test_parallel_branch_steps_share_the_name_space() -> None:
    text = """\
playbooks:
  - name: p
    steps:
      - name: fan
        action: parallel
        with:
          branches:
            - [{name: x, action: wait, with: {duration: 1s}}]
            - [{name: x, action: wait, with: {duration: 1s}}]
"""
    assert problems(text) == ["f.yaml:9:23: duplicate step name 'x' (first at f.yaml:8:23)"]


def test_rendered_values_stay_one_element_of_their_type() -> None:
    pbs = load_playbooks("""\
playbooks:
  - name: p
    steps:
      - name: a
        action: exec
        with:
          argv: [echo, "{{ event.msg }}", "{{ event.n }}", "n={{ event.n }}"]
          env: {X: "{{ event.n }}"}
""")
    step = pbs["p"].steps[0]
    ctx = {"event": {"msg": "a; rm -rf / $(id)\nb", "n": 7}}
    assert render_args(step, ctx) == {
        "argv": ["echo", "a; rm -rf / $(id)\nb", "7", "n=7"],
        "env": {"X": "7"},
    }


def test_schema_comes_from_the_same_key_tables() -> None:
    schema = json.loads(json.dumps(PLAYBOOK_SCHEMA))
    step = schema["$defs"]["step"]
    assert step["properties"]["action"]["enum"] == list(ACTION_KEYS)
    by_action = {
        rule["if"]["properties"]["action"]["const"]: rule["then"]["properties"]["with"]
        for rule in step["allOf"]
    }
    for action, keys in ACTION_KEYS.items():
        if action == "set":  # NAME: value pairs
            assert by_action[action]["minProperties"] == 1
            continue
        assert set(by_action[action]["properties"]) == set(keys)
        assert by_action[action].get("required", []) == list(keys.required)
        assert by_action[action]["additionalProperties"] is False


def test_the_spec_example_and_shipped_examples_validate_against_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from pathlib import Path

    import yaml

    schema = json.loads(json.dumps(PLAYBOOK_SCHEMA))
    docs = [yaml.safe_load(DOCS_EXAMPLE)]
    examples = Path(__file__).resolve().parent.parent / "rules" / "examples"
    docs += [yaml.safe_load(p.read_text()) for p in sorted(examples.glob("*/*.yaml"))]
    for doc in docs:
        jsonschema.validate(doc["playbooks"], schema)
    bad = yaml.safe_load(DOCS_EXAMPLE.replace("verb: restart", "verb: restart, shell: yes"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad["playbooks"], schema)

"""``batond check`` refuses templates that would read null at run time, and warns
about ``when:`` names that look misspelt."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def check(tmp_path: Path, text: str) -> tuple[int, list[str]]:
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(text).lstrip())
    done = subprocess.run(
        [sys.executable, "-m", "batond", "check", str(tmp_path / "rules.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line.replace(str(tmp_path) + "/", "") for line in done.stdout.splitlines()]
    return done.returncode, lines


RULES = """
rules:
  - name: order
    match: {event: order.placed}
    run: fulfil
    params: {u: https://shop.example, region: eu}
playbooks:
"""


def test_a_step_that_does_not_exist_a_later_step_and_an_unknown_param(tmp_path: Path) -> None:
    code, lines = check(
        tmp_path,
        RULES
        + """
  - name: fulfil
    steps:
      - name: s1
        action: exec
        with: {argv: [echo, "{{ steps.s0.json.id }}", "{{ steps.s3.ok }}"]}
      - name: s2
        action: http
        with: {url: "{{ params.uu }}/ship", json: {id: "{{ steps.s11.json.id }}"}}
      - name: s3
        action: exec
        with: {argv: [echo, "{{ vars.total }}"]}
""",
    )
    assert code == 1
    assert lines == [
        "rules.yaml:12:33: steps.s0: no step named 's0' in playbook 'fulfil'",
        "rules.yaml:12:59: steps.s3: step 's3' has not run yet here (it comes later)",
        "rules.yaml:15:25: params.uu: nothing that runs playbook 'fulfil' gives param 'uu' "
        "(given: region, u; declare it under the playbook's params:); did you mean 'u'?",
        "rules.yaml:15:60: steps.s11: no step named 's11' in playbook 'fulfil'; did you mean 's1'?",
        "rules.yaml:18:33: vars.total: no earlier set step sets 'total'",
    ]


def test_what_reaches_a_playbook_is_accepted(tmp_path: Path) -> None:
    code, lines = check(
        tmp_path,
        RULES
        + """
  - name: fulfil
    escalate: page
    steps:
      - {name: s1, action: http, with: {url: "{{ params.u }}/reserve", method: POST}}
      - {name: s2, action: exec, with: {argv: [echo, "{{ steps.s1.json.id }}"]}}
      - name: sub
        action: playbook
        with: {name: ship, params: {id: "{{ steps.s1.json.id }}"}}
    on_failure:
      - {name: undo, action: exec, with: {argv: [echo, "{{ steps.s2.stdout }}"]}}
  - name: ship
    steps:
      - {name: go, action: exec, with: {argv: [echo, "{{ params.id }} {{ params.region }}"]}}
  - name: page
    steps:
      - {name: tell, action: exec, with: {argv: [echo, "{{ params.region }}"]}}
""",
    )
    assert (code, lines[-1]) == (0, "ok: 1 rules, 3 playbooks, 0 schedules"), lines


def test_a_misspelt_name_in_when_gets_a_did_you_mean_warning(tmp_path: Path) -> None:
    code, lines = check(
        tmp_path,
        """
rules:
  - name: hot
    match: {metric: cpu, hots: a}
    when: valeu > 90 and hots == "a" and nw > 1
    run: fix
playbooks:
  - name: fix
    steps:
      - {name: s, action: exec, with: {argv: ["true"]}}
""",
    )
    assert code == 0  # a warning: a label named valeu may exist
    assert lines[:2] == [
        "rules.yaml:4:11: warning: 'valeu' is read as a label (labels.valeu); "
        "did you mean 'value'?",
        "rules.yaml:4:42: warning: 'nw' is read as a label (labels.nw); did you mean 'now'?",
    ]
    assert lines[2].startswith("ok: 1 rules")


def test_the_new_keys_are_checked_at_their_place(tmp_path: Path) -> None:
    code, lines = check(
        tmp_path,
        """
playbooks:
  - name: p
    only_within: {days: [sat, someday], hours: "02:00-05:00"}
    steps:
      - name: a
        action: assert
        with: {that: "value >", message: x}
      - name: b
        action: foreach
        with: {items: [1, 2], concurrency: 0}
      - name: c
        action: wait_until
        only_within: {hours: "25:00-26:00", timezone: Mars/Base}
        retry: {attempts: 2, delay: 1s, backoff: linear}
        with: {that: "true", every: soon}
      - name: d
        action: set
        with: {_hidden: 1, ok: "{{ item }}"}
      - name: e
        action: playbook
        with: {name: "nope-{{ params.kind }}"}
""",
    )
    assert code == 1
    assert lines == [
        "rules.yaml:3:31: day must be one of fri, mon, sat, sun, thu, tue, wed; got 'someday'",
        "rules.yaml:7:30: expression syntax: invalid syntax",
        "rules.yaml:10:15: missing required key 'steps'",
        "rules.yaml:10:44: must be at least 1, got 0",
        "rules.yaml:13:30: '25:00' is not a time of day",
        "rules.yaml:13:55: unknown time zone 'Mars/Base' (an IANA name such as Europe/Berlin)",
        "rules.yaml:14:50: backoff must be one of exponential, fixed; got 'linear'",
        "rules.yaml:15:37: invalid duration 'soon': expected <integer><unit>... with units "
        "ms, s, m, h, d",
        "rules.yaml:18:16: '_hidden': a name of letters, digits, '_'",
    ]


def test_a_templated_nested_name_must_match_a_loaded_playbook(tmp_path: Path) -> None:
    code, lines = check(
        tmp_path,
        RULES.replace("params: {u: https://shop.example, region: eu}", "params: {kind: a}")
        + """
  - name: fulfil
    steps:
      - name: e
        action: playbook
        with: {name: "nope-{{ params.kind }}"}
      - {name: f, action: exec, with: {argv: [echo, "{{ item }}"]}}
""",
    )
    assert (code, lines) == (
        1,
        [
            "rules.yaml:10:15: step 'e': no loaded playbook matches the name "
            "'nope-{{ params.kind }}'"
        ],
    )

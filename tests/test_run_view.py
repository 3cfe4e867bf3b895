"""What the run view is built from: each step attempt's rendered arguments (redacted,
bounded), the escalation links of a run both ways, and the steps a run never reached;
through the real runner, real subprocesses and the real journal (SQLite; PostgreSQL in
tests/test_journal_postgresql.py), and a journal migrated from schema version 3."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from typing import Any

from batond.journal.backend import render_schema
from batond.journal.db import MIGRATIONS, connect
from batond.journal.facade import Journal
from batond.remedy.plan import not_reached
from batond.remedy.shown import ARGS_MAX, REDACTED, TRUNCATED, shown_args
from daemon_proc import DaemonProcess, write_config
from runner_support import Harness, decision, load_playbooks
from support import free_port

PY = sys.executable


async def test_a_step_records_its_rendered_args_with_secrets_redacted(tmp_path: Path) -> None:
    pbs = load_playbooks(f"""\
playbooks:
  - name: p
    params: {{dir: /var/tmp}}
    steps:
      - name: clean
        action: exec
        with:
          argv: [{PY!r}, -c, pass, "{{{{ params.dir }}}}/{{{{ labels.host }}}}", --password, x]
          env: {{DB_PASSWORD: "{{{{ params.dir }}}}", MODE: fast}}
""")
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("p"))
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "succeeded"
        (step,) = (await h.run(ended.run_id))["steps"]
        assert step["args"] == {
            "argv": [PY, "-c", "pass", "/var/tmp/h1", "--password", REDACTED],
            "env": {"DB_PASSWORD": REDACTED, "MODE": "fast"},
        }
    finally:
        await h.close()


def test_shown_args_redact_secret_keys_urls_and_tokens_in_text() -> None:
    shown = shown_args(
        "http",
        {
            "url": "https://bob:pw@api.example/v1/restart?token=s3cret",
            "headers": {"Authorization": "Bearer abc", "X-Api-Key": "k", "Accept": "json"},
            "json": {"user": "bob", "api_token": "t", "note": "password=hunter2 ok"},
        },
    )
    assert shown == {
        "url": "https://api.example/v1/restart",
        "headers": {"Authorization": REDACTED, "X-Api-Key": REDACTED, "Accept": "json"},
        "json": {"user": "bob", "api_token": REDACTED, "note": f"password={REDACTED} ok"},
    }
    # a webhook's path is its credential; an author is not an auth
    assert shown_args("notify", {"url": "https://hooks.example/T0/B1/xyz"}) == {
        "url": "https://hooks.example/…"
    }
    argv = ["curl", "-H", "Authorization: Bearer abc.def"]
    assert shown_args("exec", {"env": {"AUTHOR": "ann"}, "argv": argv}) == {
        "env": {"AUTHOR": "ann"},
        "argv": ["curl", "-H", f"Authorization: {REDACTED} {REDACTED}"],
    }


def test_shown_args_are_bounded_with_a_marker() -> None:
    shown = shown_args("exec", {"argv": ["echo", "x" * (3 * ARGS_MAX)]})
    assert set(shown) == {TRUNCATED, "head"}
    assert "bytes of arguments" in shown[TRUNCATED]
    assert len(shown["head"].encode()) <= ARGS_MAX and shown["head"].startswith('{"argv"')


def make_v3_journal(state: Path) -> None:
    """A journal as batond with schema version 3 left it, with one run and one step."""
    state.mkdir()
    conn = connect(state / "journal.db")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
        "applied_at REAL NOT NULL, batond_version TEXT NOT NULL)"
    )
    for version in (1, 2, 3):
        conn.executescript(render_schema(MIGRATIONS[version - 1], "sqlite"))
        conn.execute("INSERT INTO schema_version VALUES (?, 0, 'old')", (version,))
    conn.execute(
        "INSERT INTO runs (rule, playbook, key, state, outcome, created_at, ended_at)"
        " VALUES ('r', 'p', 'k', 'done', 'succeeded', 1.0, 2.0)"
    )
    conn.execute(
        "INSERT INTO steps (run_id, path, action, attempt, status, started_at, ended_at)"
        " VALUES (1, 's', 'exec', 1, 'ok', 1.0, 2.0)"
    )
    conn.close()


async def test_a_version_3_journal_is_migrated_and_its_runs_read(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_v3_journal(state)
    journal = Journal.open(state)
    try:
        old = await journal.get_run(1)
        assert old is not None and old["steps"][0]["args"] is None
        assert (old["escalates"], old["escalated_to"]) == (None, None)
        run_id = await journal.run_created(
            rule="r", playbook="page", key="k", params={}, labels={}, created_at=3.0,
            escalation=True, escalates=1,
        )  # fmt: skip
        await journal.step_started(run_id, "tell", "notify", 1, 3.0, args={"text": "hi"})
        new = await journal.get_run(run_id)
        assert new is not None and new["steps"][0]["args"] == {"text": "hi"}
        old = await journal.get_run(1)
        assert old is not None and old["escalated_to"] == run_id
    finally:
        await journal.close()
    conn = sqlite3.connect(state / "journal.db")
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


VIEW_RULES = """
rules:
  - name: worker-died
    match: {event: worker.died}
    group_by: [host]
    run: fix
playbooks:
  - name: fix
    escalate: page
    steps:
      - name: note
        action: exec
        with:
          argv: [echo, "{{ labels.host }} died", --api-token, s3cret]
          env: {SERVICE_TOKEN: s3cret, HOST: "{{ labels.host }}"}
      - {name: restart, action: exec, with: {argv: ["false"]}}
      - {name: check, action: exec, with: {argv: [echo, checked]}}
    on_failure:
      - {name: tell, action: exec, with: {argv: [echo, "fix failed"]}}
  - name: page
    steps:
      - {name: call, action: exec, with: {argv: [echo, "paging for {{ previous.run_id }}"]}}
"""


def test_a_real_run_view_shows_args_not_reached_steps_and_escalations(tmp_path: Path) -> None:
    port = free_port()
    d = DaemonProcess(write_config(tmp_path, port, rules=VIEW_RULES), port)
    try:
        d.wait_ready()
        assert d.post("/api/v1/events", {"event": "worker.died", "host": "web-7"}).status == 202
        runs = d.wait_for(lambda: _ended(d, 2), what="the failed run and its escalation to end")
        fix, page = sorted(runs, key=lambda r: r["id"])
        incident = d.get(f"/api/v1/incidents/{fix['incident_id']}").json()
        fix, page = (
            d.get(f"/api/v1/runs/{fix['id']}").json(),
            d.get(f"/api/v1/runs/{page['id']}").json(),
        )
    finally:
        d.stop()
    assert (fix["playbook"], fix["outcome"]) == ("fix", "failed")
    note = fix["steps"][0]
    assert note["args"] == {
        "argv": ["echo", "web-7 died", "--api-token", REDACTED],
        "env": {"SERVICE_TOKEN": REDACTED, "HOST": "web-7"},
    }
    assert note["stdout"] == "web-7 died --api-token s3cret\n"  # the action got the real one
    assert [s["path"] for s in fix["steps"]] == ["note", "restart", "on_failure/tell"]
    assert fix["not_reached"] == ["check"]
    assert (fix["escalates"], fix["escalated_to"]) == (None, page["id"])
    assert (page["playbook"], page["escalation"], page["escalates"]) == ("page", True, fix["id"])
    assert page["escalated_to"] is None and page["not_reached"] == []
    assert page["steps"][0]["args"] == {"argv": ["echo", f"paging for {fix['id']}"]}
    assert [(r["id"], r["escalates"]) for r in incident["runs"]] == [
        (fix["id"], None),
        (page["id"], fix["id"]),
    ]


def _ended(d: DaemonProcess, n: int) -> list[dict[str, Any]] | None:
    runs = d.get("/api/v1/runs").json()["runs"]
    done = [r for r in runs if r["state"] == "done"]
    return done if len(done) >= n else None


TREE = load_playbooks("""\
playbooks:
  - name: outer
    steps:
      - {name: first, action: exec, with: {argv: ["true"]}}
      - name: both
        action: parallel
        with:
          branches:
            - [{name: a, action: exec, with: {argv: ["true"]}}]
            - [{name: b, action: exec, with: {argv: ["true"]}},
               {name: c, action: exec, with: {argv: ["true"]}}]
      - {name: inner, action: playbook, with: {name: sub}}
      - name: each
        action: foreach
        with:
          items: [1, 2]
          steps:
            - {name: x, action: exec, with: {argv: ["true"]}}
            - {name: y, action: exec, with: {argv: ["true"]}}
      - {name: picked, action: playbook, with: {name: "{{ params.which }}"}}
      - {name: last, action: exec, with: {argv: ["true"]}, when: "false"}
    on_failure:
      - {name: undo, action: exec, with: {argv: ["true"]}}
  - name: sub
    steps:
      - {name: s1, action: exec, with: {argv: ["true"]}}
    on_failure:
      - {name: s_undo, action: exec, with: {argv: ["true"]}}
""")


def paths(
    outcome: str,
    recorded: list[tuple[str, str]],
    resumption: bool = False,
    args: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    return not_reached(
        TREE["outer"], TREE, outcome=outcome, recorded=recorded, args=args, resumption=resumption
    )


def test_not_reached_walks_parallel_nested_foreach_and_on_failure() -> None:
    # nothing ran (cancelled while queued): every step, inside the static ones too
    assert paths("cancelled", []) == [
        "first", "both", "both/1/a", "both/2/b", "both/2/c", "inner", "inner/s1", "each",
        "picked", "last",
    ]  # fmt: skip
    # branch 2 failed at b; the run failed: c and everything after, and its compensation
    ran = [("first", "ok"), ("both", "failed"), ("both/1/a", "ok"), ("both/2/b", "failed")]
    assert paths("failed", ran) == [
        "both/2/c",
        "inner",
        "inner/s1",
        "each",
        "picked",
        "last",
        "on_failure/undo",
    ]
    # the nested playbook failed (its compensation due); item 1 of the foreach stopped at x
    ran = [
        ("first", "ok"), ("both", "ok"), ("both/1/a", "ok"), ("both/2/b", "ok"),
        ("both/2/c", "ok"), ("inner", "failed"), ("inner/s1", "failed"), ("each", "failed"),
        ("each/0/x", "ok"), ("each/0/y", "ok"), ("each/1/x", "failed"), ("picked", "failed"),
        ("last", "skipped"), ("on_failure/undo", "ok"),
    ]  # fmt: skip
    # the templated nested playbook: the one its stored args name (sub), not run at all
    args = {"picked": {"name": "sub"}}
    assert paths("failed", ran, args=args) == [
        "inner/on_failure/s_undo", "each/1/y", "picked/s1", "picked/on_failure/s_undo",
    ]  # fmt: skip
    assert paths("failed", ran) == ["inner/on_failure/s_undo", "each/1/y"]  # name unknown
    # a step skipped by when: was reached, and nothing inside it is expected
    skipped = [("first", "ok"), ("both", "skipped"), ("inner", "skipped"), ("each", "skipped")]
    assert paths("succeeded", [*skipped, ("picked", "ok"), ("last", "skipped")]) == []


def test_a_resumption_expects_nothing_before_its_first_step() -> None:
    ran = [("each", "ok"), ("each/0/x", "ok"), ("each/0/y", "ok")]
    assert paths("interrupted", ran, resumption=True) == ["picked", "last"]
    assert paths("interrupted", ran)[:2] == ["first", "both"]

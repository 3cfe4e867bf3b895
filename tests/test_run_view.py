"""What the run view is built from: each step attempt's rendered arguments (redacted,
bounded), the escalation links of a run both ways, and the steps a run never reached;
through the real runner, real subprocesses and the real journal (SQLite; PostgreSQL in
tests/test_journal_postgresql.py), and a journal migrated from schema version 3."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from batond.journal.backend import render_schema
from batond.journal.db import MIGRATIONS, connect
from batond.journal.facade import Journal
from batond.remedy.shown import ARGS_MAX, REDACTED, TRUNCATED, shown_args
from runner_support import Harness, decision, load_playbooks

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

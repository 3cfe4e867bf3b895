"""The journal's PostgreSQL backend against the machine's real server (a private database).

The same facade calls as on SQLite: a decision opens an incident, a run is written ahead
with its step, state is saved and loaded, an unfinished run is recovered as interrupted
after a "restart" (a second Journal on the same database), nonces refuse a replay, and a
second open migrates nothing. And what only PostgreSQL has, in place of SQLite's file
troubles (disk full, unusable paths): sessions the server drops, a server not there.
The journal tests that hold for both backends run on both (tests/journal_backends.py).
"""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import psycopg
import pytest

from batond.engine.types import Decision, Outcome
from batond.journal.backend import render_schema
from batond.journal.db import MIGRATIONS
from batond.journal.facade import Journal
from batond.remedy.run import RunState, StepStatus
from support import free_port, pg_database

private_database = pg_database  # (a name the tests below use)


def decision(key: str) -> Decision:
    return Decision(
        ts=1.0,
        rule="disk",
        key=key,
        target=key,
        labels={"host": key},
        candidates=("clean",),
        playbook="clean",
        suppressed=None,
    )


async def test_a_run_written_ahead_survives_and_is_recovered(database: str, tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "a", database)
    assert journal.backend == "postgresql"
    decision_id, incident_id = await journal.record_decision(decision("web1"))
    assert incident_id is not None
    run_id = await journal.run_created(
        rule="disk",
        playbook="clean",
        key="web1",
        params={"path": "/var/tmp"},
        labels={"host": "web1"},
        created_at=1.0,
        decision_id=decision_id,
        incident_id=incident_id,
    )
    step_id = await journal.step_started(run_id, "rm", "exec", 1, 2.0)
    await journal.step_finished(step_id, status=StepStatus.OK, ended_at=3.0, stdout="freed")
    await journal.save_rule_state({"timers": [1, 2]})
    assert await journal.remember_nonce("n-1", 10.0, forget_before=0.0) is True
    assert await journal.remember_nonce("n-1", 11.0, forget_before=0.0) is False  # a replay
    run = await journal.get_run(run_id)
    assert run is not None and run["steps"][0]["stdout"] == "freed"
    await journal.close()  # as a SIGKILL would leave it: the run never ended

    again = Journal.open(tmp_path / "b", database)  # another process's view of the same journal
    try:
        assert await again.load_rule_state() == {"timers": [1, 2]}
        interrupted = await again.recover_interrupted(5.0)
        assert [r.run_id for r in interrupted] == [run_id]
        run = await again.get_run(run_id)
        assert run is not None and (run["state"], run["outcome"]) == (
            RunState.DONE,
            Outcome.INTERRUPTED,
        )
        assert await again.remember_nonce("n-1", 12.0, forget_before=0.0) is False
        incidents = (await again.list_incidents())["incidents"]
        assert [i["id"] for i in incidents] == [incident_id]
    finally:
        await again.close()
    with psycopg.connect(database) as conn:
        versions = conn.execute("SELECT count(*) FROM schema_version").fetchone()
    assert versions == (len(MIGRATIONS),)  # the second open migrated nothing


async def test_a_version_3_journal_migrates_and_keeps_args_and_escalations(tmp_path: Path) -> None:
    with private_database() as url:
        with psycopg.connect(url, autocommit=True) as conn:  # as batond 3 left it
            conn.execute(
                "CREATE TABLE schema_version (version INTEGER PRIMARY KEY,"
                " applied_at DOUBLE PRECISION NOT NULL, batond_version TEXT NOT NULL)"
            )
            for version in (1, 2, 3):
                conn.execute(render_schema(MIGRATIONS[version - 1], "postgresql").encode())
                conn.execute("INSERT INTO schema_version VALUES (%s, 0, 'old')", (version,))
            conn.execute(
                "INSERT INTO runs (rule, playbook, key, state, outcome, created_at)"
                " VALUES ('disk', 'clean', 'web1', 'done', 'failed', 1.0)"
            )
        journal = Journal.open(tmp_path, url)
        try:
            old = (await journal.list_runs())["runs"][0]
            assert old["escalates"] is None and old["escalated_to"] is None
            page = await journal.run_created(
                rule="disk", playbook="page", key="web1", params={}, labels={}, created_at=2.0,
                escalation=True, escalates=old["id"],
            )  # fmt: skip
            await journal.step_started(page, "call", "exec", 1, 2.0, args={"argv": ["echo"]})
            escalation = await journal.get_run(page)
            assert escalation is not None and escalation["escalates"] == old["id"]
            assert escalation["steps"][0]["args"] == {"argv": ["echo"]}
            again = await journal.get_run(old["id"])
            assert again is not None and again["escalated_to"] == page
        finally:
            await journal.close()
        with psycopg.connect(url) as conn:
            top = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        assert top == (len(MIGRATIONS),)


async def test_a_lost_server_connection_shows_as_trouble_and_the_journal_reconnects(
    tmp_path: Path,
) -> None:
    """PostgreSQL's analogue of SQLite's full disk (test_journal_full.py): the server
    drops the journal's sessions (a restart, a failover). The write that meets the
    broken connection fails its caller and shows as trouble; the next one reconnects
    at once (the server is there); a read runs again on a new session, never failing."""
    with private_database() as url:
        journal = Journal.open(tmp_path, url)
        try:
            await lost_sessions(journal, url)
        finally:
            await journal.close()


async def lost_sessions(journal: Journal, url: str) -> None:
    from batond.errors import StateError

    def run(at: float) -> Coroutine[Any, Any, int]:
        return journal.run_created(
            rule="r", playbook="p", key="k", params={}, labels={}, created_at=at
        )

    def drop_sessions() -> int:
        with psycopg.connect(url, autocommit=True) as admin:
            (killed,) = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'batond-journal'"
            ).fetchone()
        return int(killed)

    first = await run(1.0)
    assert drop_sessions() == 3  # the writer's, the reader's and the checkpointer's
    with pytest.raises(StateError, match="journal error"):
        await run(2.0)
    assert "journal cannot write" in journal.trouble
    second = await run(3.0)
    assert journal.trouble == ""
    assert [r["id"] for r in (await journal.list_runs())["runs"]] == [second, first]
    assert drop_sessions() == 2  # the writer's and the reader's (new ones)
    assert (await journal.get_run(first)) is not None  # a read first, this time


def test_an_unreachable_server_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    """SQLite's unusable paths' analogue (test_journal_errors.py): nothing listens there."""
    from batond.errors import StateError

    url = f"postgresql://batond:s3cret@127.0.0.1:{free_port()}/fleet"
    with pytest.raises(StateError, match="cannot open the journal") as failed:
        Journal.open(tmp_path, url)
    assert "s3cret" not in str(failed.value) and "batond:***@127.0.0.1" in str(failed.value)
    Journal.open(tmp_path).close_sync()  # the state directory's lock went with the failure

"""Migrations on SQLite and on PostgreSQL (``journal_factory``): a journal left by
an older batond, at each schema version, is brought to the latest and keeps its
records; opening it again migrates nothing. (From an empty database, and a
newer schema refused: test_journal_store.py, test_journal_errors.py.)
"""

from __future__ import annotations

import pytest

from batond.journal.backend import render_schema
from batond.journal.db import MIGRATIONS
from journal_backends import JournalFactory

SCHEMA_VERSION = (
    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY,"
    " applied_at $real NOT NULL, batond_version TEXT NOT NULL);"
)
# rows any version has had the columns for (version 1's)
OLD_ROWS = """
INSERT INTO incidents (rule, key, severity, state, opened_at, labels)
    VALUES ('disk', 'host=web1', 'critical', 'open', 1.0, '{"host": "web1"}');
INSERT INTO decisions (ts, rule, key, target, playbook, candidates, params, labels,
    severity, incident_id) VALUES (1.0, 'disk', 'host=web1', 'host=web1', 'clean',
    '["clean"]', '{}', '{}', 'critical', 1);
INSERT INTO runs (rule, playbook, key, state, outcome, created_at, decision_id, incident_id)
    VALUES ('disk', 'clean', 'host=web1', 'running', NULL, 2.0, 1, 1);
INSERT INTO steps (run_id, path, action, attempt, status, started_at)
    VALUES (1, 'rm', 'exec', 1, 'running', 2.0);
"""


def old_journal(journal_factory: JournalFactory, version: int) -> None:
    """The journal as a batond of schema ``version`` left it, mid-run."""
    scripts = [SCHEMA_VERSION, *MIGRATIONS[:version]]
    versions = range(1, version + 1)
    scripts += [f"INSERT INTO schema_version VALUES ({v}, 0, 'old');" for v in versions]
    backend = journal_factory.backend
    journal_factory.script("\n".join(render_schema(s, backend) for s in scripts) + OLD_ROWS)


@pytest.mark.parametrize("version", range(1, len(MIGRATIONS)))
async def test_an_old_journal_migrates_to_the_latest_and_keeps_its_records(
    journal_factory: JournalFactory, version: int
) -> None:
    old_journal(journal_factory, version)
    j = journal_factory.open()
    try:
        interrupted = await j.recover_interrupted(10.0)  # the old batond died mid-run
        assert [(r.run_id, r.in_flight) for r in interrupted] == [(1, ("rm",))]
        (run,) = (await j.list_runs())["runs"]
        assert (run["outcome"], run["escalation"], run["escalates"], run["instance"]) == (
            "interrupted", False, None, None,
        )  # fmt: skip
        assert run["steps"][0]["args"] is None
        (incident,) = (await j.list_incidents())["incidents"]
        assert (incident["state"], incident["resolved_by"], incident["runs"]) == ("open", None, 1)
        # the incident open in the old journal is known: resolving it needs no lookup
        assert await j.resolve_incident("disk", "host=web1", 11.0) == 1
        resumed = await j.run_created(
            rule="disk", playbook="clean", key="host=web1", params={}, labels={},
            created_at=12.0, resumes=1, escalation=True, escalates=1,
        )  # fmt: skip
        step = await j.step_started(resumed, "rm", "exec", 1, 12.0, args={"argv": ["rm"]})
        assert resumed > 1 and step > 1  # past the old ids
        found = await j.get_run(1)
        assert found is not None and found["escalated_to"] == resumed
    finally:
        await j.close()
    await journal_factory.open().close()  # again: nothing left to migrate
    rows = journal_factory.rows("SELECT version, batond_version FROM schema_version ORDER BY 1")
    assert [v for v, _ in rows] == list(range(1, len(MIGRATIONS) + 1))
    assert [b for _, b in rows[:version]] == ["old"] * version  # applied once, never again

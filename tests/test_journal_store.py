"""The journal's records and queries, on SQLite and on PostgreSQL (``journal_factory``).

SQLite only, since they are about its file: WAL mode, and the file's mode (0600).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from batond.engine.types import Decision
from batond.events import Sample
from batond.journal.db import MIGRATIONS
from batond.journal.facade import OUTPUT_TAIL, Journal
from batond.journal.ids import BLOCK
from batond.journal.queries import DecisionFilter
from batond.remedy.records import RunStore
from journal_backends import JournalFactory


@pytest.fixture
async def journal(journal_factory: JournalFactory) -> AsyncIterator[Journal]:
    j = journal_factory.open()
    yield j
    await j.close()


def decision(ts: float = 100.0, *, suppressed: str | None = None, opens: bool = True) -> Decision:
    item = Sample("disk_used_percent", 95.0, ts, {"host": "web-1", "mount": "/"}, {"x": 1})
    return Decision(
        ts=ts, rule="disk-full", key="host=web-1", target="host=web-1",
        labels={"host": "web-1"}, candidates=("clean-tmp",),
        playbook=None if suppressed else "clean-tmp", suppressed=suppressed,
        params={"path": "/var/tmp"}, severity="critical", item=item, opens_incident=opens,
    )  # fmt: skip


TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
    "postgresql": "SELECT table_name FROM information_schema.tables"
    " WHERE table_schema = current_schema()",
}


async def test_a_new_journal_is_migrated_from_empty_to_the_latest(
    journal_factory: JournalFactory,
) -> None:
    await journal_factory.open().close()
    rows = journal_factory.rows("SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    tables = {r[0] for r in journal_factory.rows(TABLES[journal_factory.backend])}
    assert {"incidents", "decisions", "runs", "steps", "approvals", "silences", "kv"} <= tables


async def test_a_new_sqlite_journal_is_in_wal_mode(tmp_path: Path) -> None:
    await Journal.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "journal.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_reopening_applies_no_migration_twice(journal_factory: JournalFactory) -> None:
    for _ in range(3):
        await journal_factory.open().close()
    rows = journal_factory.rows("SELECT count(*) FROM schema_version")
    assert rows == [(len(MIGRATIONS),)]


async def test_journal_satisfies_the_runstore_protocol(journal: Journal) -> None:
    store: RunStore = journal  # mypy checks the shape; this checks it at run time too
    assert callable(store.run_created)


async def test_decision_opens_incident_and_resolve_closes_it(journal: Journal) -> None:
    decision_id, incident_id = await journal.record_decision(decision())
    assert incident_id is not None
    incidents = (await journal.list_incidents())["incidents"]
    assert incidents == [
        {
            "id": incident_id, "rule": "disk-full", "key": "host=web-1", "state": "open",
            "severity": "critical", "opened_at": 100.0, "resolved_at": None,
            "labels": {"host": "web-1"}, "metric": "disk_used_percent", "feedback": None,
            "resolved_by": None, "runs": 0, "last_result": "run", "last_reason": None,
        }
    ]  # fmt: skip
    assert await journal.resolve_incident("disk-full", "host=web-1", 160.0) == incident_id
    assert await journal.resolve_incident("disk-full", "host=web-1", 170.0) is None
    found = await journal.get_incident(incident_id)
    assert found is not None
    assert (found["state"], found["resolved_at"], found["resolved_by"]) == (
        "resolved", 160.0, "input",
    )  # fmt: skip
    assert found["decisions"][0]["id"] == decision_id


async def test_suppressed_decision_is_recorded_with_its_reason(journal: Journal) -> None:
    await journal.record_decision(decision(suppressed="cooldown"))
    _, incident_id = await journal.record_decision(decision(200.0, opens=False))
    assert incident_id is None
    rows = (await journal.list_decisions())["decisions"]
    assert [(r["playbook"], r["suppressed"]) for r in rows] == [
        ("clean-tmp", None),
        (None, "cooldown"),
    ]


async def test_run_and_step_lifecycle_shows_in_api_shape(journal: Journal) -> None:
    decision_id, incident_id = await journal.record_decision(decision())
    run_id = await journal.run_created(
        rule="disk-full", playbook="clean-tmp", key="host=web-1", params={"path": "/x"},
        labels={"host": "web-1"}, created_at=100.0, decision_id=decision_id,
        incident_id=incident_id,
    )  # fmt: skip
    run = await journal.get_run(run_id)
    assert run is not None
    assert (run["state"], run["outcome"], run["started_at"]) == ("queued", None, None)
    await journal.run_state(run_id, "running", 101.0)
    step_a = await journal.step_started(run_id, "clean", "exec", 1, 101.0)
    await journal.step_finished(step_a, status="failed", ended_at=102.5, exit_code=3, stderr="no")
    step_b = await journal.step_started(run_id, "clean", "exec", 2, 103.0)
    await journal.step_finished(
        step_b, status="ok", ended_at=104.0, exit_code=0, stdout="x" * (OUTPUT_TAIL + 10) + "END"
    )
    await journal.run_state(run_id, "waiting_approval", 104.0)
    await journal.record_approval(run_id, "approve", "alice", 105.0)
    await journal.run_state(run_id, "running", 105.0)
    await journal.run_finished(run_id, "resolved", 106.0)

    run = await journal.get_run(run_id)
    assert run is not None
    assert run["state"] == "done" and run["outcome"] == "resolved"
    assert (run["started_at"], run["ended_at"]) == (101.0, 106.0)  # first running, kept
    first, second = run["steps"]
    assert first == {
        "name": "clean", "path": "clean", "action": "exec", "attempt": 1, "status": "failed",
        "started_at": 101.0, "ended_at": 102.5, "duration_s": 1.5, "exit_code": 3,
        "stdout": "", "stderr": "no", "detail": None, "args": None,
    }  # fmt: skip
    assert second["attempt"] == 2 and second["stdout"].endswith("END")
    assert len(second["stdout"]) == OUTPUT_TAIL
    assert run["approvals"] == [{"verdict": "approve", "by": "alice", "at": 105.0}]
    listed = (await journal.list_runs())["runs"]
    assert [r["id"] for r in listed] == [run_id] and len(listed[0]["steps"]) == 2


async def test_lists_are_newest_first_and_limited(journal: Journal) -> None:
    ids = []
    for i in range(5):
        ids.append(
            await journal.run_created(
                rule="r", playbook="p", key=f"k{i}", params={}, labels={}, created_at=float(i)
            )
        )
        await journal.record_decision(decision(float(i)))
    runs = (await journal.list_runs(3))["runs"]
    assert [r["id"] for r in runs] == ids[::-1][:3]
    assert len((await journal.list_incidents(2))["incidents"]) == 2
    assert await journal.get_run(9999) is None
    assert await journal.get_incident(9999) is None


async def test_nested_step_path_name(journal: Journal) -> None:
    run_id = await journal.run_created(
        rule="r", playbook="p", key="k", params={}, labels={}, created_at=1.0, state="running"
    )
    await journal.step_started(run_id, "fanout/branch1/ping", "exec", 1, 2.0)
    run = await journal.get_run(run_id)
    assert run is not None and run["started_at"] == 1.0
    assert run["steps"][0]["name"] == "ping" and run["steps"][0]["duration_s"] is None


async def test_silences_add_list_expire(journal: Journal) -> None:
    a = await journal.add_silence({"host": "web-1"}, 100.0, 200.0, "maintenance", "bob")
    b = await journal.add_silence({"rule": "x"}, 150.0, 300.0, "later")
    active = await journal.list_silences(120.0)
    assert [s["id"] for s in active] == [a]
    assert active[0]["matchers"] == {"host": "web-1"} and active[0]["created_by"] == "bob"
    assert {s["id"] for s in await journal.list_silences(160.0)} == {a, b}
    assert await journal.expire_silence(a, 170.0)
    assert not await journal.expire_silence(a, 171.0)  # already ended
    assert not await journal.expire_silence(424242, 171.0)
    assert [s["id"] for s in await journal.list_silences(180.0)] == [b]
    assert len(await journal.list_silences(180.0, include_expired=True)) == 2


async def test_pause_feedback_and_state_survive_reopen(journal_factory: JournalFactory) -> None:
    j = journal_factory.open()
    assert not await j.is_paused()
    assert await j.load_rule_state() is None
    _, incident_id = await j.record_decision(decision())
    await j.set_paused(True)
    state = {"cooldowns": {"disk-full": {"host=web-1": 1000.0}}, "open": [["disk-full", "k"]]}
    await j.save_rule_state(state)
    assert incident_id is not None and await j.feedback(incident_id, "false_positive")
    assert not await j.feedback(9999, "false_positive")
    await j.close()

    j = journal_factory.open()
    try:
        assert await j.is_paused()
        assert await j.load_rule_state() == state
        found = await j.get_incident(incident_id)
        assert found is not None and found["feedback"] == "false_positive"
        await j.set_paused(False)
        assert not await j.is_paused()
    finally:
        await j.close()


async def test_closed_journal_refuses_writes(journal_factory: JournalFactory) -> None:
    from batond.errors import StateError

    j = journal_factory.open()
    await j.close()
    with pytest.raises(StateError, match="closed"):
        await j.set_paused(True)


async def test_reconcile_resolves_incidents_the_engine_forgot(journal: Journal) -> None:
    _, kept = await journal.record_decision(decision(100.0))
    other = Decision(
        ts=101.0, rule="other", key="host=web-2", target="host=web-2", labels={},
        candidates=("p",), playbook="p", suppressed=None,
    )  # fmt: skip
    _, stale = await journal.record_decision(other)
    assert await journal.reconcile_incidents({("disk-full", "host=web-1")}, 500.0) == [stale]
    states = {
        i["id"]: (i["state"], i["resolved_at"])
        for i in (await journal.list_incidents())["incidents"]
    }
    assert states == {kept: ("open", None), stale: ("resolved", 500.0)}


async def test_posted_decision_commits_before_a_later_awaited_write(
    journal_factory: JournalFactory,
) -> None:
    j = journal_factory.open()
    try:
        decision_id, incident_id = await j.record_decision(decision())
        await j.run_created(
            rule="r", playbook="p", key="k", params={}, labels={}, created_at=1.0,
            decision_id=decision_id, incident_id=incident_id,
        )  # fmt: skip
        # seen by an independent connection, no barrier involved
        found = journal_factory.rows(
            "SELECT incident_id FROM decisions WHERE id = ?", (decision_id,)
        )
        assert found == [(incident_id,)]
    finally:
        await j.close()


async def test_ids_are_never_reused_across_restarts_and_pruning(
    journal_factory: JournalFactory,
) -> None:
    j = journal_factory.open()
    for i in range(3):
        await j.record_decision(decision(float(i)))
        assert await j.resolve_incident("disk-full", "host=web-1", 50.0) == i + 1
    assert (await j.prune(10.0, 10_000.0))["decisions"] == 3
    await j.close()
    j = journal_factory.open()
    try:
        decision_id, incident_id = await j.record_decision(decision(20_000.0))
        if journal_factory.backend == "sqlite":  # one process allocates: the next id
            assert decision_id == 4 and incident_id == 4
        else:  # drawn from the sequences in blocks: past the first process's block
            assert decision_id == incident_id == BLOCK + 1
        # the open incident is known after a restart: resolving it needs no lookup
        await j.close()
        j = journal_factory.open()
        assert await j.resolve_incident("disk-full", "host=web-1", 20_001.0) == incident_id
    finally:
        await j.close()


async def test_saves_of_the_same_state_coalesce_and_the_last_wins(journal: Journal) -> None:
    for i in range(200):
        await journal.save_rule_state({"n": i})
    assert await journal.load_rule_state() == {"n": 199}


async def test_save_rule_state_soon_exports_once_per_loop_turn(
    journal_factory: JournalFactory,
) -> None:
    j = journal_factory.open()
    exports = 0

    def export() -> dict[str, int]:
        nonlocal exports
        exports += 1
        return {"exports": exports}

    for _ in range(100):  # a burst of decisions handled without yielding
        j.save_rule_state_soon(export)
    assert exports == 0
    await asyncio.sleep(0)
    assert exports == 1
    assert await j.load_rule_state() == {"exports": 1}
    j.save_rule_state_soon(export)
    await j.close()  # a save still scheduled is not lost at close
    j = journal_factory.open()
    try:
        assert await j.load_rule_state() == {"exports": 2}
    finally:
        await j.close()


async def test_a_new_incident_for_the_same_key_ends_the_older_one(journal: Journal) -> None:
    _, first = await journal.record_decision(decision(100.0))
    _, second = await journal.record_decision(decision(200.0))
    states = {i["id"]: i["state"] for i in (await journal.list_incidents())["incidents"]}
    assert states == {first: "resolved", second: "open"}


async def test_a_failing_write_fails_alone_in_its_group(journal: Journal) -> None:
    from batond.errors import StateError

    async def good(i: int) -> int:
        return await journal.run_created(
            rule="r", playbook="p", key=f"k{i}", params={}, labels={}, created_at=float(i)
        )

    async def bad() -> int:  # no such decision: a foreign key violation
        return await journal.run_created(
            rule="r", playbook="p", key="bad", params={}, labels={}, created_at=0.0,
            decision_id=999,
        )  # fmt: skip

    results = await asyncio.gather(good(1), bad(), good(2), good(3), return_exceptions=True)
    assert isinstance(results[1], StateError)
    assert "foreign key" in str(results[1]).lower()  # (SQLite: "FOREIGN KEY constraint")
    ok = [r for r in results if isinstance(r, int)]
    assert len(ok) == 3
    assert sorted(r["id"] for r in (await journal.list_runs())["runs"]) == sorted(ok)


def test_a_new_sqlite_journal_is_private_to_its_owner(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path)
    try:
        assert (tmp_path / "journal.db").stat().st_mode & 0o777 == 0o600
    finally:
        journal.close_sync()


async def test_a_nul_character_is_journaled_on_either_backend(journal: Journal) -> None:
    """PostgreSQL's text cannot hold NUL (SQLite's can): a command's binary output,
    or a label sent with one, must not cost the step's result or a batch of decisions."""
    run_id = await journal.run_created(
        rule="r", playbook="p", key="k\x00", params={}, labels={}, created_at=1.0
    )
    step = await journal.step_started(run_id, "dump", "exec", 1, 1.0)
    await journal.step_finished(step, status="ok", ended_at=2.0, stdout="a\x00b", stderr="\x00")
    run = await journal.get_run(run_id)
    assert run is not None
    assert (run["steps"][0]["stdout"], run["steps"][0]["stderr"]) == ("a\ufffdb", "\ufffd")
    nul = Decision(
        ts=3.0, rule="r", key="host=\x00", target="host=\x00", labels={"host": "\x00"},
        candidates=("p",), playbook="p", suppressed=None,
    )  # fmt: skip
    ids = [(await journal.record_decision(d))[0] for d in (decision(2.0), nul, decision(4.0))]
    await journal.flush()
    assert journal.trouble == ""
    found = (await journal.list_decisions())["decisions"]
    assert [d["id"] for d in found] == ids[::-1]  # posted in one batch: none was lost
    assert found[1]["labels"] == {"host": "\x00"}  # (inside JSON, a NUL is an escape)


async def test_decision_filters_summary_and_the_incident_timeline(journal: Journal) -> None:
    _, incident_id = await journal.record_decision(decision(100.0))
    await journal.record_decision(decision(150.0, suppressed="cooldown", opens=False))
    assert incident_id is not None
    run_id = await journal.run_created(
        rule="disk-full", playbook="clean-tmp", key="host=web-1", params={}, labels={},
        created_at=110.0, incident_id=incident_id, state="running",
    )  # fmt: skip
    page = await journal.run_created(
        rule="disk-full", playbook="page", key="host=web-1", params={}, labels={},
        created_at=130.0, incident_id=incident_id, escalation=True, escalates=run_id,
    )  # fmt: skip
    await journal.run_finished(run_id, "failed", 120.0)
    assert await journal.summary() == {"open_incidents": 1, "unfinished_runs": 1}

    def results(**filters: Any) -> list[tuple[float, str]]:
        return [(d["ts"], d["result"]) for d in decisions[DecisionFilter(**filters)]]

    decisions = {
        f: (await journal.list_decisions(10, f))["decisions"]
        for f in (
            DecisionFilter(), DecisionFilter(result="run"), DecisionFilter(result="cooldown"),
            DecisionFilter(since=120.0), DecisionFilter(rule="disk-full", key="host=web-2"),
        )
    }  # fmt: skip
    assert results() == [(150.0, "cooldown"), (100.0, "run")]
    assert results(result="run") == [(100.0, "run")]
    assert results(result="cooldown") == results(since=120.0) == [(150.0, "cooldown")]
    assert results(rule="disk-full", key="host=web-2") == []
    incident = await journal.get_incident(incident_id)
    assert incident is not None
    assert [(r["id"], r["escalation"], r["escalates"]) for r in incident["runs"]] == [
        (run_id, False, None), (page, True, run_id),
    ]  # fmt: skip
    assert [(e["ts"], e["what"]) for e in incident["timeline"]] == [
        (100.0, "opened"),
        (100.0, "decision"),
        (110.0, "run_started"),
        (120.0, "run_ended"),
        (130.0, "run_started"),
    ]  # fmt: skip  (the suppressed decision opened nothing: it is not the incident's)
    (listed,) = (await journal.list_incidents())["incidents"]
    assert (listed["runs"], listed["last_result"]) == (2, "run")

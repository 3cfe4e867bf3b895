"""The one pipeline on the daemon's real parts: engine, SQLite journal, runner.

What replay cannot show: a run the runner refuses is recorded and resolved in
the journal by the pipeline itself, and the after-run work of an ended run is
tracked, so a stop waits for it instead of losing it.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from batond.engine.engine import Engine
from batond.engine.governor import Governor
from batond.events import Event
from batond.journal.facade import Journal
from batond.load.rulefiles import load_rules
from batond.metrics import Metrics
from batond.remedy.actions import ActionContext
from batond.remedy.runner import RunEnded, Runner
from batond.runtime.pipeline import Fence, Pipeline
from batond.runtime.ports import JournalLedger, RuleStateSaver, TaskSet
from engine_support import GENEROUS

RULES = """
rules:
  - name: down
    match: {event: process.exited, name: nginx}
    run: fix
playbooks:
  - {name: fix, steps: [{name: s, action: exec, with: {argv: ["true"]}}]}
"""


class Parts:
    def __init__(self, tmp: Path, fence: Fence | None = None) -> None:
        (tmp / "rules.yaml").write_text(RULES)
        self.rules = load_rules([tmp / "rules.yaml"])
        self.engine = Engine(self.rules, Governor(GENEROUS))
        self.journal = Journal.open(tmp / "state")
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.actions = ActionContext()
        self.runner = Runner(
            playbooks=self.rules.playbooks,
            store=self.journal,
            metrics=self.metrics,
            actions=self.actions,
        )
        self.after_run = TaskSet("after-run bookkeeping")
        self.pipeline = Pipeline(
            self.engine,
            JournalLedger(self.journal, self.metrics),
            self.runner,
            state=RuleStateSaver(self.journal, self.engine),
            spawn=self.after_run.spawn,
            fence=fence,
        )
        self.runner.listen(self.pipeline)

    async def close(self) -> None:
        await self.runner.shutdown(5.0)
        await self.actions.close()
        await self.journal.close()


class Ended:
    """Passes what the runner reports on to the pipeline; says when a run ended."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.event = asyncio.Event()

    def candidate_started(self, rule: str, playbook: str, key: str, at: float) -> None:
        self.pipeline.candidate_started(rule, playbook, key, at)

    def run_ended(self, ended: RunEnded) -> None:
        self.pipeline.run_ended(ended)
        self.event.set()


def nginx_exited(now: float) -> Event:
    raw = {"event": "process.exited", "name": "nginx", "host": "a"}
    return Event("process.exited", now, {"name": "nginx", "host": "a"}, raw, "http")


async def test_a_refused_run_is_recorded_and_its_incident_resolves(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    try:
        await parts.runner.shutdown(0.0)  # stopping: the runner starts nothing more
        now = time.time()
        await parts.pipeline.observe(nginx_exited(now), now)
        incidents = (await parts.journal.list_incidents(10))["incidents"]
        assert [(i["rule"], i["state"]) for i in incidents] == [("down", "resolved")]
        assert (await parts.journal.list_runs(10))["runs"] == []
        decided = {"rule": "down", "result": "run"}
        assert parts.registry.get_sample_value("batond_decisions_total", decided) == 1
        # the absent run freed its place: the next failure decides and is refused again
        await parts.pipeline.observe(nginx_exited(now + 1), now + 1)
        assert len((await parts.journal.list_incidents(10))["incidents"]) == 2
    finally:
        await parts.close()


async def test_the_bookkeeping_of_an_ended_run_is_awaited_at_stop(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    try:
        ended = Ended(parts.pipeline)
        parts.runner.listen(ended)
        now = time.time()
        await parts.pipeline.observe(nginx_exited(now), now)
        async with asyncio.timeout(30.0):
            await ended.event.wait()
        # the engine knows at once; the journal's resolution is after-run work, tracked
        assert parts.engine.open_incident_count() == 0
        await parts.after_run.drain(10.0)
        incidents = (await parts.journal.list_incidents(10))["incidents"]
        assert [(i["rule"], i["state"]) for i in incidents] == [("down", "resolved")]
        runs = (await parts.journal.list_runs(10))["runs"]
        assert [(r["playbook"], r["outcome"]) for r in runs] == [("fix", "resolved")]
    finally:
        await parts.close()


async def test_a_run_the_journal_cannot_write_ahead_is_refused_and_holds_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14: disk full at the write-ahead killed the run task; the key stayed stuck."""
    parts = Parts(tmp_path)
    real = parts.journal.run_created
    failures = [3]  # the disk is full for the first three runs

    async def run_created(**kw: Any) -> int:
        if failures[0] > 0:
            failures[0] -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return await real(**kw)

    parts.journal.run_created = run_created  # type: ignore[method-assign]
    try:
        ended = Ended(parts.pipeline)
        parts.runner.listen(ended)
        with caplog.at_level(logging.ERROR, logger="batond.remedy.runner"):
            for i in range(4):
                ended.event.clear()
                now = time.time()
                await parts.pipeline.observe(nginx_exited(now + i), now + i)
                async with asyncio.timeout(30.0):
                    await ended.event.wait()
                # refused or run, the run-only incident resolves and the key is free again
                assert parts.engine.open_incident_count() == 0
        await parts.after_run.drain(10.0)
        refused = {"reason": "journal_unavailable"}
        assert parts.registry.get_sample_value("batond_runs_refused_total", refused) == 3
        assert parts.registry.get_sample_value("batond_runs_active") == 0
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and "refused (journal_unavailable)" in lines[0]
        runs = (await parts.journal.list_runs(10))["runs"]
        assert [(r["playbook"], r["outcome"]) for r in runs] == [("fix", "resolved")]
    finally:
        await parts.close()

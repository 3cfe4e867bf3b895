"""Shared pieces of the playbook, runner and action tests.

The journal is the real SQLite ``Journal``; ``ObservedStore`` only lets a test
await what the runner wrote (a state change, a step start) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil
from prometheus_client import CollectorRegistry

from batond.engine.types import Decision
from batond.events import Event
from batond.journal.facade import Journal
from batond.load.playbooks import Playbook, check_references, read_playbooks
from batond.load.yamlfile import compose_text
from batond.metrics import Metrics
from batond.remedy.actions import ActionContext
from batond.remedy.runner import RunEnded, Runner
from support import apoll, until

__all__ = [
    "ARGV_JSON",
    "Harness",
    "ObservedStore",
    "decision",
    "gone",
    "json_lines",
    "load_playbooks",
    "read_pids",
    "wait_for_file",
    "wait_gone",
]

#: A child that prints its own argv (after the program) as one JSON line.
ARGV_JSON = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]


def load_playbooks(text: str, file: str = "pb.yaml") -> dict[str, Playbook]:
    node, reader = compose_text(text, file)
    assert node is not None, reader.problems
    fields = reader.mapping(node, ("playbooks",), ("playbooks",))
    assert fields is not None
    pbs = {pb.name: pb for pb in read_playbooks(reader, fields["playbooks"])}
    reader.problems.extend(check_references(pbs))
    reader.raise_if_problems()
    return pbs


def decision(
    playbook: str | None,
    *,
    rule: str = "r1",
    key: str = "host=h1",
    candidates: tuple[str, ...] = (),
    params: Mapping[str, Any] | None = None,
    raw: Mapping[str, Any] | None = None,
    suppressed: str | None = None,
) -> Decision:
    raw = dict(raw or {"event": "process.exited", "host": "h1", "name": "demo"})
    labels = {k: str(v) for k, v in raw.items() if k != "event" and isinstance(v, str | int)}
    return Decision(
        ts=time.time(),
        rule=rule,
        key=key,
        target=key,
        labels=labels,
        candidates=candidates or ((playbook,) if playbook else ()),
        playbook=playbook,
        suppressed=suppressed,
        params=dict(params or {}),
        item=Event(str(raw.get("event", "x")), time.time(), labels, raw, "http"),
    )


class ObservedStore:
    """The real journal, plus a condition a test can await on for what was written."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.changed = asyncio.Condition()
        self.states: list[tuple[int, str]] = []
        self.started: list[tuple[int, str, int]] = []  # run id, path, attempt

    async def _note(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def run_created(self, **kw: Any) -> int:
        run_id = await self.journal.run_created(**kw)
        self.states.append((run_id, kw.get("state", "queued")))
        await self._note()
        return run_id

    async def run_state(self, run_id: int, state: str, at: float) -> None:
        await self.journal.run_state(run_id, state, at)
        self.states.append((run_id, state))
        await self._note()

    async def step_started(
        self, run_id: int, path: str, action: str, attempt: int, started_at: float, **kw: Any
    ) -> int:
        step_id = await self.journal.step_started(run_id, path, action, attempt, started_at, **kw)
        self.started.append((run_id, path, attempt))
        await self._note()
        return step_id

    async def step_finished(self, step_id: int, **kw: Any) -> None:
        await self.journal.step_finished(step_id, **kw)
        await self._note()

    async def run_finished(self, run_id: int, outcome: str, ended_at: float) -> None:
        await self.journal.run_finished(run_id, outcome, ended_at)
        await self._note()

    async def until(self, predicate: Callable[[], bool], within: float = 30.0) -> None:
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(predicate)


class Harness:
    """A Runner on a real journal in ``tmp``, collecting outcomes."""

    def __init__(
        self,
        tmp: Path,
        playbooks: Mapping[str, Playbook],
        *,
        max_concurrent: int = 4,
        ctx: ActionContext | None = None,
    ) -> None:
        self.journal = Journal.open(tmp / "state")
        self.store = ObservedStore(self.journal)
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.ctx = ctx or ActionContext(kill_grace=0.5)
        self.ended: list[RunEnded] = []
        self._ended_cond = asyncio.Condition()
        self.runner = Runner(
            playbooks=playbooks,
            store=self.store,
            metrics=self.metrics,
            actions=self.ctx,
            max_concurrent=max_concurrent,
        )
        self.runner.listen(self)

    def candidate_started(self, rule: str, playbook: str, key: str, at: float) -> None:
        pass

    def run_ended(self, ended: RunEnded) -> None:
        self.ended.append(ended)

        async def note() -> None:
            async with self._ended_cond:
                self._ended_cond.notify_all()

        asyncio.get_running_loop().create_task(note())

    async def outcomes(self, n: int, within: float = 60.0) -> list[RunEnded]:
        """Wait for ``n`` ended runs in all."""
        async with asyncio.timeout(within), self._ended_cond:
            await self._ended_cond.wait_for(lambda: len(self.ended) >= n)
        return self.ended[:n]

    async def run(self, run_id: int) -> dict[str, Any]:
        got = await self.journal.get_run(run_id)
        assert got is not None
        return got

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        return self.registry.get_sample_value(name, dict(labels or {}))

    async def close(self) -> None:
        await self.runner.shutdown(2.0)
        await self.ctx.close()
        await self.journal.close()


def gone(pid: int) -> bool:
    """A process that no longer exists, or a zombie (dead, not yet reaped)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_gone(pids: list[int], within: float = 15.0) -> bool:
    """Whether all ``pids`` are gone within ``within`` seconds (external processes: polled)."""
    return bool(await apoll(lambda: all(gone(p) for p in pids), within, every=0.05))


async def wait_for_file(path: Path, within: float = 30.0) -> None:
    """An external process writes it: poll with a deadline."""
    await until(lambda: _has_text(path), within, f"{path} to appear")


def _has_text(path: Path) -> bool:
    return path.exists() and bool(path.read_text().strip())


def read_pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]

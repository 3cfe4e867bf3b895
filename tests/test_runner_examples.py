"""The shipped examples (rules/examples/*) pass `batond check` and do what they say."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from batond.load.rulefiles import load_rules
from runner_support import Harness, decision, wait_gone

EXAMPLES = Path(__file__).resolve().parent.parent / "rules" / "examples"
SCENARIOS = ["restart-watched-process", "clean-full-disk", "disaster-recovery"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_batond_check_accepts_the_example(scenario: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "batond", "check", str(EXAMPLES / scenario)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (EXAMPLES / scenario / "README.md").exists()


def playbooks(scenario: str) -> dict[str, Any]:
    return load_rules([EXAMPLES / scenario]).playbooks


class Hook:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.url = ""


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    h = Hook()

    async def receive(request: web.Request) -> web.Response:
        h.texts.append((await request.json())["text"])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    h.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]
    yield h
    await runner.cleanup()


def make_site(root: Path) -> None:
    script = EXAMPLES / "disaster-recovery" / "try" / "make-site.sh"
    subprocess.run(["bash", str(script), str(root)], check=True, capture_output=True)


async def failover(tmp_path: Path, hook: Hook, root: Path) -> tuple[Harness, list[Any]]:
    h = Harness(tmp_path, playbooks("disaster-recovery"))
    d = decision(
        "failover-to-standby",
        rule="primary-down",
        key="service=example-primary",
        params={"root": str(root), "webhook": hook.url},
        raw={"event": "service.down", "service": "example-primary"},
    )
    h.runner.start(d, verify_by_run=True)
    return h, await h.outcomes(1)


async def test_disaster_recovery_fails_over(tmp_path: Path, hook: Hook) -> None:
    root = tmp_path / "site"
    make_site(root)
    (root / "primary" / "healthy").unlink()
    h, (ended,) = await failover(tmp_path, hook, root)
    try:
        assert ended.outcome == "resolved"
        assert (root / "active").resolve() == (root / "standby").resolve()
        assert (root / "standby" / "data" / "db.txt").read_text() == "orders: 42\n"
        assert hook.texts == ["failover: traffic now on the standby"]
        paths = [(s["path"], s["status"]) for s in (await h.run(ended.run_id))["steps"]]
        assert paths == [
            ("probe", "failed"), ("restore", "ok"), ("check_standby", "ok"),
            ("reroute", "ok"), ("tell", "ok"),
        ]  # fmt: skip
    finally:
        await h.close()


async def test_disaster_recovery_leaves_a_healthy_primary_alone(tmp_path: Path, hook: Hook) -> None:
    root = tmp_path / "site"
    make_site(root)
    h, (ended,) = await failover(tmp_path, hook, root)
    try:
        assert ended.outcome == "resolved"
        assert (root / "active").resolve() == (root / "primary").resolve()
        assert list((root / "standby").iterdir()) == []
        assert hook.texts == ["primary reported down but healthy: no failover"]
    finally:
        await h.close()


async def test_disaster_recovery_compensates_and_escalates(tmp_path: Path, hook: Hook) -> None:
    root = tmp_path / "site"
    make_site(root)
    (root / "primary" / "healthy").unlink()
    (root / "backups" / "latest.tar.gz").unlink()  # no backup to restore
    (root / "active").unlink()
    (root / "active").symlink_to(root / "standby")  # half-done earlier attempt
    h, _ = await failover(tmp_path, hook, root)
    try:
        ended = await h.outcomes(2)
        assert [(e.playbook, e.outcome, e.escalation) for e in ended] == [
            ("failover-to-standby", "failed", False),
            ("page-oncall", "succeeded", True),
        ]
        assert (root / "active").resolve() == (root / "primary").resolve()  # rolled back
        assert hook.texts == [
            "failover FAILED; traffic left on the primary",
            "primary-down service=example-primary: automatic recovery did not resolve it",
        ]
    finally:
        await h.close()


async def test_clean_full_disk_deletes_only_tmp_files_of_the_cache(tmp_path: Path) -> None:
    cache = tmp_path / "disk" / "cache"
    cache.mkdir(parents=True)
    for name in ("a.tmp", "b.tmp", "keep.db"):
        (cache / name).write_bytes(b"x" * 1000)
    (tmp_path / "disk" / "other.tmp").write_text("outside the cache")
    h = Harness(tmp_path, playbooks("clean-full-disk"))
    try:
        d = decision(
            "clean-example-disk",
            rule="example-disk-full",
            params={"cache": str(cache)},
            raw={"metric": "disk_used_percent", "mount": str(tmp_path / "disk")},
        )
        h.runner.start(d)
        await h.store.until(lambda: any(p == "after" for _, p, _ in h.store.started))
        h.runner.incident_resolved("example-disk-full", "host=h1")  # the next sample is low
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "resolved"
        assert sorted(p.name for p in cache.iterdir()) == ["keep.db"]
        assert (tmp_path / "disk" / "other.tmp").exists()
        steps = {s["path"]: s for s in (await h.run(ended.run_id))["steps"]}
        assert "Use%" in steps["before"]["stdout"] and steps["clean"]["status"] == "ok"
    finally:
        await h.close()


async def test_restart_watched_process_starts_a_detached_worker(tmp_path: Path) -> None:
    h = Harness(tmp_path, playbooks("restart-watched-process"))
    pids: list[int] = []
    try:
        h.runner.start(decision("restart-example-worker", rule="example-worker-down"))
        await h.store.until(lambda: any(p == "running" for _, p, _ in h.store.started))
        h.runner.incident_resolved("example-worker-down", "host=h1")  # process.started
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "resolved"
        steps = {s["path"]: s for s in (await h.run(ended.run_id))["steps"] if s["status"] == "ok"}
        pids = [int(p) for p in steps["running"]["stdout"].split()]
        assert pids and not await wait_gone(pids, within=0.2)  # it outlives the step
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        await wait_gone(pids)
        await h.close()

"""The ``remote`` action and a central instance's remote requests (batond.fleet.remote),
faked only at the MQTT transport: the publish callable, and outcome reports handed to
``take`` as the MQTT route would (the end-to-end test is tests/test_fleet_remote.py)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from batond.errors import ActionError
from batond.fleet.remote import RemoteRequests
from batond.fleet.signing import Request, new_nonce, open_message, seal
from batond.load.config import load_config
from batond.load.rulefiles import load_rules
from batond.metrics import Metrics
from batond.remedy.actions import ACTIONS, ActionContext, StepCall
from batond.remedy.actions.remote import NOT_CENTRAL
from batond.runtime.definitions import remote_problems
from support import write_yaml

KEY = b"0123456789abcdef-web-01-key"


class Agent:
    """What the transport carries: requests published, outcome reports answered."""

    def __init__(self) -> None:
        self.sent: asyncio.Queue[tuple[str, bytes, int]] = asyncio.Queue()

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        await self.sent.put((topic, payload, qos))

    async def request(self) -> Request:
        topic, payload, qos = await self.sent.get()
        assert (topic, qos) == ("acme/fleet/requests/web-01", 1)
        signed = open_message(payload, KEY)
        assert signed is not None and signed.authentic
        req = Request.from_fields(signed.fields)
        assert req is not None
        return req


def report(req: Request, outcome: str = "succeeded", key: bytes = KEY, **more: Any) -> bytes:
    fields = {
        "v": 1, "id": req.id, "host": req.host, "run": 17, "outcome": outcome, "reason": "",
        "detail": "", "run_outcome": outcome, "ts": time.time(), "nonce": new_nonce(), **more,
    }  # fmt: skip
    return seal(key, fields)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "web-01.key").write_bytes(KEY + b"\n")
    return folder


def requests_of(keys: Path, agent: Agent, metrics: Metrics) -> RemoteRequests:
    return RemoteRequests(
        prefix="acme/fleet", instance="c0", keys_dir=keys, publish=agent.publish, metrics=metrics
    )


def step(ctx: ActionContext, **args: Any) -> StepCall:
    async def awaiting(on: bool) -> None:
        return None

    return StepCall(1, "ask", args, ctx, awaiting)


def refused(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "batond_fleet_outcomes_refused_total", {"reason": reason}
    )
    return value or 0.0


async def test_a_remote_step_sends_a_signed_request_and_ends_with_the_agents_outcome(
    keys: Path,
) -> None:
    agent, metrics = Agent(), Metrics()
    remote = requests_of(keys, agent, metrics)
    ctx = ActionContext(remote=remote.ask)
    call = step(ctx, host="web-01", playbook="restart-nginx", params={"why": "5xx"})
    running = asyncio.create_task(ACTIONS["remote"](call))
    req = await agent.request()
    assert (req.playbook, dict(req.params), req.instance) == ("restart-nginx", {"why": "5xx"}, "c0")
    assert abs(req.ts - time.time()) < 5 and len(req.nonce) == 32
    remote.take("acme/fleet/outcomes/web-01", report(req))
    result = await running
    assert result.ok, result.detail
    view = result.view()
    assert (view["outcome"], view["run"], view["request"], view["host"]) == (
        "succeeded", 17, req.id, "web-01",
    )  # fmt: skip
    # a second request has a fresh id and nonce
    again = asyncio.create_task(ACTIONS["remote"](call))
    second = await agent.request()
    assert (second.id, second.nonce) != (req.id, req.nonce)
    remote.take("acme/fleet/outcomes/web-01", report(second, "failed", reason=""))
    failed = await again
    assert not failed.ok and "reported failed" in failed.detail
    assert failed.view()["run_outcome"] == "failed"


async def test_forged_unmatched_and_misaddressed_reports_are_refused_and_logged(
    keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent, metrics = Agent(), Metrics()
    remote = requests_of(keys, agent, metrics)
    waiting = asyncio.create_task(remote.ask("web-01", "fix", {}))
    req = await agent.request()
    topic = "acme/fleet/outcomes/web-01"
    with caplog.at_level(logging.WARNING, "batond.fleet"):
        remote.take(topic, report(req, key=b"not-the-key-of-web-01-at-all"))
        remote.take("acme/fleet/outcomes/web-02", report(req))
        remote.take(topic, b"not json")
        stranger = Request("req-stranger", "web-01", "fix", {}, time.time(), new_nonce(), "c9")
        remote.take(topic, report(stranger))
    assert not waiting.done()  # a forger cannot end the step: it waits for the real one
    assert [refused(metrics, r) for r in ("bad_signature", "wrong_host", "malformed")] == [1, 1, 1]
    assert refused(metrics, "unmatched") == 1
    assert f"outcome report {req.id} on host web-01 refused: bad_signature" in caplog.text
    remote.take(topic, report(req))
    assert (await waiting)["outcome"] == "succeeded"
    remote.take(topic, report(req))  # the same report again: nobody waits for it now
    assert refused(metrics, "unmatched") == 2


async def test_a_step_timeout_stops_the_wait_and_counts_it(keys: Path) -> None:
    agent, metrics = Agent(), Metrics()
    remote = requests_of(keys, agent, metrics)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await remote.ask("web-01", "fix", {})
    unanswered = metrics.registry.get_sample_value(
        "batond_fleet_remote_steps_total", {"outcome": "unanswered"}
    )
    assert unanswered == 1
    req = await agent.request()
    remote.take("acme/fleet/outcomes/web-01", report(req))  # late: refused, not taken
    assert refused(metrics, "unmatched") == 1


async def test_what_cannot_be_sent_fails_the_step_with_its_reason(keys: Path) -> None:
    agent = Agent()
    remote = requests_of(keys, agent, Metrics())
    with pytest.raises(ActionError, match="no key for host web-09"):
        await remote.ask("web-09", "fix", {})
    with pytest.raises(ActionError, match="not a host name"):
        await remote.ask("../etc/passwd", "fix", {})
    with pytest.raises(ActionError, match="plain values"):
        await remote.ask("web-01", "fix", {"x": object()})
    with pytest.raises(ActionError, match="only a central instance") as info:
        await ACTIONS["remote"](step(ActionContext(), host="web-01", playbook="fix"))
    assert str(info.value) == NOT_CENTRAL
    assert agent.sent.empty()


def test_a_remote_step_outside_a_central_instance_is_a_load_error(tmp_path: Path) -> None:
    rules = write_yaml(
        tmp_path,
        """
        playbooks:
          - name: ask
            steps:
              - name: far
                action: remote
                with: {host: "{{ labels.host }}", playbook: restart-nginx, params: {a: 1}}
        """,
        "rules.yaml",
    )
    playbooks = load_rules([rules]).playbooks
    config = load_config(write_yaml(tmp_path, f"rules: [{rules}]\nstate_dir: {tmp_path}\n"))
    (problem,) = remote_problems(config, playbooks)
    assert (problem.file, problem.line, problem.col) == (str(rules), 4, 15)  # (the step's name)
    assert "central instances only" in problem.message


def test_batond_check_names_a_remote_step_outside_a_central_instance(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(
        "playbooks:\n  - name: ask\n    steps:\n"
        "      - {name: far, action: remote, with: {host: web-01, playbook: fix}}\n"
    )
    config = write_yaml(tmp_path, "rules: [rules]\nmodels: []\n")
    done = subprocess.run(
        [sys.executable, "-m", "batond", "check", "-c", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith(
        f"{rules / 'r.yaml'}:4:16: step far: action remote is for central instances only"
    ), done.stdout


async def test_a_flood_of_forged_reports_is_counted_whole_and_logged_30_a_minute(
    keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent, metrics = Agent(), Metrics()
    remote = requests_of(keys, agent, metrics)
    waiting = asyncio.create_task(remote.ask("web-01", "fix", {}))
    req = await agent.request()
    forged = report(req, key=b"not-the-key-of-web-01-at-all")
    with caplog.at_level(logging.WARNING, "batond.fleet"):
        for _ in range(40):
            remote.take("acme/fleet/outcomes/web-01", forged)
    assert refused(metrics, "bad_signature") == 40
    assert caplog.text.count("refused: bad_signature") == 30
    waiting.cancel()

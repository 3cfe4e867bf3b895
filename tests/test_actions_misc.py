"""signal, systemd, mqtt, wait and ansible actions with real processes."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batond.errors import ActionError
from batond.remedy.actions import ActionContext, StepCall
from batond.remedy.actions import ansible as ansible_action
from batond.remedy.actions import mqtt as mqtt_action
from batond.remedy.actions import signal as signal_action
from batond.remedy.actions import systemd as systemd_action
from runner_support import ARGV_JSON, gone, wait_gone


def spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv)


async def _noop(state: str) -> None:
    return None


def call(ctx: ActionContext, **args: Any) -> StepCall:
    return StepCall(1, "s", args, ctx, _noop)


async def test_signal_by_pid_kills_a_real_process() -> None:
    proc = spawn(["sleep", "60"])
    try:
        result = await signal_action.run(call(ActionContext(), pid=proc.pid, signal="KILL"))
        assert result.ok
        assert proc.wait(timeout=10) == -9
    finally:
        proc.kill()
        proc.wait()


async def test_signal_by_name(tmp_path: Path) -> None:
    prog = tmp_path / "batond-sigtest"
    shutil.copy("/bin/sleep", prog)
    proc = spawn([str(prog), "60"])
    try:
        result = await signal_action.run(
            call(ActionContext(), name="batond-sigtest", signal="SIGTERM")
        )
        assert result.ok and str(proc.pid) in result.stdout.split()
        assert proc.wait(timeout=10) == -15
        result = await signal_action.run(call(ActionContext(), name="batond-sigtest"))
        assert not result.ok and "no process named" in result.detail
    finally:
        proc.kill()
        proc.wait()


async def test_signal_refuses_bad_input() -> None:
    with pytest.raises(ActionError):
        await signal_action.run(call(ActionContext(), pid="1; kill -9 -1"))
    with pytest.raises(ActionError):
        await signal_action.run(call(ActionContext(), pid=1, signal="NOPE"))


async def test_systemd_runs_systemctl_with_argv(tmp_path: Path) -> None:
    # a stand-in systemctl (the transport boundary) that prints its argv
    ctx = ActionContext(systemctl=(*ARGV_JSON, "--user"))
    result = await systemd_action.run(call(ctx, unit="nginx.service; reboot", verb="restart"))
    assert result.ok
    assert json.loads(result.stdout) == ["--user", "restart", "--", "nginx.service; reboot"]
    with pytest.raises(ActionError):
        await systemd_action.run(call(ctx, unit="x", verb="mask"))


async def test_mqtt_publishes_through_the_daemon_connection() -> None:
    sent: list[tuple[str, bytes, int, bool]] = []

    async def publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
        sent.append((topic, payload, qos, retain))

    ctx = ActionContext(mqtt_publish=publish)
    assert (await mqtt_action.run(call(ctx, topic="a/b", payload={"x": 1}, qos=1))).ok
    assert (await mqtt_action.run(call(ctx, topic="a/c", payload="hi", retain=True))).ok
    assert sent == [("a/b", b'{"x":1}', 1, False), ("a/c", b"hi", 0, True)]
    with pytest.raises(ActionError, match="no MQTT connection"):
        await mqtt_action.run(call(ActionContext(), topic="a/b"))


@pytest.mark.skipif(shutil.which("ansible-playbook") is None, reason="ansible-core not installed")
@pytest.mark.slow
async def test_ansible_runs_a_local_playbook_with_extra_vars(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    book = tmp_path / "book.yml"
    book.write_text(
        "- hosts: localhost\n"
        "  connection: local\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - copy: {content: '{{ msg }}', dest: '" + str(out) + "'}\n"
    )
    result = await ansible_action.run(
        call(
            ActionContext(),
            playbook=str(book),
            inventory="localhost,",
            extra_vars={"msg": "a; $(id) b"},
        )
    )
    assert result.ok, result.stdout + result.stderr
    assert out.read_text() == "a; $(id) b"


async def test_signal_leaves_other_processes_alone() -> None:
    proc = spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(ActionError):
            await signal_action.run(call(ActionContext(), pid=0))
        await asyncio.sleep(0)
        assert not gone(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert await wait_gone([proc.pid])


async def test_ansible_puts_templated_playbook_after_a_double_dash(tmp_path: Path) -> None:
    # a stand-in ansible-playbook (the transport boundary) that prints its argv
    fake = tmp_path / "ansible-playbook"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    ctx = ActionContext(ansible_playbook=str(fake))
    result = await ansible_action.run(
        call(ctx, playbook="--version", inventory="-x", extra_vars={"a": 1})
    )
    assert result.ok, result.stderr
    assert json.loads(result.stdout) == [
        "--inventory=-x",
        '--extra-vars={"a":1}',
        "--",
        "--version",
    ]

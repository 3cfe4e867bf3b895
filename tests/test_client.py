"""The daemon-facing CLI commands against a real aiohttp server with canned API JSON."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from batond.commands.cli import main
from support import free_port

RUN = {
    "id": 7, "rule": "disk-full", "playbook": "clean-tmp", "key": "host=web-1", "state": "done",
    "outcome": "resolved", "started_at": 1767225600.0, "ended_at": 1767225603.5, "resumes": None,
    "steps": [
        {"name": "clean", "path": "clean", "action": "exec", "attempt": 1, "status": "ok",
         "started_at": 1767225600.0, "ended_at": 1767225601.25, "duration_s": 1.25,
         "exit_code": 0, "stdout": "freed 3 GiB\n", "stderr": ""},
    ],
}  # fmt: skip
INCIDENT = {
    "id": 3, "rule": "disk-full", "key": "host=web-1", "state": "open", "severity": "critical",
    "opened_at": 1767225600.0, "resolved_at": None,
}  # fmt: skip


class Canned:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        auth = request.headers.get("Authorization")
        self.requests.append((request.method, request.path_qs, auth, body))
        route = (request.method, request.path)
        answers: dict[tuple[str, str], Any] = {
            ("GET", "/api/v1/status"): {"mode": "enforce", "paused": False,
                                        "sources": {"http": "running"}, "open_incidents": 1},
            ("GET", "/api/v1/incidents"): {"incidents": [INCIDENT]},
            ("GET", "/api/v1/runs"): {"runs": [RUN]},
            ("GET", "/api/v1/runs/7"): RUN,
            ("POST", "/api/v1/silences"): {"id": 4, "matchers": {}, "ends_at": 1767232800.0},
            ("GET", "/api/v1/silences"): {"silences": [
                {"id": 4, "matchers": {"host": "web-1"}, "starts_at": 1767225600.0,
                 "ends_at": 1767232800.0, "reason": "maintenance"}]},
            ("DELETE", "/api/v1/silences/4"): {"expired": True},
            ("POST", "/api/v1/runs/7/approve"): {"run": 7, "approve": True},
            ("POST", "/api/v1/incidents/3/feedback"): {"incident": 3, "feedback": "false_positive"},
            ("POST", "/api/v1/pause"): {"paused": True},
        }  # fmt: skip
        if route == ("POST", "/api/v1/runs/8/deny"):
            return web.json_response({"error": "run 8 cannot be denied now"}, status=409)
        if route == ("POST", "/api/v1/reload"):
            return web.json_response(
                {"ok": False, "errors": ["rules/a.yaml:3:5: unknown key 'whn'"]}, status=400
            )
        if route not in answers:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(answers[route])


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Canned, str, Path]]:
    canned = Canned()
    runner = web.AppRunner(canned.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    yield canned, f"http://127.0.0.1:{port}", token
    await runner.cleanup()


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_incidents_table_and_token(server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    canned, url, token = server
    assert await cli("incidents", "--url", url, "--token-file", str(token)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "ID", "RULE", "KEY", "STATE", "SEVERITY", "OPENED", "RESOLVED", "RUNS", "LAST",
    ]  # fmt: skip
    assert out[1].split()[:5] == ["3", "disk-full", "host=web-1", "open", "critical"]
    assert out[1].rstrip().endswith("-")  # not resolved
    assert canned.requests[0][:3] == ("GET", "/api/v1/incidents", "Bearer s3cret")


async def test_runs_json_is_the_api_json(server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, url, _ = server
    assert await cli("runs", "--json", "--url", url) == 0
    assert json.loads(capsys.readouterr().out) == {"runs": [RUN]}


async def test_runs_table_and_one_run_timeline(
    server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    canned, url, _ = server
    assert await cli("runs", "--url", url, "--limit", "5") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:6] == ["ID", "RULE", "PLAYBOOK", "KEY", "STATE", "OUTCOME"]
    assert out[1].split()[:6] == ["7", "disk-full", "clean-tmp", "host=web-1", "done", "resolved"]
    assert "3.50s" in out[1]
    assert canned.requests[-1][1] == "/api/v1/runs?limit=5"
    assert await cli("runs", "7", "--url", url) == 0
    text = capsys.readouterr().out
    assert "run 7  disk-full -> clean-tmp" in text and "outcome resolved" in text
    step_line = next(line for line in text.splitlines() if line.startswith("clean"))
    assert step_line.split()[1:4] == ["exec", "1", "ok"] and "1.25s" in step_line
    assert "  clean stdout:\n    freed 3 GiB" in text  # the whole stored tail, line by line


async def test_status_lines(server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _, url, _ = server
    assert await cli("status", "--url", url) == 0
    out = capsys.readouterr().out
    assert "mode" in out and "enforce" in out and "sources.http" in out


async def test_silence_commands(server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    canned, url, token = server
    args = ("--url", url, "--token-file", str(token))
    code = await cli(
        "silence", "add", "--match", "host=web-1", "--match", "rule=x", "--for", "2h",
        "--reason", "maintenance", *args,
    )  # fmt: skip
    assert code == 0
    method, path, auth, body = canned.requests[-1]
    assert (method, path, auth) == ("POST", "/api/v1/silences", "Bearer s3cret")
    assert body == {"matchers": ["host=web-1", "rule=x"], "duration": "2h",
                    "reason": "maintenance"}  # fmt: skip
    assert "silence 4 added" in capsys.readouterr().out
    assert await cli("silence", "list", *args) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[1].split()[:2] == ["4", "host=web-1"] and listed[1].endswith("maintenance")
    assert await cli("silence", "expire", "4", *args) == 0
    assert canned.requests[-1][:2] == ("DELETE", "/api/v1/silences/4")
    assert (
        await cli("silence", "add", "--match", "nokv", "--for", "2h", "--reason", "r", *args) == 2
    )
    assert "expected K=V" in capsys.readouterr().err
    assert await cli("silence", "add", "--match", "a=b", "--for", "2", "--reason", "r", *args) == 2


async def test_gates_feedback_and_control(server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    canned, url, _ = server
    assert await cli("approve", "7", "--url", url) == 0
    assert canned.requests[-1][:2] == ("POST", "/api/v1/runs/7/approve")
    assert await cli("feedback", "3", "false_positive", "--url", url) == 0
    assert canned.requests[-1][3] == {"feedback": "false_positive"}
    assert await cli("pause", "--url", url, "--json") == 0
    assert json.loads(capsys.readouterr().out.split("\n", 2)[-1]) == {"paused": True}
    assert await cli("deny", "8", "--url", url) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("batond: ") and "409" in err and "cannot be denied now" in err
    assert await cli("reload", "--url", url) == 1
    assert "rules/a.yaml:3:5: unknown key 'whn'" in capsys.readouterr().err


async def test_unreachable_daemon_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # a port nobody listens on
    assert await cli("runs", "--url", f"http://127.0.0.1:{port}") == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("batond: cannot reach the daemon at http://127.0.0.1:") and err[-1] == "\n"
    )
    assert err.count("\n") == 1


async def test_finds_daemon_and_token_from_config(
    server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    canned, url, token = server
    monkeypatch.delenv("BATOND_URL", raising=False)
    monkeypatch.delenv("BATOND_TOKEN_FILE", raising=False)
    config = tmp_path / "batond.yaml"
    listen = url.removeprefix("http://")
    config.write_text(
        f"state_dir: {tmp_path}/state\nhttp:\n  listen: {listen}\n  token_file: {token}\n"
    )
    assert await cli("incidents", "-c", str(config)) == 0
    assert canned.requests[-1][2] == "Bearer s3cret"
    missing = tmp_path / "nope"
    assert await cli("incidents", "--url", url, "--token-file", str(missing)) == 2
    assert "cannot read the token" in capsys.readouterr().err


async def test_fleet_status_elsewhere_says_404(
    server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _, url, _ = server
    assert await cli("fleet", "status", "--url", url) == 1  # (not a central instance)
    assert "404" in capsys.readouterr().err


def test_partitions_shown_as_ranges() -> None:
    from batond.commands.client import _ranges

    assert _ranges([9, 0, 1, 2, 3, 7, 10]) == "0-3,7,9-10"
    assert _ranges([]) == ""

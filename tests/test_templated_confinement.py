"""Event data in a templated URL or cwd stays in the part it stands in (issue 14: SSRF, cwd).

A real runner, a real journal and a real aiohttp server on 127.0.0.1: the
server records every request, so a test sees exactly where batond went.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from batond.engine.templates import EvalError
from batond.remedy.render import render_args
from runner_support import Harness, decision, load_playbooks


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []  # method, raw path with query
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.raw_path))
        return web.Response(status=200, text="ok")


@pytest.fixture
async def server() -> AsyncIterator[Recorder]:
    rec = Recorder()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield rec
    await runner.cleanup()


def _step(url: str, action: str = "http") -> Any:
    extra = ', text: "t"' if action == "notify" else ""
    pbs = load_playbooks(
        f"playbooks:\n  - name: p\n    steps:\n      - {{name: a, action: {action}, "
        f'with: {{url: "{url}"{extra}}}}}\n'
    )
    return pbs["p"].steps[0]


HOSTILE_HOSTS = [
    "127.0.0.1:{api}/api/v1/pause?",
    "evil@127.0.0.1:{api}/x#",
    "127.0.0.1/api/v1/pause#",
    "127.0.0.1\r\nX-Evil: 1",
    "",
    "[::1]",
    "fe80::1%eth0",
]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_a_host_part_must_be_a_host_name_or_address(host: str) -> None:
    step = _step("http://{{ labels.host }}:8080/health")
    with pytest.raises(EvalError, match="url: "):
        render_args(step, {"labels": {"host": host.format(api=9)}})


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("db-1.example.org", "http://db-1.example.org:8080/health"),
        ("my_service", "http://my_service:8080/health"),
        ("10.0.0.7", "http://10.0.0.7:8080/health"),
        ("::1", "http://[::1]:8080/health"),
    ],
)
def test_host_names_and_addresses_pass(host: str, url: str) -> None:
    step = _step("http://{{ labels.host }}:8080/health")
    assert render_args(step, {"labels": {"host": host}})["url"] == url


@pytest.mark.parametrize(
    ("template", "value", "url"),
    [
        ("http://h/files/{{ labels.x }}", "../../admin", "http://h/files/..%2F..%2Fadmin"),
        ("http://h/q?name={{ labels.x }}", "a&admin=1#f", "http://h/q?name=a%26admin%3D1%23f"),
        ("http://h/p#{{ labels.x }}", "a b", "http://h/p#a%20b"),
        ("http://h/{{ labels.x }}/s", "100%", "http://h/100%25/s"),
        ("http://h:{{ labels.x }}/", "8080", "http://h:8080/"),
    ],
)
def test_templated_parts_are_encoded_as_their_component(
    template: str, value: str, url: str
) -> None:
    assert render_args(_step(template), {"labels": {"x": value}})["url"] == url


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("http://h/files/{{ labels.x }}", ".."),
        ("http://h:{{ labels.x }}/", "80/admin"),
        ("{{ labels.x }}", "file:///etc/passwd"),
        ("{{ labels.x }}", "http://a b/"),
        ("{{ labels.x }}://h/", "gopher"),
    ],
)
def test_dot_segments_bad_ports_and_other_schemes_are_refused(template: str, value: str) -> None:
    with pytest.raises(EvalError, match="url: "):
        render_args(_step(template), {"labels": {"x": value}})


def test_a_whole_templated_url_is_checked_too() -> None:
    step = _step("{{ params.webhook }}", action="notify")
    args = render_args(step, {"params": {"webhook": "https://hooks.example/T/abc"}})
    assert args["url"] == "https://hooks.example/T/abc"


async def test_the_ssrf_repro_never_reaches_the_api(tmp_path: Path, server: Recorder) -> None:
    """The issue's repro: a host label aimed at batond's own pause endpoint."""
    pbs = load_playbooks(f"""\
playbooks:
  - name: p
    steps:
      - name: check
        action: http
        with: {{url: "http://{{{{ labels.host }}}}:{server.port}/health", method: POST}}
""")
    h = Harness(tmp_path, pbs)
    try:
        hostile = f"127.0.0.1:{server.port}/api/v1/pause?"
        h.runner.start(decision("p", raw={"event": "x", "host": hostile}))
        h.runner.start(decision("p", key="host=h2", raw={"event": "x", "host": "127.0.0.1"}))
        ended = await h.outcomes(2)
        outcomes = sorted(e.outcome for e in ended)
        assert outcomes == ["failed", "succeeded"]  # (nothing verified the incident away)
        failed = next(e for e in ended if e.outcome == "failed")
        (step,) = (await h.run(failed.run_id))["steps"]
        assert "url: host must be a host name or an IP address" in step["detail"]["detail"]
        assert server.seen == [("POST", "/health")]
    finally:
        await h.close()


async def test_a_templated_cwd_stays_under_its_root(tmp_path: Path) -> None:
    root = tmp_path / "apps"
    (root / "web").mkdir(parents=True)
    pbs = load_playbooks(f"""\
playbooks:
  - name: p
    steps:
      - name: here
        action: exec
        with:
          argv: ["{sys.executable}", -c, "import os; print(os.getcwd())"]
          cwd: "{root}/{{{{ labels.app }}}}"
""")
    step = pbs["p"].steps[0]
    assert render_args(step, {"labels": {"app": "web"}})["cwd"] == str(root / "web")
    for escape in ("../../../../etc", "web/../../x", "..", "/etc"):
        if escape == "/etc":  # an absolute value is joined as text: still under the root
            assert render_args(step, {"labels": {"app": escape}})["cwd"] == f"{root}/etc"
            continue
        with pytest.raises(EvalError, match="leaves"):
            render_args(step, {"labels": {"app": escape}})
    h = Harness(tmp_path, pbs)
    try:
        h.runner.start(decision("p", raw={"event": "x", "app": "../../../../etc"}))
        (ended,) = await h.outcomes(1)
        assert ended.outcome == "failed"
        (row,) = (await h.run(ended.run_id))["steps"]
        assert "leaves" in row["detail"]["detail"] and row["stdout"] == ""
    finally:
        await h.close()


def test_a_wholly_templated_cwd_is_refused() -> None:
    pbs = load_playbooks(
        "playbooks:\n  - name: p\n    steps:\n      - {name: a, action: exec, "
        'with: {argv: [pwd], cwd: "{{ labels.dir }}"}}\n'
    )
    with pytest.raises(EvalError, match="fixed absolute directory"):
        render_args(pbs["p"].steps[0], {"labels": {"dir": "/tmp"}})

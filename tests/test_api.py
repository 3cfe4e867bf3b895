"""The HTTP API (docs/api.md) against a real running daemon."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from batond.intake.bus import Bus
from batond.metrics import Metrics
from batond.runtime.api import build_app
from daemon_proc import DaemonProcess, http, write_config
from support import free_port
from test_metrics import DOCUMENTED_METRICS

TOKEN = "t0k3n-for-tests"
MAX_BODY = 4096

RULES = """
rules:
  - name: ping-seen
    description: A ping event opens an incident that its run resolves
    match: {event: ping}
    group_by: [host]
    severity: info
    run: say-pong
playbooks:
  - name: say-pong
    steps:
      - {name: pong, action: exec, with: {argv: [echo, pong]}, timeout: 10s}
      - {name: again, action: exec, with: {argv: ["true"]}, timeout: 10s}
"""

#: Every mutating route, with a path that exists (ids need not exist: the token check
#: comes first). test_the_list_covers_every_mutating_route keeps this list complete.
MUTATING = [
    ("POST", "/api/v1/events"),
    ("POST", "/api/v1/alertmanager"),
    ("POST", "/api/v1/incidents/999/feedback"),
    ("POST", "/api/v1/incidents/999/resolve"),
    ("POST", "/api/v1/runs/999/approve"),
    ("POST", "/api/v1/runs/999/deny"),
    ("POST", "/api/v1/runs/999/cancel"),
    ("POST", "/api/v1/silences"),
    ("DELETE", "/api/v1/silences/999"),
    ("POST", "/api/v1/pause"),
    ("POST", "/api/v1/resume"),
    ("POST", "/api/v1/reload"),
    ("POST", "/api/v1/circuits/host%3Dnone/reset"),
    ("POST", "/api/v1/schedules/none/trigger"),
    ("POST", "/api/v1/playbooks/none/run"),
]
READ_ONLY = [
    "/",
    "/web/app.js",
    "/api/v1/openapi.json",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/status",
    "/api/v1/incidents",
    "/api/v1/decisions",
    "/api/v1/runs",
    "/api/v1/rules",
    "/api/v1/series",
    "/api/v1/silences",
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    folder = tmp_path_factory.mktemp("api")
    port = free_port()
    config = write_config(folder, port, rules=RULES, token=TOKEN, http_extra="max_body: 4KiB")
    d = DaemonProcess(config, port)
    try:
        d.wait_ready()
        yield d
    finally:
        assert d.stop() == 0, d.log()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_healthz(daemon: DaemonProcess) -> None:
    r = daemon.get("/healthz")
    assert (r.status, r.json()) == (200, {"status": "ok"})


def test_readyz(daemon: DaemonProcess) -> None:
    r = daemon.get("/readyz")
    assert (r.status, r.json()) == (200, {"ready": True})


def test_metrics_exposition(daemon: DaemonProcess) -> None:
    r = daemon.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"] == CONTENT_TYPE_LATEST  # e.g. text/plain; version=...
    for name, (kind, _) in DOCUMENTED_METRICS.items():
        declared = name.removesuffix("_total") if kind == "counter" else name
        assert re.search(rf"^# TYPE ({name}|{declared}) {kind}$", r.text, re.M), name
    assert daemon.metric("batond_rules_loaded") == 1.0
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is missing (Debian package prometheus)")
    done = subprocess.run(
        [promtool, "check", "metrics"], input=r.text, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_status_shape(daemon: DaemonProcess) -> None:
    s = daemon.get("/api/v1/status").json()
    assert s["mode"] == "enforce"
    assert s["paused"] is False
    assert s["rules_loaded"] == 1
    assert isinstance(s["sources"], dict) and "host" in s["sources"]
    assert isinstance(s["open_incidents"], int)
    assert s["open_circuits"] == []


@pytest.mark.parametrize("path", READ_ONLY)
def test_reads_need_no_token(daemon: DaemonProcess, path: str) -> None:
    assert daemon.get(path).status == 200


@pytest.mark.parametrize("method,path", MUTATING)
@pytest.mark.parametrize(
    "given", [None, "wrong-token", TOKEN + "x"], ids=["none", "wrong", "longer"]
)
def test_every_mutation_needs_the_token(
    daemon: DaemonProcess, method: str, path: str, given: str | None
) -> None:
    headers = auth(given) if given else {}
    r = http(method, daemon.url + path, body=b"{}", headers=headers)
    assert r.status == 401, (method, path, r.status, r.text)
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")


@pytest.mark.parametrize(
    "method,path",
    # pause and reload change the daemon's state: test_pause_and_resume, test_reload_over_http
    [(m, p) for m, p in MUTATING if not p.endswith(("/pause", "/reload"))],
)
def test_the_right_token_passes(daemon: DaemonProcess, method: str, path: str) -> None:
    # the body may be refused for what it is (400, 404, 409), but never for auth
    r = http(method, daemon.url + path, body=b"{}", headers=auth())
    assert r.status not in (401, 403), (method, path, r.status, r.text)


def test_the_list_covers_every_mutating_route() -> None:
    from batond.intake.http import add_input_routes

    metrics = Metrics(CollectorRegistry())
    app = build_app(
        None,  # type: ignore[arg-type]  # routes only; no handler is called
        metrics,
        token="x",
        max_body=1,
        add_input_routes=lambda a: add_input_routes(a, Bus(metrics), metrics),
    )
    routes = set()
    for route in app.router.routes():
        if route.method in ("POST", "PUT", "PATCH", "DELETE"):
            info = route.resource.get_info() if route.resource else {}
            routes.add((route.method, info.get("path") or info.get("formatter")))
    expected = {(m, re.sub(r"/999(?=/|$)", "/{id}", p)) for m, p in MUTATING}
    expected = {(m, re.sub(r"circuits/[^/]+", "circuits/{target}", p)) for m, p in expected}
    expected = {(m, re.sub(r"/none/", "/{name}/", p)) for m, p in expected}
    assert routes == expected


def test_body_above_max_body_gets_413(daemon: DaemonProcess) -> None:
    event = {"event": "filler", "host": "h", "pad": "x" * 100}
    small = json.dumps([event] * 10).encode()  # about 1.5 KiB
    big = json.dumps([event] * 60).encode()  # about 8 KiB > 4 KiB
    assert len(small) < MAX_BODY < len(big)
    assert http("POST", daemon.url + "/api/v1/events", body=small, headers=auth()).status == 202
    r = http("POST", daemon.url + "/api/v1/events", body=big, headers=auth())
    assert r.status == 413


def test_bad_input_gets_400(daemon: DaemonProcess) -> None:
    r = http("POST", daemon.url + "/api/v1/events", body=b"{not json", headers=auth())
    assert r.status == 400


def test_page_is_served(daemon: DaemonProcess) -> None:
    r = daemon.get("/")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert "<title>batond</title>" in r.text


WEB = Path(__file__).parent.parent / "daemon/batond/web"


def test_page_uses_every_read_api_and_nothing_external() -> None:
    script = (WEB / "app.js").read_text()
    for api in ("status", "incidents", "runs", "rules", "series", "silences", "openapi.json"):
        assert f'"api/v1/{api}' in script, api
    # no CDN, no fonts, no trackers: the page works on an air-gapped host
    for name in ("index.html", "app.js", "app.css"):
        urls = set(re.findall(r"https?://[^\s\"'<>)]+", (WEB / name).read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
    page = (WEB / "index.html").read_text()
    assert re.findall(r'(?:src|href)="(web/[^"]+)"', page) == ["web/app.css", "web/app.js"]


def test_page_assets_are_served_and_nothing_else(daemon: DaemonProcess) -> None:
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        r = daemon.get("/web/" + name)
        assert r.status == 200 and r.headers["Content-Type"].startswith(kind), name
        assert r.body == (WEB / name).read_bytes()
    for name in ("index.html", "..%2F..%2Fpyproject.toml", "nope.js"):
        assert daemon.get("/web/" + name).status == 404, name


def test_an_event_becomes_an_incident_and_a_run_with_steps(daemon: DaemonProcess) -> None:
    r = daemon.post("/api/v1/events", {"event": "ping", "host": "api-test"}, token=TOKEN)
    assert r.status == 202 and r.json()["accepted"] == 1

    def finished_run() -> dict[str, Any] | None:
        for run in daemon.get("/api/v1/runs").json()["runs"]:
            if run["key"] == "host=api-test" and run["state"] == "done":
                return dict(run)
        return None

    run = daemon.wait_for(finished_run, what="the run of the ping event")
    assert run["rule"] == "ping-seen" and run["playbook"] == "say-pong"
    assert run["outcome"] == "resolved"
    assert isinstance(run["id"], int)
    assert run["started_at"] <= run["ended_at"]
    assert [s["name"] for s in run["steps"]] == ["pong", "again"]
    assert daemon.get(f"/api/v1/runs/{run['id']}").json()["id"] == run["id"]
    assert daemon.get("/api/v1/runs/123456").status == 404

    incidents = daemon.get("/api/v1/incidents?limit=5").json()["incidents"]
    mine = [i for i in incidents if i["key"] == "host=api-test"]
    assert mine and {"id", "rule", "key", "state", "severity", "opened_at", "resolved_at"} <= set(
        mine[0]
    )
    rules = {r["name"]: r for r in daemon.get("/api/v1/rules").json()["rules"]}
    assert rules["ping-seen"]["fires"] >= 1
    assert daemon.metric("batond_decisions_total", {"rule": "ping-seen", "result": "run"}) == 1.0


def test_limit_is_validated(daemon: DaemonProcess) -> None:
    assert daemon.get("/api/v1/runs?limit=abc").status == 400
    assert daemon.get("/api/v1/runs?limit=1").status == 200


def test_silences_round_trip(daemon: DaemonProcess) -> None:
    body = {"matchers": {"host": "quiet"}, "duration": "1h", "reason": "maintenance"}
    r = daemon.post("/api/v1/silences", body, token=TOKEN)
    assert r.status == 201, r.text
    sid = r.json()["id"]
    assert sid in [s["id"] for s in daemon.get("/api/v1/silences").json()["silences"]]
    r = http("DELETE", f"{daemon.url}/api/v1/silences/{sid}", headers=auth())
    assert r.status == 200
    assert sid not in [s["id"] for s in daemon.get("/api/v1/silences").json()["silences"]]
    bad = daemon.post("/api/v1/silences", {"matchers": {}, "duration": "5"}, token=TOKEN)
    assert bad.status == 400


def test_pause_and_resume(daemon: DaemonProcess) -> None:
    assert daemon.post("/api/v1/pause", token=TOKEN).json() == {"paused": True}
    assert daemon.get("/api/v1/status").json()["paused"] is True
    assert daemon.post("/api/v1/resume", token=TOKEN).json() == {"paused": False}
    assert daemon.get("/api/v1/status").json()["paused"] is False


def test_reload_over_http(daemon: DaemonProcess) -> None:
    before = daemon.metric("batond_reloads_total", {"result": "ok"}) or 0.0
    r = daemon.post("/api/v1/reload", token=TOKEN)
    assert (r.status, r.json()["ok"]) == (200, True)
    assert daemon.metric("batond_reloads_total", {"result": "ok"}) == before + 1


def test_page_script_parses(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is missing: cannot syntax-check the page's script")
    page = (WEB / "index.html").read_text()
    assert re.findall(r"<script>(.*?)</script>", page, re.S) == []  # the script is app.js
    done = subprocess.run(
        [node, "--check", str(WEB / "app.js")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_unknown_runs_and_incidents_are_404_with_a_json_reason(daemon: DaemonProcess) -> None:
    for path in ("/api/v1/runs/999999/approve", "/api/v1/runs/999999/cancel"):
        got = daemon.post(path, token=TOKEN)
        assert got.status == 404 and got.json() == {"error": "no run 999999"}
    got = daemon.post(
        "/api/v1/incidents/999999/feedback", {"feedback": "false_positive"}, token=TOKEN
    )
    assert got.status == 404 and got.json() == {"error": "no incident 999999"}
    got = daemon.get("/api/v1/runs/abc")
    assert got.status == 400 and got.json() == {"error": "id must be a positive integer, got 'abc'"}

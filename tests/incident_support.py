"""Helpers for end-to-end tests of incidents, decisions and runs on a real daemon.

- :class:`Receiver`: a loopback HTTP server that keeps every JSON body POSTed to it
  (the ``notify: {url}`` target of a daemon under test);
- :func:`cli`: a ``batond`` client command against the daemon, as a subprocess;
- small readers of the API: decisions (with filters), incidents, runs.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from daemon_proc import BATOND, DaemonProcess

__all__ = [
    "Receiver",
    "cli",
    "decisions",
    "done_runs",
    "incident",
    "incidents",
    "receiver",
    "runs",
    "send",
]


class Receiver:
    """The JSON bodies POSTed to ``url`` so far (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: list[Any] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size)
                with owner._lock:
                    owner._bodies.append(json.loads(body or b"null"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @property
    def bodies(self) -> list[Any]:
        with self._lock:
            return list(self._bodies)

    def texts(self) -> list[str]:
        return [str(b.get("text", "")) if isinstance(b, dict) else str(b) for b in self.bodies]


@contextmanager
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def cli(d: DaemonProcess, *args: str, token: bool = True) -> subprocess.CompletedProcess[str]:
    """``batond ARGS --url ... [--token-file ...]`` against ``d``."""
    cmd = [BATOND, *args, "--url", d.url]
    token_file = d.config.parent / "token"
    if token and token_file.exists():
        cmd += ["--token-file", str(token_file)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def send(d: DaemonProcess, token: str | None, *items: dict[str, Any]) -> None:
    """POST input items (one request); fails the test unless accepted."""
    body = items[0] if len(items) == 1 else list(items)
    r = d.post("/api/v1/events", body, token=token)
    assert r.status == 202, r.text


def decisions(d: DaemonProcess, **filters: Any) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"limit": 10000, **filters})
    r = d.get(f"/api/v1/decisions?{query}")
    assert r.status == 200, r.text
    found: list[dict[str, Any]] = r.json()["decisions"]
    return found


def incidents(d: DaemonProcess, rule: str | None = None) -> list[dict[str, Any]]:
    found = d.get("/api/v1/incidents?limit=10000").json()["incidents"]
    return [i for i in found if rule is None or i["rule"] == rule]


def incident(d: DaemonProcess, incident_id: int) -> dict[str, Any]:
    r = d.get(f"/api/v1/incidents/{incident_id}")
    assert r.status == 200, r.text
    found: dict[str, Any] = r.json()
    return found


def runs(d: DaemonProcess, rule: str | None = None) -> list[dict[str, Any]]:
    found = d.get("/api/v1/runs?limit=10000").json()["runs"]
    return [r for r in found if rule is None or r["rule"] == rule]


def done_runs(d: DaemonProcess, rule: str, n: int) -> list[dict[str, Any]] | None:
    """The runs of ``rule`` once there are ``n`` and all are done (else None)."""
    found = runs(d, rule)
    return found if len(found) == n and all(r["state"] == "done" for r in found) else None

#!/usr/bin/env python3
"""A stand-in world for the examples: HTTP services on loopback that answer from a
routes file and record every call, so you can watch what a playbook did.

    python3 standin.py ROUTES.json [--port 8700] [--calls calls.jsonl]

ROUTES.json maps ``"METHOD /path"`` to an answer, or to a list of answers given
in turn (the last one repeats)::

    {"POST /inventory/reserve": {"status": 200, "json": {"reservation": "R-1"}},
     "POST /payment/charge": [{"status": 500, "json": {"error": "declined"}}]}

An answer may say ``"echo": "field"`` to copy that field of the request's JSON
body into its own JSON. Unknown routes answer 404 (and are recorded too).
``GET /_calls`` returns the calls so far as JSON; each is also appended to
``--calls`` as one JSON line ``{"method", "path", "json"}``. The chosen port
is printed on the first line of stdout (``--port 0`` picks a free one).
Standard library only; listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class World:
    def __init__(self, routes: dict[str, Any], calls_file: Path | None) -> None:
        self.routes = {k: v if isinstance(v, list) else [v] for k, v in routes.items()}
        self.served: dict[str, int] = {}
        self.calls: list[dict[str, Any]] = []
        self.calls_file = calls_file
        self.lock = threading.Lock()

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        route = f"{method} {path}"
        with self.lock:
            call = {"method": method, "path": path, "json": body}
            self.calls.append(call)
            if self.calls_file is not None:
                with self.calls_file.open("a") as f:
                    f.write(json.dumps(call) + "\n")
            answers = self.routes.get(route)
            if not answers:
                return 404, {"error": f"no route {route}"}
            n = self.served.get(route, 0)
            self.served[route] = n + 1
            spec = answers[min(n, len(answers) - 1)]
        reply = dict(spec.get("json", {}))
        echo = spec.get("echo")
        if echo and isinstance(body, dict):
            reply[echo] = body.get(echo)
        return int(spec.get("status", 200)), reply


def handler_for(world: World) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, data: Any) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _handle(self) -> None:
            if self.command == "GET" and self.path == "/_calls":
                with world.lock:
                    self._reply(200, list(world.calls))
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            self._reply(*world.answer(self.command, self.path, body))

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the calls file is the log

    return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description="stand-in HTTP services for the examples")
    parser.add_argument("routes", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--calls", type=Path)
    args = parser.parse_args()
    world = World(json.loads(args.routes.read_text()), args.calls)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler_for(world))
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

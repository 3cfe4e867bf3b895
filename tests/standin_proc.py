"""The examples' stand-in world (rules/examples/standin.py) as a subprocess of a test."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from support import poll

__all__ = ["STANDIN", "StandIn"]

STANDIN = Path(__file__).resolve().parent.parent / "rules" / "examples" / "standin.py"


class StandIn:
    """``python3 standin.py ROUTES --port 0``; ``calls()`` is what it received so far."""

    def __init__(self, routes: dict[str, Any] | Path, folder: Path) -> None:
        if isinstance(routes, Path):
            path = routes
        else:
            path = folder / "routes.json"
            path.write_text(json.dumps(routes))
        self.proc = subprocess.Popen(
            [sys.executable, str(STANDIN), str(path), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def calls(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(self.url + "/_calls", timeout=10) as resp:
            found: list[dict[str, Any]] = json.loads(resp.read())
            return found

    def wait_calls(self, n: int, within: float = 30.0) -> list[dict[str, Any]]:
        """Poll (an external process) until at least ``n`` calls arrived."""
        found = poll(lambda: (lambda c: c if len(c) >= n else None)(self.calls()), within)
        if found is None:
            raise AssertionError(f"not {n} calls within {within} s: {self.calls()}")
        return found

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

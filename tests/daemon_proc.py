"""Run the real ``batond run`` as a subprocess for end-to-end tests.

The daemon gets a config in a temporary folder (state there too), a free
loopback port and, optionally, a ``NOTIFY_SOCKET`` the test listens on.
Waiting is polling with a generous deadline: the daemon is an external process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from support import poll

__all__ = ["BATOND", "DaemonProcess", "HttpResult", "http", "stop_each", "write_config"]

#: the console script of the environment running the tests
BATOND = str(Path(sys.executable).with_name("batond"))
#: ``batond`` as the console script runs it, plus a stack dump of every thread on
#: SIGUSR1 so that a daemon that hangs in a test says where
_RUN_WITH_STACK_DUMPS = (
    "import faulthandler, signal, sys; "
    "faulthandler.register(signal.SIGUSR1, all_threads=True); "
    "from batond.commands.cli import main; sys.exit(main())"
)
START_TIMEOUT_S = 60.0


def write_config(
    folder: Path,
    port: int,
    *,
    rules: str = "",
    token: str | None = None,
    http_extra: str = "",
    host_extra: str = "",
    extra: str = "",
) -> Path:
    """``folder/batond.yaml`` with state in ``folder/state`` and rules in ``folder/rules``."""
    (folder / "rules").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(exist_ok=True)
    if rules:
        (folder / "rules" / "rules.yaml").write_text(textwrap.dedent(rules).lstrip())
    lines = [
        "node: test-node",
        "state_dir: state",
        "rules: [rules]",
        "models: [models]",
        "http:",
        f"  listen: 127.0.0.1:{port}",
    ]
    if token is not None:
        (folder / "token").write_text(token + "\n")
        lines.append("  token_file: token")
    lines += [f"  {line}" for line in http_extra.splitlines()]
    lines += ["host:", "  interval: 1s"]
    lines += [f"  {line}" for line in host_extra.splitlines()]
    path = folder / "batond.yaml"
    path.write_text("\n".join(lines) + "\n" + textwrap.dedent(extra))
    return path


class HttpResult:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def http(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> HttpResult:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpResult(resp.status, resp.read(), dict(resp.headers))
    except urllib.error.HTTPError as exc:
        return HttpResult(exc.code, exc.read(), dict(exc.headers))


class DaemonProcess:
    """One ``batond run -c CONFIG``; output goes to files next to the config."""

    def __init__(
        self,
        config: Path,
        port: int,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.stdout = config.parent / "daemon.out"
        self.stderr = config.parent / "daemon.err"
        full_env = dict(os.environ)
        for inherited in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            full_env.pop(inherited, None)  # (pytest itself may run under systemd)
        full_env.update(env or {})
        with self.stdout.open("ab") as out, self.stderr.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _RUN_WITH_STACK_DUMPS, "run", "-c", str(config), *args],
                stdout=out,
                stderr=err,
                env=full_env,
                cwd=config.parent,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def get(self, path: str, **kw: Any) -> HttpResult:
        return http("GET", self.url + path, **kw)

    def post(self, path: str, data: Any = None, token: str | None = None) -> HttpResult:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        body = json.dumps(data if data is not None else {}).encode()
        return http("POST", self.url + path, body=body, headers=headers)

    def _ready(self) -> bool:
        try:
            return self.get("/readyz", timeout=2).status == 200
        except OSError:
            return False  # not listening yet

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        self.wait_for(self._ready, timeout, "/readyz to answer 200", every=0.02)

    def wait_for(
        self, check: Any, timeout: float = 30.0, what: str = "condition", every: float = 0.1
    ) -> Any:
        """Poll ``check()`` until it returns something truthy; fail at once if batond exits."""

        def running_and_check() -> Any:
            if self.proc.poll() is not None:
                raise AssertionError(f"batond exited {self.proc.returncode}:\n{self.log()}")
            return check()

        found = poll(running_and_check, timeout, every)
        if not found:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}:\n{self.log()}")
        return found

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.get("/metrics").text):
            for sample in family.samples:
                if sample.name == name and sample.labels == (labels or {}):
                    return float(sample.value)
        return None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not exit in time (then fail loudly)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGCONT)  # a test may have stopped it
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR2)  # which asyncio task waits where?
                time.sleep(1)
                self.proc.send_signal(signal.SIGUSR1)  # and every thread's stack
                time.sleep(2)
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"batond ignored SIGTERM for {timeout}s:\n{self.log()}"
                ) from None
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def stop_each(procs: Iterable[DaemonProcess]) -> None:
    """Stop every process, even when one of them fails to stop (the first is reported)."""
    failed: list[AssertionError] = []
    for proc in procs:
        try:
            proc.stop()
        except AssertionError as exc:
            failed.append(exc)
    if failed:
        raise failed[0]
